"""Installed flows + desired tables -> the one bundle that turns the first into the second.

Pure: no sockets, no os-ken. A flow is identified on a switch by (table, priority, match);
what differs under the same key is a modify. The bundle is atomic, so packets see the old
tables or the new ones, never a mix; inside it the order is still make-before-break (adds,
then replacements and modifies, then deletes), so even a switch that applied it message by
message would never lack a flow that both versions have.

Deletes: a flow whose cookie still names something desired is deleted strictly (by its key);
flows whose cookie names nothing desired any more -- a removed rule, or flows left by an older
run or another program -- are deleted by cookie, one message per cookie, which also covers
flows this controller cannot decode.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from flows.flow import Flow, FlowDiff
from flows.pipeline import cookie_kind
from flows.wire import InstalledFlow

ADD, REPLACE, MODIFY, DELETE, DELETE_RAW, DELETE_COOKIE = (
    "add", "replace", "modify", "delete", "delete_raw", "delete_cookie")


@dataclass(frozen=True)
class Op:
    """One flow_mod of a bundle. `flow` is the desired flow (add, replace, modify) or the
    installed one (delete); `installed` the undecodable flow of a raw delete; `cookie` the
    cookie of a delete by cookie."""

    kind: str
    flow: Flow | None = None
    installed: InstalledFlow | None = None
    cookie: int = 0

    def describe(self) -> str:
        if self.kind == DELETE_COOKIE:
            return f"delete every flow with cookie {self.cookie:#x}"
        if self.kind == DELETE_RAW and self.installed is not None:
            i = self.installed
            return f"delete table={i.table},priority={i.priority} (undecoded match, cookie {i.cookie:#x})"
        if self.flow is None:
            return f"{self.kind} ?"
        return f"{self.kind} {self.flow.render(cookie=False)} (cookie {self.flow.cookie:#x})"


@dataclass(frozen=True)
class Plan:
    """What one bundle does. `deleted` counts flows removed, including those covered by a
    delete by cookie."""

    add: tuple[Flow, ...] = ()
    replace: tuple[Flow, ...] = ()  # same key, other cookie: an add that replaces the flow
    modify: tuple[Flow, ...] = ()  # same key and cookie, other actions: modify-strict
    delete: tuple[Flow, ...] = ()
    delete_raw: tuple[InstalledFlow, ...] = ()
    delete_cookies: tuple[int, ...] = ()
    deleted_by_cookie: int = 0
    unknown: tuple[int, ...] = field(default=())  # cookies not ours (tag) among those deleted

    @property
    def empty(self) -> bool:
        return not (self.add or self.replace or self.modify or self.delete or self.delete_raw
                    or self.delete_cookies)

    @property
    def deleted(self) -> int:
        return len(self.delete) + len(self.delete_raw) + self.deleted_by_cookie

    @property
    def modified(self) -> int:
        return len(self.replace) + len(self.modify)

    def ops(self) -> list[Op]:
        """The bundle's messages in make-before-break order."""
        out = [Op(ADD, f) for f in self.add]
        out += [Op(REPLACE, f) for f in self.replace]
        out += [Op(MODIFY, f) for f in self.modify]
        return out + self.delete_ops()

    def delete_ops(self) -> list[Op]:
        """The last part of ops(): the deletes."""
        out = [Op(DELETE, f) for f in self.delete]
        out += [Op(DELETE_RAW, installed=i) for i in self.delete_raw]
        out += [Op(DELETE_COOKIE, cookie=c) for c in self.delete_cookies]
        return out

    @property
    def messages(self) -> int:
        return (len(self.add) + len(self.replace) + len(self.modify) + len(self.delete)
                + len(self.delete_raw) + len(self.delete_cookies))

    def summary(self) -> dict:
        return {"add": len(self.add), "modify": self.modified, "delete": self.deleted,
                "messages": self.messages}

    def __len__(self) -> int:
        return len(self.add) + self.modified + self.deleted


Installed = Flow | InstalledFlow


def plan(installed: Iterable[Installed], desired: Iterable[Flow]) -> Plan:
    """The bundle that makes the switch hold exactly `desired`."""
    installed = installed if isinstance(installed, (list, tuple)) else list(installed)
    if not installed:  # a cold install: no need to index 100k keys (adds replace equal keys)
        return Plan(add=tuple(desired))
    want = {f.key: f for f in desired}
    known = {f.cookie for f in want.values()}
    delete_raw: list[InstalledFlow] = []
    by_cookie: dict[int, int] = {}
    delete: list[Flow] = []
    replace: list[Flow] = []
    modify: list[Flow] = []
    for item in installed:  # each installed key is hashed once: pop it from what is wanted
        flow = item.flow if isinstance(item, InstalledFlow) else item
        if flow is None:  # a match we cannot decode: never one of ours
            if item.cookie in known:
                delete_raw.append(item)  # type: ignore[arg-type]  # flow None: an InstalledFlow
            else:
                by_cookie[item.cookie] = by_cookie.get(item.cookie, 0) + 1
            continue
        f = want.pop(flow.key, None)
        if f is not None:
            if f != flow:
                (modify if f.cookie == flow.cookie else replace).append(f)
        elif flow.cookie in known:
            delete.append(flow)
        else:
            by_cookie[flow.cookie] = by_cookie.get(flow.cookie, 0) + 1
    add = list(want.values())  # what no installed flow had
    # Desired order (the compiler's) and switch order are kept: sorting 100k Flow values
    # would cost more than encoding them.
    cookies = tuple(sorted(by_cookie))
    return Plan(tuple(add), tuple(replace), tuple(modify), tuple(delete), tuple(delete_raw),
                cookies, sum(by_cookie.values()), tuple(c for c in cookies if cookie_kind(c) is None))


def plan_diff(change: FlowDiff, installed: Mapping[tuple, Flow]) -> Plan:
    """The bundle of an incremental change: an engine's flow difference (sdn.engine) against
    the flows the switch holds, by key. Unlike `plan` it never looks at the whole table, so
    its cost follows the change, not the bridge. A changed flow whose cookie changed too is
    re-added (a modify keeps the installed cookie); a deleted flow is deleted strictly."""
    replace: list[Flow] = []
    modify: list[Flow] = []
    add = list(change.add)
    for f in change.modify:
        old = installed.get(f.key)
        if old is None:
            add.append(f)
        else:
            (modify if old.cookie == f.cookie else replace).append(f)
    return Plan(tuple(add), tuple(replace), tuple(modify), tuple(change.delete))
