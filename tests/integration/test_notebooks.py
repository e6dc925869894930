"""The notebooks in `notebooks/`, executed papermill-style on a real kernel against a real stack.

The stack is the local embedded one `make demo` leaves behind, built small once for the module:
MLflow on SQLite under `LOANOPS_HOME`; a production version and a newer candidate from `train`;
decisions written by the real API app; outcomes for them; one monitor run on those decisions,
one on a drifted file, and one performance run. The kernel is this interpreter, from a
kernelspec installed in a temporary folder, and it reads the same `LOANOPS_*` environment.

Each test fails when a cell errors (papermill raises `PapermillExecutionError`) and checks what
the executed notebook shows against what the stack holds.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipykernel.kernelspec
import nbformat
import numpy as np
import papermill
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.monitor import monitor_flow
from flows.performance import performance_flow
from flows.train import train_flow
from loanops import registry
from loanops.data import load_dataset
from loanops.data.synthetic import generate
from loanops.data.synthetic_drift import Drift
from loanops.decisions.database import create_engine_for
from loanops.outcomes import Outcome, record_outcomes
from loanops.settings import Settings
from tests.integration.api_fixtures import through_api

pytestmark = pytest.mark.integration

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
KERNEL_NAME = "loanops-notebook-tests"
ROWS = 6_000  # a frozen test split of about 1,200 loans and 100 defaults
DECISIONS = 1_500
CELL_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class Stack:
    """What the module's stack holds, for the tests to check the notebooks against."""

    settings: Settings
    champion: str
    candidate: str
    monitor_run_ids: tuple[str, ...]
    performance_run_id: str


def build_stack(home: Path) -> Stack:
    """Train two versions, serve the first, record outcomes and monitor, all under `home`.

    Expects the `LOANOPS_*` environment of `stack_environment(home)` to be in force.
    """
    settings = Settings()
    client = registry.connect(settings)
    champion = train_flow().version
    # The alias is set by hand: the gate's verdict on this small model is not what these tests
    # are about, and the promote flow would add a model load and a scoring to every run.
    client.set_registered_model_alias(settings.model_name, settings.production_alias, champion)
    # Another seed draws other synthetic loans: a candidate that differs from the champion,
    # registered and not promoted.
    candidate = train_flow(seed=settings.training.seed + 1).version

    loans = generate(DECISIONS, seed=11)
    start, end, request_ids = through_api(loans)
    engine = create_engine_for(settings.decision_db_url)
    try:
        report = record_outcomes(
            engine,
            [
                Outcome(request_id=rid, defaulted=bool(d))
                for rid, d in zip(request_ids, loans["default"], strict=True)
            ],
        )
    finally:
        engine.dispose()
    assert report.recorded == DECISIONS
    days = (end - start).total_seconds() / 86_400
    calm = monitor_flow(days=days, end=end)
    drifted_file = home / "covariate-shift.parquet"
    shift = Drift.preset("covariate_shift", start=0.0)
    generate(DECISIONS, seed=12, drift=shift).to_parquet(drifted_file, index=False)
    drifted = monitor_flow(data_path=str(drifted_file))
    performance = performance_flow(days=days, end=end)
    return Stack(
        settings=settings,
        champion=champion,
        candidate=candidate,
        monitor_run_ids=(calm.run_id, drifted.run_id),
        performance_run_id=performance.run_id,
    )


