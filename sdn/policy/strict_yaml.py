"""YAML and JSON text -> documents, refusing a key given twice in one mapping.

PyYAML and json keep the last value of a repeated key without a word; the API server
(sigs.k8s.io/yaml, strict decoding) and kubectl refuse such a manifest. A silently dropped
`podSelector` or `ports` would change what a policy allows, so we refuse it too, naming the
line of both occurrences."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import yaml

_BASE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE = "tag:yaml.org,2002:merge"


class DuplicateKey(ValueError):
    """`key` appears twice in one mapping: at `line`, and first at `first_line` (1-based; 0
    when unknown)."""

    def __init__(self, key: Any, line: int, first_line: int):
        self.key, self.line, self.first_line = key, line, first_line
        where = f"line {line}: " if line else ""
        first = f" (first on line {first_line})" if first_line else ""
        super().__init__(f"{where}duplicate key {key!r} in a mapping{first}; kubectl refuses it too: "
                         f"keep one")


class _StrictLoader(_BASE):  # type: ignore[misc, valid-type]
    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                continue  # "<<: *anchor" merges are allowed to be overridden
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise DuplicateKey(key, key_node.start_mark.line + 1, seen[key])
                seen[key] = key_node.start_mark.line + 1
            except TypeError:
                continue  # an unhashable key: the base constructor reports it
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> list[Any]:
    """Every document of a YAML stream; DuplicateKey on a repeated key, yaml.YAMLError otherwise."""
    return list(iter_yaml(text))


def iter_yaml(stream) -> Iterator[Any]:
    """The documents of a YAML stream (text or an open file), one at a time, as the C parser
    (libyaml, where PyYAML has it) yields them; DuplicateKey on a repeated key."""
    yield from yaml.load_all(stream, Loader=_StrictLoader)


def _pairs(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKey(k, 0, 0)
        out[k] = v
    return out


def load_json(text: str) -> Any:
    """One JSON value; DuplicateKey (with lines, found by reading it again as YAML) on a
    repeated key, ValueError otherwise."""
    try:
        return json.loads(text, object_pairs_hook=_pairs)
    except DuplicateKey as dup:
        try:
            load_yaml(text)  # JSON is YAML: the YAML reader knows where each key is
        except DuplicateKey as located:
            raise located from None
        except yaml.YAMLError:
            pass
        raise dup from None
