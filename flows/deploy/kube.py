"""The deploy flow's calls to the Kubernetes API, and errors that say what to do about a refusal.

Through the official `kubernetes` client; the flow needs exactly Role `loanops-deployer`
(manifests/base/rbac.yaml): get and patch on Deployments, list on ReplicaSets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import urllib3
from kubernetes import config as kube_config
from kubernetes.client import ApiClient, AppsV1Api, Configuration, V1Deployment
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from prefect.states import State

from flows.deploy.rollout import JsonPatch
from loanops.settings import Settings

DEPLOYER_ROLE = "loanops-deployer"
DEPLOYER_ACCOUNT = "loanops-flows"
JSON_PATCH = "application/json-patch+json"


class DeployError(RuntimeError):
    """The deploy cannot go ahead, or could not finish; the message says why in one line."""


class KubeApiError(DeployError):
    """A call to the Kubernetes API failed; `status` is its HTTP status, None when unreachable."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        """Whether a second attempt may succeed: unreachable, throttled, or a server error."""
        return self.status is None or self.status == 429 or self.status >= 500


def transient_kube_error(task: Any, task_run: Any, state: State) -> bool:
    """Retry what a second attempt can fix; a refusal (401, 403, 404, 422) it cannot."""
    error = state.data
    return isinstance(error, KubeApiError) and error.transient


# Kubernetes calls are retried like the tracking server's: as data, transient errors only.
KUBE_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": [2, 5, 15],
    "retry_condition_fn": transient_kube_error,
}


def require_cluster(settings: Settings) -> None:
    """Refuse to touch a cluster unless one is configured explicitly."""
    if settings.kube.deploy_target != "kubernetes":
        raise DeployError(
            "no cluster is configured: set LOANOPS_DEPLOY_TARGET=kubernetes (and, outside the "
            "cluster, LOANOPS_KUBE_CONFIG to a kubeconfig file)"
        )


def kube_client(settings: Settings) -> ApiClient:
    """A client for the configured cluster: the kubeconfig file given, else the pod's service
    account inside the cluster, else KUBECONFIG or ~/.kube/config, as kubectl."""
    require_cluster(settings)
    try:
        if settings.kube.config is not None:
            return kube_config.new_client_from_config(
                config_file=str(settings.kube.config), persist_config=False
            )
        try:
            configuration = Configuration()
            kube_config.load_incluster_config(client_configuration=configuration)
            return ApiClient(configuration)
        except ConfigException:
            return kube_config.new_client_from_config(persist_config=False)
    except (ConfigException, OSError) as error:
        raise DeployError(
            f"no usable Kubernetes configuration ({error}): set LOANOPS_KUBE_CONFIG to a "
            "kubeconfig file, or run the flow inside the cluster"
        ) from error


def _server_message(error: ApiException) -> str:
    """The `message` of the Status object the API server answered with, else its reason."""
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(error.reason or "no reason given")


@contextmanager
def kube_call(
    client: ApiClient, verb: str, resource: str, namespace: str, name: str | None = None
) -> Iterator[None]:
    """Turn a failed API call into a `KubeApiError` that says what to do about it.

    Args:
        client: the client making the call, for the server's address.
        verb: the RBAC verb of the call (`get`, `list`, `patch`).
        resource: the resource with its API group, as RBAC names it (`deployments.apps`).
        namespace: where.
        name: the object, for calls on one.
    """
    what = f"{resource} {name}" if name else resource
    try:
        yield
    except ApiException as error:
        status = int(error.status) if error.status else None
        said = _server_message(error)
        if status == 403:
            plural, _, group = resource.partition(".")
            groups = group or '""'  # RBAC's name for the core API group
            rule = f"apiGroups [{groups}], resources [{plural}], verbs [{verb}]"
            message = (
                f"forbidden: the deploy flow may not {verb} {resource} in namespace {namespace}: "
                f"grant it in Role {DEPLOYER_ROLE} (manifests/base/rbac.yaml: {rule}), bound to "
                f"ServiceAccount {DEPLOYER_ACCOUNT}. The API server said: {said}"
            )
        elif status == 401:
            message = f"the Kubernetes API did not accept the flow's credentials: {said}"
        elif status == 404 and name:
            message = (
                f"{what} does not exist in namespace {namespace}; check LOANOPS_KUBE_NAMESPACE "
                f"and LOANOPS_KUBE_DEPLOYMENTS ({said})"
            )
        elif status == 422 and verb == "patch":
            message = (
                f"the API refused the patch of {what}: {said}; when its `test` ops failed, the "
                "Deployment changed while the flow read it: run the deploy again"
            )
        else:
            message = f"{verb} {what} in namespace {namespace} failed: {status} {said}"
        raise KubeApiError(message, status) from error
    except urllib3.exceptions.HTTPError as error:
        reason = getattr(error, "reason", None) or error
        raise KubeApiError(
            f"cannot reach the Kubernetes API at {client.configuration.host}: {reason}", None
        ) from error


def get_deployment(client: ApiClient, namespace: str, name: str) -> V1Deployment:
    with kube_call(client, "get", "deployments.apps", namespace, name):
        deployment: V1Deployment = AppsV1Api(client).read_namespaced_deployment(name, namespace)
    return deployment


def patch_deployment(client: ApiClient, namespace: str, name: str, patch: JsonPatch) -> None:
    with kube_call(client, "patch", "deployments.apps", namespace, name):
        AppsV1Api(client).patch_namespaced_deployment(
            name, namespace, patch, _content_type=JSON_PATCH
        )
