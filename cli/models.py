"""`loanops models ...`: read the model registry and the promotion log, and answer a promotion
waiting for approval (maker-checker)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cli.console import console
from cli.errors import clear_errors, fail, settings
from cli.progress import run_with_status

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

    from loanops.approval import Answer
    from loanops.promotion_log import DecisionRecord

models_app = typer.Typer(
    help="Read the model registry and the promotion log; approve or reject a promotion.",
    no_args_is_help=True,
)

ApproverOption = Annotated[
    str | None,
    typer.Option(
        help="Who decides, for the record; not who asked for the promotion (default: your OS user)."
    ),
]
WaitOption = Annotated[
    float,
    typer.Option(min=0, help="Seconds to wait for the promotion to act on the answer."),
]


@models_app.command("list")
def list_models() -> None:
    """Every registered version, its aliases and headline metrics.

    Example: loanops models list
    """
    config = settings()
    from loanops import registry

    with clear_errors():
        client = registry.connect(config)
        versions = client.search_model_versions(f"name = '{config.model_name}'")
        # Search results leave out aliases; the registered model has them all.
        aliases: dict[str, list[str]] = {}
        if versions:
            model = client.get_registered_model(config.model_name)
            for alias, number in sorted(model.aliases.items()):
                aliases.setdefault(str(number), []).append(alias)
        table = Table(title=config.model_name)
        for column in ("version", "aliases", "created", "dataset", "cv AUC", "test AUC", "gate"):
            table.add_column(column)
        for version in sorted(versions, key=lambda v: int(v.version)):
            metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
            table.add_row(
                str(version.version),
                ", ".join(aliases.get(str(version.version), [])),
                _timestamp(version.creation_timestamp),
                version.tags.get("loanops.dataset", "-"),
                _metric(metrics, "cv_roc_auc"),
                _metric(metrics, "test_roc_auc"),
                version.tags.get("gate.outcome", "-"),
            )
    console.print(table)


@models_app.command()
def history() -> None:
    """The promotion log, oldest first: every gate decision, then every deploy outcome.

    Example: loanops models history
    """
    config = settings()
    from loanops import promotion_log, registry

    with clear_errors():
        client = registry.connect(config)
        records = promotion_log.history(client, config)
        deploys = promotion_log.deploy_history(client, config)
    table = Table(title=f"{config.model_name}: promotion history")
    columns = ("when", "outcome", "challenger", "champion", "AUC (chal / champ)", "approval")
    for column in (*columns, "reasons"):
        table.add_column(column)
    for record in records:
        champion_auc = (record.champion_metrics or {}).get("roc_auc")
        table.add_row(
            record.decided_at,
            record.outcome,
            f"v{record.challenger_version}",
            f"v{record.champion_version}" if record.champion_version else "-",
            f"{record.challenger_metrics['roc_auc']:.4f} / "
            + (f"{champion_auc:.4f}" if champion_auc is not None else "-"),
            _approval(record),
            "\n".join(record.reasons),
        )
    console.print(table)
    if not records:
        console.print("no gate decisions yet")
    if deploys:
        rollouts = Table(title=f"{config.model_name}: deploy history")
        for column in ("when", "outcome", "version", "production after", "reasons"):
            rollouts.add_column(column)
        for deployed in deploys:
            after = deployed.production_version
            rollouts.add_row(
                deployed.deployed_at,
                deployed.outcome.replace("_", " "),
                f"v{deployed.version}",
                f"v{after}" if after else "-",
                "\n".join(deployed.reasons),
            )
        console.print(rollouts)


@models_app.command()
def show(version: Annotated[str, typer.Argument(help="Version number.")]) -> None:
    """One version: lineage tags, card, and metrics.

    Example: loanops models show 1
    """
    config = settings()
    from loanops import registry

    with clear_errors():
        client = registry.connect(config)
        model_version = client.get_model_version(config.model_name, version)
        card = registry.model_card(client, model_version)
        metrics = client.get_run(model_version.run_id).data.metrics if model_version.run_id else {}
    table = Table(title=f"{config.model_name} v{version}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("aliases", ", ".join(model_version.aliases) or "-")
    table.add_row("run", model_version.run_id or "-")
    for key, value in sorted(model_version.tags.items()):
        table.add_row(key, value)
    table.add_row("family", f"{card.family} {card.params}")
    table.add_row("threshold", f"{card.threshold:.4f}")
    table.add_row(
        "cost matrix",
        f"false approve {card.cost_false_approve}, false decline {card.cost_false_decline}",
    )
    for name in sorted(metrics):
        if name.startswith(("cv_", "test_")):
            table.add_row(name, f"{metrics[name]:.4f}")
    console.print(table)


@models_app.command("card")
def model_card(
    version: Annotated[str, typer.Argument(help="Version number.")],
    out: Annotated[
        Path | None,
        typer.Option(help="Folder to write into.", show_default="./model-card-v<VERSION>"),
    ] = None,
) -> None:
    """Write a version's model card (Markdown, HTML and PNG plots) to a local folder.

    Example: loanops models card 1 --out card-v1
    """
    config = settings()
    from loanops import card, registry

    folder = out or Path(f"model-card-v{version}")
    with clear_errors():
        client = registry.connect(config)
        model_version = client.get_model_version(config.model_name, version)
        built = run_with_status(
            f"building the card of v{version}…",
            lambda: card.build_card(
                client,
                model_version,
                bootstrap_samples=config.training.bootstrap_samples,
                seed=config.training.seed,
            ),
        )
        markdown, page = card.write_card(built, folder)
    console.print(f"Model card of {config.model_name} v{version}: {page} ({markdown.name} beside)")


@models_app.command()
def approve(
    version: Annotated[str, typer.Argument(help="The version waiting for approval.")],
    approver: ApproverOption = None,
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "",
    wait: WaitOption = 120,
) -> None:
    """Approve a promotion waiting for a second person: its aliases move.

    Example: loanops models approve 3 --approver bob --reason "reviewed the card"
    """
    _answer(version, "approve", approver, reason, wait)


@models_app.command()
def reject(
    version: Annotated[str, typer.Argument(help="The version waiting for approval.")],
    reason: Annotated[str, typer.Option(help="Why, for the record (required).")],
    approver: ApproverOption = None,
    wait: WaitOption = 120,
) -> None:
    """Reject a promotion waiting for approval: every alias stays where it is.

    Example: loanops models reject 3 --reason "the live comparison regressed"
    """
    _answer(version, "reject", approver, reason, wait)


@models_app.command()
def challenger(
    version: Annotated[str, typer.Argument(help="The registered version to attach.")],
) -> None:
    """Attach a version as the challenger: the API scores it beside the champion, no restart.

    It sets the `LOANOPS_CHALLENGER_ALIAS` alias; the API follows it as it follows production.

    Example: loanops models challenger 4
    """
    config = settings()
    from loanops import registry

    alias = config.serving.challenger_alias
    with clear_errors():
        client = registry.connect(config)
        client.get_model_version(config.model_name, version)  # an unknown version fails here
        champion = registry.version_by_alias(client, config.model_name, config.production_alias)
        if champion is not None and str(champion.version) == version:
            raise fail(f"version {version} is the champion ({config.production_alias}) already")
        client.set_registered_model_alias(config.model_name, alias, version)
    console.print(f"{config.model_name} v{version} is the challenger (@{alias})")


@models_app.command("detach-challenger")
def detach_challenger() -> None:
    """Detach the challenger: the API goes back to the champion alone, no restart.

    Example: loanops models detach-challenger
    """
    config = settings()
    from loanops import registry

    alias = config.serving.challenger_alias
    with clear_errors():
        client = registry.connect(config)
        attached = registry.version_by_alias(client, config.model_name, alias)
        if attached is None:
            console.print(f"{config.model_name} has no challenger (@{alias})")
            return
        client.delete_registered_model_alias(config.model_name, alias)
    console.print(f"{config.model_name} v{attached.version} is no longer the challenger")


def _answer(version: str, decision: Answer, approver: str | None, reason: str, wait: float) -> None:
    """Find the flow run waiting on `version`, check the answer may stand, and resume it."""
    config = settings()
    from pydantic import ValidationError

    from flows.approval import ApprovalInput, answer, maker_of, settled_state
    from loanops import promotion_log, registry
    from loanops.approval import refusal

    who = approver if approver is not None else promotion_log.operator()
    name = f"{config.model_name} v{version}"
    with clear_errors(), _prefect_errors(name):
        run = _waiting_run(config.model_name, version)
        refused = refusal(decision, who, reason, maker_of(run))
        if refused is not None:
            raise fail(f"{name}: {refused}")
        try:
            given = ApprovalInput(decision=decision, approver=who, reason=reason)
        except ValidationError as error:
            raise fail(f"invalid answer: {error.errors()[0]['msg']}") from None
        answer(run, given)
        state = settled_state(run.id, timeout=wait).state
        if state is not None and state.is_paused():
            raise fail(f"{name}: the promotion refused the answer and waits again (run {run.id})")
        if state is None or not state.is_final():
            console.print(
                f"{name}: answer sent to flow run {run.id}, which is still working; "
                "`loanops models history` will show the outcome"
            )
            return
        records = [
            r
            for r in promotion_log.history(registry.connect(config), config)
            if r.challenger_version == version and r.approval not in (None, "awaiting")
        ]
    if not state.is_completed() or not records:
        raise fail(f"{name}: flow run {run.id} ended {state.name}: {state.message or ''}")
    console.print(f"{name}: {records[-1].outcome} ({_approval(records[-1])})")


def _waiting_run(model_name: str, version: str) -> FlowRun:
    """The one flow run waiting for approval of the version; none or several end the command."""
    from flows.approval import waiting_promotions

    runs = waiting_promotions(model_name, version)
    name = f"{model_name} v{version}"
    if not runs:
        raise fail(f"no promotion of {name} is waiting for approval on {_prefect_api()}")
    if len(runs) > 1:
        ids = ", ".join(str(run.id) for run in runs)
        raise fail(f"{len(runs)} promotions of {name} are waiting ({ids}); answer one in the UI")
    return runs[0]


@contextmanager
def _prefect_errors(name: str) -> Iterator[None]:
    """Prefect's refusals and an unreachable server as one line each."""
    import httpx
    from prefect.exceptions import FlowPauseTimeout, NotPausedError

    try:
        yield
    except httpx.HTTPError as error:
        raise fail(f"cannot reach the Prefect server at {_prefect_api()}: {error}") from None
    except NotPausedError:
        raise fail(f"{name}: the promotion stopped waiting before the answer arrived") from None
    except FlowPauseTimeout:
        raise fail(f"{name}: the wait for approval has timed out; promote it again") from None


def _prefect_api() -> str:
    """Where the CLI looked for waiting promotions."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or "the temporary Prefect server (set PREFECT_API_URL)"


def _approval(record: DecisionRecord) -> str:
    """A record's approval in one cell: who decided, when and why; `-` without maker-checker."""
    if record.approval is None:
        return "-"
    if record.approval == "awaiting":
        return f"awaiting (asked by {record.requested_by})"
    if record.approval == "timed_out":
        return f"timed out {record.approval_decided_at}"
    by = f"{record.approval} by {record.approver} {record.approval_decided_at}"
    return f"{by}: {record.approval_reason}" if record.approval_reason else by


def _metric(metrics: dict[str, float], name: str) -> str:
    return f"{metrics[name]:.4f}" if name in metrics else "-"


def _timestamp(millis: int | None) -> str:
    if millis is None:
        return "-"
    return datetime.fromtimestamp(millis / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
