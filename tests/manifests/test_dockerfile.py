"""The container image, checked without a Docker engine (tests/container/ builds and runs it).

Two kinds of check. The first reads the Dockerfile: stages, pins, user, environment, what the
final stage installs, and the build context `.dockerignore` lets through. The second replays
the builder stage's own instructions on this machine, in a fresh folder and a fresh venv: each
COPY from the context, each `uv sync` exactly as written, the runtime stage's ENV. Then it runs
the image's default command (the API answers /healthz) and every command the manifests give
a container of the loanops image (each one's --help, with every option the manifest passes).

What this does not exercise: the base image, `apt-get install tini`, the user, the file
ownership, and the build itself; the container tier (`make test-container`) does. The replay
differs from a build in four stated ways: the uv binary is the venv's (the test checks that the
one the build installs is the same version), bytecode is not compiled (UV_COMPILE_BYTECODE only
changes start-up time), packages are linked from uv's cache rather than copied (UV_LINK_MODE only
changes how files land), and uv trusts the host's CA bundle rather than the base's.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.manifests.dockerfile import DOCKERFILE, DOCKERIGNORE, Stage, stages
from tests.manifests.flowrun import FLOW_RUN_COMMAND
from tests.manifests.kube import ROOT, Render, containers, workloads
from tests.services import free_port
from tests.waiting import exited, wait_for

BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|make|build-essential|cmake|git|uv|pip)\b")
# What the replay leaves out: how fast or how files land, not what is there; and the CA bundle,
# which on the host is the host's own.
NOT_REPLAYED_ENV = {"UV_COMPILE_BYTECODE", "UV_LINK_MODE", "PIP_CERT", "SSL_CERT_FILE"}
# The builder's one step before the syncs: the pinned uv from PyPI, in a venv of its own.
UV_INSTALL = re.compile(r"pip install [^&]*\buv==(\S+)")
# The python image's PATH, which the runtime stage's `PATH=/opt/venv/bin:$PATH` extends.
BASE_IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def stage(name: str) -> Stage:
    (found,) = [s for s in stages() if s.name == name]
    return found


def final() -> Stage:
    return stages()[-1]


# --- reading the Dockerfile -------------------------------------------------------------------


def test_multi_stage_build_installs_from_the_lock() -> None:
    python_stages = [s for s in stages() if s.base.startswith("python:")]
    assert len(python_stages) >= 2
    syncs = [r for r in stage("builder").all("RUN") if "uv sync" in r.arguments]
    assert len(syncs) == 2
    for run in syncs:
        _, command = run.flags()
        assert "--locked" in command.split() or "--frozen" in command.split()
        assert "--no-dev" in command.split()


def uv_version() -> str:
    """The uv the builder installs."""
    (version,) = [
        match[1]
        for run in stage("builder").all("RUN")
        if (match := UV_INSTALL.search(run.arguments))
    ]
    return version


def test_uv_is_the_version_the_project_pins() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (pin,) = [d for d in pyproject["dependency-groups"]["dev"] if d.startswith("uv==")]
    assert uv_version() == pin.removeprefix("uv==")
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^UV_VERSION := {re.escape(uv_version())}$", makefile, re.M)


def test_nothing_comes_from_an_image_registry_but_the_base() -> None:
    """No registry is reachable where the tier builds: no frontend image, no `COPY --from` one."""
    assert not DOCKERFILE.read_text().startswith("# syntax=")
    names = {s.name for s in stages()}
    for copy in (c for s in stages() for c in s.all("COPY")):
        assert copy.flags()[0].get("from", "builder") in names
    assert {s.base for s in stages()} == {"python:3.11-slim-bookworm"}


def test_the_ca_secret_reaches_only_the_install_steps() -> None:
    """A proxy's CA bundle is mounted over the base's for the steps that download, no others."""
    for s in stages():
        for run in s.all("RUN"):
            downloads = "uv " in run.arguments or "pip install" in run.arguments
            mounted = "--mount=type=secret,id=ca,target=/etc/ssl/certs/ca-certificates.crt" in (
                run.arguments
            )
            assert mounted == (downloads and s.name == "builder"), run.arguments
            assert "required=true" not in run.arguments, "a user's own build gives no secret"


def test_final_stage_runs_unprivileged_with_the_serving_environment() -> None:
    (user,) = final().all("USER")
    uid, _, gid = user.arguments.partition(":")
    assert int(uid) >= 10000 and int(gid) >= 10000
    env = final().env()
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
    # The image's own LOANOPS_* variables are settings too (LOANOPS_PROJECT_DIR is prefect.yaml's).
    from loanops.settings import Settings

    fields = set(Settings.environment_variables())
    assert {k for k in env if k.startswith("LOANOPS_")} - fields == {"LOANOPS_PROJECT_DIR"}
    assert final().all("CMD")[0].exec_form() == [
        "loanops",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    ]


def test_final_stage_has_no_build_tools() -> None:
    copied_from = {copy.flags()[0].get("from") for copy in final().all("COPY")}
    assert copied_from == {"builder"}, "the final stage copies the venv and the source only"
    for run in final().all("RUN"):
        installed = re.findall(r"apt-get install ([^&]*)", run.arguments)
        packages = {w for text in installed for w in text.split() if not w.startswith("-")}
        assert packages <= {"tini"}, packages
        assert not BUILD_TOOLS.search(run.arguments.replace("apt-get", "")), run.arguments


def test_build_context_admits_only_what_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "**", "the context starts empty"
    admitted = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    sources = {
        source
        for copy in stage("builder").all("COPY")
        if "from" not in copy.flags()[0]
        for source in copy.flags()[1].split()[:-1]
    }
    assert sources == admitted
    assert not admitted & {".env", ".git", ".venv", ".loanops", "tests", "manifests"}


# --- replaying the build ----------------------------------------------------------------------


@dataclass
class Image:
    """The replayed image: its /app, its venv, and the environment its processes get."""

    app: Path
    venv: Path
    env: dict[str, str]

    def run(self, argv: list[str], **kwargs: object) -> subprocess.Popen[str]:
        return subprocess.Popen(
            argv,
            cwd=self.app,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            **kwargs,  # type: ignore[call-overload]
        )


def mapped(value: str, paths: dict[str, Path]) -> str:
    """An image path in a value, moved to where the replay keeps it."""
    for image_path, here in paths.items():
        value = re.sub(rf"(?<![\w/]){re.escape(image_path)}(?=/|$|:)", str(here), value)
    return value


def replay_builder(root: Path) -> Image:
    app, venv, home, tools = root / "app", root / "venv", root / "home", root / "bin"
    for folder in (app, home, tools):
        folder.mkdir()
    uv = Path(sys.executable).parent / "uv"
    (tools / "uv").symlink_to(uv)
    venv_uv = subprocess.run([uv, "--version"], capture_output=True, text=True, check=True)
    assert venv_uv.stdout.split()[1] == uv_version()
    paths = {"/opt/venv": venv, "/app": app, "/home/loanops": home}
    # The interpreter behind the test venv stands in for the image's /usr/local/bin/python3.
    paths["/usr/local/bin/python3"] = Path(getattr(sys, "_base_executable", sys.executable))

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    clean["PATH"] = f"{tools}:{clean['PATH']}"
    workdir = app
    builder = stage("builder")
    env = {k: mapped(v, paths) for k, v in builder.env().items() if k not in NOT_REPLAYED_ENV}
    for instruction in builder.instructions:
        flags, rest = instruction.flags()
        if instruction.keyword == "WORKDIR":
            workdir = Path(mapped(rest, paths))
        elif instruction.keyword == "COPY" and "from" not in flags:
            *sources, target = rest.split()
            for source in sources:
                destination = (workdir / target).resolve()
                if target.endswith("/"):
                    destination = destination / Path(source).name
                if (ROOT / source).is_dir():
                    shutil.copytree(
                        ROOT / source,
                        destination,
                        ignore=shutil.ignore_patterns("__pycache__", "*.py[cod]"),
                    )
                else:
                    shutil.copy2(ROOT / source, destination)
        elif instruction.keyword == "RUN" and UV_INSTALL.search(rest):
            continue  # the venv's uv stands in for it, checked above
        elif instruction.keyword == "RUN":
            assert rest.startswith("uv "), f"the builder runs only uv here, not {rest!r}"
            result = subprocess.run(
                ["bash", "-c", rest],
                cwd=workdir,
                env={**clean, **env},
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert result.returncode == 0, f"{rest}\n{result.stderr[-3000:]}"
    runtime_env = {k: mapped(v, paths) for k, v in final().env().items()}
    runtime_env["PATH"] = runtime_env["PATH"].replace("$PATH", BASE_IMAGE_PATH)
    return Image(app, venv, runtime_env)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    root = tmp_path_factory.mktemp("image")
    yield replay_builder(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.integration
def test_the_venv_holds_the_locked_runtime_and_no_dev_tools(image: Image) -> None:
    bin_dir = image.venv / "bin"
    for command in ("loanops", "mlflow", "prefect", "celery", "uvicorn", "alembic"):
        assert (bin_dir / command).exists(), command
    for dev_tool in ("pytest", "ruff", "mypy", "uv"):
        assert not (bin_dir / dev_tool).exists(), dev_tool


@pytest.mark.integration
def test_default_command_serves_the_api(image: Image) -> None:
    argv = final().all("CMD")[0].exec_form()
    port = free_port()
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    env = {**image.env, "LOANOPS_ENV": "dev"}
    process = subprocess.Popen(
        argv, cwd=image.app, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        health = wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2),
            timeout=90,
            what="the API's /healthz to answer",
            interval=0.5,
            ignoring=(httpx.TransportError,),
            given_up=lambda: exited(process, "the API"),
            # Its output can be read without blocking only once it has exited.
            details=lambda: process.communicate()[0][-3000:] if process.poll() is not None else "",
        )
        assert health.status_code == 200
        # No model is registered here, so the API is alive but not ready.
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 503
        # Kubernetes stops a pod with SIGTERM: uvicorn shuts down cleanly, then re-raises it.
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)
        log = process.communicate()[0]
        assert "Finished server process" in log, log[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def manifest_commands(render: Render, image_name: str) -> set[tuple[str, ...]]:
    """Every command line a container of `image_name` runs, probes and flow runs included."""
    commands: set[tuple[str, ...]] = {tuple(FLOW_RUN_COMMAND)}
    for _, template in workloads(render.objects):
        for container in containers(template["spec"]):
            if not container["image"].startswith(image_name):
                continue
            commands.add(tuple(container.get("command", []) + container.get("args", [])))
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if "exec" in container.get(probe, {}):
                    commands.add(tuple(container[probe]["exec"]["command"]))
    return commands


def help_command(argv: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The command's --help invocation, and the options the manifest passes it."""
    words = list(argv)
    fixed = 3 if words[:2] == ["python", "-m"] else 0
    first_option = next(
        (i for i, w in enumerate(words) if i >= fixed and w.startswith("-")), len(words)
    )
    options = [w.split("=")[0] for w in words[first_option:] if w.startswith("--")]
    return words[:first_option] + ["--help"], options


