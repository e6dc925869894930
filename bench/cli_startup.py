"""Start-up time of the CLI: `loanops --help` and `loanops models list`, against `python -c pass`.

Each command runs `--runs` times as a fresh process, the way a user types it, and the median
wall time is compared with the interpreter's own start-up from the same run. `models list`
reads an embedded registry (SQLite under a temporary LOANOPS_HOME, migrated by a first untimed
run), so its figure is the CLI's and MLflow's start-up plus one registry query.

    .venv/bin/python bench/cli_startup.py [--runs 7]

The issue's target is "about a second" for each: PASS at a median of at most TARGET_SECONDS.
Exits 0 when both pass, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

TARGET_SECONDS = 1.2
LOANOPS = str(Path(sys.executable).with_name("loanops"))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="CLI start-up against `python -c pass`.")
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each command")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 50:
        parser.error("--runs takes 1 to 50")
    return args


def median_seconds(command: list[str], env: dict[str, str], runs: int) -> float:
    """The median wall time of `runs` fresh runs of `command`; a failed run ends the bench."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr}")
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="loanops-bench-cli-") as home:
        env = {
            key: value for key, value in os.environ.items() if not key.startswith("LOANOPS_")
        } | {"LOANOPS_HOME": home, "COLUMNS": "100"}
        median_seconds([LOANOPS, "models", "list"], env, runs=1)  # creates the SQLite store
        baseline = median_seconds([sys.executable, "-c", "pass"], env, args.runs)
        figures = {
            "loanops --help": median_seconds([LOANOPS, "--help"], env, args.runs),
            "loanops models list": median_seconds([LOANOPS, "models", "list"], env, args.runs),
        }
    print(f"median of {args.runs} runs each; python -c pass: {baseline:.3f} s")
    passed = True
    for label, seconds in figures.items():
        ok = seconds <= TARGET_SECONDS
        passed &= ok
        print(
            f"  {label:<22} {seconds:.3f} s  ({seconds / baseline:.1f}x python -c pass)  "
            f"{'PASS' if ok else 'FAIL'}: target at most {TARGET_SECONDS} s"
        )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
