"""Where the commands write: tables and progress on stdout, errors on stderr."""

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def summary_table(title: str) -> Table:
    """A two-column table without borders, its title on the line above: compact to read."""
    # At least as wide as its title, or rich would wrap the title to the columns' width.
    table = Table(
        title=f"[bold]{title}[/]",
        title_justify="left",
        show_header=False,
        box=None,
        padding=(0, 2),
        min_width=len(title),
    )
    table.add_column(style="bold")
    table.add_column()
    return table
