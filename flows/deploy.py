"""Deploy: pin the production version on the serving Deployments → wait → roll back on failure.

The step after `promote` when a cluster is configured (`LOANOPS_DEPLOY_TARGET=kubernetes`).
Each Deployment in `kube_deployments` gets `LOANOPS_MODEL_REF=models:/NAME/VERSION` on its pod
template, so Kubernetes rolls out a ReplicaSet that serves that one version. The rollout is
judged by kubectl's rules; when one fails (ProgressDeadlineExceeded) or outlasts
`rollout_timeout_seconds`, every patched Deployment goes back to its previous ReplicaSet's
template, as `kubectl rollout undo` does, and the production alias goes back to the previous
champion. Either way the outcome is appended to the promotion log.

The decisions are pure functions in `loanops.rollout`; this module does the I/O, through the
official `kubernetes` client, and needs exactly Role `loanops-deployer` (manifests/base/rbac.yaml):
get and patch on Deployments, list on ReplicaSets.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import urllib3
from kubernetes import config as kube_config
from kubernetes.client import ApiClient, AppsV1Api, Configuration, V1Deployment
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import State

from flows.common import TRACKING_RETRIES, settings_for
from loanops import registry, rollout
from loanops.rollout import JsonPatch, RolloutStatus
from loanops.settings import Settings

POLL_SECONDS = 5.0
"""How often the flow reads the Deployments while it waits. kubectl watches instead; polling
needs only `get`, and lets a test drive the wait with a scripted clock."""
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


class Clock(Protocol):
    """What the flow waits by; tests inject one that a scripted controller advances."""

    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class Release:
    """The version to pin, and the champion it replaced (where a rollback moves the alias)."""

    model_name: str
    version: str
    model_ref: str
    previous_version: str | None


@dataclass(frozen=True)
class Verdict:
    """How the wait ended: every rollout done, one failed, or time ran out."""

    outcome: Literal["done", "failed", "timed_out"]
    rollouts: dict[str, str]
    reason: str


Outcome = Literal["dry_run", "unchanged", "deployed", "rolled_back"]


@dataclass(frozen=True)
class DeployResult:
    """What the deploy did: the patches, each rollout's last word, and where production is."""

    outcome: Outcome
    version: str
    model_ref: str
    namespace: str
    patches: dict[str, JsonPatch]
    """Per Deployment, the JSON patch sent (or, on a dry run, that would be sent)."""
    rollouts: dict[str, str] = field(default_factory=dict)
    production_version: str | None = None
    reasons: tuple[str, ...] = ()
    record_run_id: str | None = None


def require_cluster(settings: Settings) -> None:
    """Refuse to touch a cluster unless one is configured explicitly."""
    if settings.deploy_target != "kubernetes":
        raise DeployError(
            "no cluster is configured: set LOANOPS_DEPLOY_TARGET=kubernetes (and, outside the "
            "cluster, LOANOPS_KUBE_CONFIG to a kubeconfig file)"
        )


