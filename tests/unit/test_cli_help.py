"""The help a user reads: real defaults, the dataset choices and one example per command."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from cli.app import app
from cli.options import KNOWN_DATASETS
from loanops.data import catalog
from loanops.settings import MonitorSettings, TrainingSettings

pytestmark = pytest.mark.usefixtures("no_loanops_environment")

runner = CliRunner()


def commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf command's words, e.g. ("models", "list")."""
    found: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group: typer's own click, not the click package
            found += commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


ALL_COMMANDS = commands(typer.main.get_group(app))


def help_text(*words: str) -> str:
    result = runner.invoke(app, [*words, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    # Rich draws the help in a box; the words inside are what a reader reads.
    return " ".join(line.strip("│ ").strip() for line in result.output.splitlines())


def test_the_dataset_choices_are_the_catalogues() -> None:
    assert set(KNOWN_DATASETS) == set(catalog())


@pytest.mark.parametrize("command", ["train", "retrain"])
def test_training_help_names_the_choices_and_the_settings_defaults(command: str) -> None:
    text = help_text(command)

    assert "lending_club or synthetic" in text
    fields = TrainingSettings.model_fields
    for field in ("dataset", "seed", "tune_trials"):
        assert f"${fields[field].validation_alias}, else {fields[field].default}" in text
    assert "default: settings" not in text


def test_monitor_help_describes_its_own_data_option() -> None:
    text = help_text("monitor")

    assert "Train on" not in text
    assert "instead of the decision log's window" in text
    window = MonitorSettings.model_fields["window_days"]
    assert f"${window.validation_alias}, else {window.default}" in text


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=" ".join)
def test_every_command_gives_an_example_of_itself(command: tuple[str, ...]) -> None:
    text = help_text(*command)

    assert f"loanops {' '.join(command)}" in text.partition("Example: ")[2]
