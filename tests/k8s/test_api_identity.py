"""Cluster-wide identities through CiliumIdentity objects on a real API server: agents agree, also when they
race (the server's create-conflicts decide who wins, as in Cilium's CRD allocator)."""

import threading

import pytest

from ciliumctl.cluster.identity import CiliumIdentityBackend, identity_object, probe_sequence
from ciliumctl.cluster.kube import KINDS, Kube
from ciliumctl.identity.allocator import HOST, MAX_CLUSTER, MIN_CLUSTER, MIN_LOCAL

pytestmark = [pytest.mark.root]

WEB = frozenset({"k8s:app=web", "k8s:io.kubernetes.pod.namespace=default"})
DB = frozenset({"k8s:app=db", "k8s:io.kubernetes.pod.namespace=default"})


def identities(kube):
    items, _ = kube.list(KINDS["CiliumIdentity"])
    return {int(i["metadata"]["name"]): i for i in items}


def test_two_agents_agree_and_objects_look_like_ciliums(installed, kubeconfig):
    a, b = CiliumIdentityBackend(installed), CiliumIdentityBackend(Kube.connect(kubeconfig))
    web = a.allocate(WEB)
    assert MIN_CLUSTER <= web <= MAX_CLUSTER
    assert b.allocate(WEB) == web and b.creates == 0  # found by label set, nothing created
    db = b.allocate(DB)
    assert db != web and a.allocate(DB) == db
    stored = identities(installed)
    assert set(stored) == {web, db}
    assert stored[web]["security-labels"] == {"k8s:app": "web", "k8s:io.kubernetes.pod.namespace": "default"}
    assert stored[web]["metadata"]["labels"] == {"app": "web", "io.kubernetes.pod.namespace": "default"}
    assert a.lookup(db) == DB and b.known()[web] == WEB


def test_racing_agents_get_one_identity_per_label_set(installed, kubeconfig):
    label_sets = [frozenset({f"k8s:app=svc{i}", "k8s:io.kubernetes.pod.namespace=race"}) for i in range(6)]
    agents = [CiliumIdentityBackend(Kube.connect(kubeconfig)) for _ in range(4)]
    barrier = threading.Barrier(len(agents))
    results, errors = {}, []

    def run(i, agent):
        try:
            barrier.wait()
            order = label_sets if i % 2 == 0 else list(reversed(label_sets))
            results[i] = dict(zip(order, agent.allocate_many(order)))
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(agents)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert all(results[i] == results[0] for i in results) and len(results) == len(agents)
    assert len(set(results[0].values())) == len(label_sets)
    assert len(identities(installed)) == len(label_sets)  # no duplicate objects for one label set
    assert sum(a.creates for a in agents) == len(label_sets)


def test_a_taken_id_moves_both_agents_to_the_same_next_id(installed, kubeconfig):
    first = next(probe_sequence(WEB))
    installed.create(identity_object(first, frozenset({"k8s:app=someone-else"})))
    a, b = CiliumIdentityBackend(installed), CiliumIdentityBackend(Kube.connect(kubeconfig))
    ident = a.allocate(WEB)
    assert ident != first and ident == b.allocate(WEB)
    assert ident == list(probe_sequence(WEB))[1]


def test_reserved_and_cidr_identities_stay_off_the_cluster(installed):
    backend = CiliumIdentityBackend(installed)
    cidr = frozenset({"cidr:10.0.0.0/8"})
    ids = backend.allocate_many([frozenset({"reserved:host"}), cidr, WEB])
    assert ids[0] == HOST and ids[1] >= MIN_LOCAL
    assert set(identities(installed)) == {ids[2]}