def kube_client(settings: Settings) -> ApiClient:
    """A client for the configured cluster: the kubeconfig file given, else the pod's service
    account inside the cluster, else KUBECONFIG or ~/.kube/config, as kubectl."""
    require_cluster(settings)
    try:
        if settings.kube_config is not None:
            return kube_config.new_client_from_config(
                config_file=str(settings.kube_config), persist_config=False
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


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def resolve_release(settings: Settings, version: str | None) -> Release:
    """The version to pin: the one holding the production alias, which `version` must name."""
    if version is not None and not version.isdigit():
        raise DeployError(f"a version is a number such as 3, not {version!r}")
    client = registry.connect(settings)
    production = registry.version_by_alias(client, settings.model_name, settings.production_alias)
    if production is None:
        raise DeployError(
            f"no version of {settings.model_name} holds the {settings.production_alias!r} alias; "
            "promote one first"
        )
    if version is not None and str(production.version) != version:
        raise DeployError(
            f"v{version} is not {settings.production_alias} (v{production.version} is): the "
            f"deploy flow pins the {settings.production_alias} version, so promote v{version} first"
        )
    previous = registry.version_by_alias(client, settings.model_name, settings.previous_alias)
    previous_version = str(previous.version) if previous is not None else None
    return Release(
        model_name=settings.model_name,
        version=str(production.version),
        model_ref=rollout.model_ref(settings.model_name, str(production.version)),
        previous_version=previous_version if previous_version != str(production.version) else None,
    )


@task(cache_policy=NO_CACHE, **KUBE_RETRIES)
def read_deployment(settings: Settings, name: str) -> V1Deployment:
    """One Deployment as the API has it."""
    return get_deployment(kube_client(settings), settings.kube_namespace, name)


def plan(
    settings: Settings, release: Release, deployments: dict[str, V1Deployment]
) -> dict[str, JsonPatch]:
    """Per Deployment, the patch that pins the release; refuses before anything is changed."""
    patches: dict[str, JsonPatch] = {}
    for name, container in settings.kube_deployments.items():
        deployment = deployments[name]
        if deployment.spec is not None and deployment.spec.paused:
            raise DeployError(
                f"Deployment {name} is paused, so it would never roll out: resume it with "
                f"`kubectl -n {settings.kube_namespace} rollout resume deployment/{name}`"
            )
        patches[name] = rollout.pin_patch(
            deployment, container, release.model_name, release.version
        )
    return patches


@task(cache_policy=NO_CACHE, **KUBE_RETRIES)
def pin(settings: Settings, name: str, release: Release) -> JsonPatch:
    """Pin one Deployment, from a fresh read: a retry after a lost reply finds it pinned."""
    client = kube_client(settings)
    deployment = get_deployment(client, settings.kube_namespace, name)
    container = settings.kube_deployments[name]
    patch = rollout.pin_patch(deployment, container, release.model_name, release.version)
    if patch:
        patch_deployment(client, settings.kube_namespace, name, patch)
        get_run_logger().info("patched Deployment %s: %s", name, release.model_ref)
    return patch


@task(cache_policy=NO_CACHE)
def wait_for_rollouts(settings: Settings, names: list[str], clock: Clock) -> Verdict:
    """Poll the Deployments until every rollout is done, one fails, or time runs out.

    A transient API error while polling is logged and polling goes on; the timeout still holds.
    """
    logger = get_run_logger()
    client = kube_client(settings)
    deadline = clock.now() + settings.rollout_timeout_seconds
    statuses: dict[str, RolloutStatus] = {}
    while True:
        for name in names:
            if name in statuses and statuses[name].done:
                continue
            try:
                deployment = get_deployment(client, settings.kube_namespace, name)
            except KubeApiError as error:
                if not error.transient:
                    raise
                logger.warning("reading Deployment %s failed, polling on: %s", name, error)
                continue
            status = rollout.rollout_status(deployment)
            if statuses.get(name) != status:
                logger.info("%s", status.message)
            statuses[name] = status
            if status.failed:
                return Verdict("failed", _messages(statuses), status.message)
        if len(statuses) == len(names) and all(s.done for s in statuses.values()):
            return Verdict("done", _messages(statuses), "every rollout finished")
        remaining = deadline - clock.now()
        if remaining <= 0:
            waiting = ", ".join(n for n in names if not (n in statuses and statuses[n].done))
            return Verdict(
                "timed_out",
                _messages(statuses),
                f"the rollout of {waiting} did not finish within "
                f"{settings.rollout_timeout_seconds:g} s (LOANOPS_ROLLOUT_TIMEOUT_SECONDS)",
            )
        clock.sleep(min(POLL_SECONDS, remaining))


def _messages(statuses: dict[str, RolloutStatus]) -> dict[str, str]:
    return {name: status.message for name, status in statuses.items()}


@dataclass(frozen=True)
class Rollback:
    """What became of one Deployment on the way back."""

    rolled_back: bool
    message: str


@task(cache_policy=NO_CACHE, **KUBE_RETRIES)
def roll_back(settings: Settings, name: str, release: Release) -> Rollback:
    """Put a Deployment back on its previous ReplicaSet's template, as `kubectl rollout undo`.

    Only a Deployment that pins the release is touched: one the patch never reached is already
    where it was, and rolling it back would take it one revision too far.
    """
    client = kube_client(settings)
    namespace = settings.kube_namespace
    container = settings.kube_deployments[name]
    deployment = get_deployment(client, namespace, name)
    if rollout.pinned_ref(deployment, container) != release.model_ref:
        return Rollback(False, f"does not pin {release.model_ref}, left as it is")
    selector = deployment.spec.selector.match_labels if deployment.spec else None
    with kube_call(client, "list", "replicasets.apps", namespace):
        replica_sets = (
            AppsV1Api(client)
            .list_namespaced_replica_set(
                namespace,
                label_selector=",".join(f"{k}={v}" for k, v in (selector or {}).items()),
            )
            .items
        )
    target = rollout.previous_revision(deployment, replica_sets)
    restored = rollout.pinned_ref(target, container)
    described = f"revision {rollout.revision(target)} ({restored or 'no pinned model'})"
    patch_deployment(client, namespace, name, rollout.rollback_patch(deployment, target))
    get_run_logger().warning("rolled Deployment %s back to %s", name, described)
    return Rollback(True, f"rolled back to {described}")


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def restore_production(settings: Settings, release: Release) -> tuple[str | None, str]:
    """Move the production alias back to the previous champion, if it still names the release.

    Returns:
        Where the alias points now, and what was done, in words.
    """
    client = registry.connect(settings)
    alias = settings.production_alias
    current = registry.version_by_alias(client, settings.model_name, alias)
    current_version = str(current.version) if current is not None else None
    if current_version != release.version:
        return current_version, (
            f"{alias} moved to v{current_version} meanwhile, so it was left there"
            if current_version
            else f"no version holds {alias} any more, so it was left unset"
        )
    if release.previous_version is None:
        return current_version, (
            f"v{release.version} stays {alias}: no previous champion to move it back to"
        )
    client.set_registered_model_alias(settings.model_name, alias, release.previous_version)
    return release.previous_version, (
        f"{alias} moved back from v{release.version} to v{release.previous_version}"
    )


@task(cache_policy=NO_CACHE, **TRACKING_RETRIES)
def record(settings: Settings, entry: registry.DeployRecord) -> registry.DeployRecord:
    """Append the outcome to the promotion log; a retry finds it instead of adding another."""
    run_id = flow_run.get_id()
    return registry.record_deploy(
        registry.connect(settings),
        settings,
        entry,
        deploy_key=registry.deploy_id(
            settings.model_name, entry.version, str(run_id) if run_id else None
        ),
    )


def _outcome_record(
    settings: Settings,
    release: Release,
    outcome: str,
    rollouts: dict[str, str],
    production_version: str | None,
    reasons: list[str],
) -> registry.DeployRecord:
    run_id = flow_run.get_id()
    user = registry.operator()
    return registry.DeployRecord(
        deployed_at=datetime.now(UTC).isoformat(timespec="seconds"),
        deployed_by=f"{user} via prefect flow run {run_id}" if run_id else user,
        model_name=release.model_name,
        outcome=outcome,
        version=release.version,
        previous_version=release.previous_version,
        production_version=production_version,
        namespace=settings.kube_namespace,
        rollouts=rollouts,
        reasons=reasons,
    )


def undo(
    settings: Settings, release: Release, names: list[str], why: str, rollouts: dict[str, str]
) -> tuple[registry.DeployRecord | None, list[str]]:
    """Roll the patched Deployments back, then the alias, and record it all.

    The alias moves back only once every Deployment is back: while one still runs the new
    version, production names what it runs.

    Returns:
        The record (None when no Deployment carried the pin, so nothing changed), and the
        Deployments whose rollback failed.
    """
    rollouts = dict(rollouts)
    failed: list[str] = []
    changed = False
    for name in names:
        before = f"{rollouts[name]}; " if name in rollouts else ""
        try:
            done = roll_back(settings, name, release)
        except (DeployError, rollout.RolloutError) as error:
            failed.append(name)
            rollouts[name] = f"{before}rollback failed: {error}"
            continue
        changed = changed or done.rolled_back
        rollouts[name] = before + done.message
    if not changed and not failed:
        return None, []
    reasons = [why]
    if failed:
        reasons.append(
            f"{', '.join(failed)} could not be rolled back, so {settings.production_alias} "
            f"stays v{release.version}: undo by hand with `kubectl -n {settings.kube_namespace} "
            "rollout undo deployment/NAME`"
        )
        production_version: str | None = release.version
    else:
        production_version, alias_reason = restore_production(settings, release)
        reasons.append(alias_reason)
    outcome = "rollback_failed" if failed else "rolled_back"
    entry = record(
        settings, _outcome_record(settings, release, outcome, rollouts, production_version, reasons)
    )
    return entry, failed


@flow(name="deploy")
def deploy_flow(
    version: str | None = None,
    dry_run: bool = False,
    model_name: str | None = None,
    # A `Clock`; typed Any because Prefect checks parameters with pydantic, which cannot
    # check against a Protocol.
    clock: Any = None,
) -> DeployResult:
    """Pin the production version on the serving Deployments and see the rollout through.

    Args:
        version: the version to pin; it must be the one holding the production alias (default:
            whichever does). Passing it guards against a promotion that happened meanwhile.
        dry_run: read the Deployments and return the JSON patches, but send none.
        model_name: registered model name (default: settings).
        clock: what the wait polls by (default: the real clock); tests pass a scripted one.
    """
    settings = settings_for(model_name=model_name)
    require_cluster(settings)
    logger = get_run_logger()
    release = resolve_release(settings, version)
    deployments = {name: read_deployment(settings, name) for name in settings.kube_deployments}
    patches = plan(settings, release, deployments)

    def result(outcome: Outcome, **fields: Any) -> DeployResult:
        return DeployResult(
            outcome=outcome,
            version=release.version,
            model_ref=release.model_ref,
            namespace=settings.kube_namespace,
            **fields,
        )

    if dry_run:
        return result("dry_run", patches=patches)
    names = [name for name, patch in patches.items() if patch]
    if not names:
        logger.info("every Deployment already pins %s", release.model_ref)
        return result(
            "unchanged",
            patches={},
            production_version=release.version,
            reasons=(f"every Deployment already pins {release.model_ref}",),
        )

    attempted: list[str] = []
    sent: dict[str, JsonPatch] = {}
    try:
        for name in names:
            # Listed before the call: a reply lost after the patch applied still needs undoing.
            attempted.append(name)
            # Empty when a retry found its own earlier attempt applied: that was the plan.
            sent[name] = pin(settings, name, release) or patches[name]
        verdict = wait_for_rollouts(settings, names, clock or SystemClock())
    except Exception as error:
        # Undoes only what carries the pin: after a refused first patch, nothing changes.
        try:
            undo(settings, release, attempted, f"the deploy stopped on an error: {error}", {})
        except Exception as undo_error:
            # The first error is the one to report; this one goes to the log.
            logger.error("undoing the deploy failed too: %s", undo_error)
        raise

    if verdict.outcome == "done":
        deployed = record(
            settings,
            _outcome_record(
                settings, release, "deployed", verdict.rollouts, release.version, [verdict.reason]
            ),
        )
        logger.info("%s rolled out on %s", release.model_ref, ", ".join(names))
        return result(
            "deployed",
            patches=sent,
            rollouts=verdict.rollouts,
            production_version=release.version,
            reasons=(verdict.reason,),
            record_run_id=deployed.run_id,
        )

    logger.error("rolling back: %s", verdict.reason)
    entry, failed = undo(settings, release, names, verdict.reason, verdict.rollouts)
    if entry is None:
        raise DeployError(
            f"{verdict.reason}, and no Deployment pins {release.model_ref} any more: someone "
            "else changed them meanwhile, so nothing was rolled back"
        )
    if failed:
        raise DeployError("; ".join(entry.reasons))
    return result(
        "rolled_back",
        patches=sent,
        rollouts=entry.rollouts,
        production_version=entry.production_version,
        reasons=tuple(entry.reasons),
        record_run_id=entry.run_id,
    )
