"""Flows name pods of other nodes in cluster mode: the cluster sync writes them and the cluster's identities to
the peers file (flows.meta.save_peers) and the flow metadata reads it, as Cilium's Hubble names a remote endpoint
(pkg/hubble/parser/common/endpoint.go: pod name and namespace from the ipcache, labels of its identity, ID 0)."""

from __future__ import annotations

import json
import os
import stat

from ciliumctl.flows import meta
from ciliumctl.flows.convert import record_to_flow
from ciliumctl.flows.records import RECORD

from .flowdata import ip, rec, write_endpoint

DNS_LABELS = ["k8s:io.cilium.k8s.policy.cluster=default", "k8s:io.cilium.k8s.policy.serviceaccount=coredns",
              "k8s:io.kubernetes.pod.namespace=kube-system", "k8s:k8s-app=kube-dns"]
COREDNS = {"name": "coredns-7c65d6cfc9-xk2lp", "namespace": "kube-system", "labels": DNS_LABELS,
           "identity": 23744, "ipv4": "10.210.1.128", "node": "node2", "id": 812, "state": "ready"}
ORPHAN_LABELS = ["k8s:app=batch", "k8s:io.kubernetes.pod.namespace=jobs"]   # a CiliumIdentity without a pod


def save_peers(state, endpoints=(COREDNS,), identities=None):
    identities = {23744: DNS_LABELS, 40001: ORPHAN_LABELS} if identities is None else identities
    meta.save_peers(meta.peers_document(list(endpoints), identities), state)


def flow(snap, saddr, daddr, sid, did):
    """A forwarded UDP packet's verdict at the local pod's egress."""
    return record_to_flow(RECORD.unpack(rec(saddr=ip(saddr), daddr=ip(daddr), src_identity=sid, dst_identity=did,
                                            proto=17, sport=40000, dport=53, direction=2, ep_id=12)),
                          snap, 0, "node1", 1, 1)


def test_a_pod_of_another_node_is_named_with_endpoint_id_0(node_dirs):
    state, _ = node_dirs
    write_endpoint(state, 12, "client", "default", {"app": "client"}, "10.210.0.12", 300)
    save_peers(state)
    f = flow(meta.load_snapshot(state), "10.210.0.12", "10.210.1.128", 300, 23744)
    assert (f.destination.pod_name, f.destination.namespace) == ("coredns-7c65d6cfc9-xk2lp", "kube-system")
    assert list(f.destination.labels) == DNS_LABELS and f.destination.identity == 23744
    assert f.destination.ID == 0 and not f.destination.workloads
    assert (f.source.ID, f.source.pod_name) == (12, "client")


def test_an_identity_known_only_from_the_cluster_gives_its_labels(node_dirs):
    state, _ = node_dirs
    save_peers(state)
    f = flow(meta.load_snapshot(state), "10.210.0.12", "10.210.2.9", 300, 40001)
    assert list(f.destination.labels) == ORPHAN_LABELS
    assert f.destination.pod_name == "" and f.destination.identity == 40001


def test_a_local_endpoint_wins_on_the_same_address(node_dirs):
    state, _ = node_dirs
    write_endpoint(state, 12, "client", "default", {"app": "client"}, "10.210.1.128", 300)
    save_peers(state)           # an old CiliumEndpoint of another node still holds the address
    snap = meta.load_snapshot(state)
    assert (snap.by_ip["10.210.1.128"].id, snap.by_ip["10.210.1.128"].name) == (12, "client")
    assert snap.namespaces == {"default"}      # the node's own pods' namespaces only


def test_the_file_is_root_only_and_the_watcher_follows_it(node_dirs):
    state, _ = node_dirs
    watcher = meta.MetaWatcher(state, interval=0)
    assert "10.210.1.128" not in watcher.refresh().by_ip
    save_peers(state)
    assert stat.S_IMODE(os.stat(meta.peers_path(state)).st_mode) == 0o600
    assert watcher.refresh().by_ip["10.210.1.128"].name == "coredns-7c65d6cfc9-xk2lp"
    save_peers(state, endpoints=())          # the pod is gone
    assert "10.210.1.128" not in watcher.refresh().by_ip


def test_equal_content_makes_an_equal_document():
    other = dict(COREDNS, name="web", ipv4="10.210.1.7", identity=40001, labels=ORPHAN_LABELS)
    one = meta.peers_document([COREDNS, other], {40001: ORPHAN_LABELS, 23744: DNS_LABELS})
    two = meta.peers_document([other, dict(COREDNS, labels=DNS_LABELS[::-1])], {23744: DNS_LABELS[::-1],
                                                                                 40001: ORPHAN_LABELS})
    assert one == two
    assert set(one["endpoints"][0]) == {"name", "namespace", "labels", "identity", "ipv4", "node"}


def test_a_missing_or_corrupt_file_is_harmless(node_dirs):
    state, _ = node_dirs
    write_endpoint(state, 12, "client", "default", {"app": "client"}, "10.210.0.12", 300)
    path = meta.peers_path(state)
    assert not path.exists() and set(meta.load_snapshot(state).by_ip) == {"10.210.0.12"}
    for text in (b"", b'{"version": 1, "endpoints": [', b"[1, 2]", b'{"version": 99, "endpoints": []}',
                 b'{"version": 1, "endpoints": {"a": 1}, "identities": [1]}', b"\xff\xfe"):
        path.write_bytes(text)
        snap = meta.load_snapshot(state)
        assert set(snap.by_ip) == {"10.210.0.12"} and snap.by_ip["10.210.0.12"].name == "client", text
    # one malformed row leaves the others
    bad = [{"name": "x"}, dict(COREDNS, identity="many"), "row", COREDNS]
    path.write_text(json.dumps({"version": 1, "endpoints": bad, "identities": {"x": 1}}))
    assert set(meta.load_snapshot(state).by_ip) == {"10.210.0.12", "10.210.1.128"}
