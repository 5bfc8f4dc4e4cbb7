"""A small Kubernetes NetworkPolicy evaluator: is a connection from one endpoint to another allowed?

Hand-written because no offline library evaluates NetworkPolicies without a cluster (a CNI does it there).
It implements the networking.k8s.io/v1 semantics the manifests use, as the API reference defines them:

- a pod is isolated for ingress (egress) once any policy in its namespace selects it with that policy type
  (``policyTypes`` defaults to Ingress, plus Egress when the policy has an ``egress`` section);
- a connection needs BOTH the source's egress and the destination's ingress to allow it; policies add up;
- peers: ``podSelector`` (policy's namespace), ``namespaceSelector`` (+ ``podSelector``), ``ipBlock`` with
  ``except``; selectors with ``matchLabels`` and ``matchExpressions`` (In, NotIn, Exists, DoesNotExist);
  a rule without ``from``/``to`` matches every peer, one without ``ports`` every port;
- ports by number (with ``endPort``) or by name, a name resolved on the destination pod's container ports;
  protocol defaults to TCP.

ipBlock matches only addresses outside the cluster here (the API leaves pod IPs in ipBlocks to the CNI).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace + labels) or an address outside the cluster (ip), with the ports it serves."""

    name: str
    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, tuple[int, str]] = field(default_factory=dict)  # port name -> (number, protocol)
    ip: str | None = None


def selects(selector: Mapping | None, labels: Mapping[str, str]) -> bool:
    """Label selector semantics; an empty selector selects everything."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _peer_matches(peer: Mapping, policy_ns: str, other: Endpoint, namespaces: Mapping[str, Mapping]) -> bool:
    if "ipBlock" in peer:
        if other.ip is None:
            return False
        ip = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(cidr) for cidr in block.get("except", [])
        )
    if other.namespace is None:
        return False
    if "namespaceSelector" in peer:
        in_namespace = selects(peer["namespaceSelector"], namespaces.get(other.namespace, {}))
    else:
        in_namespace = other.namespace == policy_ns
    return in_namespace and selects(peer.get("podSelector"), other.labels)


def _port_matches(rule_ports: list | None, dst: Endpoint, port: int, protocol: str) -> bool:
    if not rule_ports:
        return True
    for item in rule_ports:
        if item.get("protocol", "TCP") != protocol:
            continue
        wanted = item.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):
            if dst.ports.get(wanted) == (port, protocol):
                return True
        elif wanted <= port <= item.get("endPort", wanted):
            return True
    return False


def _policy_types(policy: Mapping) -> list[str]:
    spec = policy["spec"]
    return spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec else ["Ingress"])


def _side_allows(
    policies: Iterable[Mapping],
    me: Endpoint,
    peer: Endpoint,
    direction: str,
    dst: Endpoint,
    port: int,
    protocol: str,
    namespaces: Mapping[str, Mapping],
) -> bool:
    """Does ``me`` (source for Egress, destination for Ingress) let this connection through?"""
    if me.namespace is None:
        return True  # outside the cluster: no NetworkPolicy applies
    mine = [
        p
        for p in policies
        if p["metadata"]["namespace"] == me.namespace
        and selects(p["spec"].get("podSelector"), me.labels)
        and direction in _policy_types(p)
    ]
    if not mine:
        return True  # not isolated in this direction
    key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    for policy in mine:
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key)
            peer_ok = not peers or any(
                _peer_matches(p, policy["metadata"]["namespace"], peer, namespaces) for p in peers
            )
            if peer_ok and _port_matches(rule.get("ports"), dst, port, protocol):
                return True
    return False


def allowed(
    policies: list[Mapping], src: Endpoint, dst: Endpoint, port: int, protocol: str, namespaces: Mapping[str, Mapping]
) -> bool:
    """True when ``src`` may open a connection to ``dst`` on ``port``/``protocol``."""
    return _side_allows(policies, src, dst, "Egress", dst, port, protocol, namespaces) and _side_allows(
        policies, dst, src, "Ingress", dst, port, protocol, namespaces
    )


def namespace_labels(objects: Iterable[Mapping], names: Iterable[str]) -> dict[str, dict[str, str]]:
    """Labels of each namespace: Kubernetes' automatic kubernetes.io/metadata.name, plus a Namespace's own."""
    labels = {name: {"kubernetes.io/metadata.name": name} for name in names}
    for obj in objects:
        if obj["kind"] == "Namespace":
            name = obj["metadata"]["name"]
            labels.setdefault(name, {"kubernetes.io/metadata.name": name}).update(obj["metadata"].get("labels", {}))
    return labels
