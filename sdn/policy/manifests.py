"""Reading Kubernetes manifests into the normalised model of `sdn.policy.model`.

Input: YAML (multi-document) or JSON files, directories of them, stdin, or already-parsed
dicts. Kinds understood: Namespace, Pod and Node (v1) and NetworkPolicy in its three forms:

- networking.k8s.io/v1 (FORM_V1), with the API server's defaulting of policyTypes;
- extensions/v1beta1 (FORM_BETA), the 2016 beta: ingress only, a peer is exactly one of
  podSelector or namespaceSelector, and an ABSENT from/ports means "all" while an explicit
  EMPTY list means "nothing";
- net.alpha.kubernetes.io/v1alpha1 (FORM_ALPHA), the 2016 ThirdPartyResource: a plain label map
  as podSelector and one `allowIncoming` rule (same absent/empty nuance as the beta).

Everything is validated the way the API server would, and the first invalid thing raises a
`ManifestError` naming the file, the object and the field (a JSON path). Unknown fields of a
policy are rejected (a typo such as `namspaceSelector` would otherwise silently widen a
policy). Unknown kinds are skipped with a warning. Nothing is added to a cluster before every
document has been validated, so no partial state escapes.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, overload

import netaddr
import yaml

from flows.bulk import gc_paused
from sdn.policy.model import (
    ALPHA_ISOLATION_ANNOTATION,
    BETA_POLICY_ANNOTATION,
    EGRESS,
    FORM_ALPHA,
    FORM_BETA,
    FORM_V1,
    INGRESS,
    PROTOCOLS,
    Cluster,
    ContainerPort,
    IPBlock,
    LabelSelector,
    Namespace,
    Node,
    Peer,
    Pod,
    Policy,
    PolicyPort,
    PolicyRule,
    Requirement,
    freeze_labels,
)
from sdn.policy.strict_yaml import DuplicateKey, iter_yaml, load_json

__all__ = [
    "API_ALPHA",
    "API_BETA",
    "API_V1",
    "MANIFEST_SUFFIXES",
    "ManifestError",
    "add_object",
    "describe",
    "load_documents",
    "load_paths",
    "load_text",
    "object_key",
    "parse_object",
    "remove_object",
]

API_V1 = "networking.k8s.io/v1"
API_BETA = "extensions/v1beta1"
API_ALPHA = "net.alpha.kubernetes.io/v1alpha1"
_POLICY_FORMS = {API_V1: FORM_V1, API_BETA: FORM_BETA, API_ALPHA: FORM_ALPHA}

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "-"
_STDIN_ORIGIN = "<stdin>"

_CORE_KINDS = ("Namespace", "Pod", "Node")
_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
_ALPHA_ISOLATION_VALUES = {"on", "off", "yes", "no", "true", "false"}
# Address types of a Node whose value is an IP (the others are host names).
_NODE_IP_ADDRESS_TYPES = ("InternalIP", "ExternalIP")


# --------------------------------------------------------------------------------------------
# Errors


MESSAGE_MAX = 600  # characters of one error message at most (values in it are cut first)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit - 30]}... ({len(text)} characters)"


class ManifestError(Exception):
    """An invalid manifest: which file, which object, which field, and what is wrong.

    `obj` reads like "NetworkPolicy x/allow-a" (kind, namespace/name), `field` is a JSON path
    such as "spec.ingress[0].from[1].ipBlock.except[0]". Either may be empty when the problem
    is not inside one object (a YAML syntax error, a missing file).
    """

    def __init__(self, file: str, obj: str, field: str, message: str):
        self.file = file
        self.obj = obj
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = (self.file, _cut(self.obj, 200), _cut(self.field, 200), _cut(self.message, MESSAGE_MAX))
        return ": ".join(p for p in parts if p)

    def __reduce__(self):  # picklable despite the keyword-free __init__ signature
        return (type(self), (self.file, self.obj, self.field, self.message))


class _FieldError(Exception):
    """Raised inside one object; parse_object adds the file and the object name."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


# --------------------------------------------------------------------------------------------
# Small validation helpers (all raise _FieldError)


