"""Where sdnctl writes: rich consoles made on first use (importing rich costs ~25 ms, and
`sdnctl --help` must not pay it), an escape for rich markup, and progress lines that show
only on a terminal."""

from __future__ import annotations

import functools
import sys


@functools.lru_cache(maxsize=None)
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
