"""The revalidator purge after a commit that changed what is judged.

After a bundle that changed the rule or default-deny tables, the datapath's cached flows are
dropped (`ovs-appctl revalidator/purge`) so every packet meets the new tables at once. OVS
revalidates its cache after table changes anyway, but the userspace datapath of OVS 3.1 was
seen keeping a stale megaflow that let a now-denied connection through (docs/lab.md); a purge
costs one upcall per active flow.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable

from flows import pipeline as P
from sdn.switch.nodespec import NodeSpec
from sdn.switch.reconcile import Plan

log = logging.getLogger("sdn.switch.purge")

JUDGED = frozenset({P.EGRESS_RULE, P.EGRESS_DEFAULT, P.INGRESS_RULE, P.INGRESS_DEFAULT})


def vswitchd_ctl(rundir: str) -> str | None:
    """ovs-vswitchd's control socket in an OVS run directory (by its pid file)."""
    try:
        with open(os.path.join(rundir, "ovs-vswitchd.pid")) as fh:
            pid = int(fh.read().strip())
    except (OSError, ValueError):
        return None
    ctl = os.path.join(rundir, f"ovs-vswitchd.{pid}.ctl")
    return ctl if os.path.exists(ctl) else None


def judged(plan: Plan) -> bool:
    """Whether a committed plan touched a table where traffic is judged (a delete by cookie
    may have)."""
    return bool(plan.delete_cookies) or any(
        f.table in JUDGED for f in (*plan.add, *plan.replace, *plan.modify, *plan.delete))


def purger(spec: NodeSpec) -> Callable[[Plan], None]:
    """The after-commit hook of a node's bridge worker (sdn.switch.bridge.BridgeAgent)."""

    def purge(plan: Plan) -> None:
        if spec.ovs_rundir is None or not judged(plan):
            return
        ctl = vswitchd_ctl(spec.ovs_rundir)
        if ctl is None:
            return
        done = subprocess.run(["ovs-appctl", "-t", ctl, "revalidator/purge"], capture_output=True,
                              text=True, timeout=10)
        if done.returncode != 0:
            log.warning("%s: revalidator/purge failed: %s", spec.node, done.stderr.strip())
    return purge
