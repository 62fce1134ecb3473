"""Synthetic node metadata and datapath records shared by the flow tests."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from ciliumctl.flows.meta import EndpointInfo, PolicyRef, Snapshot
from ciliumctl.flows.records import pack_record

TIE = EndpointInfo(12, "tiefighter", "default", ("k8s:io.kubernetes.pod.namespace=default", "k8s:org=empire"), 300)
STAR = EndpointInfo(13, "deathstar-6f87d5-x2x9z", "empire",
                    ("k8s:class=deathstar", "k8s:io.kubernetes.pod.namespace=empire", "k8s:org=empire"), 301,
                    (("deathstar", "Deployment"),))
XWING = EndpointInfo(14, "xwing", "default", ("k8s:io.kubernetes.pod.namespace=default", "k8s:org=alliance"), 302)
ALLOW = PolicyRef("allow-empire", "empire", "CiliumNetworkPolicy",
                  ("k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy",
                   "k8s:io.cilium.k8s.policy.name=allow-empire"), 3)
DENY = PolicyRef("no-xwing", "", "CiliumClusterwideNetworkPolicy", (), 3)
SNAP = Snapshot(by_ip={"10.200.0.12": TIE, "10.200.0.13": STAR, "10.200.0.14": XWING},
                by_id={12: TIE, 13: STAR, 14: XWING},
                identity_labels={300: TIE.labels, 301: STAR.labels, 302: XWING.labels},
                cookies={7: (ALLOW,), 9: (DENY,)}, namespaces=frozenset({"default", "empire"}))


def ip(s: str) -> bytes:
    return socket.inet_aton(s)


def rec(**kw) -> bytes:
    """A raw ring record; defaults: a forwarded TCP SYN policy verdict tiefighter -> deathstar:80 (ingress)."""
    base = dict(ts_ns=1_000_000_000, type=5, subtype=0, verdict=1, direction=1, ep_id=13, proto=6, tcp_flags=2,
                saddr=ip("10.200.0.12"), daddr=ip("10.200.0.13"), sport=40000, dport=80, src_identity=300,
                dst_identity=301, rule_cookie=7, match_type=2)
    base.update(kw)
    return pack_record(**base)




def write_endpoint(state: Path, ep_id: int, name: str, namespace: str, labels: dict, ipv4: str, identity: int):
    (state / "endpoints" / f"{ep_id}.json").write_text(json.dumps(
        {"id": ep_id, "name": name, "namespace": namespace, "labels": labels, "ipv4": ipv4, "identity": identity}))
