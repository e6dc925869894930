"""Each overlay renders, matches its committed golden file, and ships the images it means to."""

from __future__ import annotations

import difflib
import re

import yaml

from tests.manifests.kube import BASE, RENDERED, Render, containers, workloads

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def test_render_matches_the_committed_golden_file(rendered: Render) -> None:
    golden = RENDERED / f"{rendered.overlay}.yaml"
    assert golden.exists(), f"missing {golden}: run tools/render-manifests.sh"
    expected = golden.read_text()
    if rendered.text != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                rendered.text.splitlines(keepends=True),
                fromfile=f"manifests/rendered/{rendered.overlay}.yaml (committed)",
                tofile=f"kubectl kustomize manifests/overlays/{rendered.overlay}",
                n=2,
            )
        )
        raise AssertionError(
            "the render differs from its golden file; review the diff, then run "
            f"tools/render-manifests.sh and commit the result:\n{diff[:6000]}"
        )


def test_the_base_sets_no_images() -> None:
    # A base `images:` entry silently wins over what an overlay means to ship.
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert "images" not in kustomization


def test_every_image_is_set_by_the_overlay(rendered: Render) -> None:
    # The base names images without tag or registry; an overlay that forgets one ships `latest`.
    for obj, template in workloads(rendered.objects):
        for container in containers(template["spec"]):
            image = container["image"]
            assert ":" in image or "@" in image, (
                f"{rendered.overlay}: {obj['metadata']['name']}/{container['name']} runs "
                f"{image!r}, which the overlay's `images:` did not set"
            )


def test_production_images_are_pinned_by_digest(renders: dict[str, Render]) -> None:
    production = renders["production"]
    images = {
        container["image"]
        for _, template in workloads(production.objects)
        for container in containers(template["spec"])
    }
    assert images
    assert {image for image in images if not DIGEST.search(image)} == set()
    # The flow runs' image follows the worker's (kustomize replacement), digest included.
    worker = production.get("Deployment", "prefect-worker")["spec"]["template"]["spec"]
    (sync,) = worker["initContainers"]
    (flow_run_image,) = [e["value"] for e in sync["env"] if e["name"] == "FLOW_RUN_IMAGE"]
    assert flow_run_image == worker["containers"][0]["image"]
    assert DIGEST.search(flow_run_image)


def test_local_flow_runs_use_the_local_image(renders: dict[str, Render]) -> None:
    worker = renders["local"].get("Deployment", "prefect-worker")["spec"]["template"]["spec"]
    (flow_run_image,) = [
        e["value"] for e in worker["initContainers"][0]["env"] if e["name"] == "FLOW_RUN_IMAGE"
    ]
    assert flow_run_image == "loanops:dev"