def stack_environment(home: Path) -> dict[str, str]:
    """The embedded stack under `home`, small: what the flows and the kernel both read."""
    return {
        "LOANOPS_HOME": str(home),
        "LOANOPS_DATASET": "synthetic",
        "LOANOPS_DATASET_ROWS": str(ROWS),
        "LOANOPS_TUNE_TRIALS": "2",
        "LOANOPS_CV_FOLDS": "2",
        "LOANOPS_MODEL_FAMILIES": '["logreg"]',
        "LOANOPS_BOOTSTRAP_SAMPLES": "100",
        # The drifted file crosses the thresholds: log it, but retrain nothing.
        "LOANOPS_RETRAIN_TRIGGER": "off",
    }


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A kernelspec for this interpreter, in a temporary Jupyter path; nothing in the home."""
    root = tmp_path_factory.mktemp("jupyter")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", str(root / "share" / "jupyter"))
        patch.setenv("JUPYTER_DATA_DIR", str(root / "data"))
        patch.setenv("JUPYTER_RUNTIME_DIR", str(root / "runtime"))
        patch.setenv("IPYTHONDIR", str(root / "ipython"))
        # argv is [sys.executable, "-m", "ipykernel_launcher", ...]: this interpreter.
        ipykernel.kernelspec.install(kernel_name=KERNEL_NAME, prefix=str(root))
        yield KERNEL_NAME


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, prefect_server: tuple[str, dict[str, str]]
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("notebooks-home")
    api_url, prefect_env = prefect_server
    # Prefect read its settings when it was imported: PREFECT_API_URL alone would not reach it,
    # and the flows would start a temporary server of their own (about 15 s).
    with pytest.MonkeyPatch.context() as patch, temporary_settings({PREFECT_API_URL: api_url}):
        for key, value in {**prefect_env, **stack_environment(home)}.items():
            patch.setenv(key, value)
        yield build_stack(home)


def execute(
    notebook: str, folder: Path, kernel: str, parameters: dict[str, Any] | None = None
) -> nbformat.NotebookNode:
    """Run a notebook of `notebooks/` with papermill; the executed copy is kept in `folder`."""
    output = folder / notebook
    papermill.execute_notebook(
        str(NOTEBOOKS / notebook),
        str(output),
        parameters=parameters or {},
        kernel_name=kernel,
        cwd=str(folder),
        progress_bar=False,
        execution_timeout=CELL_TIMEOUT_SECONDS,
    )
    return nbformat.read(output, as_version=4)


def shown_text(notebook: nbformat.NotebookNode) -> str:
    """Everything the executed cells printed or displayed as text."""
    parts: list[str] = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                parts.append(output.text)
            elif output.output_type in ("execute_result", "display_data"):
                parts.append(output.data.get("text/plain", ""))
                parts.append(output.data.get("text/html", ""))
            elif output.output_type == "error":
                parts.append("\n".join(output.traceback))
    return "\n".join(parts)


def images(notebook: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )


def test_explore_data_shows_the_dataset_its_default_rates_and_distributions(
    kernel: str, tmp_path: Path
) -> None:
    executed = execute(
        "01-explore-data.ipynb", tmp_path, kernel, {"dataset": "synthetic", "rows": 3_000}
    )

    text = shown_text(executed)
    loaded = load_dataset("synthetic", rows=3_000, seed=Settings().training.seed)
    defaults = int(loaded.schema.labels(loaded.frame).sum())
    assert f"synthetic: 3,000 loans, {defaults:,} defaults" in text
    for segment in ("grade", "term", "home_ownership"):
        assert f"default rate by {segment}" in text
    assert images(executed) == 2  # default rates by segment, distributions


def test_review_compares_the_newest_version_with_the_champion(
    stack: Stack, kernel: str, tmp_path: Path
) -> None:
    executed = execute("02-review-candidate.ipynb", tmp_path, kernel)

    text = shown_text(executed)
    assert f"candidate v{stack.candidate}, champion v{stack.champion} (@production)" in text
    # The disagreements, counted here on the candidate's frozen test split with each model's
    # own threshold, as the notebook should have.
    client = registry.connect(stack.settings)
    name = stack.settings.model_name
    candidate = client.get_model_version(name, stack.candidate)
    with tempfile.TemporaryDirectory() as tmp:
        test = registry.gate_data(client, candidate, Path(tmp))
    declines = []
    for version in (stack.champion, stack.candidate):
        card = registry.model_card(client, client.get_model_version(name, version))
        model = registry.load_model(name, version)
        p = model.predict_proba(card.schema.to_frame(test))[:, 1]
        declines.append(p >= card.threshold)
    differ = int(np.sum(declines[0] != declines[1]))
    assert f"decisions differ on {differ:,} of {len(test):,} test loans" in text
    assert re.search(r"candidate v\d+: [\d,]+ declines, [\d,]+ of them with no reason", text)
    assert "INT_RATE" in text  # a reason code of the frequency table
    assert images(executed) >= 2


def test_review_of_the_only_version_compares_it_with_itself(
    stack: Stack, kernel: str, tmp_path: Path
) -> None:
    executed = execute(
        "02-review-candidate.ipynb",
        tmp_path,
        kernel,
        {"candidate_version": stack.champion, "home": str(stack.settings.home)},
    )

    text = shown_text(executed)
    assert f"candidate v{stack.champion}, champion v{stack.champion}" in text
    assert "compared with itself" in text
    assert "decisions differ on 0 of" in text


def test_monitoring_notebook_shows_the_runs_and_the_latest_reports(
    stack: Stack, kernel: str, tmp_path: Path
) -> None:
    reports = tmp_path / "reports"
    executed = execute("03-monitoring.ipynb", tmp_path, kernel, {"artifacts_dir": str(reports)})

    text = shown_text(executed)
    assert f"loan-default v{stack.champion}: monitor runs 2, performance runs 1" in text
    for run_id in (*stack.monitor_run_ids, stack.performance_run_id):
        assert run_id in text
    # The latest monitor run is the drifted file: its report is downloaded and named.
    (summary,) = reports.rglob("summary.json")
    assert json.loads(summary.read_text())["drift"]["dataset_drift"] is True
    assert str(summary.parent / "report.html") in text
    assert (summary.parent / "report.html").stat().st_size > 0
    assert list(reports.rglob("performance_by_vintage.csv"))
    assert images(executed) >= 2
