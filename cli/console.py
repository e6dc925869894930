"""Where the commands write: tables and progress on stdout, errors on stderr."""

from rich.console import Console

console = Console()
err_console = Console(stderr=True)
