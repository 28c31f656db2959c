"""The errors of the private Open vSwitch instance and of what runs on it (sdn.ovs.instance,
sdn.ovs.trace)."""

from __future__ import annotations

import re
from collections.abc import Sequence


class OvsError(RuntimeError):
    """Any failure of the private OVS instance (start-up, bad state, ...)."""


class OvsCommandError(OvsError):
    """A command (ovs-vsctl, ovs-ofctl, ip, ...) failed.

    ``.argv``, ``.returncode``, ``.stdout`` and ``.stderr`` are kept; ``str()`` names the
    command and includes stderr (for ovs-ofctl/ovs-appctl that is OVS's error text).
    """

    def __init__(self, argv: Sequence[str], returncode: int | None, stdout: str, stderr: str,
                 note: str = ""):
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        cmd = " ".join(_shell_quote(a) for a in self.argv)
        what = "timed out" if returncode is None else f"failed (exit {returncode})"
        msg = f"command {what}: {cmd}"
        if note:
            msg += f"\n{note}"
        err = stderr.strip()
        if err:
            msg += f"\nstderr:\n{err}"
        elif stdout.strip():
            msg += f"\nstdout:\n{stdout.strip()[-2000:]}"
        super().__init__(msg)


def _shell_quote(s: str) -> str:
    if s and re.fullmatch(r"[\w@%+=:,./-]+", s):
        return s
    return "'" + s.replace("'", "'\"'\"'") + "'"
