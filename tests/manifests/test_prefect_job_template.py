"""The work pool's base job template: what every flow run's Kubernetes Job is made from."""

from __future__ import annotations

import json
import re

from prefect.utilities.templating import apply_values
from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

from tests.manifests.flowrun import base_job_template, variable_defaults
from tests.manifests.kube import NAMESPACE, Render

PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def test_pods_get_minutes_to_start_not_seconds() -> None:
    # Prefect's default of 60 s marks runs Crashed while their pod is still Pending.
    defaults = variable_defaults(base_job_template())
    assert defaults["pod_watch_timeout_seconds"] >= 600


def test_flow_runs_run_as_the_deployer_in_our_namespace() -> None:
    defaults = variable_defaults(base_job_template())
    assert defaults["namespace"] == NAMESPACE
    assert defaults["service_account_name"] == "loanops-flows"


def test_every_placeholder_is_a_declared_variable() -> None:
    template = base_job_template()
    used = set(PLACEHOLDER.findall(str(template["job_configuration"])))
    assert used <= set(template["variables"]["properties"])


def test_the_worker_syncs_this_template_into_its_pool(renders: dict[str, Render]) -> None:
    for render in renders.values():
        spec = render.get("Deployment", "prefect-worker")["spec"]["template"]["spec"]
        (sync,) = spec["initContainers"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        (mount,) = [m for m in sync["volumeMounts"] if m["mountPath"] == "/etc/prefect"]
        name = volumes[mount["name"]]["configMap"]["name"]
        assert name.startswith("prefect-base-job-template")
        shipped = json.loads(render.get("ConfigMap", name)["data"]["base-job-template.json"])
        assert shipped == base_job_template()
        script = sync["args"][2]
        assert "loanops-k8s" in script and "--overwrite" in script
        worker_args = spec["containers"][0]["args"]
        assert worker_args[worker_args.index("--pool") + 1] == "loanops-k8s"
        assert worker_args[worker_args.index("--type") + 1] == "kubernetes"


def test_prefect_kubernetes_accepts_the_template() -> None:
    # The worker's own validation: prefect-kubernetes is a declared dependency (the image needs it).
    template = base_job_template()
    values = variable_defaults(template)
    configuration = KubernetesWorkerJobConfiguration(
        **apply_values(template["job_configuration"], values)
    )
    assert configuration.pod_watch_timeout_seconds == values["pod_watch_timeout_seconds"]
