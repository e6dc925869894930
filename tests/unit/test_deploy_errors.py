"""The deploy flow's errors: one line that says what to do, retries for what a retry can fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import urllib3
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException
from prefect.states import Failed
from typer.testing import CliRunner

from cli.app import app
from cli.errors import clear_error_types
from flows.deploy.kube import (
    DeployError,
    KubeApiError,
    kube_call,
    kube_client,
    transient_kube_error,
)
from flows.deploy.rollout import RolloutError
from loanops.settings import KubeSettings, Settings

NAMESPACE = "loan-default-prediction"


@pytest.fixture(autouse=True)
def no_cluster_configured(
    no_loanops_environment: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Nor a kubeconfig of the caller's, and the settings' home in the test's folder."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("LOANOPS_HOME", str(tmp_path))


def refused(status: int, reason: str, message: str) -> ApiException:
    """An ApiException as the client raises it for a Status answer."""
    error = ApiException(status=status, reason=reason)
    error.body = json.dumps({"kind": "Status", "code": status, "message": message})
    return error


def raised_by(error: Exception, verb: str = "patch", name: str | None = "loanops-api") -> str:
    client = ApiClient(Configuration(host="https://10.0.0.1:6443"))
    with (
        pytest.raises(KubeApiError) as raised,
        kube_call(client, verb, "deployments.apps", NAMESPACE, name),
    ):
        raise error
    return str(raised.value)


def test_forbidden_names_the_verb_the_resource_the_namespace_and_the_role() -> None:
    server = (
        'deployments.apps "loanops-api" is forbidden: User "system:serviceaccount:'
        f'{NAMESPACE}:loanops-flows" cannot patch resource "deployments" in API group "apps" '
        f'in the namespace "{NAMESPACE}"'
    )

    message = raised_by(refused(403, "Forbidden", server))

    assert message == (
        f"forbidden: the deploy flow may not patch deployments.apps in namespace {NAMESPACE}: "
        "grant it in Role loanops-deployer (manifests/base/rbac.yaml: apiGroups [apps], "
        "resources [deployments], verbs [patch]), bound to ServiceAccount loanops-flows. "
        f"The API server said: {server}"
    )


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (refused(404, "Not Found", 'deployments.apps "loanops-api" not found'),
         f"deployments.apps loanops-api does not exist in namespace {NAMESPACE}; check "
         "LOANOPS_KUBE_NAMESPACE and LOANOPS_KUBE_DEPLOYMENTS"),
        (refused(422, "Unprocessable Entity", "testing value failed"),
         "the API refused the patch of deployments.apps loanops-api: testing value failed; "
         "when its `test` ops failed, the Deployment changed while the flow read it"),
        (refused(401, "Unauthorized", "Unauthorized"),
         "the Kubernetes API did not accept the flow's credentials: Unauthorized"),
        (refused(503, "Service Unavailable", "etcd leader changed"),
         f"patch deployments.apps loanops-api in namespace {NAMESPACE} failed: 503 etcd leader"),
        (ApiException(status=500, reason="Internal Server Error"),
         "failed: 500 Internal Server Error"),
        (urllib3.exceptions.MaxRetryError(
            urllib3.HTTPSConnectionPool("10.0.0.1", 6443), "/apis",
            reason=ConnectionRefusedError(111, "Connection refused")),
         "cannot reach the Kubernetes API at https://10.0.0.1:6443"),
    ],
)  # fmt: skip
def test_api_failures_become_one_line_that_says_what_to_check(error: Exception, says: str) -> None:
    message = raised_by(error)

    assert says in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("status", "retried"),
    [(None, True), (429, True), (500, True), (503, True),
     (401, False), (403, False), (404, False), (409, False), (422, False)],
)  # fmt: skip
def test_only_transient_api_errors_are_retried(status: int | None, retried: bool) -> None:
    assert transient_kube_error(None, None, Failed(data=KubeApiError("x", status))) is retried


@pytest.mark.parametrize("error", [DeployError("x"), RolloutError("x"), ValueError("a bug")])
def test_refusals_and_bugs_are_not_retried(error: Exception) -> None:
    assert transient_kube_error(None, None, Failed(data=error)) is False


def test_the_cli_explains_deploy_errors_in_one_line() -> None:
    assert issubclass(DeployError, clear_error_types())
    assert issubclass(RolloutError, clear_error_types())


def test_no_cluster_is_touched_unless_one_is_configured() -> None:
    with pytest.raises(DeployError, match="no cluster is configured: set LOANOPS_DEPLOY_TARGET"):
        kube_client(Settings())


def test_a_missing_kubeconfig_is_one_clear_line(tmp_path: Path) -> None:
    settings = Settings(kube=KubeSettings(deploy_target="kubernetes", config=tmp_path / "absent"))

    with pytest.raises(
        DeployError, match="no usable Kubernetes configuration .*LOANOPS_KUBE_CONFIG"
    ):
        kube_client(settings)


def test_deploy_without_a_cluster_refuses_in_one_line() -> None:
    result = CliRunner().invoke(app, ["deploy", "--dry-run"])

    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: no cluster is configured: set LOANOPS_DEPLOY_TARGET=kubernetes (and, outside "
        "the cluster, LOANOPS_KUBE_CONFIG to a kubeconfig file)"
    ]


@pytest.mark.parametrize("version", ["v2", "latest", "2.0"])
def test_a_version_must_be_a_number(version: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOANOPS_DEPLOY_TARGET", "kubernetes")

    result = CliRunner().invoke(app, ["deploy", "--version", version])

    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: --version takes a version number such as 3, not {version!r}"
    )
