"""`docker run` options read from the manifests' pod specs, so the containers run as the pods do.

From each pod spec: the user and group, the read-only root filesystem, the dropped capabilities
and no privilege escalation, the memory and CPU limits, and every volume mount (an emptyDir
becomes a tmpfs of its size limit, a PersistentVolumeClaim a host folder). The environment is
the ConfigMap and the Secret with the deployment's own addresses replaced by loopback ones.
Networking is the host's: every address a container uses is 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.manifests.kube import BASE, BASE_JOB_TEMPLATE

SIZE = re.compile(r"^(\d+)(Ki|Mi|Gi)?$")
DOCKER_UNITS = {None: "", "Ki": "k", "Mi": "m", "Gi": "g"}


@dataclass(frozen=True)
class PodSpec:
    """One container of a workload and the pod spec around it."""

    pod: dict[str, Any]
    container: dict[str, Any]

    @property
    def args(self) -> list[str]:
        return [str(word) for word in self.container.get("args", [])]

    def probe(self, kind: str) -> list[str]:
        """An exec probe's command (`startupProbe`, `readinessProbe`, ...)."""
        return [str(word) for word in self.container[kind]["exec"]["command"]]

    @property
    def user(self) -> tuple[int, int]:
        security = self.pod.get("securityContext", {})
        return int(security["runAsUser"]), int(security["runAsGroup"])

    def run_options(self, host_dirs: dict[str, Path]) -> list[str]:
        """`docker run` options for this container; `host_dirs` backs each claim by its name."""
        uid, gid = self.user
        security = self.container.get("securityContext", {})
        options = ["--network", "host", "--user", f"{uid}:{gid}"]
        if security.get("readOnlyRootFilesystem"):
            options.append("--read-only")
        for capability in security.get("capabilities", {}).get("drop", []):
            options += ["--cap-drop", capability]
        if security.get("allowPrivilegeEscalation") is False:
            options += ["--security-opt", "no-new-privileges"]
        limits = self.container.get("resources", {}).get("limits", {})
        if SIZE.match(str(limits.get("memory", ""))):
            options += ["--memory", docker_size(str(limits["memory"]))]
        if re.fullmatch(r"\d+m?", str(limits.get("cpu", ""))):
            cpu = str(limits["cpu"])
            options += ["--cpus", str(int(cpu[:-1]) / 1000 if cpu.endswith("m") else int(cpu))]
        volumes = {volume["name"]: volume for volume in self.pod.get("volumes", [])}
        for mount in self.container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            path = mount["mountPath"]
            if "emptyDir" in volume:
                # An emptyDir is writable by the pod's user and allows exec, unlike Docker's
                # default tmpfs.
                size = volume["emptyDir"].get("sizeLimit")
                tmpfs = f"{path}:rw,exec,uid={uid},gid={gid},mode=0700"
                if size is not None:
                    tmpfs += f",size={docker_size(str(size))}"
                options += ["--tmpfs", tmpfs]
            elif "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                options += ["--volume", f"{host_dirs[claim]}:{path}"]
            else:
                raise AssertionError(f"no stand-in for the volume {volume}")
        return options


def docker_size(quantity: str) -> str:
    match = SIZE.match(quantity)
    assert match, f"not a size Docker understands: {quantity}"
    return f"{match[1]}{DOCKER_UNITS[match[2]]}"


def deployment(file: str, name: str) -> PodSpec:
    """The first container of the Deployment `name` in `manifests/base/<file>`."""
    for document in yaml.safe_load_all((BASE / file).read_text()):
        if document and document["kind"] == "Deployment" and document["metadata"]["name"] == name:
            pod = document["spec"]["template"]["spec"]
            return PodSpec(pod, pod["containers"][0])
    raise AssertionError(f"no Deployment {name} in {file}")


def flow_run_job() -> PodSpec:
    """The pod of a Prefect flow run, from the work pool's base job template."""
    template = json.loads(BASE_JOB_TEMPLATE.read_text())
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    return PodSpec(pod, pod["containers"][0])


def manifest_environment() -> dict[str, str]:
    """The ConfigMap's data and the Secret's string data, as `envFrom` gives them to a pod."""
    environment: dict[str, str] = {}
    for file, key in (("configmap.yaml", "data"), ("secret.yaml", "stringData")):
        (document,) = yaml.safe_load_all((BASE / file).read_text())
        environment |= {name: str(value) for name, value in document[key].items()}
    return environment


def env_options(environment: dict[str, str], folder: Path) -> list[str]:
    """`--env-file` for `environment`, written to `folder` (kept out of `ps` and the log)."""
    path = folder / f"env-{len(os.listdir(folder))}.list"
    path.write_text("".join(f"{name}={value}\n" for name, value in environment.items()))
    return ["--env-file", str(path)]
