"""Pod addresses from one range (IPv4, or IPv6 beside it), reserved in files that outlive the
plugin process.

The store is host-local's on-disk format (plugins/ipam/host-local/backend/disk), so the
two can even share a directory: one file per reserved address, named by the address and
holding "<container id>\\r\\n<ifname>"; ``last_reserved_ip.<N>`` remembers where the last
allocation of range set N (0: IPv4, 1: IPv6) stopped, so addresses are handed out round-robin (a released address is not
reused at once); every change happens under ``flock`` on the ``lock`` file, and a file is
created with O_EXCL, so no address is ever handed out twice, even by racing processes.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from ipaddress import ip_address, ip_interface
from pathlib import Path

from sdn.cni.config import IPAddress, IpamConfig, IPInterface
from sdn.cni.spec import ERR_IO, ERR_IPAM_EXHAUSTED, CniError

LINE_BREAK = "\r\n"
LOCK = "lock"


def _order(addr: IPAddress) -> tuple[int, int]:
    return addr.version, int(addr)


class Store:
    """Reservations of one network (``config.store``)."""

    def __init__(self, config: IpamConfig):
        self.config = config
        self.dir = config.store
        self.last_reserved = f"last_reserved_ip.{config.index}"
        self._addr = type(config.range_start)  # IPv4Address or IPv6Address

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise CniError(ERR_IO, f"IPAM store {self.dir}: {e.strerror}", str(e)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _reservations(self) -> dict[IPAddress, tuple[str, str]]:
        """Address -> (container id, ifname) of every reservation file."""
        out = {}
        for entry in os.scandir(self.dir):
            try:
                addr = ip_address(entry.name)
            except ValueError:
                continue  # lock, last_reserved_ip.0, foreign files
            try:
                text = Path(entry.path).read_text()
            except FileNotFoundError:
                continue
            lines = [line.strip() for line in text.splitlines()]
            out[addr] = (lines[0] if lines else "", lines[1] if len(lines) > 1 else "")
        return out

    def _owned(self, reservations: dict, container_id: str, ifname: str) -> list[IPAddress]:
        # host-local (before ifname was recorded) wrote only the id: match that too.
        return sorted((a for a, (cid, ifn) in reservations.items()
                       if cid == container_id and ifn in (ifname, "")), key=_order)

    def _candidates(self) -> Iterator[IPAddress]:
        """The range, minus network/gateway/broadcast, starting after the last reserved."""
        c = self.config
        skip = {c.subnet.network_address, c.subnet.broadcast_address, c.gateway}
        first, last = int(c.range_start), int(c.range_end)
        try:
            prev = int(self._addr((self.dir / self.last_reserved).read_text().strip()))
        except (OSError, ValueError):
            prev = last
        if not first <= prev <= last:
            prev = last
        size = last - first + 1
        for i in range(size):
            addr = self._addr(first + (prev - first + 1 + i) % size)
            if addr not in skip:
                yield addr

    def reservable(self) -> int:
        """Addresses of the range that may be handed out (not network, broadcast, gateway)."""
        c = self.config
        skip = {c.subnet.network_address, c.subnet.broadcast_address, c.gateway}
        return int(c.range_end) - int(c.range_start) + 1 - sum(1 for a in skip if int(c.range_start) <= int(a) <= int(c.range_end))

    def allocate(self, container_id: str, ifname: str,
                 requested: IPAddress | None = None) -> tuple[IPInterface, bool]:
        """An address for (container, ifname) and whether it is new: a container that
        already holds one in the subnet gets the same one back (``False``). `requested`
        (CNI_ARGS IP=..., as host-local takes it): exactly that address, or an error."""
        c = self.config
        with self._locked():
            taken = self._reservations()
            for addr in self._owned(taken, container_id, ifname):
                if addr in c.subnet:
                    return ip_interface(f"{addr}/{c.subnet.prefixlen}"), False
            candidates: Iterable = self._candidates()
            if requested is not None:
                skip = {c.subnet.network_address, c.subnet.broadcast_address, c.gateway}
                if not (requested.version == c.subnet.version and int(c.range_start) <= int(requested) <= int(c.range_end)) \
                        or requested in skip or requested in taken:
                    raise CniError(ERR_IPAM_EXHAUSTED,
                                   f"IPAM: requested address {requested} is not available in {c.subnet} "
                                   f"(range {c.range_start}-{c.range_end}; network, gateway and broadcast "
                                   f"are never handed out)", "taken" if requested in taken else "out of range")
                candidates = [requested]
            for addr in candidates:
                if addr in taken:
                    continue
                try:
                    fd = os.open(self.dir / str(addr), os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                                 0o644)
                except FileExistsError:
                    continue  # written by someone who ignores the lock
                except OSError as e:
                    raise CniError(ERR_IO, f"IPAM store {self.dir}: {e.strerror}",
                                   str(e)) from None
                try:
                    os.write(fd, (container_id + LINE_BREAK + ifname).encode())
                    os.fsync(fd)
                finally:
                    os.close(fd)
                tmp = self.dir / f".{self.last_reserved}.{os.getpid()}"
                tmp.write_text(str(addr))
                tmp.replace(self.dir / self.last_reserved)
                return ip_interface(f"{addr}/{c.subnet.prefixlen}"), True
        raise CniError(
            ERR_IPAM_EXHAUSTED,
            f"IPAM: no free address in {c.subnet} (range {c.range_start}-{c.range_end}, "
            f"{self.reservable()} reservable): all are in use",
            f"network, broadcast and gateway {c.gateway} are never handed out; reservations "
            f"are files in {self.dir}")

    def lookup(self, container_id: str, ifname: str) -> IPAddress | None:
        """The address reserved for (container, ifname), if any."""
        with self._locked():
            owned = [a for a in self._owned(self._reservations(), container_id, ifname) if a in self.config.subnet]
        return owned[0] if owned else None

    def release(self, container_id: str, ifname: str) -> list[IPAddress]:
        """Free every address of (container, ifname); none is fine (DEL is idempotent)."""
        if not self.dir.exists():
            return []
        with self._locked():
            owned = self._owned(self._reservations(), container_id, ifname)
            for addr in owned:
                (self.dir / str(addr)).unlink(missing_ok=True)
        return owned

    def free_addresses(self) -> int:
        """How many addresses of the range are not reserved (STATUS: can an ADD succeed?)."""
        c = self.config
        with self._locked():
            taken = self._reservations()
        skip = {c.subnet.network_address, c.subnet.broadcast_address, c.gateway}
        return self.reservable() - sum(1 for a in taken if a.version == c.subnet.version
                                       and int(c.range_start) <= int(a) <= int(c.range_end) and a not in skip)

    def collect(self, valid: frozenset[tuple[str, str]]) -> list[IPAddress]:
        """GC: free every reservation whose (container id, ifname) is not in `valid`."""
        if not self.dir.exists():
            return []
        with self._locked():
            stale = sorted((a for a, (cid, ifn) in self._reservations().items() if (cid, ifn) not in valid
                            and not (ifn == "" and any(cid == v[0] for v in valid))), key=_order)
            for addr in stale:
                (self.dir / str(addr)).unlink(missing_ok=True)
        return stale
