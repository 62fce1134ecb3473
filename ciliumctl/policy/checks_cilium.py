"""Cilium 1.19's import of CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy: Parse() and Rule validation.

Each check mirrors one in Cilium's pkg/policy/api (rule_validation.go, l4.go, selector.go, cidr.go, fqdn.go,
http.go, kafka, icmp.go, entity.go) and pkg/k8s/apis/cilium.io/v2 (cnp_types.go). Where the agent stops at the
first error, we report every one; the verdict is the same. Messages keep Cilium's wording where it is clear,
and add where it is in the file and what to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ciliumctl.policy import goparse, icmp, re2
from ciliumctl.policy.checks_k8s import check_label_selector, extend_key
from ciliumctl.policy.findings import Collector

MAX_PORTS = 40
MAX_ICMP_FIELDS = 40
ENTITIES = ("all", "world", "world-ipv4", "world-ipv6", "cluster", "host", "init", "ingress", "unmanaged",
            "remote-node", "health", "none", "kube-apiserver")
L4_PROTOCOLS = ("TCP", "UDP", "SCTP", "ANY")
EXTENDED_PROTOCOLS = ("VRRP", "IGMP")
HEADER_ACTIONS = ("LOG", "ADD", "DELETE", "REPLACE")
KAFKA_API_KEYS = frozenset((
    "produce fetch offsets metadata leaderandisr stopreplica updatemetadata controlledshutdown offsetcommit "
    "offsetfetch findcoordinator joingroup heartbeat leavegroup syncgroup describegroups listgroups "
    "saslhandshake apiversions createtopics deletetopics deleterecords initproducerid offsetforleaderepoch "
    "addpartitionstotxn addoffsetstotxn endtxn writetxnmarkers txnoffsetcommit describeacls createacls "
    "deleteacls describeconfigs alterconfigs").split())
FQDN_MAX = 255


@dataclass(frozen=True)
class AgentOptions:
    """The agent options that change import verdicts (Cilium 1.19 defaults)."""

    enable_node_selector_labels: bool = False
    enable_extended_ip_protocols: bool = False
    enable_l7_proxy: bool = True
    enable_icmp_rules: bool = True


def _l7_empty(rules) -> bool:
    """L7Rules.IsEmpty: no http/kafka/dns/l7 rule at all (Len() == 0; `http: []` is empty, l7proto alone too)."""
    return rules is None or not any(rules.get(k) for k in ("http", "kafka", "dns", "l7"))


def _count_l7(port_rules: list) -> dict:
    counts: dict = {}
    for pr in port_rules:
        rules = pr.get("rules")
        if not _l7_empty(rules):
            for key, name in (("dns", "DNS"), ("http", "HTTP"), ("kafka", "Kafka")):
                counts[name] = counts.get(name, 0) + len(rules.get(key) or [])
    return counts


class RuleChecker:
    def __init__(self, col: Collector, opts: AgentOptions, kind: str):
        self.col = col
        self.opts = opts
        self.kind = kind

    def err(self, path, message: str, rule: str = "cilium", key: bool = False) -> None:
        self.col.error(path, message, rule=rule, key=key)

    def broken(self, path: tuple, *fields: str) -> bool:
        """A field that is there but could not be decoded (already an error): not reported again as missing."""
        return any(path + (f,) in self.col.error_paths for f in fields)

    # ------------------------------------------------------------------------------------------ policy

    def check_policy(self, obj: dict) -> None:
        meta = obj.get("metadata") or {}
        meta_broken = self.broken((), "metadata") or self.broken(("metadata",), "name")
        if not meta.get("name") and not meta_broken:
            self.err(("metadata",), f"{self.kind} must have a name: set metadata.name")
        spec, specs = obj.get("spec"), obj.get("specs")
        if spec is None and specs is None and not self.broken((), "spec", "specs"):
            self.err((), f"empty policy: {self.kind} has neither spec nor specs; add a spec with an "
                         f"endpointSelector and ingress/egress rules")
        rules: list[tuple[Any, tuple]] = [(spec, ("spec",))] if spec is not None else []
        rules += [(rule, ("specs", i)) for i, rule in enumerate(specs or [])]
        for rule, path in rules:
            self.check_rule(rule, path)
            # cnp_types.go Parse: checked for spec and for each of specs
            if self.kind == "CiliumNetworkPolicy" and "nodeSelector" in rule:
                self.err(path + ("nodeSelector",), "a CiliumNetworkPolicy rule cannot have a nodeSelector: host "
                                                   "policies need a CiliumClusterwideNetworkPolicy", key=True)

    def check_rule(self, rule: dict, path: tuple) -> None:
        directions = ("ingress", "ingressDeny", "egress", "egressDeny")
        if not any(rule.get(k) for k in directions) and not self.broken(path, *directions):
            self.err(path, "rule must have at least one of ingress, ingressDeny, egress, egressDeny (an empty "
                           "list counts as none); to deny all traffic in a direction write `ingress: [{}]`")
        es, ns = rule.get("endpointSelector"), rule.get("nodeSelector")
        if es is None and ns is None and not self.broken(path, "endpointSelector", "nodeSelector"):
            self.err(path, "rule must have one of endpointSelector or nodeSelector; `endpointSelector: {}` "
                           "selects every endpoint")
        if es is not None and ns is not None:
            self.err(path + ("nodeSelector",), "rule cannot have both endpointSelector and nodeSelector: "
                                               "keep one", key=True)
        if es is not None:
            self.selector(es, path + ("endpointSelector",))
            if not es.get("matchLabels") and not es.get("matchExpressions"):
                scope = "namespace" if self.kind == "CiliumNetworkPolicy" else "cluster"
                self.col.warn(path + ("endpointSelector",), f"endpointSelector {{}} selects every endpoint in the "
                                                            f"{scope}; add matchLabels if that is not meant",
                              rule="lint/select-all")
        host = ns is not None
        if ns is not None:
            self.selector(ns, path + ("nodeSelector",))
            if not ns.get("matchLabels") and not ns.get("matchExpressions"):
                self.col.warn(path + ("nodeSelector",), "nodeSelector {} selects every node; add matchLabels if "
                                                        "that is not meant", rule="lint/select-all")
        for direction, deny, ingress in (("ingress", False, True), ("ingressDeny", True, True),
                                         ("egress", False, False), ("egressDeny", True, False)):
            for i, item in enumerate(rule.get(direction) or []):
                rpath = path + (direction, i)
                if ingress:
                    self.ingress(item, rpath, host, deny)
                else:
                    self.egress(item, rpath, host, deny)

    # ------------------------------------------------------------------------------------------ L3

    def _combining(self, rule: dict, path: tuple, members: dict) -> None:
        present = [(field, name) for field, name in members.items() if rule.get(field)]
        if len(present) > 1:
            pair = sorted(name for _, name in present[:2])
            self.err(path + (present[1][0],), f"combining {pair[0]} and {pair[1]} is not supported yet: put them "
                                              f"in separate rules of the list", key=True)

    def _nodes_flag(self, rule: dict, path: tuple, field: str) -> None:
        if rule.get(field) and not self.opts.enable_node_selector_labels:
            self.err(path + (field,), f"{field} rules can only be applied when the agent option "
                                      f"--enable-node-selector-labels is set", key=True)

    def ingress(self, rule: dict, path: tuple, host: bool, deny: bool) -> None:
        self._combining(rule, path, {"fromEndpoints": "FromEndpoints", "fromCIDR": "FromCIDR",
                                     "fromCIDRSet": "FromCIDRSet", "fromEntities": "FromEntities",
                                     "fromNodes": "FromNodes", "fromGroups": "FromGroups"})
        self._nodes_flag(rule, path, "fromNodes")
        self._peers(rule, path, "from")
        ports = rule.get("toPorts") or []
        if not deny:
            l7 = _count_l7(ports)
            if host and l7:
                self.err(path + ("toPorts",), "L7 policy is not supported on host ingress yet: remove the "
                                              "rules from this host (nodeSelector) policy", key=True)
            if l7 and not self.opts.enable_l7_proxy:
                self.err(path + ("toPorts",), "L7 policy is not supported since the L7 proxy is disabled "
                                              "(--disable-l7-proxy)", key=True)
            if l7.get("DNS"):
                for j, pr in enumerate(ports):
                    if (pr.get("rules") or {}).get("dns"):
                        self.err(path + ("toPorts", j, "rules", "dns"), "L7 protocol DNS is not supported on "
                                                                        "ingress yet: DNS rules belong in egress "
                                                                        "rules", key=True)
        self._icmp_rules(rule, path)
        for j, pr in enumerate(ports):
            if deny:
                self.port_deny_rule(pr, path + ("toPorts", j))
            else:
                self.port_rule(pr, path + ("toPorts", j), ingress=True)
        self._icmps(rule, path)

    def egress(self, rule: dict, path: tuple, host: bool, deny: bool) -> None:
        members = {"toCIDR": "ToCIDR", "toCIDRSet": "ToCIDRSet", "toEndpoints": "ToEndpoints",
                   "toEntities": "ToEntities", "toServices": "ToServices", "toGroups": "ToGroups",
                   "toNodes": "ToNodes"}
        if not deny:
            members["toFQDNs"] = "ToFQDNs"
        self._combining(rule, path, members)
        self._nodes_flag(rule, path, "toNodes")
        self._peers(rule, path, "to")
        ports = rule.get("toPorts") or []
        if not deny:
            l7 = _count_l7(ports)
            if l7 and not self.opts.enable_l7_proxy:
                self.err(path + ("toPorts",), "L7 policy is not supported since the L7 proxy is disabled "
                                              "(--disable-l7-proxy)", key=True)
            for proto in ("HTTP", "Kafka"):
                if host and l7.get(proto):
                    self.err(path + ("toPorts",), f"L7 protocol {proto} is not supported on host egress yet: "
                                                  f"only DNS rules work in host (nodeSelector) policies", key=True)
        self._icmp_rules(rule, path)
        for j, pr in enumerate(ports):
            if deny:
                self.port_deny_rule(pr, path + ("toPorts", j))
            else:
                self.port_rule(pr, path + ("toPorts", j), ingress=False)
        self._icmps(rule, path)
        if not deny:
            for j, sel in enumerate(rule.get("toFQDNs") or []):
                self.fqdn_selector(sel, path + ("toFQDNs", j))

    def _peers(self, rule: dict, path: tuple, side: str) -> None:
        for field in (f"{side}Endpoints", f"{side}Nodes"):
            for j, sel in enumerate(rule.get(field) or []):
                self.selector(sel, path + (field, j))
        for j, cidr in enumerate(rule.get(f"{side}CIDR") or []):
            self.cidr(cidr, path + (f"{side}CIDR", j))
        for j, cidr_rule in enumerate(rule.get(f"{side}CIDRSet") or []):
            self.cidr_rule(cidr_rule, path + (f"{side}CIDRSet", j))
        for j, entity in enumerate(rule.get(f"{side}Entities") or []):
            if entity not in ENTITIES:
                hint = f"did you mean {entity.lower()!r}? " if entity.lower() in ENTITIES else ""
                self.err(path + (f"{side}Entities", j), f"unsupported entity: {entity}; {hint}entities are "
                                                        f"case-sensitive: {', '.join(ENTITIES)}")

    def selector(self, sel: dict, path: tuple) -> None:
        check_label_selector(self.col, sel, path, cilium_keys=True)
        # NewESFromK8sLabelSelectorWithExtender (selector.go) puts the extended keys in a Go map: of two keys
        # naming one label, one survives, chosen by map order
        first: dict = {}
        for key in sel.get("matchLabels") or {}:
            ext = extend_key(key)
            if ext in first:
                self.col.warn(path + ("matchLabels", key), f"matchLabels keys {first[ext]!r} and {key!r} both name "
                                                           f"the label {ext}: Cilium keeps one of them at random; "
                                                           f"keep one", rule="lint/selector-key", key=True)
            first.setdefault(ext, key)

    def cidr(self, value: str, path: tuple) -> None:
        if value == "":
            self.err(path, "IP must be specified: write an address or a prefix like 10.0.0.0/8")
            return
        if goparse.parse_prefix(value)[0] is None and goparse.parse_addr(value) is None:
            self.err(path, f"unable to parse CIDR {value!r}: write an IPv4/IPv6 address or prefix like "
                           f"10.0.0.0/8 (no leading zeros, prefix length within 0-32 or 0-128)")

    def cidr_rule(self, rule: dict, path: tuple) -> None:
        count = bool(rule.get("cidrGroupRef")) + bool(rule.get("cidr")) + ("cidrGroupSelector" in rule)
        if "cidrGroupSelector" in rule:
            check_label_selector(self.col, rule["cidrGroupSelector"], path + ("cidrGroupSelector",),
                                 cilium_keys="cidrgroup.", what="cidrGroupSelector")  # cidr.go sanitize
        if count == 0:
            self.err(path, "one of cidr, cidrGroupRef, or cidrGroupSelector is required: add cidr: <prefix>")
            return
        if count > 1:
            self.err(path, "more than one of cidr, cidrGroupRef, or cidrGroupSelector may not be set: keep one")
            return
        if not rule.get("cidr"):
            return
        cidr = rule["cidr"]
        parsed, why = goparse.parse_prefix(cidr)
        if parsed is None:
            hint = ("; a single address needs /32 or /128 here" if goparse.parse_addr(cidr) is not None
                    else "; write a prefix like 10.0.0.0/8")
            self.err(path + ("cidr",), f"unable to parse CIDRRule {cidr!r}: {why}{hint}")
            return
        for j, exc in enumerate(rule.get("except") or []):
            sub, why = goparse.parse_prefix(exc)
            if sub is None:
                self.err(path + ("except", j), f"unable to parse except {exc!r}: {why}; write a prefix like "
                                               f"10.1.0.0/16")
            elif not goparse.prefix_contains(parsed, sub[0]):
                self.err(path + ("except", j), f"allow CIDR prefix {cidr} does not contain exclude CIDR prefix "
                                               f"{exc}: an except entry must lie inside cidr")
            elif sub[1] <= parsed[1]:
                self.col.warn(path + ("except", j), f"except {exc} covers all of cidr {cidr}, so this entry allows "
                                                    f"nothing; use a longer except prefix", rule="lint/except")

    # ------------------------------------------------------------------------------------------ ICMP

    def _icmp_rules(self, rule: dict, path: tuple) -> None:
        if rule.get("icmps"):
            if not self.opts.enable_icmp_rules:
                self.err(path + ("icmps",), "ICMP rules can only be applied when the agent option "
                                            "enable-icmp-rules is set", key=True)
            if rule.get("toPorts"):
                self.err(path + ("icmps",), "the ICMPs block may only be present without ToPorts: define a "
                                            "separate rule to use ToPorts", key=True)

    def _icmps(self, rule: dict, path: tuple) -> None:
        for j, icmp_rule in enumerate(rule.get("icmps") or []):
            fields = icmp_rule.get("fields") or []
            if len(fields) > MAX_ICMP_FIELDS:
                self.err(path + ("icmps", j, "fields"), f"too many types, the max is {MAX_ICMP_FIELDS}: split "
                                                        f"them over several icmps entries", key=True)
            for k, fld in enumerate(fields):
                fpath = path + ("icmps", j, "fields", k)
                family = fld.get("family", "")
                if family not in ("IPv4", "IPv6", ""):
                    self.err(fpath + ("family",), f"wrong family: {family}; use IPv4 or IPv6 (case-sensitive)")
                icmp_type = fld.get("type")
                if icmp_type is None:
                    if not self.broken(fpath, "type"):
                        self.err(fpath, "an ICMP field needs a type (a number 0-255 or a name like EchoRequest): "
                                        "Cilium's decoder crashes without one")
                elif isinstance(icmp_type, str):
                    problem = icmp.type_name_problem(icmp_type, family)
                    if problem:
                        self.err(fpath + ("type",), problem)
                elif not 0 <= icmp_type <= 255:
                    self.col.warn(path + ("icmps", j, "fields", k, "type"), f"ICMP type {icmp_type} does not "
                                                                            f"exist (types are 0-255)",
                                  rule="lint/icmp-type")

    # ------------------------------------------------------------------------------------------ L4

    def port_deny_rule(self, pr: dict, path: tuple) -> None:
        ports = pr.get("ports") or []
        if len(ports) > MAX_PORTS:
            self.err(path + ("ports",), f"too many ports, the max is {MAX_PORTS}: split them over several "
                                        f"toPorts entries", key=True)
        for i, pp in enumerate(ports):
            self.port_protocol(pp, path + ("ports", i), has_dns=False)

    def port_rule(self, pr: dict, path: tuple, ingress: bool) -> None:
        rules = pr.get("rules")
        has_dns = bool(rules and rules.get("dns"))
        if ingress and has_dns:
            pass  # reported once, as "L7 protocol DNS is not supported on ingress yet"
        names = pr.get("serverNames") or []
        if names and not _l7_empty(rules) and "terminatingTLS" not in pr:
            self.err(path + ("serverNames",), "ServerNames are not allowed with L7 rules without TLS termination: "
                                              "add terminatingTLS or drop the L7 rules", key=True)
        for i, name in enumerate(names):
            if name == "":
                self.err(path + ("serverNames", i), "empty server name is not allowed: remove the empty entry or "
                                                    "write a name")
        ports = pr.get("ports") or []
        if len(ports) > MAX_PORTS:
            self.err(path + ("ports",), f"too many ports, the max is {MAX_PORTS}: split them over several "
                                        f"toPorts entries", key=True)
        have_zero = False
        for i, pp in enumerate(ports):
            if self.port_protocol(pp, path + ("ports", i), has_dns):
                have_zero = True
            # compared after PortProtocol.sanitize upper-cased it (rule_validation.go), so `tcp` is TCP
            proto = (pp.get("protocol") or "ANY").upper()
            if not _l7_empty(rules) and not has_dns and proto != "TCP":
                self.err(path + ("ports", i), f"L7 rules can only apply to TCP (not {proto}) except for DNS "
                                              f"rules; set protocol: TCP")
        listener = pr.get("listener")
        if listener is not None:
            lname = listener.get("name", "")
            if ingress:
                self.err(path + ("listener",), f"Listener is not allowed on ingress ({lname}): listeners only "
                                               f"work in egress rules", key=True)
            if not _l7_empty(rules):
                self.err(path + ("listener",), f"Listener is not allowed with L7 rules ({lname}): drop `rules` or the "
                                               f"listener", key=True)
        if rules is not None and not _l7_empty(rules):
            if have_zero:
                self.err(path + ("rules",), "L7 rules can not be used when a port is 0: name the ports the "
                                            "rules apply to", key=True)
            self.l7_rules(rules, ports, path + ("rules",))

    def port_protocol(self, pp: dict, path: tuple, has_dns: bool) -> bool:
        """PortProtocol validation; returns whether the port is 0 (all ports)."""
        port = pp.get("port", "")
        proto = pp.get("protocol", "")
        is_zero = False
        if port == "":
            if self.broken(path, "port"):
                return False
            if not self.opts.enable_extended_ip_protocols:
                self.err(path, 'port must be specified: add port: "<number or name>" (port: "0" means all ports)')
                return False
        elif not goparse.is_svc_name(port):
            if port != "0" and proto in EXTENDED_PROTOCOLS:
                self.err(path + ("port",), f"port must be empty or 0 for protocol {proto}: it has no ports")
                return False
            value, why = goparse.parse_uint(port, 16)
            if value is None:
                self.err(path + ("port",), f"unable to parse port {port!r}: {why}; {self._port_hint(port)}")
                return False
            is_zero = value == 0
            self._port_lint(port, value, path + ("port",))
            end = pp.get("endPort", 0)
            if has_dns and end > value:
                self.err(path + ("endPort",), "DNS rules do not support port ranges: remove endPort")
        self.l4_protocol(proto, path + ("protocol",))
        return is_zero

    @staticmethod
    def _port_hint(port: str) -> str:
        if port.strip() != port:
            return "remove the spaces"
        if port.startswith(("-", "+")):
            return "ports are 0-65535, without a sign"
        digits = port.replace("_", "")
        if digits.isdigit():
            if len(digits) > 1 and digits.startswith("0"):
                return (f"a leading 0 makes the agent read {port!r} as octal, where 8 and 9 are not digits; "
                        f"write {str(int(digits, 10))!r}")
            return "ports are 0-65535 (use endPort for a range)"
        return "write a number 0-65535 or a port name (letters, digits, single dashes, at most 15 characters)"

    def _port_lint(self, port: str, value: int, path: tuple) -> None:
        digits = port.replace("_", "")
        if digits.isdigit() and len(digits) > 1 and digits.startswith("0"):
            self.col.warn(path, f"port {port!r} is read as octal by the agent: it means port {value}, not "
                                f"{int(digits, 10)}; write {str(int(digits, 10))!r} (or {str(value)!r} if "
                                f"{value} is meant)", rule="lint/octal-port")
        elif "_" in port:
            self.col.warn(path, f"port {port!r} is read as {value}; write {str(value)!r}", rule="lint/port-format")

    def l4_protocol(self, proto: str, path: tuple) -> None:
        upper = proto.upper() if proto else "ANY"
        if upper in L4_PROTOCOLS:
            return
        if upper in EXTENDED_PROTOCOLS:
            # accepted by the policy API; the agent option gates the datapath (conntrack) and empty ports
            if not self.opts.enable_extended_ip_protocols:
                self.col.warn(path, f"{upper} packets are dropped by the datapath unless the agent runs with "
                                    f"--enable-extended-ip-protocols", rule="lint/extended-protocol")
            return
        hint = "; ICMP is matched with an `icmps` rule, not toPorts" if upper.startswith("ICMP") else ""
        self.err(path, f'invalid protocol "{upper}", must be {{ tcp | udp | sctp | vrrp | igmp | any }}{hint}')

    # ------------------------------------------------------------------------------------------ L7

    def l7_rules(self, rules: dict, ports: list, path: tuple) -> None:
        kinds = 0
        if "http" in rules:
            kinds += 1
            for i, http in enumerate(rules["http"]):
                self.http_rule(http, path + ("http", i))
        if "kafka" in rules:
            kinds += 1
            for i, kafka in enumerate(rules["kafka"]):
                self.kafka_rule(kafka, path + ("kafka", i))
        if "dns" in rules:
            if not ports:
                self.err(path + ("dns",), "port 53 must be specified for DNS rules: add ports", key=True)
            kinds += 1
            for i, dns in enumerate(rules["dns"]):
                self.dns_rule(dns, path + ("dns", i))
        if "l7" in rules and not rules.get("l7proto"):
            self.err(path + ("l7",), "'l7' may only be specified when a 'l7proto' is also specified: add l7proto",
                     key=True)
        if rules.get("l7proto"):
            kinds += 1
            for i, generic in enumerate(rules.get("l7") or []):
                for key in generic:
                    if key == "":
                        self.err(path + ("l7", i, key), "Empty key not allowed in an l7 rule: name the key", key=True)
        if kinds > 1:
            self.err(path, "multiple L7 protocol rule types specified in single rule: use one of http, kafka, "
                           "dns or l7proto per toPorts entry")

    def http_rule(self, http: dict, path: tuple) -> None:
        for field in ("path", "method"):
            value = http.get(field, "")
            if value:
                problem = re2.check(value)
                if problem:
                    self.err(path + (field,), f"{problem}; {field} is a Go (RE2) regular expression")
        for i, match in enumerate(http.get("headerMatches") or []):
            mpath = path + ("headerMatches", i)
            if not match.get("name"):
                self.err(mpath, "Header name missing: add name")
            mismatch = match.get("mismatch", "")
            if mismatch and mismatch not in HEADER_ACTIONS:
                self.err(mpath + ("mismatch",), f"Invalid header action: {mismatch}; use one of "
                                                f"{', '.join(HEADER_ACTIONS)}")
            if "secret" in match and not match["secret"].get("name"):
                self.err(mpath + ("secret",), "Secret name missing: add secret.name", key=True)

    def kafka_rule(self, kafka: dict, path: tuple) -> None:
        key, role = kafka.get("apiKey", ""), kafka.get("role", "")
        if key and role:
            self.err(path, f"cannot set both Role {role!r} and APIKey {key!r} together: keep one")
        if key and key.lower() not in KAFKA_API_KEYS:
            self.err(path + ("apiKey",), f"invalid Kafka APIKey {key!r}: use a Kafka API name such as produce, fetch "
                                         f"or metadata")
        if role and role.lower() not in ("produce", "consume"):
            self.err(path + ("role",), f"invalid Kafka Role {role!r}: use produce or consume")
        version = kafka.get("apiVersion", "")
        if version:
            ok = re.fullmatch(r"[+-]?[0-9]+", version) is not None
            if not ok or not 0 <= int(version) <= 32767:
                self.err(path + ("apiVersion",), f"invalid Kafka APIVersion {version!r}: a number 0-32767")
        topic = kafka.get("topic", "")
        if topic:
            if len(topic) > 255:
                self.err(path + ("topic",), "kafka topic exceeds maximum len of 255: shorten it")
            elif not all(c.isascii() and (c.isalnum() or c in "\\._-") for c in topic):
                self.err(path + ("topic",), f"invalid Kafka Topic name {topic!r}: use letters, digits, '.', '_' "
                                            f"and '-'")

    def _match_name(self, name: str, path: tuple, what: str) -> None:
        if not all(c.isascii() and (c.isalnum() or c in "-_.") for c in name):
            self.err(path, f"Invalid characters in {what}: {name!r}. Only 0-9, a-z, A-Z and ., -, _ characters "
                           f"are allowed" + ("; wildcards belong in matchPattern" if "*" in name else ""))

    def _match_pattern(self, pattern: str, path: tuple) -> None:
        if len(pattern.strip()) > FQDN_MAX:
            self.err(path, f"Invalid MatchPattern: must be <= {FQDN_MAX} characters long")
        if not all(c.isascii() and (c.isalnum() or c in "-_.*") for c in pattern):
            self.err(path, f"Invalid characters in MatchPattern: {pattern!r}. Only 0-9, a-z, A-Z and ., -, _ and "
                           f"* characters are allowed (it is a DNS wildcard, not a regular expression)")

    def dns_rule(self, dns: dict, path: tuple) -> None:
        # fqdn.go: matchName's characters are checked, its length is not (only matchPattern goes through
        # matchpattern.Validate); the CRD schema has maxLength 255 for both
        if dns.get("matchName"):
            self._match_name(dns["matchName"], path + ("matchName",), "MatchName")
        if dns.get("matchPattern"):
            self._match_pattern(dns["matchPattern"], path + ("matchPattern",))

    def fqdn_selector(self, sel: dict, path: tuple) -> None:
        if sel.get("matchName") and sel.get("matchPattern"):
            self.err(path, "only one of MatchName or MatchPattern is allowed in an FQDNSelector: use two "
                           "toFQDNs entries")
        self.dns_rule(sel, path)
