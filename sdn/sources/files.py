"""Manifest files as a source: complete snapshots only.

A file is taken only once it is complete: nobody holds it open for writing (a read lease,
fcntl F_SETLEASE, fails while any process does), and it was either put in place by a rename
(a new inode, or a change time later than its last write) or left unmodified for the settle
interval. What is taken must then parse whole, every file must hold at least one document, and
the input must not suddenly lose every policy or every pod (sdn.sources.guard). Anything else
is refused: the sink keeps its installed tables and shows the error (never fail open).

Tools that write manifests should write a temporary name in the same directory (a hidden name,
or one without a manifest suffix) and rename it over the real one: the rename is atomic, and
the source takes the new file at the next poll without waiting.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass

from sdn.policy.manifests import MANIFEST_SUFFIXES, ManifestError, load_paths
from sdn.policy.model import Cluster
from sdn.sources.base import Sink
from sdn.sources.guard import declared_empty, refusal

log = logging.getLogger("sdn.sources.files")

SETTLE = 0.5  # seconds a file modified in place must stay unchanged before it is read
CONVENTION = "write to a temporary name in the same directory, then rename it over the manifest"


@dataclass(frozen=True)
class FileState:
    """One manifest file as stat(2) saw it (all None: missing)."""

    path: str
    ino: int | None
    size: int | None
    mtime_ns: int | None
    ctime_ns: int | None


def is_manifest_name(name: str) -> bool:
    """A manifest in a directory: a manifest suffix, and not a hidden or editor file
    (`.x.yaml.swp`, `.#x.yaml`, `#x.yaml#`, `x.yaml~`)."""
    return name.endswith(MANIFEST_SUFFIXES) and not name.startswith((".", "#"))


def manifest_files(paths: list[str]) -> list[str]:
    """The files a manifest input is made of: named files as given, directories walked
    (hidden ones skipped), in sorted order."""
    out = []
    for p in paths:
        if not os.path.isdir(p):
            out.append(p)
            continue
        found = []
        for root, dirs, files in os.walk(p):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [os.path.join(root, f) for f in files if is_manifest_name(f)]
        out += sorted(found)
    return out


def _state(path: str) -> FileState:
    try:
        st = os.stat(path)
    except OSError:
        return FileState(path, None, None, None, None)
    return FileState(path, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def manifest_stamp(paths: list[str]) -> tuple[FileState, ...]:
    """What changes when any manifest file is added, removed, rewritten or replaced."""
    return tuple(_state(f) for f in manifest_files(paths))


def open_for_writing(path: str) -> bool | None:
    """Whether some process holds `path` open for writing (None: cannot tell). A read lease
    is refused with EAGAIN exactly then (fcntl(2), "Leases"); it is released at once. Needs
    SIGIO ignored: a writer opening the file meanwhile breaks the lease with that signal."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as e:
        return True if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK) else None
    else:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


def unfinished(state: FileState, before: FileState | None, settle: float, now_ns: int,
               leases: bool = True) -> str | None:
    """Why a file may still be being written (None: complete). `before`: the same path as
    last taken (None: not seen yet)."""
    if state.ino is None or state.mtime_ns is None or state.ctime_ns is None:
        return None  # missing: the loader says so
    if leases and open_for_writing(state.path):
        return f"{state.path} is open for writing"
    if before is not None and before.ino != state.ino:
        return None  # renamed into place: complete once nobody writes it
    if state.ctime_ns > state.mtime_ns:
        return None  # renamed (or its times set) after its last write
    age = (now_ns - state.mtime_ns) / 1e9
    if age < settle:
        return f"{state.path} was modified {max(age, 0.0):.2f}s ago (settle {settle:g}s)"
    return None


class FileSource:
    """Manifest files and directories, polled by the controller's main loop."""

    name = "manifests"

    def __init__(self, paths: list[str], settle: float = SETTLE):
        self.paths = list(paths)
        self.settle = settle
        self._sink: Sink | None = None
        self._lock = threading.Lock()
        self._leases = False
        self._stamp: tuple[FileState, ...] | None = None  # the input last taken or refused
        self._taken: dict[str, FileState] = {}  # each file as last taken
        self.cluster: Cluster | None = None  # the last good input
        self.error = ""
        self.waiting = ""
        self.loads = 0
        self.refusals = 0

    def start(self, sink: Sink) -> None:
        self._sink = sink
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGIO, signal.SIG_IGN)  # see open_for_writing
            self._leases = True
        self.reload()

    def stop(self) -> None:
        pass

    def _unfinished(self, stamp: tuple[FileState, ...]) -> str | None:
        now = time.time_ns()
        for s in stamp:
            why = unfinished(s, self._taken.get(s.path), self.settle, now, self._leases)
            if why:
                return why
        return None

    def poll(self) -> None:
        """Take the input if it changed and is complete; else wait for a later poll."""
        stamp = manifest_stamp(self.paths)
        if stamp == self._stamp:
            return
        why = self._unfinished(stamp)
        if why:
            if why != self.waiting:
                log.info("manifests: waiting: %s", why)
            self.waiting = why
            return
        self._load(stamp)

    def reload(self) -> dict:
        """Read the manifests now (waiting a little for files still being written)."""
        deadline = time.monotonic() + max(2.0, 4 * self.settle)
        while True:
            stamp = manifest_stamp(self.paths)
            why = self._unfinished(stamp)
            if not why:
                done = self._load(stamp)
                if done is not None:
                    return done
                why = "the manifests changed while being read"
            if time.monotonic() > deadline:
                return self._fail(stamp, f"{why}; not read ({CONVENTION})")
            time.sleep(0.05)

    def _load(self, stamp: tuple[FileState, ...]) -> dict | None:
        """Take the input of `stamp`; None when it changed while being read."""
        assert self._sink is not None, "start() first"
        with self._lock:
            self.waiting = ""
            files = [s.path for s in stamp]
            documents: dict[str, int] = {}
            try:
                cluster, warnings = load_paths(files, progress=lambda origin, n: documents.__setitem__(origin, n))
            except (ManifestError, OSError) as e:
                return self._fail(stamp, str(e))
            if manifest_stamp(self.paths) != stamp:
                return None  # changed while being read: read it again
            empty = [f for f in files if documents.get(f, 0) == 0]
            if empty:
                return self._fail(stamp, f"{empty[0]}: no documents (an empty file, or one cut short before its "
                                         f"first document); keeping the installed tables; an intentionally empty "
                                         f"file holds `kind: List` with `items: []`")
            why = refusal(self.cluster, cluster, ())
            if why is not None:
                why = refusal(self.cluster, cluster, declared_empty(files))
            if why is not None:
                return self._fail(stamp, why)
            for w in warnings:
                log.warning("manifests: %s", w)
            self._stamp, self._taken = stamp, {s.path: s for s in stamp}
            self.cluster, self.error = cluster, ""
            self.loads += 1
            generation = self._sink.set_cluster(cluster, full=True)
            return {"generation": generation, "error": self._sink.compile_error}

    def _fail(self, stamp: tuple[FileState, ...], error: str) -> dict:
        assert self._sink is not None, "start() first"
        self._stamp = stamp  # not again until something changes (or `reload`)
        if error != self.error:
            log.error("manifests: %s (keeping the last good input)", error)
        self.error = error
        self.refusals += 1
        return {"generation": self._sink.input_failed(self.name, error), "error": error}

    def status(self) -> dict:
        return {"kind": self.name, "paths": self.paths, "error": self.error, "waiting": self.waiting,
                "loads": self.loads, "refusals": self.refusals, "settle_seconds": self.settle}
