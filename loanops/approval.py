"""Maker-checker: a promotion the gate passed waits for a second person's word.

The pure half of the approval path: what an answer is (`Approval`), who may give it
(`refusal`), and what the person deciding is shown (`request_description`). The promote flow's
pause and the CLI's `models approve` / `models reject` build on these (flows/approval.py).

Identities here are names people declare (a CLI `--approver`, a field of the Prefect UI's form,
an OS user): open-source Prefect authenticates no one, so the rule keeps an honest maker from
approving their own promotion; it is no defence against someone who lies about their name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from loanops.promotion import GateDecision, GateScores

ApprovalStatus = Literal["awaiting", "approved", "rejected", "timed_out"]
Answer = Literal["approve", "reject"]

# The promotion log's outcome for each approval status: only an approval promotes.
OUTCOMES: dict[ApprovalStatus, str] = {
    "awaiting": "awaiting_approval",
    "approved": "promoted",
    "rejected": "rejected",
    "timed_out": "rejected",
}

# Headline numbers shown of a live comparison; the rest are in its MLflow run.
MAX_LIVE_METRICS = 12


@dataclass(frozen=True)
class Approval:
    """Where a maker-checker promotion stands: awaiting an answer, or answered and how."""

    status: ApprovalStatus
    requested_by: str
    approver: str | None = None
    reason: str = ""
    decided_at: str | None = None
    """UTC, ISO 8601 to the second; None while awaiting."""

    @property
    def outcome(self) -> str:
        """The promotion log's outcome: `promoted` only when approved."""
        return OUTCOMES[self.status]

    def sentence(self) -> str:
        """The approval as one of the record's reasons."""
        if self.status == "awaiting":
            return f"awaiting approval by someone other than {self.requested_by}"
        if self.status == "timed_out":
            return f"no one approved in time, so the promotion is rejected ({self.reason})"
        verb = "approved" if self.status == "approved" else "rejected"
        return f"{verb} by {self.approver}" + (f": {self.reason}" if self.reason else "")


@dataclass(frozen=True)
class LiveComparison:
    """A live comparison of a version against the champion, as its MLflow run recorded it."""

    run_id: str
    metrics: Mapping[str, float]


def same_identity(left: str, right: str) -> bool:
    """Whether two declared names are the same person's: case and surrounding space aside."""
    return left.strip().casefold() == right.strip().casefold()


def refusal(answer: Answer, approver: str, reason: str, maker: Iterable[str]) -> str | None:
    """Why an answer cannot stand, or None when it can.

    Args:
        answer: `approve` or `reject`.
        approver: who answers.
        reason: why; a rejection must give one.
        maker: every identity of who started the promotion: the person, and the flow run's id
            and name.

    A maker may reject (withdraw) their own promotion, since that moves nothing; only approval
    needs a second person.
    """
    if not approver.strip():
        return "the approver must be named"
    if answer == "reject" and not reason.strip():
        return "a rejection must give a reason"
    if answer == "approve":
        for identity in maker:
            if identity and same_identity(approver, identity):
                return (
                    f"{approver.strip()} started this promotion and cannot approve it; "
                    "a second person must"
                )
    return None


def _scores_line(label: str, scores: GateScores) -> str:
    return (
        f"| {label} v{scores.version} | {scores.roc_auc:.4f} | {scores.ece:.4f} | "
        f"{scores.mean_pd:.4f} / {scores.default_rate:.4f} | {scores.rows:,} |"
    )


def request_description(
    model_name: str,
    decision: GateDecision,
    *,
    requested_by: str,
    timeout_seconds: int,
    live: LiveComparison | None,
) -> str:
    """What the person deciding reads, as Markdown (the Prefect UI renders it above the form).

    The gate's headline numbers on the challenger's test split, its reasons, and the live
    comparison's numbers when one was recorded for the version.
    """
    challenger = decision.challenger
    lines = [
        f"**{model_name} v{challenger.version}** passed the promotion gate and waits for a "
        f"second person. Requested by **{requested_by}**; without an answer within "
        f"{timeout_seconds} s it is rejected.",
        "",
        "| gate data | ROC AUC | ECE | mean PD / default rate | rows |",
        "|---|---|---|---|---|",
        _scores_line("challenger", challenger),
    ]
    if decision.champion is not None:
        lines.append(_scores_line("champion", decision.champion))
    lines += ["", "Gate reasons:", *(f"- {reason}" for reason in decision.reasons), ""]
    if live is None:
        lines.append("No live comparison has been recorded for this version.")
    else:
        shown = sorted(live.metrics.items())[:MAX_LIVE_METRICS]
        lines += [
            f"Live comparison (MLflow run {live.run_id}):",
            "",
            "| metric | value |",
            "|---|---|",
            *(f"| {name} | {value:.4g} |" for name, value in shown),
        ]
    lines += ["", "Answer `approve` or `reject`, with your name and a reason."]
    return "\n".join(lines)
