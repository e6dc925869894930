"""checkov finds nothing to fail in any overlay's render, nor in the flow-run Job.

checkov runs from its own venv (tools/checkov.sh installs it there once per machine, outside
the work tree; its pins clash with ours), offline. A check that does not apply is skipped where
it is decided, with its reason: as a `checkov.io/skipN: CHECK=reason` annotation on the
resource, or, for what only one overlay decides, in that overlay's .checkov.yaml, each entry
under a comment.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.manifests.flowrun import base_job_template, flow_run_job, variable_defaults
from tests.manifests.kube import BASE, OVERLAYS, OVERLAYS_DIR, ROOT, Render

pytestmark = pytest.mark.integration

CHECKOV = ROOT / "tools" / "checkov.sh"
SKIP_ANNOTATION = re.compile(r"checkov\.io/skip\d+")
CHECK_AND_REASON = re.compile(r"(?P<check>CKV2?_K8S_\d+)=(?P<reason>.{20,})")


def checkov(files: list[Path], config: Path | None) -> subprocess.Popen[str]:
    command = [str(CHECKOV), "--framework", "kubernetes", "--skip-download"]
    command += ["--output", "json", "--compact"]
    if config is not None:
        command += ["--config-file", str(config)]
    for path in files:
        command += ["--file", str(path)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def overlay_config(overlay: str) -> Path | None:
    path = OVERLAYS_DIR / overlay / ".checkov.yaml"
    return path if path.exists() else None


@pytest.fixture(scope="module")
def reports(
    renders: dict[str, Render], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """checkov's report per overlay (the production one includes the flow-run Job)."""
    folder = tmp_path_factory.mktemp("checkov")
    runs = {}
    for overlay in OVERLAYS:
        files = [folder / f"{overlay}.yaml"]
        files[0].write_text(renders[overlay].text)
        if overlay == "production":
            worker = renders[overlay].get("Deployment", "prefect-worker")["spec"]["template"]
            files.append(folder / "flow-run-job.yaml")
            image = worker["spec"]["containers"][0]["image"]
            files[-1].write_text(yaml.safe_dump(flow_run_job(image)))
        runs[overlay] = checkov(files, overlay_config(overlay))
    results = {}
    for overlay, run in runs.items():
        # The first run on a machine installs checkov into its venv (about 5 s from a warm cache).
        stdout, stderr = run.communicate(timeout=900)
        try:
            report = json.loads(stdout)
        except json.JSONDecodeError as error:
            message = f"checkov gave no report (exit {run.returncode}):\n{stderr}"
            raise AssertionError(message) from error
        reports_list = report if isinstance(report, list) else [report]
        (results[overlay],) = [r for r in reports_list if r.get("check_type") == "kubernetes"]
    return results


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_fails_nothing(overlay: str, reports: dict[str, dict[str, Any]]) -> None:
    report = reports[overlay]
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 100, "checkov checked next to nothing"
    failed = [
        f"{c['check_id']} {c['check_name']}: {c['resource']}"
        for c in report["results"]["failed_checks"]
    ]
    assert failed == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_skip_has_a_reason(overlay: str, reports: dict[str, dict[str, Any]]) -> None:
    for check in reports[overlay]["results"]["skipped_checks"]:
        reason = (check["check_result"].get("suppress_comment") or "").strip()
        assert len(reason) >= 20, f"{check['check_id']} on {check['resource']}: {reason!r}"


def test_skip_annotations_name_a_check_and_a_reason(renders: dict[str, Render]) -> None:
    annotations = [
        obj["metadata"].get("annotations", {})
        for render in renders.values()
        for obj in render.objects
    ]
    annotations.append(variable_defaults(base_job_template())["annotations"])
    skips = [value for a in annotations for key, value in a.items() if SKIP_ANNOTATION.match(key)]
    assert skips
    for value in skips:
        assert CHECK_AND_REASON.fullmatch(value), value


def test_config_file_skips_each_have_a_comment() -> None:
    configs = list(OVERLAYS_DIR.glob("*/.checkov.yaml"))
    configs += list(BASE.glob(".checkov.yaml"))
    for path in configs:
        lines = path.read_text().splitlines()
        entries = [i for i, line in enumerate(lines) if re.match(r"\s*-\s*CKV", line)]
        assert entries == [i for i in entries if lines[i - 1].lstrip().startswith("#")], path
        assert yaml.safe_load(path.read_text())["skip-check"]
