"""Label selectors, Cilium label sources, namespace scoping, the identity label filter."""

from ciliumctl.policy import labels, model
from ciliumctl.policy.selectors import LabelSet, compile_selector, knp_peer_selector, peer_selector, subject_selector


def sel(match_labels=None, exprs=()):
    return model.LabelSelector(tuple(sorted((match_labels or {}).items())),
                               tuple(model.SelectorRequirement(k, op, tuple(v)) for k, op, v in exprs))


POD_A = LabelSet(labels.endpoint_all_labels("a", {"app": "web", "tier": "front"}, "sa1",
                                            namespace_labels={"team": "blue"}))
POD_B = LabelSet(labels.endpoint_all_labels("b", {"app": "web"}))
HOST = LabelSet({"reserved:host", "k8s:node-role=worker"})


def test_match_labels_and_expressions():
    assert compile_selector(sel({"app": "web"})).matches(POD_A)
    assert not compile_selector(sel({"app": "db"})).matches(POD_A)
    assert compile_selector(sel(exprs=[("tier", "In", ["front", "back"])])).matches(POD_A)
    assert not compile_selector(sel(exprs=[("tier", "NotIn", ["front"])])).matches(POD_A)
    assert compile_selector(sel(exprs=[("tier", "NotIn", ["front"])])).matches(POD_B)   # absent key: NotIn holds
    assert compile_selector(sel(exprs=[("tier", "Exists", [])])).matches(POD_A)
    assert not compile_selector(sel(exprs=[("tier", "Exists", [])])).matches(POD_B)
    assert compile_selector(sel(exprs=[("tier", "DoesNotExist", [])])).matches(POD_B)
    assert compile_selector(sel()).matches(POD_A) and compile_selector(sel()).is_wildcard


def test_label_sources():
    assert compile_selector(sel({"k8s:app": "web"})).matches(POD_A)
    assert compile_selector(sel({"any:app": "web"})).matches(POD_A)
    assert not compile_selector(sel({"reserved:app": "web"})).matches(POD_A)
    assert compile_selector(sel({"reserved:host": ""})).matches(HOST)
    assert not compile_selector(sel({"reserved:host": ""})).matches(POD_A)
    assert compile_selector(sel({"io.cilium.k8s.policy.serviceaccount": "sa1"})).matches(POD_A)
    assert compile_selector(sel({"io.cilium.k8s.namespace.labels.team": "blue"})).matches(POD_A)
    assert compile_selector(sel({"k8s:io.cilium.k8s.policy.cluster": "default"})).matches(POD_B)


def test_cnp_subject_is_confined_to_the_policy_namespace():
    s = subject_selector(sel({"app": "web"}), "a")
    assert s.matches(POD_A) and not s.matches(POD_B)
    # even a selector that names another namespace stays in the policy's own
    s = subject_selector(sel({"app": "web", "k8s:io.kubernetes.pod.namespace": "b"}), "a")
    assert s.matches(POD_A) and not s.matches(POD_B)
    # CCNP: no namespace
    s = subject_selector(sel({"app": "web"}), "")
    assert s.matches(POD_A) and s.matches(POD_B)


def test_cnp_peers_are_scoped_unless_namespace_named():
    assert peer_selector(sel({"app": "web"}), "a").matches(POD_A)
    assert not peer_selector(sel({"app": "web"}), "a").matches(POD_B)
    named = peer_selector(sel({"app": "web", "io.kubernetes.pod.namespace": "b"}), "a")
    assert named.matches(POD_B) and not named.matches(POD_A)
    by_ns_labels = peer_selector(sel({"io.cilium.k8s.namespace.labels.team": "blue"}), "b")
    assert by_ns_labels.matches(POD_A)                 # not confined to b
    everything_in_a = peer_selector(sel(), "a")
    assert everything_in_a.matches(POD_A) and not everything_in_a.matches(POD_B)
    assert not everything_in_a.matches(HOST)
    # reserved labels are never scoped
    assert peer_selector(sel({"reserved:host": ""}), "a").matches(HOST)


def test_ccnp_peers_match_only_pods():
    s = peer_selector(sel(), "")
    assert s.matches(POD_A) and s.matches(POD_B) and not s.matches(HOST)
    assert not s.matches(LabelSet({"reserved:world"}))


def test_network_policy_peers():
    ns_sel = knp_peer_selector(None, sel({"team": "blue"}), "b")
    assert ns_sel.matches(POD_A) and not ns_sel.matches(POD_B)
    all_ns = knp_peer_selector(None, sel(), "b")
    assert all_ns.matches(POD_A) and all_ns.matches(POD_B) and not all_ns.matches(HOST)
    both = knp_peer_selector(sel({"tier": "front"}), sel({"team": "blue"}), "b")
    assert both.matches(POD_A) and not both.matches(POD_B)
    same_ns = knp_peer_selector(sel({"app": "web"}), None, "b")
    assert same_ns.matches(POD_B) and not same_ns.matches(POD_A)
    assert knp_peer_selector(None, None, "b") is None


def test_security_labels_follow_ciliums_default_filter():
    all_labels = labels.endpoint_all_labels("a", {"app": "web", "pod-template-hash": "abc",
                                                  "controller-revision-hash": "1",
                                                  "app.kubernetes.io/name": "web",
                                                  "statefulset.kubernetes.io/pod-name": "web-0",
                                                  "kubernetes.io/arch": "amd64"})
    sec = labels.security_labels(all_labels)
    assert "k8s:app=web" in sec and "k8s:app.kubernetes.io/name=web" in sec
    assert "k8s:io.kubernetes.pod.namespace=a" in sec
    assert "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=a" in sec
    assert "k8s:io.cilium.k8s.policy.cluster=default" in sec
    assert "k8s:io.cilium.k8s.policy.serviceaccount=default" in sec
    for dropped in ("pod-template-hash", "controller-revision-hash", "statefulset.kubernetes.io/pod-name",
                    "kubernetes.io/arch"):
        assert not any(s.startswith(f"k8s:{dropped}=") for s in sec), dropped


def test_parse_labels():
    assert labels.parse_label("k8s:app=web") == labels.Label("k8s", "app", "web")
    assert labels.parse_label("reserved:host") == labels.Label("reserved", "host", "")
    assert labels.parse_label("app=web") == labels.Label("any", "app", "web")
    assert str(labels.Label("reserved", "world")) == "reserved:world"
    assert labels.parse_label_list(["a=1,k8s:b=2", "c=3"]) == [labels.Label("any", "a", "1"),
                                                             labels.Label("k8s", "b", "2"),
                                                             labels.Label("any", "c", "3")]


def test_pod_labels_are_always_k8s_source():
    got = labels.endpoint_all_labels("ns", {"k8s:app": "x", "reserved:host": "", "any:b": "1"})
    assert {"k8s:app=x", "k8s:host", "k8s:b=1"} <= got
    assert not any(s.startswith("reserved:") for s in got)
