"""A Docker engine for the container tier, a base image from Debian's packages, and the build.

No image registry is reachable from our machines, so nothing here pulls: the base image is made
with debootstrap from the Debian mirror apt already uses and imported under a fixed name (made
once, then found by that name), and the image is built from it with the engine's built-in
BuildKit frontend. The machine's CA bundle reaches the build as the secret `ca`, which only the
install steps mount.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.services import _process_group, _tail
from tests.waiting import wait_for

BASE_IMAGE = "loanops-base:bookworm"
"""The made base image; delete it (`docker rmi`) to make it again."""
BASE_PYTHON = "/usr/bin/python3"
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
SUITE = "bookworm"
# `docker import` keeps no environment; these are what the python images set too.
BASE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
)
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
DOCKER_ENV = "LOANOPS_TEST_DOCKER"
MIRROR_ENV = "LOANOPS_TEST_DEBIAN_MIRROR"
ENGINE_READY_TIMEOUT_S = 60.0


class EngineMissing(RuntimeError):
    """No Docker engine answers, and none can be started here."""


@dataclass(frozen=True)
class Engine:
    """A Docker client that can build with BuildKit, and the engine it talks to."""

    client: str

    def run(
        self, *args: str, timeout: float = 120, check: bool = True, **kwargs: object
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.client, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,  # type: ignore[call-overload]
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
            )
        return result

    def answers(self) -> bool:
        return self.run("info", "--format", "{{.ServerVersion}}", timeout=20, check=False) \
            .returncode == 0  # fmt: skip

    def has_image(self, name: str) -> bool:
        return self.run("image", "inspect", name, check=False, timeout=30).returncode == 0

    def image_size(self, name: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", name).stdout)


def client() -> str:
    """A Docker client that builds with BuildKit.

    A client of version 23 or later needs the buildx plugin for that; Debian's docker.io client
    (20.10) has BuildKit built in. `$LOANOPS_TEST_DOCKER` names one explicitly.
    """
    if configured := os.environ.get(DOCKER_ENV):
        return configured
    on_path = shutil.which("docker")
    if on_path is not None:
        buildx = subprocess.run(
            [on_path, "buildx", "version"], capture_output=True, text=True, timeout=30
        )
        if buildx.returncode == 0:
            return on_path
    debian = Path("/usr/bin/docker")
    if debian.exists():
        return str(debian)
    if on_path is None:
        raise EngineMissing("no docker client on PATH (Debian: apt-get install docker.io)")
    return on_path


def dockerd() -> str | None:
    return shutil.which("dockerd") or next(
        (str(p) for p in (Path("/usr/sbin/dockerd"), Path("/usr/bin/dockerd")) if p.exists()), None
    )


@contextlib.contextmanager
def docker_engine(log_dir: Path) -> Iterator[Engine]:
    """The running engine; when none answers, `dockerd` started here as root and stopped after.

    It runs with `--iptables=false --bridge=none`: containers get host networking only, and the
    engine leaves the host's firewall alone.

    Raises:
        EngineMissing: No engine answers and dockerd is missing, or this is not root.
    """
    engine = Engine(client())
    if engine.answers():
        yield engine
        return
    binary = dockerd()
    if binary is None:
        raise EngineMissing(
            "no Docker engine: `docker info` fails and dockerd is not installed "
            "(Debian: apt-get install docker.io); the container tier needs one"
        )
    if os.geteuid() != 0:
        raise EngineMissing(
            f"no Docker engine answers, and {binary} must be started as root "
            "(sudo dockerd --iptables=false --bridge=none)"
        )
    log_path = log_dir / "dockerd.log"
    with _process_group(
        [binary, "--iptables=false", "--bridge=none"],
        log_path,
        stop_signal=signal.SIGTERM,
        grace=30.0,
    ) as process:
        wait_for(
            engine.answers,
            timeout=ENGINE_READY_TIMEOUT_S,
            what="the Docker engine started here",
            interval=0.5,
            given_up=lambda: None if process.poll() is None else "dockerd exited",
            details=lambda: _tail(log_path),
        )
        yield engine


def debian_mirror() -> str:
    """The Debian archive apt is configured with (`$LOANOPS_TEST_DEBIAN_MIRROR` overrides it)."""
    if configured := os.environ.get(MIRROR_ENV):
        return configured
    files: list[Path] = []
    for source in APT_SOURCES:
        if source.is_dir():
            files += sorted(source.glob("*.sources")) + sorted(source.glob("*.list"))
        elif source.exists():
            files.append(source)
    for path in files:
        text = path.read_text(errors="replace")
        # One-line form: `deb [options] URI SUITE COMPONENTS`.
        for match in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", text, re.M):
            if match[2] == SUITE:
                return match[1]
        # deb822 form: stanzas of `URIs:` and `Suites:`.
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites[1].split():
                return uris[1]
    raise EngineMissing(
        f"no Debian {SUITE} mirror in {', '.join(map(str, APT_SOURCES))}; set {MIRROR_ENV}"
    )


def ensure_base_image(engine: Engine, log_dir: Path) -> float | None:
    """Make `BASE_IMAGE` with debootstrap unless the engine has it; the seconds it took, if made."""
    if engine.has_image(BASE_IMAGE):
        return None
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(debootstrap).exists():
        raise EngineMissing(
            f"the base image {BASE_IMAGE} is missing and debootstrap is not installed "
            "(Debian: apt-get install debootstrap)"
        )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="loanops-rootfs-") as folder:
        rootfs = Path(folder) / "rootfs"
        with (log_dir / "debootstrap.log").open("w") as log:
            made = subprocess.run(
                [
                    debootstrap,
                    "--variant=minbase",
                    f"--include={BASE_PACKAGES}",
                    SUITE,
                    str(rootfs),
                    debian_mirror(),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=900,
            )
        assert made.returncode == 0, _tail(log_dir / "debootstrap.log")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        changes = [word for change in BASE_CHANGES for word in ("--change", change)]
        engine.run("import", *changes, "-", BASE_IMAGE, stdin=tar.stdout, timeout=300)
        assert tar.wait(timeout=60) == 0
    return time.monotonic() - started


def build_image(engine: Engine, context: Path, tag: str, log_path: Path) -> None:
    """`docker build` the repository's Dockerfile on `BASE_IMAGE`, host networking only."""
    command = [
        engine.client,
        "build",
        "--network", "host",
        "--progress", "plain",
        "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}",
        "--build-arg", f"PYTHON={BASE_PYTHON}",
        "--tag", tag,
    ]  # fmt: skip
    bundle = os.environ.get("SSL_CERT_FILE")
    if bundle and Path(bundle).is_file():
        command += ["--secret", f"id=ca,src={bundle}"]
    with log_path.open("w") as log:
        built = subprocess.run(
            [*command, str(context)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
            timeout=1800,
        )
    assert built.returncode == 0, f"docker build failed:\n{_tail(log_path, 60)}"


@dataclass(frozen=True)
class Container:
    """A running container, known by its id."""

    engine: Engine
    id: str
    name: str

    def logs(self) -> str:
        result = self.engine.run("logs", self.id, check=False, timeout=60)
        return result.stdout + result.stderr

    def running(self) -> bool:
        state = self.engine.run(
            "inspect", "--format", "{{.State.Running}}", self.id, check=False, timeout=30
        )
        return state.stdout.strip() == "true"

    def exited(self) -> str | None:
        """For `wait_for(given_up=...)`: a message once the container has stopped."""
        return None if self.running() else f"the container {self.name} stopped"

    def exec(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.engine.run("exec", self.id, *argv, check=False, timeout=timeout)

    def wait(self, timeout: float) -> int:
        """Wait for the container to exit on its own; its exit code."""
        result = self.engine.run("wait", self.id, timeout=timeout)
        return int(result.stdout.strip())

    def state(self) -> dict[str, object]:
        inspected = json.loads(self.engine.run("inspect", self.id).stdout)
        return dict(inspected[0]["State"])


@contextlib.contextmanager
def running_container(
    engine: Engine, image: str, name: str, options: list[str], argv: list[str], log_dir: Path
) -> Iterator[Container]:
    """`docker run -d` the image; on exit its log is kept in `log_dir` and it is removed.

    A container that is still running gets `docker stop` (SIGTERM to tini, which passes it on,
    then SIGKILL after the grace period), as Kubernetes stops a pod.
    """
    started = engine.run("run", "--detach", "--name", name, *options, image, *argv)
    container = Container(engine, started.stdout.strip(), name)
    try:
        yield container
    finally:
        if container.running():
            engine.run("stop", "--time", "30", container.id, check=False, timeout=90)
        (log_dir / f"{name}.log").write_text(container.logs())
        engine.run("rm", "--force", container.id, check=False, timeout=60)
