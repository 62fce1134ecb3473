"""The objects `ciliumctl install` puts into a cluster, in apply order (CRDs first, the DaemonSet last).

Policy CRDs carry an OpenAPI schema that checks the important fields (types, enums of protocols and entities,
selector shapes) but keeps unknown fields inside rules: local validation (`policy validate --strict`) reports
those with file:line:col, while pruning them on the server would silently change a policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from ciliumctl import __version__
from ciliumctl.base.errors import UsageError

NAMESPACE = "ciliumctl-system"
AGENT = "ciliumctl-agent"
CONFIG = "ciliumctl-config"
DEFAULT_IMAGE = f"ghcr.io/ciliumctl/ciliumctl:v{__version__}"
PART_OF = {"app.kubernetes.io/part-of": "ciliumctl", "app.kubernetes.io/managed-by": "ciliumctl"}
AGENT_LABELS = {"app.kubernetes.io/name": AGENT}
ENFORCEMENT_MODES = ("default", "always", "never")
PULL_POLICIES = ("IfNotPresent", "Always", "Never")


@dataclass(frozen=True)
class InstallOptions:
    image: str = DEFAULT_IMAGE
    namespace: str = NAMESPACE
    enforcement: str = "default"
    audit: bool = False
    flow_buffer_size: int = 4095  # Hubble's event buffer capacity: one less than a power of two
    image_pull_policy: str = "IfNotPresent"   # Never: the image was imported on every node (no registry)
    # NodePort devices, comma-separated (Cilium's `devices` option, daemon/cmd/daemon_main.go); None: each agent
    # detects its node's native devices, as Cilium does without the option (node.hostfw.devices); "": none
    devices: str | None = None

    def check(self) -> None:
        if self.enforcement not in ENFORCEMENT_MODES:
            raise UsageError(f"--enforcement {self.enforcement!r}: use one of {', '.join(ENFORCEMENT_MODES)}")
        n = self.flow_buffer_size + 1
        if self.flow_buffer_size < 1 or n & (n - 1):
            raise UsageError(f"--flow-buffer-size {self.flow_buffer_size}: use one less than a power of two "
                             "(e.g. 4095), as Hubble's event buffer does")
        if self.image_pull_policy not in PULL_POLICIES:
            raise UsageError(f"--image-pull-policy {self.image_pull_policy!r}: use one of {', '.join(PULL_POLICIES)}")
        if not self.image.strip():
            raise UsageError("--image is empty: give an image reference such as " + DEFAULT_IMAGE)
        for name in (self.devices or "").split(","):
            name = name.strip()
            # the kernel's dev_valid_name: 1..15 bytes, not . or .., no /, : or white space
            if name in (".", "..") or len(name.encode()) > 15 or any(c in name for c in "/: \t\n"):
                raise UsageError(f"--devices {self.devices!r}: {name!r} is no interface name (at most 15 "
                                 "characters, no '/', ':' or spaces); name the nodes' interfaces, comma-separated")


# ---------------------------------------------------------------- schema pieces

def _str() -> dict:
    return {"type": "string"}


def _list(items: dict) -> dict:
    return {"type": "array", "items": items}


def _open_object(properties: dict | None = None) -> dict:
    schema: dict[str, object] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if properties:
        schema["properties"] = properties
    return schema


_LABEL_SELECTOR = {
    "type": "object",
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": _str()},
        "matchExpressions": _list({
            "type": "object", "required": ["key", "operator"],
            "properties": {"key": _str(),
                           "operator": {"type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                           "values": _list(_str())}}),
    },
}
_ENTITIES = ["all", "world", "world-ipv4", "world-ipv6", "cluster", "host", "init", "ingress", "unmanaged",
             "remote-node", "health", "none", "kube-apiserver"]
_PORT_PROTOCOL = {"type": "string", "enum": ["TCP", "UDP", "SCTP", "ICMP", "ICMPv6", "VRRP", "IGMP", "ANY"]}
_PORT_RULE = _open_object({
    "ports": {**_list({"type": "object", "properties": {
        "port": _str(), "endPort": {"type": "integer", "format": "int32"}, "protocol": _PORT_PROTOCOL}}),
        "maxItems": 40},
    "rules": _open_object(),
    "terminatingTLS": _open_object(), "originatingTLS": _open_object(),
    "serverNames": _list(_str()), "listener": _open_object(),
})
_CIDR_RULE = _open_object({"cidr": _str(), "cidrGroupRef": _str(), "cidrGroupSelector": _LABEL_SELECTOR,
                           "except": _list(_str())})
_ICMP_RULE = _open_object({"fields": _list(_open_object({
    "type": {"x-kubernetes-int-or-string": True},
    "family": {"type": "string", "enum": ["IPv4", "IPv6"]}}))})


def _peer_rule(direction: str) -> dict:
    """One ingress/egress (or deny) rule; `direction` is "from" or "to"."""
    d = direction
    props = {
        f"{d}Endpoints": _list(_LABEL_SELECTOR),
        f"{d}Requires": _list(_LABEL_SELECTOR),
        f"{d}CIDR": _list(_str()),
        f"{d}CIDRSet": _list(_CIDR_RULE),
        f"{d}Entities": _list({"type": "string", "enum": _ENTITIES}),
        f"{d}Nodes": _list(_LABEL_SELECTOR),
        f"{d}Groups": _list(_open_object()),
        "toPorts": _list(_PORT_RULE),
        "icmps": _list(_ICMP_RULE),
        "authentication": _open_object({"mode": {"type": "string", "enum": ["disabled", "required",
                                                                            "test-always-fail"]}}),
    }
    if d == "to":
        props.update(toFQDNs=_list(_open_object({"matchName": _str(), "matchPattern": _str()})),
                     toServices=_list(_open_object()))
    return _open_object(props)


_RULE_SPEC = {
    "type": "object",
    "properties": {
        "endpointSelector": _LABEL_SELECTOR,
        "nodeSelector": _LABEL_SELECTOR,
        "ingress": _list(_peer_rule("from")),
        "ingressDeny": _list(_peer_rule("from")),
        "egress": _list(_peer_rule("to")),
        "egressDeny": _list(_peer_rule("to")),
        "labels": _list(_open_object({"key": _str(), "value": _str(), "source": _str()})),
        "description": _str(),
        "enableDefaultDeny": {"type": "object", "properties": {"ingress": {"type": "boolean"},
                                                               "egress": {"type": "boolean"}}},
        "log": _open_object({"value": _str()}),
    },
}
_POLICY_STATUS = {
    "type": "object",
    "properties": {
        "conditions": _list({
            "type": "object", "required": ["type", "status"],
            "properties": {"type": _str(),
                           "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                           "lastTransitionTime": {"type": "string", "format": "date-time"},
                           "reason": _str(), "message": _str(),
                           "observedGeneration": {"type": "integer", "format": "int64"}}}),
        "derivativePolicies": _open_object(),
        "nodes": _open_object(),
    },
}


def _crd(plural: str, kind: str, short: list[str], scope: str, schema: dict, status: bool,
         columns: list[dict], categories: list[str] | None = None) -> dict:
    version = {"name": "v2", "served": True, "storage": True,
               "schema": {"openAPIV3Schema": schema}, "additionalPrinterColumns": columns}
    if status:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.cilium.io", "labels": dict(PART_OF)},
        "spec": {"group": "cilium.io", "scope": scope,
                 "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "listKind": kind + "List",
                           "shortNames": short, "categories": categories or ["cilium"]},
                 "versions": [version]},
    }


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
_VALID = {"name": "Valid", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Valid')].status"}
# ours: False while the datapath leaves parts of the policy unenforced (policy.enforcement_gaps)
_ENFORCED = {"name": "Enforced", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Enforced')].status"}


def crds() -> list[dict]:
    policy_schema = {
        "type": "object", "required": ["metadata"],
        "properties": {"apiVersion": _str(), "kind": _str(), "metadata": {"type": "object"},
                       "spec": _RULE_SPEC, "specs": _list(_RULE_SPEC), "status": _POLICY_STATUS},
    }
    identity_schema = {
        "type": "object", "required": ["metadata", "security-labels"],
        "properties": {"apiVersion": _str(), "kind": _str(), "metadata": {"type": "object"},
                       "security-labels": {"type": "object", "additionalProperties": _str()}},
    }
    endpoint_schema = {
        "type": "object",
        "properties": {"apiVersion": _str(), "kind": _str(), "metadata": {"type": "object"},
                       "status": _open_object({
                           "id": {"type": "integer", "format": "int64"},
                           "state": _str(),
                           "identity": _open_object({"id": {"type": "integer", "format": "int64"},
                                                     "labels": _list(_str())}),
                           "networking": _open_object({"node": _str(), "addressing": _list(_open_object(
                               {"ipv4": _str(), "ipv6": _str()}))})})},
    }
    return [
        _crd("ciliumnetworkpolicies", "CiliumNetworkPolicy", ["cnp", "ciliumnp"], "Namespaced", policy_schema,
             True, [_VALID, _ENFORCED, _AGE], ["cilium", "ciliumpolicy"]),
        _crd("ciliumclusterwidenetworkpolicies", "CiliumClusterwideNetworkPolicy", ["ccnp"], "Cluster",
             policy_schema, True, [_VALID, _ENFORCED, _AGE], ["cilium", "ciliumpolicy"]),
        _crd("ciliumidentities", "CiliumIdentity", ["ciliumid"], "Cluster", identity_schema, False,
             [{"name": "Namespace", "type": "string",
               "jsonPath": ".metadata.labels.io\\.kubernetes\\.pod\\.namespace"}, _AGE]),
        _crd("ciliumendpoints", "CiliumEndpoint", ["cep", "ciliumep"], "Namespaced", endpoint_schema, False,
             [{"name": "Security Identity", "type": "integer", "jsonPath": ".status.identity.id"},
              {"name": "Endpoint State", "type": "string", "jsonPath": ".status.state"},
              {"name": "IPv4", "type": "string", "jsonPath": ".status.networking.addressing[0].ipv4"},
              {"name": "Node", "type": "string", "jsonPath": ".status.networking.node"}]),
        local_redirect_crd(),
        cidr_group_crd(),
    ]


def local_redirect_crd() -> dict:
    """CiliumLocalRedirectPolicy (services.local_redirect): namespaced, short name clrp, categories cilium and
    ciliumpolicy, spec.redirectFrontend and spec.redirectBackend required, as Cilium 1.19 serves it
    (pkg/k8s/apis/cilium.io/v2/clrp_types.go; its generated ciliumlocalredirectpolicies.yaml). The fields' finer
    rules are checked by the agent (one line in its log, the policy left out), as `policy validate` checks them."""
    port = {"type": "object", "required": ["port", "protocol"],
            "properties": {"port": _str(), "protocol": {"type": "string", "enum": ["TCP", "UDP"]}, "name": _str()}}
    selector = _open_object({"matchLabels": {"type": "object", "additionalProperties": _str()},
                             "matchExpressions": _list(_open_object())})
    spec = {"type": "object", "required": ["redirectFrontend", "redirectBackend"], "properties": {
        "redirectFrontend": {"type": "object", "properties": {
            "addressMatcher": {"type": "object", "required": ["ip", "toPorts"],
                               "properties": {"ip": _str(), "toPorts": _list(port)}},
            "serviceMatcher": {"type": "object", "required": ["serviceName", "namespace"],
                               "properties": {"serviceName": _str(), "namespace": _str(), "toPorts": _list(port)}}}},
        "redirectBackend": {"type": "object", "required": ["localEndpointSelector", "toPorts"],
                            "properties": {"localEndpointSelector": selector, "toPorts": _list(port)}},
        "description": _str(),
        # fixed once created, as Cilium 1.19's CRD has it (default false; x-kubernetes-validations self == oldSelf)
        "skipRedirectFromBackend": {"type": "boolean", "default": False,
                                    "x-kubernetes-validations": [{"rule": "self == oldSelf"}]}}}
    schema = {"type": "object", "required": ["metadata"],
              "properties": {"apiVersion": _str(), "kind": _str(), "metadata": {"type": "object"}, "spec": spec,
                             "status": _open_object()}}
    return _crd("ciliumlocalredirectpolicies", "CiliumLocalRedirectPolicy", ["clrp"], "Namespaced", schema, False,
                [_AGE], ["cilium", "ciliumpolicy"])


def cidr_group_crd() -> dict:
    """CiliumCIDRGroup: named sets of external CIDRs that policies select with cidrGroupRef / cidrGroupSelector.
    Served as v2 (stored) and v2alpha1, as Cilium 1.19 serves it (pkg/k8s/apis/cilium.io/client/crds/v2/
    ciliumcidrgroups.yaml): cluster-scoped, short name ccg, spec.externalCIDRs required."""
    schema = {"type": "object", "required": ["metadata", "spec"],
              "properties": {"apiVersion": _str(), "kind": _str(), "metadata": {"type": "object"},
                             "spec": {"type": "object", "required": ["externalCIDRs"],
                                      "properties": {"externalCIDRs": _list({"type": "string", "format": "cidr"})}}}}
    crd = _crd("ciliumcidrgroups", "CiliumCIDRGroup", ["ccg"], "Cluster", schema, False, [_AGE])
    v2 = crd["spec"]["versions"][0]
    crd["spec"]["versions"] = [v2, {**v2, "name": "v2alpha1", "storage": False}]
    return crd


# ---------------------------------------------------------------- RBAC and the agent

def cluster_role() -> dict:
    """What the agent needs and nothing more."""
    rules = [
        {"apiGroups": [""], "resources": ["pods", "namespaces", "nodes"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["get", "list", "watch"]},
        # services without kube-proxy (cluster.services): what each node load-balances
        {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["servicecidrs"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["cilium.io"], "resources": ["ciliumnetworkpolicies", "ciliumclusterwidenetworkpolicies"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["cilium.io"],
         "resources": ["ciliumnetworkpolicies/status", "ciliumclusterwidenetworkpolicies/status"],
         "verbs": ["update"]},
        {"apiGroups": ["cilium.io"], "resources": ["ciliumidentities"], "verbs": ["create", "get", "list", "watch"]},
        {"apiGroups": ["cilium.io"], "resources": ["ciliumcidrgroups"], "verbs": ["get", "list", "watch"]},
        # local redirect policies (services.local_redirect): which frontends go to this node's pods
        {"apiGroups": ["cilium.io"], "resources": ["ciliumlocalredirectpolicies"], "verbs": ["get", "list", "watch"]},
        # why a policy is rejected or enforced in part, on the policy (cluster.policy_events)
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
        # its own DaemonSet only: an agent stopped while it is gone was uninstalled and takes its NodePort
        # programs off the devices (node.services.devices)
        {"apiGroups": ["apps"], "resources": ["daemonsets"], "resourceNames": [AGENT], "verbs": ["get"]},
        # get + list: the agent finds its node's stale endpoints after a restart and updates in place
        {"apiGroups": ["cilium.io"], "resources": ["ciliumendpoints"],
         "verbs": ["get", "list", "watch", "create", "update", "delete"]},
    ]
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": AGENT, "labels": dict(PART_OF)}, "rules": rules}


def daemonset(opts: InstallOptions) -> dict:
    def host_path(name: str, path: str, mount: str, read_only: bool = False, type_: str = "DirectoryOrCreate",
                  propagation: str | None = None) -> tuple[dict, dict]:
        volume = {"name": name, "hostPath": {"path": path, "type": type_}}
        m: dict[str, object] = {"name": name, "mountPath": mount}
        if read_only:
            m["readOnly"] = True
        if propagation:
            m["mountPropagation"] = propagation
        return volume, m

    mounts = [
        host_path("bpffs", "/sys/fs/bpf", "/sys/fs/bpf", propagation="HostToContainer"),
        host_path("run", "/var/run/ciliumctl", "/var/run/ciliumctl"),
        host_path("state", "/var/lib/ciliumctl", "/var/lib/ciliumctl"),
        host_path("netns", "/var/run/netns", "/var/run/netns", propagation="HostToContainer"),
        host_path("cni-conf", "/etc/cni/net.d", "/etc/cni/net.d"),
        host_path("cni-bin", "/opt/cni/bin", "/opt/cni/bin"),
        # the agent runs the IPAM plugin for ciliumctl-cni (endpoints/cni_ipam.py): host-local's leases are the node's
        host_path("cni-ipam", "/var/lib/cni/networks", "/var/lib/cni/networks"),
        # BCC compiles the datapath on the node: it needs the node's kernel headers
        host_path("lib-modules", "/lib/modules", "/lib/modules", read_only=True, type_="Directory"),
        host_path("usr-src", "/usr/src", "/usr/src", read_only=True, type_="Directory"),
    ]

    def from_config(var: str, key: str) -> dict:
        return {"name": var, "valueFrom": {"configMapKeyRef": {"name": CONFIG, "key": key}}}

    # the init step: the CNI plugin, host-local, loopback and the conflist on the host, the node's pod CIDR as pool
    init = {
        "name": "install-cni",
        "image": opts.image,
        "imagePullPolicy": opts.image_pull_policy,
        "command": ["python", "-m", "ciliumctl.node.cni.host_init"],
        "env": [{"name": "CILIUMCTL_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "CILIUMCTL_CLUSTER", "value": "in-cluster"}],
        "securityContext": {"privileged": True},
        "volumeMounts": [m for _, m in mounts if m["name"] in ("cni-conf", "cni-bin", "state")],
    }
    container = {
        "name": "agent",
        "image": opts.image,
        "imagePullPolicy": opts.image_pull_policy,
        # the Hubble API on the node's loopback only; `observe --kubeconfig` reaches it through the API server's
        # port-forward (cluster/portforward.py says why)
        "command": ["ciliumctl", "agent", "run", "--hubble-listen", "127.0.0.1:4244"],
        "env": [
            {"name": "CILIUMCTL_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "CILIUMCTL_CLUSTER", "value": "in-cluster"},
            {"name": "CILIUMCTL_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            from_config("CILIUMCTL_ENFORCEMENT", "enforcement-mode"),
            from_config("CILIUMCTL_AUDIT", "audit-mode"),
            from_config("CILIUMCTL_FLOW_BUFFER_SIZE", "flow-buffer-size"),
            # unset (no key): the agent detects the node's devices
            {"name": "CILIUMCTL_DEVICES", "valueFrom": {"configMapKeyRef": {"name": CONFIG, "key": "devices",
                                                                            "optional": True}}},
        ],
        "securityContext": {"privileged": True},
        # ready once the agent serves its CNI socket (paths.agent_socket()) and the datapath is loaded (its pins)
        "readinessProbe": {"exec": {"command": ["sh", "-c", "test -S /var/run/ciliumctl/agent.sock && "
                                                            "test -e /sys/fs/bpf/ciliumctl/events"]},
                           "periodSeconds": 2, "failureThreshold": 3},
        # alive while it answers on its metrics port (hostNetwork: the kubelet's 127.0.0.1 is the node's);
        # the first start compiles the datapath with BCC, so the startup probe gives it two minutes
        "startupProbe": {"httpGet": {"host": "127.0.0.1", "port": 9965, "path": "/metrics"},
                         "periodSeconds": 2, "failureThreshold": 60},
        "livenessProbe": {"httpGet": {"host": "127.0.0.1", "port": 9965, "path": "/metrics"},
                          "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "volumeMounts": [m for _, m in mounts],
    }
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": AGENT, "namespace": opts.namespace, "labels": {**PART_OF, **AGENT_LABELS}},
        "spec": {
            "selector": {"matchLabels": dict(AGENT_LABELS)},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {**PART_OF, **AGENT_LABELS}},
                "spec": {
                    "serviceAccountName": AGENT,
                    "hostNetwork": True,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "priorityClassName": "system-node-critical",
                    "tolerations": [{"operator": "Exists"}],
                    "terminationGracePeriodSeconds": 10,
                    "initContainers": [init],
                    "containers": [container],
                    "volumes": [v for v, _ in mounts],
                },
            },
        },
    }


def build(opts: InstallOptions | None = None) -> list[dict]:
    """Every object of an install, in apply order."""
    opts = opts or InstallOptions()
    opts.check()
    meta = lambda name, ns=True: {"name": name, **({"namespace": opts.namespace} if ns else {}),
                                  "labels": dict(PART_OF)}
    return [
        *crds(),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": meta(opts.namespace, ns=False)},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(AGENT)},
        # outside kube-system, API servers that limit critical priority classes admit the agent's
        # system-node-critical pods only under a quota scoped to that class (Cilium's chart does the same)
        {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": meta(f"{AGENT}-critical-pods"),
         "spec": {"hard": {"pods": "10k"}, "scopeSelector": {"matchExpressions": [
             {"operator": "In", "scopeName": "PriorityClass", "values": ["system-node-critical"]}]}}},
        cluster_role(),
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": meta(AGENT, False),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": AGENT},
         "subjects": [{"kind": "ServiceAccount", "name": AGENT, "namespace": opts.namespace}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(CONFIG),
         "data": {"enforcement-mode": opts.enforcement, "audit-mode": "true" if opts.audit else "false",
                  "flow-buffer-size": str(opts.flow_buffer_size),
                  **({} if opts.devices is None else {"devices": opts.devices})}},
        daemonset(opts),
    ]
