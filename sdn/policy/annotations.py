"""The 2016 namespace annotations that switch the alpha and beta policy forms on."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Protocol

ALPHA_ISOLATION_ANNOTATION = "net.alpha.kubernetes.io/network-isolation"
BETA_POLICY_ANNOTATION = "net.beta.kubernetes.io/network-policy"


class Namespace(Protocol):
    """What is read here of a namespace (sdn.policy.model.Namespace, which imports this)."""

    @property
    def annotations(self) -> Iterable[tuple[str, str]]: ...

# Implementations of the time accepted yes/no besides on/off (see notes/networkpolicy.md).
_ALPHA_ON = {"on", "yes", "true"}


def alpha_isolation(ns: Namespace) -> bool:
    """True when net.alpha.kubernetes.io/network-isolation is on for this namespace."""
    value = dict(ns.annotations).get(ALPHA_ISOLATION_ANNOTATION, "off")
    return value.strip().lower() in _ALPHA_ON


def beta_default_deny(ns: Namespace) -> bool:
    """True when the beta annotation says {"ingress": {"isolation": "DefaultDeny"}}.

    A malformed value is rejected earlier, by manifest validation; here it counts as absent.
    """
    raw = dict(ns.annotations).get(BETA_POLICY_ANNOTATION)
    if not raw:
        return False
    try:
        doc = json.loads(raw)
    except ValueError:
        return False
    ingress = doc.get("ingress") if isinstance(doc, dict) else None
    return isinstance(ingress, dict) and ingress.get("isolation") == "DefaultDeny"
