"""Refusing an input that suddenly lost everything of a kind.

A manifest cut short between its pods and its policies parses fine and loses every policy
(denied pairs become reachable); an emptied file loses every pod (every pod's traffic drops).
Neither is taken unless the input says it means it: an explicitly empty list of that kind
(`kind: NetworkPolicyList` / `kind: PodList` with `items: []`), or an empty `kind: List`,
which means "nothing at all, on purpose" (docs/controller.md, "Complete inputs only").
"""

from __future__ import annotations

from collections.abc import Iterable

import yaml

from sdn.policy.model import Cluster

POLICY_LIST = "NetworkPolicyList"
POD_LIST = "PodList"
ANY_LIST = "List"

HOW = ("if that is intended, say so with an explicitly empty list in the manifests "
       "(`kind: {kind}` with `items: []`, or `kind: List` with `items: []` for nothing at all)")


EMPTY_POLICIES = {"apiVersion": "networking.k8s.io/v1", "kind": POLICY_LIST, "items": []}
EMPTY_PODS = {"apiVersion": "v1", "kind": POD_LIST, "items": []}


def declarations(docs: Iterable[dict]) -> list[dict]:
    """The explicitly empty lists a writer of `docs` (whole manifests, not a part) adds to say
    that having no policy or no pod is meant (the lab does; so do the tests)."""
    kinds = {d.get("kind") for d in docs if isinstance(d, dict)}
    return ([] if "NetworkPolicy" in kinds else [EMPTY_POLICIES]) + ([] if "Pod" in kinds else [EMPTY_PODS])


def refusal(previous: Cluster | None, new: Cluster, declared_empty: Iterable[str]) -> str | None:
    """Why `new` must not replace `previous` (None: take it). `declared_empty`: the kinds of
    the explicitly empty lists in the new input (POLICY_LIST, POD_LIST, ANY_LIST)."""
    if previous is None:
        return None
    declared = set(declared_empty)
    lost = []
    if previous.policies and not new.policies and not declared & {POLICY_LIST, ANY_LIST}:
        lost.append((f"no NetworkPolicy (the installed input has {len(previous.policies)})", POLICY_LIST))
    if previous.pods and not new.pods and not declared & {POD_LIST, ANY_LIST}:
        lost.append((f"no Pod (the installed input has {len(previous.pods)})", POD_LIST))
    if not lost:
        return None
    what = " and ".join(w for w, _ in lost)
    return (f"refused: the new input has {what}; keeping the installed tables; "
            + HOW.format(kind=lost[0][1]))


def empty_lists(docs: Iterable[object]) -> set[str]:
    """The kinds of the explicitly empty lists among parsed documents."""
    out = set()
    for doc in docs:
        if isinstance(doc, dict) and isinstance(doc.get("kind"), str) and doc["kind"].endswith("List") \
                and doc.get("items") == []:
            out.add(doc["kind"])
    return out


def declared_empty(files: Iterable[str]) -> set[str]:
    """The explicitly empty lists of manifest files (read only when a refusal is in sight)."""
    out: set[str] = set()
    for path in files:
        try:
            with open(path, encoding="utf-8") as fh:
                out |= empty_lists(yaml.safe_load_all(fh))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # the loader already read it whole; an error here declares nothing
    return out
