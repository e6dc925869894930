"""The `loanops` command as a user runs it: the installed entry point, in its own process.

Flows report to a real Prefect server (the session fixture) and track to MLflow on SQLite in a
folder of the test's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loanops.data import load_dataset
from tests.services import free_port

pytestmark = pytest.mark.integration

LOANOPS = Path(sys.executable).parent / "loanops"


@pytest.fixture(scope="module")
def cli_env(
    prefect_server: tuple[str, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    home = tmp_path_factory.mktemp("cli-home")
    _, prefect_env = prefect_server
    return {
        **os.environ,
        **prefect_env,
        "LOANOPS_HOME": str(home),
        # The fewest bootstrap samples the settings take: the intervals are printed, not checked.
        "LOANOPS_BOOTSTRAP_SAMPLES": "100",
        # Two trials of two folds on 4,000 loans: the logistic regression alone, so that what
        # they train clears the gate's AUC floor whatever the sampler draws (this tests the CLI,
        # not the search).
        "LOANOPS_MODEL_FAMILIES": '["logreg"]',
        "LOANOPS_CV_FOLDS": "2",
        "COLUMNS": "200",  # wide enough that rich does not wrap the tables we read
    }


def loanops(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LOANOPS), *args], env=env, capture_output=True, text=True, timeout=600
    )


def outside_make(env: dict[str, str], user_home: Path) -> dict[str, str]:
    """`env` as a shell outside make has it: no Prefect, MLflow or telemetry settings."""
    library = ("PREFECT_", "MLFLOW_", "DO_NOT_TRACK")
    kept = {key: value for key, value in env.items() if not key.startswith(library)}
    return {**kept, "HOME": str(user_home)}


def test_train_promote_and_read_the_registry(cli_env: dict[str, str], tmp_path: Path) -> None:
    # The first command runs as `.venv/bin/loanops` does from a plain shell: its own defaults
    # must keep Prefect's state under the loanops home, quiet, with no telemetry.
    user_home = tmp_path / "user"
    direct = outside_make(cli_env, user_home)
    trained = loanops(direct, "train", "--rows", "4000", "--seed", "7", "--trials", "2")
    assert trained.returncode == 0, trained.stderr
    home = Path(cli_env["LOANOPS_HOME"])
    assert (home / "prefect" / "prefect.db").is_file()
    assert not (user_home / ".prefect").exists()
    assert trained.stderr == ""
    lines = trained.stdout.splitlines()
    assert lines[0].startswith("trained: loan-default v1")
    assert any(line.strip().startswith("cv / test ROC AUC") for line in lines)
    for noise in ("Task run", "Flow run", "prefect", "Downloading artifacts", "Warning", "INFO"):
        assert noise not in trained.stdout
    logged = (home / "logs" / "loanops.log").read_text()
    assert "Finished in state Completed" in logged and "tuning: 2 of 2" in logged

    promoted = loanops(cli_env, "promote")
    assert promoted.returncode == 0, promoted.stderr
    assert "promotion: promoted" in promoted.stdout
    assert "no champion: the floors alone decide" in promoted.stdout

    listed = loanops(cli_env, "models", "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "production" in line)
    assert "lending_club" in row and "promoted" in row

    history = loanops(cli_env, "models", "history")
    assert history.returncode == 0, history.stderr
    assert "promoted" in history.stdout and "v1" in history.stdout

    shown = loanops(cli_env, "models", "show", "1")
    assert shown.returncode == 0, shown.stderr
    for expected in (
        "loanops.dataset_sha256",
        load_dataset("lending_club", rows=4000, seed=7).sha256,
    ):
        assert expected in shown.stdout

    carded = loanops(cli_env, "models", "card", "1", "--out", str(tmp_path / "card"))
    assert carded.returncode == 0, carded.stderr
    assert "model_card.html" in carded.stdout
    text = (tmp_path / "card" / "model_card.md").read_text()
    assert "# Model card: loan-default v1" in text
    assert "| outcome | promoted |" in text
    assert (tmp_path / "card" / "calibration.png").read_bytes()[:4] == b"\x89PNG"

    _attach_and_detach_a_challenger(cli_env)


def _attach_and_detach_a_challenger(env: dict[str, str]) -> None:
    # A second version from the first one's artifacts: the alias, not the model, is tested.
    registered = subprocess.run(
        [
            sys.executable,
            "-c",
            "from loanops import registry; from loanops.settings import get_settings; "
            "s = get_settings(); c = registry.connect(s); "
            "v = c.get_model_version(s.model_name, '1'); "
            "print(c.create_model_version(s.model_name, v.source, run_id=v.run_id).version)",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert registered.returncode == 0, registered.stderr
    assert registered.stdout.strip().splitlines()[-1] == "2"

    refused = loanops(env, "models", "challenger", "1")
    assert refused.returncode == 1
    assert "version 1 is the champion" in refused.stderr and "Traceback" not in refused.stderr

    attached = loanops(env, "models", "challenger", "2")
    assert attached.returncode == 0, attached.stderr
    assert "v2 is the challenger (@challenger)" in attached.stdout
    shown = loanops(env, "models", "show", "2")
    assert "challenger" in next(line for line in shown.stdout.splitlines() if "aliases" in line)

    detached = loanops(env, "models", "detach-challenger")
    assert detached.returncode == 0, detached.stderr
    assert "v2 is no longer the challenger" in detached.stdout
    again = loanops(env, "models", "detach-challenger")
    assert again.returncode == 0 and "has no challenger" in again.stdout


@pytest.mark.parametrize(
    ("variable", "value", "error"),
    [
        ("LOANOPS_DATASET", "nope", "error: unknown dataset 'nope'; choose one of: "),
        ("LOANOPS_SEED", "-1", "error: invalid settings: seed: "),
    ],
)
def test_a_bad_setting_fails_in_one_line_before_any_server_starts(
    cli_env: dict[str, str], tmp_path: Path, variable: str, value: str, error: str
) -> None:
    env = {**outside_make(cli_env, tmp_path / "user"), "LOANOPS_HOME": str(tmp_path / "home")}

    result = loanops({**env, variable: value}, "train")

    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(error)
    # No temporary Prefect server was started: it would have created its database.
    assert not list(tmp_path.rglob("prefect.db"))


def test_unknown_dataset_is_one_line_and_exit_1(cli_env: dict[str, str]) -> None:
    result = loanops(cli_env, "train", "--dataset", "nope")

    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: unknown dataset 'nope'; choose one of: lending_club, synthetic"
    )


def test_bad_training_data_is_one_clear_line_without_a_traceback(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    frame = load_dataset("lending_club").frame
    frame.loc[:99, "int_rate"] = 99.0
    path = tmp_path / "bad.parquet"
    frame.to_parquet(path, index=False)

    result = loanops(cli_env, "train", "--data", str(path))

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: dataset 'lending_club' failed validation: "
        "int_rate: out of range (100 rows): allowed [0.0, 40.0]; e.g. 99.0"
    ]


def test_unknown_version_is_one_line(cli_env: dict[str, str]) -> None:
    for command in ("show", "card"):
        result = loanops(cli_env, "models", command, "999")

        assert result.returncode == 1
        assert "error: MLflow:" in result.stderr and "999" in result.stderr
        assert "Traceback" not in result.stderr


def test_settings_refuse_the_embedded_store_outside_dev(cli_env: dict[str, str]) -> None:
    result = loanops({**cli_env, "LOANOPS_ENV": "production"}, "models", "list")

    assert result.returncode == 1
    assert "error: invalid settings:" in result.stderr
    assert "LOANOPS_TRACKING_URI must be set outside dev mode" in result.stderr


def test_unreachable_tracking_server_is_one_line_naming_it(cli_env: dict[str, str]) -> None:
    tracking_uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {
        **cli_env,
        "LOANOPS_TRACKING_URI": tracking_uri,
        # MLflow's own HTTP retries back off for minutes; the flow's task retries still run,
        # without the 22 s their default waits add up to.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "LOANOPS_TRACKING_RETRY_DELAY_SECONDS": "[0]",
        "PREFECT_LOGGING_LEVEL": "INFO",  # so that the log file shows the retries
    }

    result = loanops(env, "promote")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: cannot reach the MLflow tracking server at {tracking_uri}: Connection refused"
    ], result.stderr
    logged = (Path(cli_env["LOANOPS_HOME"]) / "logs" / "loanops.log").read_text()
    assert "Retry 3/3 will start immediately" in logged
