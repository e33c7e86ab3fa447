"""What every ``gocare`` sub-command shares: the consoles, one-line errors, and settings loading that
honours the root ``--env-file`` option, which the root callback stores in Typer's context
(``CliState`` as ``ctx.obj``) rather than in a module global."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

if TYPE_CHECKING:
    from gocare_voice.settings import Settings

console = Console()
err_console = Console(stderr=True)


def new_app(*, name: str, help: str) -> typer.Typer:
    """A ``gocare`` (sub-)command group: help when called bare, no shell-completion options, plain errors."""
    return typer.Typer(
        name=name, help=help, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
    )


@dataclass
class CliState:
    env_file: Optional[Path] = Path(".env")
    """``.env`` when it exists; a file named with ``--env-file`` must exist."""


def cli_state(ctx: typer.Context | None) -> CliState:
    """The root command's state, found from a command's context (the defaults without one)."""
    found = ctx.find_object(CliState) if ctx is not None else None
    return found if found is not None else CliState()


def print_error(message: str) -> None:
    """One error line on stderr, never wrapped at the terminal width (scripts grep for it)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def fail(line: str, code: int = 1) -> NoReturn:
    """One error line, then exit with ``code`` (1: refused or failed, 2: configuration or usage)."""
    print_error(line)
    raise typer.Exit(code)


def visible(text: str) -> str:
    """Control and other unprintable characters as escapes (``\x1b``, ``\x9b``, ``\u2028``); the rest
    unchanged. For anything the CLI prints that it did not write itself (metadata, a record, a user): an
    escape sequence in it is shown, never run by the terminal."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def literal(value: object) -> Text:
    """A value from a record or a user as a rich cell: literal text (``[/x]`` is not markup, a link is not
    a link) with its control characters escaped (``visible``)."""
    return Text("" if value is None else visible(str(value)))


def load_cli_settings(ctx: typer.Context | None, **overrides: object) -> Settings:
    """Settings for a command (``ctx`` carries the root ``--env-file``), or one line per problem on stderr
    and exit 2 (never a traceback)."""
    from gocare_voice.settings import SettingsError, load_settings

    try:
        return load_settings(env_file=cli_state(ctx).env_file, **overrides)
    except SettingsError as error:
        for line in error.problems:
            print_error(line)
        raise typer.Exit(2) from None


def configure_logging(level: str, log_format: str = "text") -> None:
    import logging

    from gocare_voice.logging_setup import setup_logging

    setup_logging(getattr(logging, level.upper(), logging.INFO), log_format=log_format)