@pytest.mark.integration
def test_every_command_the_manifests_run_exists_in_the_image(
    image: Image, renders: dict[str, Render]
) -> None:
    production = renders["production"]
    loanops_image = production.get("Deployment", "loanops-api")["spec"]["template"]["spec"][
        "containers"
    ][0]["image"].partition("@")[0]
    commands = manifest_commands(production, loanops_image)
    assert {c[:2] for c in commands} >= {
        ("loanops", "serve"),
        ("loanops", "worker"),
        ("mlflow", "server"),
        ("prefect", "worker"),
        ("prefect", "flow-run"),
    }
    runs = {}
    env = {**image.env, "COLUMNS": "250", "NO_COLOR": "1", "LOANOPS_ENV": "dev"}
    for argv in sorted(commands):
        if argv[:2] == ("python", "-c"):
            compile(argv[2], "sync-work-pool", "exec")  # an inline script: it must parse
            continue
        help_argv, options = help_command(argv)
        runs[argv] = (
            options,
            subprocess.Popen(
                help_argv,
                cwd=image.app,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ),
        )
    failures = []
    for argv, (options, run) in runs.items():
        output, _ = run.communicate(timeout=180)
        if run.returncode != 0:
            failures.append(f"{' '.join(argv)}: --help exited {run.returncode}\n{output[-1500:]}")
            continue
        missing = [option for option in options if option not in output]
        if missing:
            failures.append(f"{' '.join(argv)}: --help does not list {missing}")
    assert failures == [], "\n".join(failures)
