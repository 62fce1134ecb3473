"""Kubernetes types used by the policy kinds: ObjectMeta and networking.k8s.io/v1 NetworkPolicy."""

from __future__ import annotations

from ciliumctl.policy.schema import Arr, Bool, Int, IntOrStr, Map, Obj, Opaque, Str, Time

# metav1.ObjectMeta (k8s.io/apimachinery/pkg/apis/meta/v1/types.go)
OBJECT_META = Obj("ObjectMeta", {
    "name": Str(), "generateName": Str(), "namespace": Str(), "selfLink": Str(), "uid": Str(),
    "resourceVersion": Str(), "generation": Int("int64"), "creationTimestamp": Time(),
    "deletionTimestamp": Time(), "deletionGracePeriodSeconds": Int("int64"),
    "labels": Map(Str()), "annotations": Map(Str()), "finalizers": Arr(Str()),
    "ownerReferences": Arr(Obj("OwnerReference", {
        "apiVersion": Str(), "kind": Str(), "name": Str(), "uid": Str(), "controller": Bool(),
        "blockOwnerDeletion": Bool(),
    })),
    "managedFields": Arr(Obj("ManagedFieldsEntry", {
        "manager": Str(), "operation": Str(), "apiVersion": Str(), "time": Time(), "fieldsType": Str(),
        "fieldsV1": Opaque(), "subresource": Str(),
    })),
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