def _at(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{path}.{key}" if path else key
    return f"{path}[{key}]"


SHOW_MAX = 80  # characters of an offending value quoted in an error message


def _show(value: Any) -> str:
    """An offending value as an error message quotes it: its repr, cut to SHOW_MAX characters
    (a 400 KB string once filled a terminal), saying how long it was."""
    text = repr(value)
    if len(text) <= SHOW_MAX:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters as text"
    return f"{text[:SHOW_MAX - 20]}... ({size})"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _mapping(value: Any, path: str, allowed: Iterable[str] | None = None) -> dict:
    """An object (None counts as absent = {}); with `allowed`, unknown fields are errors."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _FieldError(path, f"must be an object, not {_type_name(value)}")
    for key in value:
        if not isinstance(key, str):
            raise _FieldError(path, f"field names must be strings, not {_type_name(key)} {_show(key)}")
    if allowed is not None:
        allowed = list(allowed)
        for key in value:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                if hint:
                    more = f' (did you mean "{hint[0]}"?)'
                else:
                    more = f" (known: {', '.join(allowed)})"
                raise _FieldError(_at(path, key), "unknown field" + more)
    return value


def _list(value: Any, path: str) -> list | None:
    """A list, or None when absent/null (the API treats JSON null like an absent field)."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise _FieldError(path, f"must be a list, not {_type_name(value)}")
    return value


@overload
def _string(value: Any, path: str, *, required: Literal[True]) -> str: ...
@overload
def _string(value: Any, path: str, *, required: bool = False) -> str | None: ...
def _string(value: Any, path: str, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise _FieldError(path, "is required")
        return None
    if not isinstance(value, str):
        hint = ""
        if isinstance(value, (bool, int, float)):
            hint = " (quote it: YAML reads true/false/on/off/yes/no and numbers as non-strings)"
        raise _FieldError(path, f"must be a string, not {_type_name(value)} {_show(value)}{hint}")
    if required and not value:
        raise _FieldError(path, "must not be empty")
    return value


def _int(value: Any, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _FieldError(path, f"must be an integer, not {_type_name(value)} {_show(value)}")
    if not lo <= value <= hi:
        raise _FieldError(path, f"must be between {lo} and {hi}, inclusive (got {value})")
    return value


_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_PORT_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


def _check_dns_label(value: str, path: str) -> None:
    if len(value) > 63 or not _DNS1123_LABEL.fullmatch(value):
        raise _FieldError(
            path,
            f"{_show(value)} is not a valid name: lower case letters, digits and '-', at most 63 "
            "characters, starting and ending with a letter or digit",
        )


def _check_dns_subdomain(value: str, path: str) -> None:
    if len(value) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(value):
        raise _FieldError(
            path,
            f"{_show(value)} is not a valid name: lower case letters, digits, '-' and '.', at most "
            "253 characters, starting and ending with a letter or digit",
        )


def _check_label_key(key: str, path: str) -> None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix)):
        raise _FieldError(path, f"invalid label key {_show(key)}: the prefix must be a DNS subdomain")
    if not name or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        raise _FieldError(
            path,
            f"invalid label key {_show(key)}: the name must be 1-63 characters of letters, digits, "
            "'-', '_' and '.', starting and ending with a letter or digit",
        )


def _check_label_value(value: str, path: str) -> None:
    if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
        raise _FieldError(
            path,
            f"invalid label value {_show(value)}: at most 63 characters of letters, digits, '-', '_' "
            "and '.', starting and ending with a letter or digit",
        )


def _label_map(value: Any, path: str) -> dict[str, str]:
    """A map of label keys to label values (metadata.labels, matchLabels, alpha selectors)."""
    out: dict[str, str] = {}
    for key, val in _mapping(value, path).items():
        _check_label_key(key, _at(path, key))
        if val is None:
            raise _FieldError(_at(path, key), "must be a string, not null")
        out[key] = _string(val, _at(path, key)) or ""  # (val is not None: a string)
        _check_label_value(out[key], _at(path, key))
    return out


def _annotation_map(value: Any, path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, val in _mapping(value, path).items():
        if val is None:
            raise _FieldError(_at(path, key), "must be a string, not null")
        out[key] = _string(val, _at(path, key)) or ""  # (val is not None: a string)
    return out


def _port_name_problem(name: str) -> str | None:
    """Why `name` is not an IANA_SVC_NAME, or None if it is one."""
    if len(name) > 15:
        return "must be no more than 15 characters"
    if not _PORT_NAME.fullmatch(name):
        return (
            "must contain only lower case letters, digits and '-', and start and end with a "
            "letter or digit"
        )
    if "--" in name:
        return "must not contain consecutive hyphens"
    if not re.search(r"[a-z]", name):
        return "must contain at least one letter"
    return None


def _ip(value: Any, path: str) -> netaddr.IPAddress:
    text = _string(value, path, required=True)
    try:
        return netaddr.IPAddress(text, flags=netaddr.INET_PTON)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise _FieldError(path, f"{_show(text)} is not a valid IP address") from None


def _cidr(value: Any, path: str) -> netaddr.IPNetwork:
    text = _string(value, path, required=True)
    addr, slash, plen = text.partition("/")
    if not slash:
        raise _FieldError(path, f"{_show(text)} is not a valid CIDR: expected address/prefix-length")
    try:
        ip = netaddr.IPAddress(addr, flags=netaddr.INET_PTON)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise _FieldError(path, f"{_show(text)} is not a valid CIDR: bad address {_show(addr)}") from None
    width = 32 if ip.version == 4 else 128
    if not re.fullmatch(r"0|[1-9][0-9]{0,2}", plen) or int(plen) > width:
        raise _FieldError(
            path, f"{_show(text)} is not a valid CIDR: prefix length must be 0-{width}, not {_show(plen)}"
        )
    return netaddr.IPNetwork(f"{ip}/{plen}")


# --------------------------------------------------------------------------------------------
# Label selectors


def _label_selector(value: Any, path: str) -> LabelSelector:
    """metav1.LabelSelector: matchLabels and matchExpressions (None/absent = empty = all)."""
    sel = _mapping(value, path, ("matchLabels", "matchExpressions"))
    labels = _label_map(sel.get("matchLabels"), _at(path, "matchLabels"))
    reqs = []
    exprs_path = _at(path, "matchExpressions")
    for i, expr in enumerate(_list(sel.get("matchExpressions"), exprs_path) or ()):
        p = _at(exprs_path, i)
        expr = _mapping(expr, p, ("key", "operator", "values"))
        if not expr:
            raise _FieldError(p, "must specify key and operator")
        key = _string(expr.get("key"), _at(p, "key"), required=True)
        _check_label_key(key, _at(p, "key"))
        op = _string(expr.get("operator"), _at(p, "operator"), required=True)
        if op not in _SELECTOR_OPERATORS:
            raise _FieldError(
                _at(p, "operator"),
                f"unknown operator {_show(op)}: must be one of {', '.join(_SELECTOR_OPERATORS)}",
            )
        values_path = _at(p, "values")
        values = []
        for j, v in enumerate(_list(expr.get("values"), values_path) or ()):
            v = _string(v, _at(values_path, j))
            if v is None:
                raise _FieldError(_at(values_path, j), "must be a string, not null")
            _check_label_value(v, _at(values_path, j))
            values.append(v)
        if op in ("In", "NotIn") and not values:
            raise _FieldError(values_path, f"must be non-empty when operator is {op}")
        if op in ("Exists", "DoesNotExist") and values:
            raise _FieldError(values_path, f"must be empty when operator is {op}")
        reqs.append(Requirement(key, op, tuple(values)))
    return LabelSelector(freeze_labels(labels), tuple(reqs))


def _plain_selector(value: Any, path: str) -> LabelSelector:
    """The alpha form's selector: a plain label map."""
    if isinstance(value, dict):
        for key in ("matchLabels", "matchExpressions"):
            if isinstance(value.get(key), (dict, list)):
                raise _FieldError(
                    _at(path, key),
                    f"the {API_ALPHA} selector is a plain label map; {key} is not supported",
                )
    return LabelSelector(freeze_labels(_label_map(value, path)))


# --------------------------------------------------------------------------------------------
# Ports


def _policy_port(value: Any, path: str, *, end_port: bool) -> PolicyPort:
    allowed = ("protocol", "port", "endPort") if end_port else ("protocol", "port")
    spec = _mapping(value, path, allowed)
    proto = spec.get("protocol")
    if proto is None:
        proto = "TCP"
    else:
        proto = _string(proto, _at(path, "protocol"))
        if proto not in PROTOCOLS:
            raise _FieldError(
                _at(path, "protocol"),
                f"unsupported protocol {_show(proto)}: must be one of {', '.join(PROTOCOLS)}",
            )
    port = spec.get("port")
    port_path = _at(path, "port")
    if port is None:
        pass
    elif isinstance(port, str):
        problem = _port_name_problem(port)
        if problem:
            hint = " (write a port number without quotes)" if port.isdigit() else ""
            raise _FieldError(port_path, f"invalid named port {_show(port)}: {problem}{hint}")
    elif isinstance(port, int) and not isinstance(port, bool):
        _int(port, port_path, 1, 65535)
    else:
        raise _FieldError(port_path, f"must be a port number or name, not {_type_name(port)}")
    end = spec.get("endPort")
    end_path = _at(path, "endPort")
    if end is not None:
        end = _int(end, end_path, 1, 65535)
        if port is None:
            raise _FieldError(end_path, "may not be specified when port is not specified")
        if isinstance(port, str):
            raise _FieldError(end_path, f"may not be specified when port is a named port ({port})")
        if end < port:
            raise _FieldError(end_path, f"must be >= port ({port})")
    return PolicyPort(proto, port, end)


def _ports(value: Any, path: str, *, end_port: bool, empty_is_all: bool):
    items = _list(value, path)
    if items is None:
        return None
    if not items:
        return None if empty_is_all else ()
    return tuple(_policy_port(p, _at(path, i), end_port=end_port) for i, p in enumerate(items))


# --------------------------------------------------------------------------------------------
# Peers


def _ip_block(value: Any, path: str, warnings: list[str]) -> IPBlock:
    spec = _mapping(value, path, ("cidr", "except"))
    cidr_text = spec.get("cidr")
    if cidr_text is None:
        raise _FieldError(_at(path, "cidr"), "is required")
    net = _cidr(cidr_text, _at(path, "cidr"))
    if net.ip != net.network:
        warnings.append(
            f"{_at(path, 'cidr')}: {cidr_text} has host bits set; it means {net.cidr}"
        )
    excepts = []
    exc_path = _at(path, "except")
    for i, exc_text in enumerate(_list(spec.get("except"), exc_path) or ()):
        p = _at(exc_path, i)
        exc = _cidr(exc_text, p)
        if exc.version != net.version:
            raise _FieldError(p, f"{exc_text} is not in the address family of cidr {cidr_text}")
        if exc.cidr not in net.cidr or exc.prefixlen <= net.prefixlen:
            raise _FieldError(p, f"{exc_text} must be a strict subset of cidr {cidr_text}")
        excepts.append(exc_text)
    return IPBlock(cidr_text, tuple(excepts))


def _v1_peer(value: Any, path: str, warnings: list[str]) -> Peer:
    spec = _mapping(value, path, ("podSelector", "namespaceSelector", "ipBlock"))
    kinds = ("podSelector", "namespaceSelector", "ipBlock")
    present = [k for k in kinds if spec.get(k) is not None]
    if not present:
        raise _FieldError(
            path,
            "must specify podSelector, namespaceSelector or ipBlock (an empty peer is invalid)",
        )
    if "ipBlock" in present and len(present) > 1:
        raise _FieldError(path, "ipBlock cannot be combined with podSelector or namespaceSelector")
    if "ipBlock" in present:
        return Peer(ip_block=_ip_block(spec["ipBlock"], _at(path, "ipBlock"), warnings))
    pods = spec.get("podSelector")
    nss = spec.get("namespaceSelector")
    return Peer(
        pod_selector=None if pods is None else _label_selector(pods, _at(path, "podSelector")),
        namespace_selector=None
        if nss is None
        else _label_selector(nss, _at(path, "namespaceSelector")),
    )


def _beta_peer(value: Any, path: str) -> Peer:
    if isinstance(value, dict) and "ipBlock" in value:
        raise _FieldError(
            _at(path, "ipBlock"),
            f"ipBlock is not supported by {API_BETA} NetworkPolicy (use {API_V1})",
        )
    spec = _mapping(value, path, ("podSelector", "namespaceSelector"))
    present = [k for k in ("podSelector", "namespaceSelector") if spec.get(k) is not None]
    if len(present) != 1:
        raise _FieldError(
            path, "must specify exactly one of podSelector or namespaceSelector"
        )
    key = present[0]
    sel = _label_selector(spec[key], _at(path, key))
    return Peer(pod_selector=sel) if key == "podSelector" else Peer(namespace_selector=sel)


def _alpha_peer(value: Any, path: str) -> Peer:
    spec = _mapping(value, path, ("pods", "namespaces"))
    present = [k for k in ("pods", "namespaces") if spec.get(k) is not None]
    if len(present) != 1:
        raise _FieldError(path, "must specify exactly one of pods or namespaces")
    key = present[0]
    sel = _plain_selector(spec[key], _at(path, key))
    return Peer(pod_selector=sel) if key == "pods" else Peer(namespace_selector=sel)


# --------------------------------------------------------------------------------------------
# Objects


@dataclass
class _Meta:
    name: str
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]


def _metadata(doc: dict, namespaced: bool) -> _Meta:
    meta = _mapping(doc.get("metadata"), "metadata")
    name = _string(meta.get("name"), "metadata.name", required=True)
    namespace = ""
    if namespaced:
        namespace = _string(meta.get("namespace"), "metadata.namespace") or "default"
        _check_dns_label(namespace, "metadata.namespace")
    labels = _label_map(meta.get("labels"), "metadata.labels")
    annotations = _annotation_map(meta.get("annotations"), "metadata.annotations")
    return _Meta(name, namespace, labels, annotations)


def _namespace(doc: dict, meta: _Meta, warnings: list[str]) -> Namespace:
    _check_dns_label(meta.name, "metadata.name")
    field = f"metadata.annotations[{BETA_POLICY_ANNOTATION}]"
    raw = meta.annotations.get(BETA_POLICY_ANNOTATION)
    if raw is not None:
        try:
            value = json.loads(raw)
        except ValueError as e:
            raise _FieldError(field, f"malformed JSON: {e}") from None
        ingress = value.get("ingress") if isinstance(value, dict) else None
        isolation = ingress.get("isolation") if isinstance(ingress, dict) else None
        if isolation is not None and isolation != "DefaultDeny":
            warnings.append(
                f"{field}: isolation {_show(isolation)} is not \"DefaultDeny\"; "
                "beta policies of this namespace have no effect"
            )
    alpha = meta.annotations.get(ALPHA_ISOLATION_ANNOTATION)
    if alpha is not None and alpha.strip().lower() not in _ALPHA_ISOLATION_VALUES:
        warnings.append(
            f"metadata.annotations[{ALPHA_ISOLATION_ANNOTATION}]: {_show(alpha)} is neither on nor "
            "off; taken as off"
        )
    return Namespace(meta.name, freeze_labels(meta.labels), freeze_labels(meta.annotations))


def _pod(doc: dict, meta: _Meta) -> Pod:
    _check_dns_subdomain(meta.name, "metadata.name")
    spec = _mapping(doc.get("spec"), "spec")
    node = _string(spec.get("nodeName"), "spec.nodeName") or None
    ports: list[ContainerPort] = []
    containers_path = "spec.containers"
    for i, container in enumerate(_list(spec.get("containers"), containers_path) or ()):
        cpath = _at(containers_path, i)
        container = _mapping(container, cpath)
        names: set[str] = set()  # port names are unique within a container
        ports_path = _at(cpath, "ports")
        for j, port in enumerate(_list(container.get("ports"), ports_path) or ()):
            ppath = _at(ports_path, j)
            port = _mapping(port, ppath)
            if port.get("containerPort") is None:
                raise _FieldError(_at(ppath, "containerPort"), "is required")
            number = _int(port["containerPort"], _at(ppath, "containerPort"), 1, 65535)
            proto = _string(port.get("protocol"), _at(ppath, "protocol")) or "TCP"
            if proto not in PROTOCOLS:
                raise _FieldError(
                    _at(ppath, "protocol"),
                    f"unsupported protocol {_show(proto)}: must be one of {', '.join(PROTOCOLS)}",
                )
            name = _string(port.get("name"), _at(ppath, "name")) or None
            if name is not None:
                problem = _port_name_problem(name)
                if problem:
                    raise _FieldError(_at(ppath, "name"), f"invalid port name {_show(name)}: {problem}")
                if name in names:
                    raise _FieldError(_at(ppath, "name"), f"duplicate port name {_show(name)}")
                names.add(name)
            ports.append(ContainerPort(number, proto, name))
    status = _mapping(doc.get("status"), "status")
    ips: list[str] = []
    if status.get("podIP") not in (None, ""):
        ips.append(str(_ip(status["podIP"], "status.podIP")))
    for i, entry in enumerate(_list(status.get("podIPs"), "status.podIPs") or ()):
        epath = _at("status.podIPs", i)
        entry = _mapping(entry, epath)
        ip = str(_ip(entry.get("ip"), _at(epath, "ip")))
        if ip not in ips:
            ips.append(ip)
    return Pod(
        meta.namespace,
        meta.name,
        freeze_labels(meta.labels),
        node,
        tuple(ips),
        tuple(ports),
    )


def _node(doc: dict, meta: _Meta) -> Node:
    _check_dns_subdomain(meta.name, "metadata.name")
    spec = _mapping(doc.get("spec"), "spec")
    cidrs: list[str] = []
    if spec.get("podCIDR") not in (None, ""):
        _cidr(spec["podCIDR"], "spec.podCIDR")
        cidrs.append(spec["podCIDR"])
    for i, cidr in enumerate(_list(spec.get("podCIDRs"), "spec.podCIDRs") or ()):
        _cidr(cidr, _at("spec.podCIDRs", i))
        if cidr not in cidrs:
            cidrs.append(cidr)
    status = _mapping(doc.get("status"), "status")
    internal: list[str] = []
    other: list[str] = []
    for i, entry in enumerate(_list(status.get("addresses"), "status.addresses") or ()):
        epath = _at("status.addresses", i)
        entry = _mapping(entry, epath)
        kind = _string(entry.get("type"), _at(epath, "type"), required=True)
        if kind not in _NODE_IP_ADDRESS_TYPES:
            continue  # Hostname, InternalDNS, ExternalDNS: names, not addresses
        ip = str(_ip(entry.get("address"), _at(epath, "address")))
        (internal if kind == "InternalIP" else other).append(ip)
    addresses: list[str] = []
    for ip in internal + other:
        if ip not in addresses:
            addresses.append(ip)
    return Node(meta.name, freeze_labels(meta.labels), tuple(cidrs), tuple(addresses))


_POLICY_TOP_FIELDS = ("apiVersion", "kind", "metadata", "spec", "status")


def _v1_rules(spec: dict, direction: str, warnings: list[str]) -> tuple[PolicyRule, ...]:
    key, peers_key = ("ingress", "from") if direction == INGRESS else ("egress", "to")
    path = _at("spec", key)
    rules = []
    for i, rule in enumerate(_list(spec.get(key), path) or ()):
        rpath = _at(path, i)
        rule = _mapping(rule, rpath, (peers_key, "ports"))
        ppath = _at(rpath, peers_key)
        peers = _list(rule.get(peers_key), ppath)
        rules.append(
            PolicyRule(
                peers=tuple(_v1_peer(p, _at(ppath, j), warnings) for j, p in enumerate(peers))
                if peers
                else None,
                ports=_ports(
                    rule.get("ports"), _at(rpath, "ports"), end_port=True, empty_is_all=True
                ),
            )
        )
    return tuple(rules)


def _v1_policy(doc: dict, meta: _Meta, origin: str, warnings: list[str]) -> Policy:
    _mapping(doc, "", _POLICY_TOP_FIELDS)
    spec = _mapping(doc.get("spec"), "spec", ("podSelector", "policyTypes", "ingress", "egress"))
    selector = _label_selector(spec.get("podSelector"), "spec.podSelector")
    types_path = "spec.policyTypes"
    types: set[str] = set()
    raw_types = _list(spec.get("policyTypes"), types_path) or []
    for i, t in enumerate(raw_types):
        t = _string(t, _at(types_path, i))
        if t not in (INGRESS, EGRESS):
            raise _FieldError(
                _at(types_path, i), f"unsupported policy type {_show(t)}: must be Ingress or Egress"
            )
        types.add(t)
    if len(raw_types) > 2:
        raise _FieldError(types_path, "may not specify more than two policyTypes")
    ingress = _v1_rules(spec, INGRESS, warnings)
    egress = _v1_rules(spec, EGRESS, warnings)
    if not types:
        # The API server's defaulting: Ingress always, Egress iff egress rules are given.
        types = {INGRESS}
        if isinstance(spec.get("egress"), list) and spec["egress"]:
            types.add(EGRESS)
    else:
        if ingress and INGRESS not in types:
            warnings.append("spec.ingress: ignored, spec.policyTypes does not list Ingress")
        if egress and EGRESS not in types:
            warnings.append("spec.egress: ignored, spec.policyTypes does not list Egress")
    return Policy(
        meta.namespace,
        meta.name,
        pod_selector=selector,
        ingress=ingress,
        egress=egress,
        policy_types=frozenset(types),
        form=FORM_V1,
        origin=origin,
    )


def _beta_policy(doc: dict, meta: _Meta, origin: str) -> Policy:
    _mapping(doc, "", _POLICY_TOP_FIELDS)
    spec = doc.get("spec")
    if isinstance(spec, dict):
        for later in ("egress", "policyTypes"):
            if later in spec:
                raise _FieldError(
                    _at("spec", later),
                    f"unknown field: not part of the 2016 {API_BETA} NetworkPolicy "
                    f"(use {API_V1})",
                )
    spec = _mapping(spec, "spec", ("podSelector", "ingress"))
    selector = _label_selector(spec.get("podSelector"), "spec.podSelector")
    rules = []
    path = "spec.ingress"
    for i, rule in enumerate(_list(spec.get("ingress"), path) or ()):
        rpath = _at(path, i)
        rule = _mapping(rule, rpath, ("from", "ports"))
        rules.append(_legacy_rule(rule, rpath, "from", "ports", _beta_peer))
    return _ingress_policy(meta, selector, tuple(rules), FORM_BETA, origin)


def _legacy_rule(doc: dict, path: str, from_key: str, ports_key: str,
                 peer: Callable[[Any, str], Peer]) -> PolicyRule:
    """A rule of the beta or the alpha form: there `from` absent = all peers, an explicit [] =
    no peer at all."""
    fpath = _at(path, from_key)
    peers = _list(doc.get(from_key), fpath)
    return PolicyRule(
        peers=None if peers is None else tuple(peer(p, _at(fpath, j)) for j, p in enumerate(peers)),
        ports=_ports(doc.get(ports_key), _at(path, ports_key), end_port=False, empty_is_all=False),
    )


def _ingress_policy(meta: _Meta, selector: LabelSelector, rules: tuple[PolicyRule, ...], form: str,
                    origin: str) -> Policy:
    """A beta or alpha policy: ingress only."""
    return Policy(meta.namespace, meta.name, pod_selector=selector, ingress=rules,
                  policy_types=frozenset({INGRESS}), form=form, origin=origin)


def _alpha_policy(doc: dict, meta: _Meta, origin: str) -> Policy:
    _mapping(doc, "", _POLICY_TOP_FIELDS)
    spec = _mapping(doc.get("spec"), "spec", ("podSelector", "allowIncoming"))
    selector = _plain_selector(spec.get("podSelector"), "spec.podSelector")
    rules: tuple[PolicyRule, ...] = ()
    if spec.get("allowIncoming") is not None:
        path = "spec.allowIncoming"
        allow = _mapping(spec["allowIncoming"], path, ("from", "toPorts"))
        rules = (_legacy_rule(allow, path, "from", "toPorts", _alpha_peer),)
    return _ingress_policy(meta, selector, rules, FORM_ALPHA, origin)


def _object_label(kind: str, namespaced: bool, doc: dict) -> str | None:
    """'Kind ns/name' from a raw document, or None if it has no usable name."""
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        return None
    if not namespaced:
        return f"{kind} {meta['name']}"
    ns = meta.get("namespace")
    ns = ns if isinstance(ns, str) and ns else "default"
    return f"{kind} {ns}/{meta['name']}"


def _parse(doc: Any, origin: str, where: str = "") -> tuple[Any, list[str]]:
    """One document -> (model object or None for an unknown kind, warnings)."""
    if not isinstance(doc, dict):
        raise ManifestError(origin, where, "", f"must be an object, not {_type_name(doc)}")
    kind = doc.get("kind")
    api = doc.get("apiVersion")
    if not isinstance(kind, str) or not kind:
        problem = "is required" if kind is None else "must be a non-empty string"
        raise ManifestError(origin, where, "kind", problem)
    if api is not None and not isinstance(api, str):
        raise ManifestError(origin, where, "apiVersion", f"must be a string, not {_type_name(api)}")
    namespaced = kind != "Namespace" and kind != "Node"
    obj = _object_label(kind, namespaced, doc) or f"{kind} <unnamed{', ' + where if where else ''}>"
    warnings: list[str] = []
    result: Namespace | Pod | Node | Policy
    try:
        if kind in _CORE_KINDS:
            if api not in (None, "v1"):
                raise _FieldError(
                    "apiVersion", f"unsupported apiVersion {_show(api)} for {kind}: expected v1"
                )
            meta = _metadata(doc, namespaced)
            if kind == "Namespace":
                result = _namespace(doc, meta, warnings)
            elif kind == "Pod":
                result = _pod(doc, meta)
            else:
                result = _node(doc, meta)
        elif kind == "NetworkPolicy":
            if api is None:
                raise _FieldError(
                    "apiVersion", "is required for NetworkPolicy: one of " + ", ".join(_POLICY_FORMS)
                )
            form = _POLICY_FORMS.get(api)
            if form is None:
                raise _FieldError(
                    "apiVersion",
                    f"unsupported apiVersion {_show(api)} for NetworkPolicy: expected one of "
                    + ", ".join(_POLICY_FORMS),
                )
            meta = _metadata(doc, True)
            _check_dns_subdomain(meta.name, "metadata.name")
            if form == FORM_V1:
                result = _v1_policy(doc, meta, origin, warnings)
            elif form == FORM_BETA:
                result = _beta_policy(doc, meta, origin)
            else:
                result = _alpha_policy(doc, meta, origin)
        else:
            return None, []
    except _FieldError as e:
        raise ManifestError(origin, obj, e.field, e.message) from None
    return result, [f"{origin}: {obj}: {w}" for w in warnings]


def parse_object(doc: dict, origin: str) -> Namespace | Pod | Node | Policy | None:
    """One parsed manifest -> its model object, or None for a kind we do not model.

    Raises ManifestError (file = origin) if the object is invalid. Warnings about valid but
    suspicious content are only reported by load_documents/load_paths.
    """
    return _parse(doc, origin)[0]


# --------------------------------------------------------------------------------------------
# Cluster helpers


def object_key(obj: Namespace | Pod | Node | Policy) -> tuple[str, Any]:
    """(collection, key) of a model object in a Cluster: ("namespaces", name),
    ("pods", "ns/name"), ("nodes", name) or ("policies", (form, ns, name))."""
    if isinstance(obj, Namespace):
        return "namespaces", obj.name
    if isinstance(obj, Pod):
        return "pods", obj.key
    if isinstance(obj, Node):
        return "nodes", obj.name
    if isinstance(obj, Policy):
        return "policies", (obj.form, obj.namespace, obj.name)
    raise TypeError(f"not a model object: {obj!r}")


def describe(obj: Namespace | Pod | Node | Policy) -> str:
    """'NetworkPolicy x/allow-a', 'Pod x/a', 'Namespace x', 'Node n1'."""
    if isinstance(obj, Namespace):
        return f"Namespace {obj.name}"
    if isinstance(obj, Pod):
        return f"Pod {obj.key}"
    if isinstance(obj, Node):
        return f"Node {obj.name}"
    if isinstance(obj, Policy):
        return f"NetworkPolicy {obj.namespace}/{obj.name}"
    raise TypeError(f"not a model object: {obj!r}")


def add_object(cluster: Cluster, obj: Namespace | Pod | Node | Policy) -> None:
    """Insert or replace `obj` in `cluster`."""
    collection, key = object_key(obj)
    getattr(cluster, collection)[key] = obj


def remove_object(cluster: Cluster, obj: Namespace | Pod | Node | Policy) -> bool:
    """Remove the object with obj's identity; True if there was one."""
    collection, key = object_key(obj)
    return getattr(cluster, collection).pop(key, None) is not None


# --------------------------------------------------------------------------------------------
# Loading


def _expand(doc: Any, where: str, out: list[tuple[Any, str]]) -> None:
    """Flatten `kind: List` (and typed lists such as PodList) and top-level JSON arrays."""
    if doc is None:
        return  # empty document
    if isinstance(doc, list):
        for i, item in enumerate(doc):
            _expand(item, f"{where}[{i}]" if where else f"item {i + 1}", out)
        return
    kind = doc.get("kind") if isinstance(doc, dict) else None
    if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
        items = doc.get("items")
        if items is None:
            return
        if not isinstance(items, list):
            raise _FieldError("items", f"must be a list, not {_type_name(items)}")
        item_kind = kind[: -len("List")]
        for i, item in enumerate(items):
            # `kubectl get` output has no kind/apiVersion on the items of a typed list.
            if isinstance(item, dict) and item_kind and "kind" not in item:
                item = {"kind": item_kind, "apiVersion": doc.get("apiVersion"), **item}
            _expand(item, f"{where + ' ' if where else ''}items[{i}]", out)
        return
    out.append((doc, where))


def _prepare(docs: Iterable[Any], origin: str,
             progress: Callable[[str, int], None] | None = None) -> list[tuple[Any, list[str]]]:
    """Documents -> (model object or None, warnings) each, one document at a time (a 50 MB
    file is never held as parsed YAML all at once). Errors are reported as if every document
    were expanded before any is parsed: the first expansion error, else the first parse
    error (a YAML syntax error stops the stream where it is found, as before)."""
    parsed = []
    expand_error: ManifestError | None = None
    parse_error: ManifestError | None = None
    n = 0
    for n, doc in enumerate(docs, 1):
        if progress is not None and n % 1000 == 0:
            progress(origin, n)
        if expand_error is not None:
            continue
        where = f"document {n}"
        flat: list[tuple[Any, str]] = []
        try:
            _expand(doc, where, flat)
        except _FieldError as e:
            expand_error = ManifestError(origin, where, e.field, e.message)
            continue
        if parse_error is not None:
            continue
        for item, item_where in flat:
            try:
                parsed.append(_parse_one(item, origin, item_where))
            except ManifestError as e:
                parse_error = e
                break
    if progress is not None:
        progress(origin, n)
    if expand_error is not None:
        raise expand_error
    if parse_error is not None:
        raise parse_error
    return parsed


def _parse_one(doc: Any, origin: str, where: str) -> tuple[Any, list[str]]:
    obj, warnings = _parse(doc, origin, where)
    if obj is None:
        kind = doc.get("kind")
        meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
        label = _object_label(kind, bool(meta.get("namespace")), doc)
        api = doc.get("apiVersion")
        warnings = [
            f"{origin}: skipped {label or kind} ({api or 'no apiVersion'}, {where}): "
            f"kind {kind} is not used by network policy"
        ]
    return obj, warnings


def _commit(
    batches: list[tuple[str, list[tuple[Any, list[str]]]]], cluster: Cluster | None
) -> tuple[Cluster, list[str]]:
    cluster = Cluster() if cluster is None else cluster
    warnings: list[str] = []
    seen: dict[tuple[str, Any], str] = {}
    for origin, parsed in batches:
        for obj, obj_warnings in parsed:
            warnings.extend(obj_warnings)
            if obj is None:
                continue
            key = object_key(obj)
            if key in seen:
                warnings.append(
                    f"{origin}: {describe(obj)}"
                    + (f" [{obj.form}]" if isinstance(obj, Policy) and obj.form != FORM_V1 else "")
                    + f" is defined again (first in {seen[key]}); the later one wins"
                )
            seen[key] = origin
            add_object(cluster, obj)
    return cluster, warnings


def load_documents(
    docs: Iterable[Any], origin: str = "<input>", cluster: Cluster | None = None
) -> tuple[Cluster, list[str]]:
    """Already-parsed manifests -> (cluster, warnings).

    None entries (empty YAML documents) are ignored, `kind: List` is expanded, unknown kinds
    are skipped with a warning. Objects are added to `cluster` if given (same identity
    replaces), else to a new Cluster. Every document is validated before any is added.
    """
    return _commit([(origin, _prepare(docs, origin))], cluster)


def _parse_text(text: str, origin: str, json_only: bool = False) -> Iterable[Any]:
    if json_only:
        try:
            return [load_json(text)] if text.strip() else []
        except DuplicateKey as e:
            raise ManifestError(origin, "", "", str(e)) from None
        except ValueError as e:
            raise ManifestError(origin, "", "", f"invalid JSON: {e}") from None
    return _yaml_documents(text, origin)


def _yaml_documents(text, origin: str) -> Iterator[Any]:
    """The documents of a YAML stream (text or a file) as the C parser (libyaml) yields them,
    one at a time; a key given twice in a mapping is refused (kubectl refuses it too)."""
    try:
        yield from iter_yaml(text)
    except DuplicateKey as e:
        raise ManifestError(origin, "", "", str(e)) from None
    except yaml.YAMLError as e:
        msg = " ".join(str(e).split())
        raise ManifestError(origin, "", "", f"invalid YAML: {msg}") from None


def load_text(
    text: str, origin: str = "<input>", cluster: Cluster | None = None
) -> tuple[Cluster, list[str]]:
    """YAML (one or more documents) or JSON text -> (cluster, warnings)."""
    return load_documents(_parse_text(text, origin), origin, cluster)


def _manifest_files(path: str) -> list[str]:
    if path == STDIN or os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        found = []
        for root, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for f in files:
                if f.endswith(MANIFEST_SUFFIXES) and not f.startswith("."):
                    found.append(os.path.join(root, f))
        return sorted(found)
    raise ManifestError(path, "", "", "no such file or directory")


def _read(path: str) -> tuple[str, Iterable[Any]]:
    if path == STDIN:
        text = sys.stdin.read()
        try:
            return _STDIN_ORIGIN, [load_json(text)]
        except DuplicateKey as e:
            raise ManifestError(_STDIN_ORIGIN, "", "", str(e)) from None
        except ValueError:
            return _STDIN_ORIGIN, _parse_text(text, _STDIN_ORIGIN)
    if path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ManifestError(path, "", "", f"cannot read: {e}") from None
        return path, _parse_text(text, path, json_only=True)
    try:
        f = open(path, encoding="utf-8")  # noqa: SIM115 - _yaml_file_documents closes it
    except OSError as e:
        raise ManifestError(path, "", "", f"cannot read: {e}") from None
    return path, _yaml_file_documents(f, path)


def _yaml_file_documents(f, path: str) -> Iterator[Any]:
    """The documents of a YAML file, parsed as the file is read (never held whole as text)."""
    with f:
        try:
            yield from _yaml_documents(f, path)
        except UnicodeDecodeError as e:
            raise ManifestError(path, "", "", f"cannot read: {e}") from None


@gc_paused()
def load_paths(
    paths: list[str], cluster: Cluster | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> tuple[Cluster, list[str]]:
    """Files and directories (recursively: *.yaml, *.yml, *.json, sorted; "-" = stdin) ->
    (cluster, warnings). Everything is read and validated before anything is added.
    `progress(origin, documents)` is called every thousand documents of a file and at its end."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [os.fspath(paths)]
    batches = []
    for path in paths:
        for file in _manifest_files(os.fspath(path)):
            origin, docs = _read(file)
            batches.append((origin, _prepare(docs, origin, progress)))
    return _commit(batches, cluster)


def read_objects(paths: list[str]) -> Iterator[dict]:
    """The raw objects of files and directories (as load_paths finds them; "-" = stdin),
    `kind: List` expanded, each validated as load_paths validates it (ManifestError at the
    first invalid one). Kinds that network policy does not use pass through unparsed."""
    for path in paths:
        for file in _manifest_files(os.fspath(path)):
            origin, raw = _read(file)
            for n, doc in enumerate(raw):
                flat: list[tuple[Any, str]] = []
                where = f"document {n + 1}"
                try:
                    _expand(doc, where, flat)
                except _FieldError as e:
                    raise ManifestError(origin, where, e.field, e.message) from None
                for item, item_where in flat:
                    if not isinstance(item, dict):
                        raise ManifestError(origin, item_where, "", "must be an object")
                    _parse(item, origin, item_where)
                    yield item
