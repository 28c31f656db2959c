"""Where sdnctl writes: rich consoles made on first use (importing rich costs ~25 ms, and
`sdnctl --help` must not pay it), an escape for rich markup, and progress lines that show
only on a terminal."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator

import click


class CommandProblem(click.ClickException):
    """An error a command reports, with the exit code it documents for it."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class: this one is per error


@functools.cache
def err():
    """The stderr console: errors, warnings, progress."""
    from rich.console import Console
    return Console(stderr=True, highlight=False, soft_wrap=True)


def console_out():
    """A stdout console; 200 columns when piped, so tables do not wrap in files and tests."""
    from rich.console import Console
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def escape(text: str) -> str:
    """Escape rich markup in text that comes from the user (names, labels, messages)."""
    from rich.markup import escape as rich_escape
    return rich_escape(text)


# Exit status of every sdnctl command (README, "Exit status").
EXIT_OK = 0           # done; in sync; the verdicts agree
EXIT_DIFFERS = 1      # a check found a difference: flows diff, trace vs evaluator, lab matrix --check, lab status
EXIT_USAGE = 2        # invalid input or usage: a manifest, an option, an unknown pod, node or policy
EXIT_UNREACHABLE = 3  # cannot reach the controller, the agent or the lab (or it cannot answer yet)


def show_error(e) -> None:
    """Print a click exception the one way sdnctl prints errors: the usage line and a hint for a
    usage error, then "error: MESSAGE" on stderr."""
    import click
    ctx = getattr(e, "ctx", None)
    if isinstance(e, click.UsageError) and ctx is not None:
        hint = f"Try '{ctx.command_path} {ctx.help_option_names[0]}' for help."
        err().print(escape(ctx.get_usage()) + "\n" + escape(hint) + "\n", markup=True)
    err().print(f"[red]error:[/red] {escape(e.format_message())}", markup=True)


QUIET = {"on": False}  # sdnctl -q: no progress lines


@contextlib.contextmanager
def progress(text: str) -> Iterator[Callable[[str], None]]:
    """A transient status line on stderr while long work runs (loading, compiling, a lab coming
    up): only when stderr is a terminal and -q was not given; nothing at all when piped.
    Yields a function that replaces the line's text."""
    if QUIET["on"] or not sys.stderr.isatty():
        yield lambda _text: None
        return
    with err().status(escape(text)) as status:
        yield lambda new: status.update(escape(new))
