"""How a compare report looks: a three-column table (what, champion, challenger) and an HTML page.

`compare_table` is what `loanops compare` and the demo print; `render_html` is the page logged
with the report, from the Jinja2 template `loanops/templates/comparison.html.j2` (autoescaped,
so versions and segment values are shown as text, never as markup).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from loanops.comparison.ranking import OutcomeMetrics, SliceOutcomes
from loanops.comparison.report import ComparisonReport
from loanops.comparison.swaps import CELLS, Distribution
from loanops.html_pages import templates

_HTML_TEMPLATE: Final = "comparison.html.j2"
_CELL_TITLES: Final = {
    "both_approve": "both approve",
    "champion_only": "only the champion approves",
    "challenger_only": "only the challenger approves",
    "both_decline": "both decline",
}

Row = tuple[str, str, str]


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _spread(d: Distribution) -> str:
    if d.count == 0:
        return "-"
    return f"{_number(d.mean)} (median {_number(d.p50)}, 5–95% {_number(d.p05)}–{_number(d.p95)})"


def _pair(
    part: SliceOutcomes, read: Callable[[OutcomeMetrics], float | None], digits: int = 4
) -> tuple[str, str]:
    def shown(side: OutcomeMetrics | None) -> str:
        return "-" if side is None else _number(read(side), digits)

    return shown(part.champion), shown(part.challenger)


def interval_text(part: SliceOutcomes) -> str:
    """The AUC difference with its interval and verdict, or why there is none."""
    found = part.auc_difference
    if found is None:
        return part.note or "-"
    return (
        f"{found.difference:+.4f} [{found.low:+.4f}, {found.high:+.4f}] "
        f"({found.level:.0%}, {found.verdict})"
    )


def compare_table(report: ComparisonReport) -> list[Row]:
    """The headline comparison, one row per finding: name, champion's, challenger's."""
    shift = report.pd_shift
    champion_cost, challenger_cost = (
        report.expected_cost("champion"),
        report.expected_cost("challenger"),
    )
    rows: list[Row] = [
        (
            "versions",
            ", ".join(f"v{v}" for v in report.champion_versions),
            f"v{report.challenger_version}",
        ),
        ("paired decisions", f"{report.paired:,}", ""),
        (
            "applicants given its decision",
            f"{report.arms.get('champion', 0):,}",
            f"{report.arms.get('challenger', 0):,}",
        ),
        ("agreement", f"{report.agreement_rate:.1%}", ""),
        (
            "approves what the other declines",
            f"{report.swap_set.swap_out:,}",
            f"{report.swap_set.swap_in:,}",
        ),
        (
            "approval rate",
            f"{report.swap_set.champion_approval_rate:.1%}",
            f"{report.swap_set.challenger_approval_rate:.1%}",
        ),
        ("mean PD", _number(shift.champion_mean_pd), _number(shift.challenger_mean_pd)),
        (
            "expected cost / application, champion's PD",
            _number(champion_cost.under_champion_pd),
            _number(challenger_cost.under_champion_pd),
        ),
        (
            "expected cost / application, challenger's PD",
            _number(champion_cost.under_challenger_pd),
            _number(challenger_cost.under_challenger_pd),
        ),
    ]
    overall = report.overall_outcomes
    if overall is None:
        rows.append(("outcomes", "none recorded yet", ""))
        return rows
    rows.append(("labelled loans (defaults)", f"{overall.labelled:,} ({overall.defaults:,})", ""))
    if overall.champion is not None:
        rows += [
            ("ROC AUC", *_pair(overall, lambda m: m.auc)),
            ("KS", *_pair(overall, lambda m: m.ks)),
            ("Brier", *_pair(overall, lambda m: m.brier)),
            ("mean PD − default rate", *_pair(overall, lambda m: m.calibration_gap)),
            ("realised cost / loan", *_pair(overall, lambda m: m.realised_cost)),
        ]
    rows.append(("AUC difference, challenger − champion", "", interval_text(overall)))
    return rows


def _vintage_rows(outcomes: Sequence[SliceOutcomes]) -> list[list[str]]:
    return [
        [
            part.name,
            f"{part.labelled:,}",
            f"{part.defaults:,}",
            *_pair(part, lambda m: m.auc),
            *_pair(part, lambda m: m.ks),
            *_pair(part, lambda m: m.brier),
            *_pair(part, lambda m: m.calibration_gap),
            *_difference_cells(part),
        ]
        for part in outcomes
    ]


def _difference_cells(part: SliceOutcomes) -> tuple[str, str, str]:
    found = part.auc_difference
    if found is None:
        return "-", "-", part.note or "-"
    return f"{found.difference:+.4f}", f"{found.low:+.4f} to {found.high:+.4f}", found.verdict


def _reliability_rows(overall: SliceOutcomes | None) -> list[list[str]]:
    if overall is None or overall.champion is None or overall.challenger is None:
        return []
    return [
        [
            str(number),
            _number(champion.mean_pd),
            _number(champion.default_rate),
            _number(challenger.mean_pd),
            _number(challenger.default_rate),
        ]
        for number, (champion, challenger) in enumerate(
            zip(overall.champion.reliability, overall.challenger.reliability, strict=False),
            start=1,
        )
    ]


def render_html(report: ComparisonReport) -> str:
    """The report as one self-contained HTML page."""
    swap = report.swap_set
    page = (
        templates()
        .get_template(_HTML_TEMPLATE)
        .render(
            report=report,
            title=(
                f"Live comparison: {report.model_name} v{report.challenger_version} "
                f"against v{', v'.join(report.champion_versions)}"
            ),
            headline=compare_table(report),
            grid=[
                [
                    "champion approves",
                    f"{swap.cell('both_approve').count:,}",
                    f"{swap.cell('champion_only').count:,}",
                ],
                [
                    "champion declines",
                    f"{swap.cell('challenger_only').count:,}",
                    f"{swap.cell('both_decline').count:,}",
                ],
            ],
            cells=[
                [
                    _CELL_TITLES[name],
                    f"{swap.cell(name).count:,} ({swap.cell(name).share:.1%})",
                    _spread(swap.cell(name).champion_pd),
                    _spread(swap.cell(name).challenger_pd),
                ]
                for name in CELLS
            ],
            segments=[
                [
                    row.segment,
                    row.value,
                    f"{row.rows:,}",
                    f"{row.champion_approval_rate:.1%}",
                    f"{row.challenger_approval_rate:.1%}",
                    f"{row.challenger_approval_rate - row.champion_approval_rate:+.1%}",
                ]
                for row in report.segments
            ],
            vintages=_vintage_rows(report.outcomes),
            reliability=_reliability_rows(report.overall_outcomes),
        )
    )
    return page.rstrip("\n") + "\n"
