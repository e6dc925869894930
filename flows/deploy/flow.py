"""Deploy: pin the production version on the serving Deployments → wait → roll back on failure.

The step after `promote` when a cluster is configured (`LOANOPS_DEPLOY_TARGET=kubernetes`).
Each Deployment in `kube_deployments` gets `LOANOPS_MODEL_REF=models:/NAME/VERSION` on its pod
template, so Kubernetes rolls out a ReplicaSet that serves that one version. The rollout is
judged by kubectl's rules; when one fails (ProgressDeadlineExceeded) or outlasts
`rollout_timeout_seconds`, every patched Deployment goes back to its previous ReplicaSet's
template, as `kubectl rollout undo` does, and the production alias goes back to the previous
champion. Either way the outcome is appended to the promotion log.

The decisions are pure functions in `rollout.py` beside this module, and the calls to the
Kubernetes API are in `kube.py`; this module composes them into tasks and the flow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from kubernetes.client import AppsV1Api, V1Deployment
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from tenacity import RetryCallState, Retrying, retry_if_result

from flows.common import TRACKING_RETRIES, settings_for
from flows.deploy import rollout
from flows.deploy.kube import (
    KUBE_RETRIES,
    DeployError,
    KubeApiError,
    get_deployment,
    kube_call,
    kube_client,
    patch_deployment,
    require_cluster,
)
from flows.deploy.rollout import JsonPatch, RolloutStatus
from loanops import promotion_log, registry
from loanops.settings import Settings

POLL_SECONDS = 5.0
"""How often the flow reads the Deployments while it waits. kubectl watches instead; polling
needs only `get`, and lets a test drive the wait with a scripted clock."""


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
    return get_deployment(kube_client(settings), settings.kube.namespace, name)


def plan(
    settings: Settings, release: Release, deployments: dict[str, V1Deployment]
) -> dict[str, JsonPatch]:
    """Per Deployment, the patch that pins the release; refuses before anything is changed."""
    patches: dict[str, JsonPatch] = {}
    for name, container in settings.kube.deployments.items():
        deployment = deployments[name]
        if deployment.spec is not None and deployment.spec.paused:
            raise DeployError(
                f"Deployment {name} is paused, so it would never roll out: resume it with "
                f"`kubectl -n {settings.kube.namespace} rollout resume deployment/{name}`"
            )
        patches[name] = rollout.pin_patch(
            deployment, container, release.model_name, release.version
        )
    return patches


@task(cache_policy=NO_CACHE, **KUBE_RETRIES)
def pin(settings: Settings, name: str, release: Release) -> JsonPatch:
    """Pin one Deployment, from a fresh read: a retry after a lost reply finds it pinned."""
    client = kube_client(settings)
    deployment = get_deployment(client, settings.kube.namespace, name)
    container = settings.kube.deployments[name]
    patch = rollout.pin_patch(deployment, container, release.model_name, release.version)
    if patch:
        patch_deployment(client, settings.kube.namespace, name, patch)
        get_run_logger().info("patched Deployment %s: %s", name, release.model_ref)
    return patch


@task(cache_policy=NO_CACHE)
def wait_for_rollouts(settings: Settings, names: list[str], clock: Clock) -> Verdict:
    """Poll the Deployments until every rollout is done, one fails, or time runs out.

    A transient API error while polling is logged and polling goes on; the timeout still holds.
    """
    logger = get_run_logger()
    client = kube_client(settings)
    deadline = clock.now() + settings.kube.rollout_timeout_seconds
    statuses: dict[str, RolloutStatus] = {}

    def poll() -> Verdict | None:
        """Read each Deployment not yet rolled out; a verdict once there is one."""
        for name in names:
            if name in statuses and statuses[name].done:
                continue
            try:
                deployment = get_deployment(client, settings.kube.namespace, name)
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
        return None

    def out_of_time(state: RetryCallState) -> bool:
        return deadline - clock.now() <= 0

    def next_poll(state: RetryCallState) -> float:
        return min(POLL_SECONDS, deadline - clock.now())

    # By the injected clock, which tenacity's own stop_after_delay would not follow.
    polling = Retrying(
        retry=retry_if_result(lambda verdict: verdict is None),
        stop=out_of_time,
        wait=next_poll,
        sleep=clock.sleep,
        retry_error_callback=lambda state: None,
    )
    verdict: Verdict | None = polling(poll)
    if verdict is not None:
        return verdict
    waiting = ", ".join(n for n in names if not (n in statuses and statuses[n].done))
    return Verdict(
        "timed_out",
        _messages(statuses),
        f"the rollout of {waiting} did not finish within "
        f"{settings.kube.rollout_timeout_seconds:g} s (LOANOPS_ROLLOUT_TIMEOUT_SECONDS)",
    )


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
    namespace = settings.kube.namespace
    container = settings.kube.deployments[name]
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
def record(settings: Settings, entry: promotion_log.DeployRecord) -> promotion_log.DeployRecord:
    """Append the outcome to the promotion log; a retry finds it instead of adding another."""
    run_id = flow_run.get_id()
    return promotion_log.record_deploy(
        registry.connect(settings),
        settings,
        entry,
        deploy_key=promotion_log.deploy_id(
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
) -> promotion_log.DeployRecord:
    run_id = flow_run.get_id()
    user = promotion_log.operator()
    return promotion_log.DeployRecord(
        deployed_at=datetime.now(UTC).isoformat(timespec="seconds"),
        deployed_by=f"{user} via prefect flow run {run_id}" if run_id else user,
        model_name=release.model_name,
        outcome=outcome,
        version=release.version,
        previous_version=release.previous_version,
        production_version=production_version,
        namespace=settings.kube.namespace,
        rollouts=rollouts,
        reasons=reasons,
    )


def undo(
    settings: Settings, release: Release, names: list[str], why: str, rollouts: dict[str, str]
) -> tuple[promotion_log.DeployRecord | None, list[str]]:
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
            f"stays v{release.version}: undo by hand with `kubectl -n {settings.kube.namespace} "
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
    deployments = {name: read_deployment(settings, name) for name in settings.kube.deployments}
    patches = plan(settings, release, deployments)

    def result(outcome: Outcome, **fields: Any) -> DeployResult:
        return DeployResult(
            outcome=outcome,
            version=release.version,
            model_ref=release.model_ref,
            namespace=settings.kube.namespace,
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
