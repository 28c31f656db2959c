"""What every room of the lab shares: its errors, timeouts, the manifests it reads, pods to
plug, and running jobs in threads and daemons."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sdn import proc
from sdn.policy.manifests import ManifestError, read_objects

SYNC_TIMEOUT = 90.0
PROBE_TIMEOUT = 0.5


class LabError(RuntimeError):
    """A lab command failed; the message says what and what to do. exit_code: 1, or 2 for
    invalid input (as the other sdnctl commands)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class NotRealized(LabError):
    """Agents that did not realize a change: `realized` lists the agents (node names) that
    did, `failed` says why each other one did not."""

    def __init__(self, realized: list[str], failed: dict[str, str]):
        self.realized, self.failed = realized, failed
        super().__init__("; ".join(failed[n] for n in sorted(failed)))


def partly_realized(e: NotRealized, report: list[str], saved: str) -> LabError:
    """A change that some agents did not realize: what was saved, which nodes have it, which
    do not and why (exit 1)."""
    done = ", ".join(e.realized) or "no node"
    why = "\n  ".join(f"{n}: {e.failed[n]}" for n in sorted(e.failed))
    return LabError(f"the change was {saved} ({'; '.join(report) or 'no object changed'}) and realized on "
                    f"{done}, but NOT on {', '.join(sorted(e.failed))}; an agent applies it once it runs and "
                    f"reaches its switch again (`sdnctl lab status`):\n  {why}")


class NoLab(LabError):
    """No lab in the state directory: exit 3, like a controller that cannot be reached."""

    def __init__(self, message: str):
        super().__init__(message, 3)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_docs(paths: list[str]) -> list[dict]:
    """Raw manifest documents from files/directories ('-' = stdin), `kind: List` expanded,
    validated as `sdnctl compile` validates them (ManifestError -> LabError exit 2); only the
    kinds the lab makes (Namespace, Pod, Node, NetworkPolicy)."""
    try:
        return [copy.deepcopy(doc) for doc in read_objects(paths)
                if doc.get("kind") in ("Namespace", "Pod", "Node", "NetworkPolicy")]
    except ManifestError as e:
        raise LabError(str(e), 2) from None
    except OSError as e:
        raise LabError(f"{e.filename}: {e.strerror}", 2) from None


@dataclass
class PodSpec:
    key: str
    node: str
    doc: dict


def spawn_daemon(argv: list[str], log: Path, pidfile: Path, timeout: float = 10.0) -> int:
    """sdn.proc.spawn_daemon, failing as a LabError."""
    try:
        return proc.spawn_daemon(argv, log, pidfile, timeout)
    except proc.ProcessError as e:
        raise LabError(str(e)) from None


def settle(jobs: Sequence[Callable[[], Any]], workers: int = 8) -> list[BaseException | None]:
    """Run jobs in threads; each one's exception (None: it succeeded), in order."""
    if not jobs:
        return []
    with ThreadPoolExecutor(min(workers, len(jobs))) as pool:
        futures = [pool.submit(j) for j in jobs]
        return [f.exception() for f in futures]


def parallel(jobs: Sequence[Callable[[], Any]], workers: int = 8, collect: bool = False) -> list:
    """Run jobs in threads; the first exception (after all finished) is raised."""
    if not jobs:
        return []
    if len(jobs) == 1:
        return [jobs[0]()]
    with ThreadPoolExecutor(min(workers, len(jobs))) as pool:
        futures = [pool.submit(j) for j in jobs]
        errors = [f.exception() for f in futures]
    for e in errors:
        if e is not None:
            raise e
    return [f.result() for f in futures]
