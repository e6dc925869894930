"""Every render passes kubernetes-validate --strict for each Kubernetes version we support.

kubernetes-validate ships the OpenAPI schemas of each version and works offline. Without
--strict a misspelled key passes; with it, unknown keys fail. A kind it has no schema for only
WARNs, on stdout, with exit code 0: here any line but a pass is a failure.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.version import Version

from tests.manifests.flowrun import flow_run_job
from tests.manifests.kube import OVERLAYS, Render

# From 1.30, the first release with the preStop `sleep` action on by default (the API uses it),
# to the newest release the pinned kubernetes-validate knows.
OLDEST_SUPPORTED = Version("1.30")


def supported_versions() -> list[str]:
    try:
        from kubernetes_validate.utils import all_versions
    except ImportError:  # fail the tests that need it, with the reason, rather than collection
        return ["kubernetes-validate is not installed (a dev dependency: make install)"]
    # The package lists each version twice (plain and strict schemas).
    return sorted({v for v in all_versions() if Version(v) >= OLDEST_SUPPORTED}, key=Version)


def validate(paths: list[Path], versions: list[str]) -> dict[str, list[str]]:
    """Run `kubernetes-validate --strict` per version, side by side.

    Returns, per version, every output line that is not a pass.
    """
    runs = {
        version: subprocess.Popen(
            [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version]
            + [str(path) for path in paths],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for version in versions
    }
    problems: dict[str, list[str]] = {}
    for version, run in runs.items():
        output, _ = run.communicate(timeout=300)
        lines = output.splitlines()
        problems[version] = [
            line for line in lines if not (line.startswith("INFO") and " passed " in line)
        ]
        if run.returncode != 0 and not problems[version]:
            problems[version] = [f"exit code {run.returncode}"]
    return problems


@pytest.fixture(scope="module")
def manifests(renders: dict[str, Render], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Every overlay's render, and the Job of a production flow run, as files."""
    folder = tmp_path_factory.mktemp("schema")
    paths = []
    for overlay in OVERLAYS:
        paths.append(folder / f"{overlay}.yaml")
        paths[-1].write_text(renders[overlay].text)
    worker = renders["production"].get("Deployment", "prefect-worker")["spec"]["template"]
    paths.append(folder / "flow-run-job.yaml")
    paths[-1].write_text(yaml.safe_dump(flow_run_job(worker["spec"]["containers"][0]["image"])))
    return paths


def test_supported_versions_span_at_least_four_releases() -> None:
    versions = supported_versions()
    assert versions[0].startswith("1.30") and len(versions) >= 4, versions


@pytest.fixture(scope="module")
def problems(manifests: list[Path]) -> dict[str, list[str]]:
    return validate(manifests, supported_versions())


@pytest.mark.parametrize("version", supported_versions())
def test_manifests_pass_strict_schema_validation(
    version: str, problems: dict[str, list[str]]
) -> None:
    assert problems[version] == []


def test_strict_validation_catches_what_the_render_could_hide(tmp_path: Path) -> None:
    # The guard itself: a misspelled key fails, and an unknown kind (a WARN) counts as failing.
    misspelled = tmp_path / "misspelled.yaml"
    misspelled.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n"
        "spec: {selectr: {a: b}, ports: [{port: 80}]}\n"
    )
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: x}\n")
    version = supported_versions()[-1]
    assert validate([misspelled], [version])[version]
    assert validate([unknown], [version])[version]
