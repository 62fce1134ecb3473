"""Kubernetes types used by the policy kinds: ObjectMeta and networking.k8s.io/v1 NetworkPolicy."""

from __future__ import annotations

from ciliumctl.policy.schema import Arr, Int, IntOrStr, Map, Obj, Opaque, Str

OBJECT_META = Obj("ObjectMeta", {
    "name": Str(), "generateName": Str(), "namespace": Str(), "selfLink": Str(), "uid": Str(),
    "resourceVersion": Str(), "generation": Int("int64"), "creationTimestamp": Opaque(),
    "deletionTimestamp": Opaque(), "deletionGracePeriodSeconds": Int("int64"),
    "labels": Map(Str()), "annotations": Map(Str()), "ownerReferences": Opaque(), "finalizers": Arr(Str()),
    "managedFields": Opaque(),
})

K8S_SELECTOR = Obj("LabelSelector", {
    "matchLabels": Map(Str()),
    "matchExpressions": Arr(Obj("LabelSelectorRequirement", {
        "key": Str(), "operator": Str(), "values": Arr(Str()),
    }, required=("key", "operator"))),
})

NP_PORT = Obj("NetworkPolicyPort", {"protocol": Str(), "port": IntOrStr(), "endPort": Int("int32")})
NP_PEER = Obj("NetworkPolicyPeer", {
    "podSelector": K8S_SELECTOR, "namespaceSelector": K8S_SELECTOR,
    "ipBlock": Obj("IPBlock", {"cidr": Str(), "except": Arr(Str())}, required=("cidr",)),
})

NETWORK_POLICY = Obj("NetworkPolicy", {
    "apiVersion": Str(), "kind": Str(), "metadata": OBJECT_META, "status": Opaque(),
    "spec": Obj("NetworkPolicySpec", {
        "podSelector": K8S_SELECTOR,
        "ingress": Arr(Obj("NetworkPolicyIngressRule", {"ports": Arr(NP_PORT), "from": Arr(NP_PEER)})),
        "egress": Arr(Obj("NetworkPolicyEgressRule", {"ports": Arr(NP_PORT), "to": Arr(NP_PEER)})),
        "policyTypes": Arr(Str()),
    }),
})
