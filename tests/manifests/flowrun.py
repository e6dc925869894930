"""The Kubernetes Job that Prefect's worker would create for a flow run, from our template.

The work pool's base job template (manifests/base/prefect/base-job-template.json) is JSON in a
ConfigMap, so kustomize and checkov never see the Job it describes. This fills it in the way
the Prefect worker does, with Prefect's own templating, so the tests can check that Job too.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from tests.manifests.kube import BASE_JOB_TEMPLATE

FLOW_RUN_COMMAND = ["prefect", "flow-run", "execute"]


def base_job_template() -> dict[str, Any]:
    template: dict[str, Any] = json.loads(BASE_JOB_TEMPLATE.read_text())
    return template


def variable_defaults(template: dict[str, Any]) -> dict[str, Any]:
    properties = template["variables"]["properties"]
    return {name: spec["default"] for name, spec in properties.items() if "default" in spec}


def flow_run_job(image: str) -> dict[str, Any]:
    """The Job for one flow run on `image`, as a plain manifest.

    Two departures from what Prefect submits, both for the validators: `generateName` becomes a
    `name`, and the pod spec loses `parallelism` and `completions`, which prefect-kubernetes
    insists on finding there (it refuses a template without them) although they are Job fields
    that the API server drops from a pod spec.
    """
    from prefect.utilities.templating import apply_values  # Prefect takes seconds to import

    template = base_job_template()
    values = {
        **variable_defaults(template),
        "image": image,
        "name": "loanops-flow-run",
        "command": FLOW_RUN_COMMAND,
        "env": [{"name": "PREFECT__FLOW_RUN_ID", "value": "0"}],
        "labels": {"prefect.io/flow-run-id": "0"},
    }
    job: dict[str, Any] = apply_values(
        copy.deepcopy(template["job_configuration"]["job_manifest"]), values
    )
    job["metadata"]["name"] = job["metadata"].pop("generateName").rstrip("-")
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec.pop("parallelism") == 1
    assert pod_spec.pop("completions") == 1
    return job
