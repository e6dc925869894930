"""What the server and the decision-log writer process send each other over their queues.

To the writer: `DecisionBatch` and `OverflowFile` (each with a sequence number) and, last,
`Stop`. From the writer: `Started` once, then `Progress`, which names the batches whose
decisions are now durable (in the database, or in a spill file), so the server can forget them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DecisionBatch:
    """Decisions to write, each encoded as a spill line (`loanops.decisions.spill.spill_line`)."""

    seq: int
    lines: list[bytes]


@dataclass(frozen=True, slots=True)
class OverflowFile:
    """Decisions the server saved to a spill file while the writer was behind: write them too."""

    seq: int
    path: str
    count: int


@dataclass(frozen=True, slots=True)
class Stop:
    """No more input: write what is held within ``timeout`` seconds, spill the rest, exit."""

    timeout: float


@dataclass(frozen=True, slots=True)
class Started:
    """The writer process is in a session of its own and its writer thread runs."""

    pid: int


@dataclass(frozen=True, slots=True)
class Progress:
    """The writer's state: the batches settled since the last report, and its counters."""

    settled: list[int]
    written: int
    failures: int
    last_error: str | None


ToWriter = DecisionBatch | OverflowFile | Stop
FromWriter = Started | Progress
