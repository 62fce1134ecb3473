"""The cilium.io/v2 CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy types as of Cilium 1.19.

Field names, Go types and CRD constraints follow Cilium's pkg/policy/api structs and the generated CRD
(ciliumnetworkpolicies.yaml): L7 rules still carry kafka, l7proto and l7; protocols include VRRP and IGMP.
"""

from __future__ import annotations

from ciliumctl.policy.schema import Arr, Bool, CiliumLabel, Int, IntOrStr, Map, Obj, Str, T, Time
from ciliumctl.policy.schema_k8s import OBJECT_META

LABEL_VALUE = Str(max_len=63, pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
FQDN_NAME = Str(max_len=255, pattern=r"^([-a-zA-Z0-9_]+[.]?)+$")
FQDN_PATTERN = Str(max_len=255, pattern=r"^([-a-zA-Z0-9_*]+[.]?)+$")
CIDR = Str(fmt="cidr")
# The CRD's enum, from the kubebuilder marker on api.Entity (pkg/policy/api/entity.go, v1.19.4). It leaves out
# world-ipv4 and world-ipv6, which the agent's EntitySelectorMapping accepts: kubectl apply refuses them.
ENTITIES = ("all", "world", "cluster", "host", "init", "ingress", "unmanaged", "remote-node", "health",
            "none", "kube-apiserver")
_SPLIT_WORLD = ("Cilium 1.19's CRD enum leaves it out although the agent accepts it, so the API server refuses "
                "the policy; use `world` (both families) or toCIDR 0.0.0.0/0 or ::/0")
ENTITY = Str(enum=ENTITIES, notes={"world-ipv4": _SPLIT_WORLD, "world-ipv6": _SPLIT_WORLD})
PORT_PATTERN = (r"^(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
                r"|([a-zA-Z0-9]-?)*[a-zA-Z](-?[a-zA-Z0-9])*$")
ICMP_TYPE_PATTERN = (
    r"^([0-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5]|EchoReply|DestinationUnreachable|Redirect|Echo|"
    r"RouterAdvertisement|RouterSelection|TimeExceeded|ParameterProblem|Timestamp|TimestampReply|Photuris|"
    r"ExtendedEchoRequest|ExtendedEcho Reply|PacketTooBig|ParameterProblem|EchoRequest|"
    r"MulticastListenerQuery|MulticastListenerReport|MulticastListenerDone|RouterSolicitation|"
    r"RouterAdvertisement|NeighborSolicitation|NeighborAdvertisement|RedirectMessage|RouterRenumbering|"
    r"ICMPNodeInformationQuery|ICMPNodeInformationResponse|InverseNeighborDiscoverySolicitation|"
    r"InverseNeighborDiscoveryAdvertisement|HomeAgentAddressDiscoveryRequest|HomeAgentAddressDiscoveryReply|"
    r"MobilePrefixSolicitation|MobilePrefixAdvertisement|DuplicateAddressRequestCodeSuffix|"
    r"DuplicateAddressConfirmationCodeSuffix)$")


def label_selector(name: str = "LabelSelector", go_json: bool = False) -> Obj:
    return Obj(name, {
        "matchLabels": Map(LABEL_VALUE),
        "matchExpressions": Arr(Obj("LabelSelectorRequirement", {
            "key": Str(),
            "operator": Str(enum=("In", "NotIn", "Exists", "DoesNotExist")),
            "values": Arr(Str()),
        }, required=("key", "operator"), go_json=go_json)),
    }, go_json=go_json, null="empty" if go_json else "")


# api.EndpointSelector has its own UnmarshalJSON (pkg/policy/api/selector.go): encoding/json decodes the
# label selector inside it (field names case-insensitive), and a null decodes as the empty selector {}.
SELECTOR = label_selector("EndpointSelector", go_json=True)
# api.ServiceSelector is a new type over EndpointSelector, without its methods: decoded like any struct
SERVICE_SELECTOR = label_selector("ServiceSelector")

CIDR_RULE = Obj("CIDRRule", {
    "cidr": CIDR,
    "cidrGroupRef": Str(max_len=253, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
    "cidrGroupSelector": SELECTOR,
    "except": Arr(CIDR),
}, one_of=("cidr", "cidrGroupRef", "cidrGroupSelector"))

AWS_GROUP = Obj("Groups", {"aws": Obj("AWSGroup", {
    "labels": Map(Str()), "region": Str(), "securityGroupsIds": Arr(Str()), "securityGroupsNames": Arr(Str()),
})})

# api.ICMPField.UnmarshalJSON (pkg/policy/api/icmp.go) decodes with encoding/json and dereferences `type`:
# a field without a type, or a null field, crashes Cilium's decoder (the policy is never imported)
ICMP_RULE = Obj("ICMPRule", {"fields": Arr(Obj("ICMPField", {
    "family": Str(enum=("IPv4", "IPv6")),
    "type": IntOrStr(pattern=ICMP_TYPE_PATTERN),
}, required=("type",), go_json=True,
    null="an ICMP field may not be null: Cilium's decoder crashes on it; write {type: ..., family: ...}"),
    max_items=40)})

AUTH = Obj("Authentication", {"mode": Str(enum=("disabled", "required", "test-always-fail"))},
           required=("mode",))

PORT_PROTOCOL = Obj("PortProtocol", {
    "port": Str(pattern=PORT_PATTERN),
    "endPort": Int("int32", minimum=0, maximum=65535),
    "protocol": Str(enum=("TCP", "UDP", "SCTP", "VRRP", "IGMP", "ANY")),
})

SECRET = Obj("Secret", {"namespace": Str(), "name": Str()}, required=("name",))
TLS_CONTEXT = Obj("TLSContext", {"secret": SECRET, "trustedCA": Str(), "certificate": Str(),
                                 "privateKey": Str()}, required=("secret",))

HTTP_RULE = Obj("PortRuleHTTP", {
    "path": Str(), "method": Str(), "host": Str(), "headers": Arr(Str()),
    "headerMatches": Arr(Obj("HeaderMatch", {
        "mismatch": Str(enum=("LOG", "ADD", "DELETE", "REPLACE")),
        "name": Str(min_len=1), "secret": SECRET, "value": Str(),
    }, required=("name",))),
})

DNS_RULE = Obj("PortRuleDNS", {"matchName": FQDN_NAME, "matchPattern": FQDN_PATTERN})

KAFKA_RULE = Obj("kafka.PortRule", {
    "role": Str(enum=("produce", "consume")), "apiKey": Str(), "apiVersion": Str(), "clientID": Str(),
    "topic": Str(max_len=255),
})

L7_RULES = Obj("L7Rules", {
    "http": Arr(HTTP_RULE),
    "kafka": Arr(KAFKA_RULE),
    "dns": Arr(DNS_RULE),
    "l7proto": Str(),
    "l7": Arr(Map(Str())),
})

LISTENER = Obj("Listener", {
    "envoyConfig": Obj("EnvoyConfig", {"kind": Str(enum=("CiliumEnvoyConfig", "CiliumClusterwideEnvoyConfig")),
                                       "name": Str(min_len=1)}, required=("name",)),
    "name": Str(min_len=1),
    "priority": Int("uint8", minimum=1, maximum=100),
}, required=("envoyConfig", "name"))

SERVER_NAME = Str(max_len=255, pattern=r"^(\*?\*\.)?([-a-zA-Z0-9_]+\.?)+$")  # api.ServerName (l4.go)

PORT_RULE = Obj("PortRule", {
    "ports": Arr(PORT_PROTOCOL, max_items=40),
    "terminatingTLS": TLS_CONTEXT,
    "originatingTLS": TLS_CONTEXT,
    "serverNames": Arr(SERVER_NAME, min_items=1),
    "listener": LISTENER,
    "rules": L7_RULES,
})

_DENY_L7 = ("L7 rules are not supported in deny rules: the API server drops `{field}`, so this entry denies "
            "the whole port; remove `{field}` (or use an allow rule with L7 rules)")
PORT_DENY_RULE = Obj("PortDenyRule", {"ports": Arr(PORT_PROTOCOL)},
                     notes={f: _DENY_L7.format(field=f) for f in
                            ("rules", "serverNames", "listener", "terminatingTLS", "originatingTLS")})

FQDN_SELECTOR = Obj("FQDNSelector", {"matchName": FQDN_NAME, "matchPattern": FQDN_PATTERN},
                    one_of=("matchName", "matchPattern"))

SERVICE = Obj("Service", {
    "k8sService": Obj("K8sServiceNamespace", {"serviceName": Str(), "namespace": Str()}),
    "k8sServiceSelector": Obj("K8sServiceSelectorNamespace", {"selector": SERVICE_SELECTOR, "namespace": Str()},
                              required=("selector",)),
})

DEPRECATED_REQUIRES = Arr(Str(), max_items=0)


def _ingress(deny: bool) -> Obj:
    fields: dict[str, T] = {
        "fromEndpoints": Arr(SELECTOR), "fromRequires": DEPRECATED_REQUIRES, "fromCIDR": Arr(CIDR),
        "fromCIDRSet": Arr(CIDR_RULE), "fromEntities": Arr(ENTITY), "fromGroups": Arr(AWS_GROUP),
        "fromNodes": Arr(SELECTOR), "icmps": Arr(ICMP_RULE),
        "toPorts": Arr(PORT_DENY_RULE if deny else PORT_RULE),
    }
    notes = {}
    if deny:
        notes["authentication"] = "authentication is not supported in ingressDeny: the API server drops it"
    else:
        fields["authentication"] = AUTH
    return Obj("IngressDenyRule" if deny else "IngressRule", fields, notes=notes)


def _egress(deny: bool) -> Obj:
    fields: dict[str, T] = {
        "toEndpoints": Arr(SELECTOR), "toRequires": DEPRECATED_REQUIRES, "toCIDR": Arr(CIDR),
        "toCIDRSet": Arr(CIDR_RULE), "toEntities": Arr(ENTITY), "toServices": Arr(SERVICE),
        "toGroups": Arr(AWS_GROUP), "toNodes": Arr(SELECTOR), "icmps": Arr(ICMP_RULE),
        "toPorts": Arr(PORT_DENY_RULE if deny else PORT_RULE),
    }
    notes = {}
    if deny:
        notes["toFQDNs"] = ("toFQDNs is not supported in egressDeny: the API server drops it, so these names "
                            "are NOT denied; deny by toCIDR/toCIDRSet, or allow only the names you want with an "
                            "egress toFQDNs rule")
        notes["authentication"] = "authentication is not supported in egressDeny: the API server drops it"
    else:
        fields["toFQDNs"] = Arr(FQDN_SELECTOR)
        fields["authentication"] = AUTH
    return Obj("EgressDenyRule" if deny else "EgressRule", fields, notes=notes)


RULE = Obj("Rule", {
    "endpointSelector": SELECTOR,
    "nodeSelector": SELECTOR,
    "ingress": Arr(_ingress(False)),
    "ingressDeny": Arr(_ingress(True)),
    "egress": Arr(_egress(False)),
    "egressDeny": Arr(_egress(True)),
    "labels": Arr(CiliumLabel()),
    "enableDefaultDeny": Obj("DefaultDenyConfig", {"ingress": Bool(), "egress": Bool()}),
    "description": Str(),
    "log": Obj("LogConfig", {"value": Str(max_len=32)}),
}, one_of=("endpointSelector", "nodeSelector"), any_of=("ingress", "ingressDeny", "egress", "egressDeny"))


# v2.CiliumNetworkPolicyStatus (pkg/k8s/apis/cilium.io/v2/cnp_types.go): typed, so Go's decoder refuses
# a status of the wrong shape
STATUS = Obj("CiliumNetworkPolicyStatus", {
    "derivativePolicies": Map(Obj("CiliumNetworkPolicyNodeStatus", {
        "ok": Bool(), "error": Str(), "lastUpdated": Time(), "localPolicyRevision": Int("uint64"),
        "enforcing": Bool(), "annotations": Map(Str()),
    })),
    "conditions": Arr(Obj("NetworkPolicyCondition", {
        "type": Str(), "status": Str(), "lastTransitionTime": Time(), "reason": Str(), "message": Str(),
    })),
})


def policy_object(kind: str) -> Obj:
    return Obj(kind, {
        "apiVersion": Str(), "kind": Str(), "metadata": OBJECT_META,
        "spec": RULE, "specs": Arr(RULE), "status": STATUS,
    }, notes={"description": "`description` belongs inside the rule (spec.description); at the top level the "
                             "API server drops it"})


CNP = policy_object("CiliumNetworkPolicy")
CCNP = policy_object("CiliumClusterwideNetworkPolicy")
