"""Mutated CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy documents for differential tests against
Cilium's own validator (cnp-oracle).

Starts from real policies (the shared corpus, the repository's examples) and changes one to a few things:
values near and past their limits, wrong JSON types, nulls, unknown, case-changed and duplicate keys, odd
ports, protocols, ICMP types, entities, CIDRs, selectors and L7 rules, parts of other policies, specs lists,
List objects, empty documents between `---`. Deterministic for a given seed.

    gen = Generator(seed_documents(), seed=7)
    files = gen.files(count=1000, docs_per_file=20)   # [(file name, YAML text)], 1000 cases in all

The value pools are written from Cilium's types (pkg/policy/api: l4.go, icmp.go, entity.go, cidr.go,
selector.go, http.go, fqdn.go, rule.go), independently of ciliumctl's own tables, so a gap in one is not
hidden by the same gap in the other.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import yaml

from tests.oracle.yamltext import Pairs, Raw, to_yaml

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "corpus" / "policies"
EXAMPLES = REPO / "examples" / "policies"
POLICY_KINDS = ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy")


def seed_documents(*roots: Path) -> list[dict]:
    """Every CNP/CCNP mapping in the YAML files under the roots (default: the corpus and the examples)."""
    roots = roots or (CORPUS, EXAMPLES)
    out = []
    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            if path.suffix not in (".yaml", ".yml", ".json") or not path.is_file():
                continue
            try:
                docs = list(yaml.safe_load_all(path.read_text()))
            except yaml.YAMLError:
                continue
            for doc in docs:
                if isinstance(doc, dict) and doc.get("kind") in POLICY_KINDS and isinstance(doc.get("metadata"), dict):
                    out.append(doc)
    return out


# ------------------------------------------------------------------------------------------- value pools

ICMP4 = ["EchoReply", "DestinationUnreachable", "Redirect", "Echo", "EchoRequest", "RouterAdvertisement",
         "RouterSelection", "TimeExceeded", "ParameterProblem", "Timestamp", "TimestampReply", "Photuris",
         "ExtendedEchoRequest", "ExtendedEchoReply"]
ICMP6 = ["DestinationUnreachable", "PacketTooBig", "TimeExceeded", "ParameterProblem", "EchoRequest", "EchoReply",
         "MulticastListenerQuery", "MulticastListenerReport", "MulticastListenerDone", "RouterSolicitation",
         "RouterAdvertisement", "NeighborSolicitation", "NeighborAdvertisement", "RedirectMessage",
         "RouterRenumbering", "ICMPNodeInformationQuery", "ICMPNodeInformationResponse",
         "InverseNeighborDiscoverySolicitation", "InverseNeighborDiscoveryAdvertisement",
         "HomeAgentAddressDiscoveryRequest", "HomeAgentAddressDiscoveryReply", "MobilePrefixSolicitation",
         "MobilePrefixAdvertisement", "DuplicateAddressRequestCodeSuffix", "DuplicateAddressConfirmationCodeSuffix",
         "ExtendedEchoRequest", "ExtendedEchoReply"]
ICMP_ODD = ["echoRequest", "ECHOREQUEST", "Echo Request", "ExtendedEcho Reply", "EchoRequest ", " Echo", "Ping",
            "", "0", "8", "255", "256", "-1", "08", "0x8", "+8", "8.0", "1e1", "٣", "Echo\n", "<nil>"]
ICMP_INTS = [0, 1, 3, 8, 128, 129, 255, 256, -1, 65535, 2 ** 31 - 1, 2 ** 31, -(2 ** 31), 8.0, 8.5, Raw("0x8"),
             Raw("010"), Raw("1e1"), Raw("8_0")]
ENTITIES = ["all", "world", "world-ipv4", "world-ipv6", "cluster", "host", "init", "ingress", "unmanaged",
            "remote-node", "health", "none", "kube-apiserver"]
ENTITY_ODD = ["World", "WORLD", "Host", "world ", " world", "worlds", "world-ipv5", "worldipv4", "remote_node",
              "kube-api-server", "", "*", "reserved:world", "ipv4"]
PORTS = ["80", "0", "1", "53", "443", "8080", "65535", "65536", "99999", "-1", "+80", "0x50", "0X50", "0o120",
         "0b1010", "080", "089", "0080", "00", "8_0", "0x_50", "80_", "80 ", " 80", "http", "HTTP", "dns-tcp",
         "a", "-http", "http-", "ht--tp", "abcdefghijklmnop", "abcdefghijklmno", "1a", "a1", "123-", "1-2", "",
         "٣", "80.0", "1e3", "*", "80-90", "18446744073709551616"]
PORT_VALUES = PORTS + [80, 0, 65536, -1, 80.0, 80.5, True, Raw("0x50"), Raw("080"), Raw("0o17"), Raw("1_000"),
                       Raw("1e3"), Raw("yes"), None]
END_PORTS = [0, 1, 79, 80, 81, 8080, 65535, 65536, -1, 2 ** 31 - 1, 2 ** 31, -(2 ** 31) - 1, 2 ** 63, 80.0,
             80.5, "8080", "", True, None, Raw("0x1F90"), Raw("010"), Raw("1e3")]
PROTOCOLS = ["TCP", "UDP", "SCTP", "ANY", "tcp", "udp", "sctp", "any", "Tcp", "Any", "ICMP", "ICMPv6", "ICMPV6",
             "icmp", "VRRP", "vrrp", "IGMP", "igmp", "Igmp", "", "GRE", "ESP", "6", "TCP ", " UDP", "TCP/UDP",
             6, True, None]
FAMILIES = ["IPv4", "IPv6", "ipv4", "ipv6", "IPV4", "IPv5", "", "4", "6", " IPv6", 4, True, None, Raw("~")]
CIDRS = ["10.0.0.0/8", "10.1.2.3/8", "10.0.0.1", "10.0.0.1/32", "0.0.0.0/0", "::/0", "2001:db8::/32",
         "2001:db8::1", "2001:db8::1/128", "fe80::1%eth0", "fe80::1%eth0/64", "::ffff:10.0.0.1",
         "::ffff:10.0.0.0/104", "10.0.0.0/33", "2001:db8::/129", "10.0.0.0/-1", "10.0.0.0/+8", "010.0.0.0/8",
         "10.0.0.0/08", "10.0.0.256/8", "10.0.0/8", "1.2.3", "10.0.0.0/8 ", " 10.0.0.0/8", "10.0.0.0/ 8",
         "10.0.0.0/", "/8", "a/b", "", "10.0.0.0/8/8", "192.168.0.0/16", "172.16.0.0/12", "10.1.0.0/16",
         "10.0.0.0/255.0.0.0", "1.1.1.1/32", "::1", "::/", "1::2::3/64", "2001:db8::/032",
         "2001:0db8:0000::/48", "0.0.0.0", "255.255.255.255/32", "1.2.3.4/0"]
LABEL_KEYS = ["app", "k8s:app", "any:app", "reserved:host", "reserved:world", "io.kubernetes.pod.namespace",
              "k8s:io.kubernetes.pod.namespace", "io.cilium.k8s.policy.serviceaccount", "example.com/app",
              "$host", "$", "node-role.kubernetes.io/control-plane", "a" * 59, "a" * 60, "a" * 63, "a" * 64,
              "x/" + "a" * 63, "", "-app", "app-", "app!", "k8s:", ":app", "a/b/c", "UPPER.com/x", "Upper/x",
              "k8s:k8s:app", "cidr:10.0.0.0/8", "kubernetes.io/metadata.name", "app name", "app_1.x-2",
              "unspec:app", "container:x", "a.b/", "/a", "io.cilium.k8s.namespace.labels.team"]
LABEL_VALUES = ["web", "", "a" * 63, "a" * 64, "-bad", "bad-", "with space", "ok.value_1", "v1.2", "UPPER",
                "a/b", "é", "1", True, False, 5, 1.5, None, [], {}, Raw("yes"), Raw("~"), Raw("010")]
OPERATORS = ["In", "NotIn", "Exists", "DoesNotExist", "in", "notin", "exists", "Gt", "Lt", "", "IN", None, 1]
REGEXES = ["/public", "/v1/.*", "GET", "GET|POST", "(", ")", "[a-", "a{2,1}", "a{1001}", "x{1000}", "\\p{L}",
           "\\pL", "\\p{Greek}", "\\p{Nope}", "(?P<n>x)", "(?<n>x)", "(?P<n>x)(?P<n>y)", "\\C", "a**", "a++",
           "(?i)get", "(?s).", "(?U)a*", "(?x)a", "(?=x)", "(?!x)", "(?<=x)", "\\z", "\\Z", "\\A", "\\b", "\\8",
           "\\1", "[[:alpha:]]", "[[:foo:]]", "[z-a]", "\\Q*\\E", "\\x{10FFFF}", "\\x{110000}", "\\e", "\\cA",
           "a{,5}", "a{2}{3}", "[]a]", "[^]", "\\", "*", "+x", "?", "x|*", "(?i", "(?#c)", "\\k<n>", "ä+",
           "((((((((((a))))))))))", "[\\d-z]", "\\N{x}", "a{1,1001}", "(a)(b)\\2", "%", "/path with space"]
FQDNS = ["example.com", "*.example.com", "*", "**", "**.example.com", "***.example.com", "ex*ample.com",
         "exa mple.com", "example.com.", ".", "..", "a..b", "xn--bcher-kva.example", "under_score.com", "",
         "a" * 250 + ".com", "a" * 256, "  example.com  ", "EXAMPLE.com", "example.com/x", "ex$ample", "ä.com",
         "-lead.com", "*.*", "cilium.io", "api.github.com"]
KAFKA_KEYS = ["produce", "Produce", "fetch", "metadata", "apiversions", "createtopics", "nope", "", "PRODUCE",
              "offsetforleaderepoch", "describeconfigs", "alterconfigs", "saslauthenticate"]
NAMES = ["ok", "t", "a.b", "a-b", "", "UPPER", "a_b", "-a", "a-", ".a", "a..b", "a" * 63, "a" * 64, "a" * 253,
         "a" * 254, "1abc", "a/b", "é", 5, True, None, Raw("yes")]
NAMESPACES = ["default", "kube-system", "", "Bad", "a.b", "a" * 63, "a" * 64, "-a", "a_b", 5, None]
GENERIC = [None, "", "x", "0", 0, 1, -1, 1.5, True, False, [], {}, ["a"], [None], [{}], {"a": "b"}, {"a": None},
           Raw("yes"), Raw("no"), Raw("on"), Raw("0x1F"), Raw("010"), Raw("1e3"), Raw("~"), Raw(".inf"),
           Raw(".nan"), 2 ** 63, -(2 ** 63) - 1, 10 ** 30]


def _pick(rng: random.Random, pool):
    value = rng.choice(pool)
    return copy.deepcopy(value)


class Values:
    """Interesting values and snippets by field name (and, for a few names, by where the field is)."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def one(self, pool):
        return _pick(self.rng, pool)

    def some(self, pool, lo: int = 0, hi: int = 3) -> list:
        return [self.one(pool) for _ in range(self.rng.randint(lo, hi))]

    # -- composite snippets
    def selector(self):
        r = self.rng
        sel: dict = {}
        if r.random() < 0.7:
            sel["matchLabels"] = {str(self.one(LABEL_KEYS)): self.one(LABEL_VALUES[:12])
                                  for _ in range(r.randint(0, 2))}
        if r.random() < 0.4:
            sel["matchExpressions"] = [self.requirement() for _ in range(r.randint(0, 2))]
        if r.random() < 0.05:
            sel[r.choice(["MatchLabels", "matchlabels", "foo", "matchLabel"])] = {"app": "x"}
        return sel

    def requirement(self):
        r = self.rng
        req = {"key": self.one(LABEL_KEYS), "operator": self.one(OPERATORS[:6])}
        if r.random() < 0.7:
            req["values"] = self.some(LABEL_VALUES[:10], 0, 3)
        return req

    def port_protocol(self):
        r = self.rng
        pp: dict = {}
        if r.random() < 0.9:
            pp["port"] = self.one(PORTS) if r.random() < 0.8 else self.one(PORT_VALUES)
        if r.random() < 0.7:
            pp["protocol"] = self.one(PROTOCOLS)
        if r.random() < 0.2:
            pp["endPort"] = self.one(END_PORTS)
        return pp

    def icmp_field(self):
        r = self.rng
        f: dict = {}
        if r.random() < 0.8:
            f["family"] = self.one(["IPv4", "IPv6"] * 4 + FAMILIES)
        if r.random() < 0.95:
            f["type"] = self.icmp_type()
        if r.random() < 0.05:
            f[r.choice(["Type", "TYPE", "Family", "code"])] = self.icmp_type()
        return f

    def icmp_type(self):
        x = self.rng.random()
        if x < 0.35:
            return self.one(ICMP4)
        if x < 0.7:
            return self.one(ICMP6)
        if x < 0.85:
            return self.one(ICMP_INTS)
        return self.one(ICMP_ODD)

    def icmps(self):
        return [{"fields": [self.icmp_field() for _ in range(self.rng.randint(0, 3))]}
                for _ in range(self.rng.randint(1, 2))]

    def http(self):
        r = self.rng
        h: dict = {}
        for key in ("path", "method", "host"):
            if r.random() < 0.4:
                h[key] = self.one(REGEXES) if key != "host" else self.one(FQDNS)
        if r.random() < 0.2:
            h["headers"] = self.some(["X-Foo: bar", "", "X-Bar"], 1, 2)
        if r.random() < 0.2:
            h["headerMatches"] = [self.header_match() for _ in range(r.randint(0, 2))]
        return h

    def header_match(self):
        r = self.rng
        m: dict = {}
        if r.random() < 0.8:
            m["name"] = self.one(["X-Token", "", "x"])
        if r.random() < 0.5:
            m["mismatch"] = self.one(["LOG", "ADD", "DELETE", "REPLACE", "log", "DROP", ""])
        if r.random() < 0.3:
            m["secret"] = self.one([{"name": "s"}, {"name": ""}, {"namespace": "x"}, {}, None])
        if r.random() < 0.5:
            m["value"] = self.one(["v", ""])
        return m

    def dns(self):
        r = self.rng
        d: dict = {}
        if r.random() < 0.6:
            d["matchName"] = self.one(FQDNS)
        if r.random() < 0.5:
            d["matchPattern"] = self.one(FQDNS)
        return d

    def kafka(self):
        r = self.rng
        k: dict = {}
        if r.random() < 0.4:
            k["role"] = self.one(["produce", "consume", "Produce", "CONSUME", "admin", ""])
        if r.random() < 0.4:
            k["apiKey"] = self.one(KAFKA_KEYS)
        if r.random() < 0.3:
            k["apiVersion"] = self.one(["0", "1", "32767", "32768", "-1", "+1", "01", "0x1", "a", "", " 1"])
        if r.random() < 0.4:
            k["topic"] = self.one(["t", "my.topic_1-x", "bad topic", "a" * 255, "a" * 256, "ä", "a\\b", ""])
        if r.random() < 0.2:
            k["clientID"] = self.one(["c", ""])
        return k

    def l7_rules(self):
        r = self.rng
        rules: dict = {}
        kinds = r.sample(["http", "dns", "kafka", "l7proto", "l7"], r.randint(1, 2))
        for kind in kinds:
            if kind == "http":
                rules["http"] = [self.http() for _ in range(r.randint(0, 2))]
            elif kind == "dns":
                rules["dns"] = [self.dns() for _ in range(r.randint(0, 2))]
            elif kind == "kafka":
                rules["kafka"] = [self.kafka() for _ in range(r.randint(0, 2))]
            elif kind == "l7proto":
                rules["l7proto"] = self.one(["envoy.filters.network.testparser", "r2d2", ""])
            else:
                rules["l7"] = [self.one([{"action": "READ"}, {"": "x"}, {}, {"a": 1}, {"a": None}])
                               for _ in range(r.randint(0, 2))]
        return rules

    def tls(self):
        return self.one([{"secret": {"name": "s"}}, {"secret": {"name": ""}}, {"secret": None}, {},
                         {"secret": {"name": "s", "namespace": "ns"}, "trustedCA": "ca.crt"}])

    def port_rule(self, deny: bool = False):
        r = self.rng
        pr: dict = {}
        if r.random() < 0.9:
            pr["ports"] = [self.port_protocol() for _ in range(self.one([0, 1, 1, 1, 2, 3, 40, 41]))]
        if not deny or r.random() < 0.1:
            if r.random() < 0.4:
                pr["rules"] = self.l7_rules()
            if r.random() < 0.15:
                pr["serverNames"] = self.some(FQDNS, 0, 2)
            if r.random() < 0.1:
                pr["terminatingTLS"] = self.tls()
            if r.random() < 0.05:
                pr["originatingTLS"] = self.tls()
            if r.random() < 0.08:
                pr["listener"] = self.listener()
        return pr

    def listener(self):
        r = self.rng
        lst: dict = {}
        if r.random() < 0.9:
            lst["envoyConfig"] = self.one([{"kind": "CiliumEnvoyConfig", "name": "e"}, {"name": "e"}, {"name": ""},
                                           {"kind": "Other", "name": "e"}, {}, None])
        if r.random() < 0.9:
            lst["name"] = self.one(["l", "", "my-listener"])
        if r.random() < 0.4:
            lst["priority"] = self.one([0, 1, 100, 101, 255, 256, -1, "1", 1.5])
        return lst

    def cidr_rule(self):
        r = self.rng
        c: dict = {}
        x = r.random()
        if x < 0.7:
            c["cidr"] = self.one(CIDRS)
        elif x < 0.85:
            c["cidrGroupRef"] = self.one(["office", "Office", "", "a.b", "a_b"])
        else:
            c["cidrGroupSelector"] = self.selector()
        if r.random() < 0.15:
            c[r.choice(["cidr", "cidrGroupRef", "cidrGroupSelector"])] = self.one(
                [self.one(CIDRS), "grp", self.selector(), None])
        if r.random() < 0.4:
            c["except"] = self.some(CIDRS, 0, 2)
        return c

    def service(self):
        return self.one([{"k8sService": {"serviceName": "svc", "namespace": "default"}},
                         {"k8sServiceSelector": {"selector": {"matchLabels": {"app": "x"}}}},
                         {"k8sServiceSelector": {"namespace": "x"}}, {}, {"k8sService": None},
                         {"k8sServiceSelector": {"selector": {"matchLabels": {"app": 5}}}},
                         {"k8sServiceSelector": {"selector": None}}])

    def peers(self, side: str, deny: bool) -> dict:
        """One or two L3 members of an ingress (side "from") or egress ("to") rule."""
        r = self.rng
        names = [f"{side}Endpoints", f"{side}CIDR", f"{side}CIDRSet", f"{side}Entities", f"{side}Nodes",
                 f"{side}Groups", f"{side}Requires"]
        if side == "to":
            names += ["toServices"] + ([] if deny else ["toFQDNs", "toFQDNs"])
        out: dict = {}
        for name in r.sample(names, self.one([0, 1, 1, 1, 2])):
            out[name] = self.peer_value(name)
        return out

    def peer_value(self, name: str):
        r = self.rng
        n = self.one([0, 1, 1, 2])
        if name.endswith("Endpoints") or name.endswith("Nodes"):
            return [self.selector() if r.random() < 0.9 else self.one([None, {}, "x"]) for _ in range(n)]
        if name.endswith("CIDRSet"):
            return [self.cidr_rule() for _ in range(n)]
        if name.endswith("CIDR"):
            return [self.one(CIDRS) for _ in range(n)]
        if name.endswith("Entities"):
            return [self.one(ENTITIES if r.random() < 0.8 else ENTITY_ODD) for _ in range(n)]
        if name.endswith("Groups"):
            return [self.one([{"aws": {"labels": {"a": "b"}}}, {"aws": {"region": "eu", "securityGroupsIds": ["sg"]}},
                              {}, {"aws": None}]) for _ in range(n)]
        if name.endswith("Requires"):
            return [self.selector() for _ in range(n)]
        if name == "toServices":
            return [self.service() for _ in range(n)]
        if name == "toFQDNs":
            return [self.dns() for _ in range(n)]
        raise KeyError(name)

    def section_item(self, direction: str):
        r = self.rng
        deny = direction.endswith("Deny")
        item = self.peers("from" if direction.startswith("ingress") else "to", deny)
        x = r.random()
        if x < 0.55:
            item["toPorts"] = [self.port_rule(deny) for _ in range(self.one([0, 1, 1, 2]))]
        elif x < 0.75:
            item["icmps"] = self.icmps()
        elif x < 0.8:
            item["toPorts"] = [self.port_rule(deny)]
            item["icmps"] = self.icmps()
        if not deny and r.random() < 0.08:
            item["authentication"] = self.one([{"mode": "required"}, {"mode": "disabled"}, {"mode": "nope"}, {},
                                               {"mode": None}])
        return item

    def rule(self, host: bool = False):
        r = self.rng
        rule: dict = {}
        if host or r.random() < 0.1:
            rule["nodeSelector"] = self.selector()
        if not host or r.random() < 0.1:
            rule["endpointSelector"] = self.selector()
        for direction in r.sample(["ingress", "ingressDeny", "egress", "egressDeny"], self.one([0, 1, 1, 1, 2])):
            rule[direction] = [self.section_item(direction) for _ in range(self.one([0, 1, 1, 2]))]
        if r.random() < 0.1:
            rule["enableDefaultDeny"] = self.one([{"ingress": False}, {"egress": True}, {"ingress": "false"}, {},
                                                  {"egress": None}, {"ingress": 0}])
        if r.random() < 0.05:
            rule["labels"] = self.labels()
        if r.random() < 0.05:
            rule["description"] = self.one(["d", "", 5])
        if r.random() < 0.05:
            rule["log"] = self.one([{"value": "v"}, {"value": "x" * 33}, {"value": 5}, {}])
        return rule

    def labels(self):
        return [self.one([{"key": "a", "value": "b", "source": "k8s"}, {"key": "a"}, {"key": ""}, {"value": "b"},
                          "k8s:a=b", "a", "", None, 5, {"key": 5}, {"KEY": "a"}, {"key": "a", "extra": 1}, [],
                          "cidr:10.0.0.0/8"])
                for _ in range(self.rng.randint(0, 2))]

    # -- by field name
    def for_field(self, key, path: tuple):
        """A value worth trying for a field called `key` at `path`; None when there is nothing specific."""
        r = self.rng
        parent = next((p for p in reversed(path[:-1]) if isinstance(p, str)), "")
        deny = "Deny" in "".join(p for p in path if isinstance(p, str))
        table = {
            "port": lambda: self.one(PORTS) if r.random() < 0.7 else self.one(PORT_VALUES),
            "endPort": lambda: self.one(END_PORTS),
            "protocol": lambda: self.one(PROTOCOLS),
            "family": lambda: self.one(FAMILIES),
            "type": lambda: self.icmp_type() if r.random() < 0.9 else self.one(GENERIC),
            "fields": lambda: [self.icmp_field() for _ in range(self.one([0, 1, 2, 40, 41]))],
            "icmps": self.icmps,
            "cidr": lambda: self.one(CIDRS),
            "except": lambda: self.some(CIDRS, 0, 3),
            "cidrGroupRef": lambda: self.one(["office", "", "Bad_Ref", "a" * 254]),
            "cidrGroupSelector": self.selector,
            "matchLabels": lambda: self.selector().get("matchLabels", {}),
            "matchExpressions": lambda: [self.requirement() for _ in range(r.randint(0, 2))],
            "operator": lambda: self.one(OPERATORS),
            "values": lambda: self.some(LABEL_VALUES, 0, 3),
            "endpointSelector": lambda: self.selector() if r.random() < 0.8 else self.one([None, {}, Raw("~")]),
            "nodeSelector": lambda: self.selector() if r.random() < 0.8 else self.one([None, {}, Raw("~")]),
            "selector": self.selector,
            "toPorts": lambda: [self.port_rule(deny) for _ in range(r.randint(0, 2))],
            "ports": lambda: [self.port_protocol() for _ in range(self.one([0, 1, 2, 40, 41]))],
            "rules": self.l7_rules,
            "http": lambda: [self.http() for _ in range(r.randint(0, 2))],
            "dns": lambda: [self.dns() for _ in range(r.randint(0, 2))],
            "kafka": lambda: [self.kafka() for _ in range(r.randint(0, 2))],
            "path": lambda: self.one(REGEXES),
            "method": lambda: self.one(REGEXES),
            "host": lambda: self.one(FQDNS),
            "headerMatches": lambda: [self.header_match() for _ in range(r.randint(0, 2))],
            "matchName": lambda: self.one(FQDNS),
            "matchPattern": lambda: self.one(FQDNS),
            "serverNames": lambda: self.some(FQDNS, 0, 2),
            "listener": self.listener,
            "terminatingTLS": self.tls,
            "originatingTLS": self.tls,
            "l7proto": lambda: self.one(["r2d2", "", 5]),
            "name": (lambda: self.one(NAMES)) if parent == "metadata" else (lambda: self.one(["x", "", None, 5])),
            "namespace": lambda: self.one(NAMESPACES),
            "apiVersion": lambda: self.one(["cilium.io/v2", "cilium.io/v2alpha1", "cilium.io/v1", "v1", "",
                                            "cilium.io/V2"]) if not parent else self.one(["0", "1", "32768", "x"]),
            "kind": lambda: self.one(list(POLICY_KINDS) * 3 + ["ciliumnetworkpolicy", "NetworkPolicy", "",
                                                                "CiliumEnvoyConfig"])
            if not parent else self.one(["CiliumEnvoyConfig", "x", ""]),
            "enableDefaultDeny": lambda: self.one([{"ingress": False}, {"egress": "no"}, {}, None, True]),
            "labels": self.labels,
            "authentication": lambda: self.one([{"mode": "required"}, {"mode": "x"}, {}, None]),
            "mode": lambda: self.one(["required", "disabled", "test-always-fail", "Required", "", 1]),
            "priority": lambda: self.one([0, 1, 100, 101, 255, 256, -1, "1"]),
            "role": lambda: self.one(["produce", "consume", "x", ""]),
            "apiKey": lambda: self.one(KAFKA_KEYS),
            "topic": lambda: self.one(["t", "bad topic", "a" * 256]),
            "spec": lambda: self.rule(),
            "specs": lambda: [self.rule(host=r.random() < 0.2) for _ in range(self.one([0, 1, 2]))],
            "mismatch": lambda: self.one(["LOG", "ADD", "DELETE", "REPLACE", "drop", ""]),
            "secret": lambda: self.one([{"name": "s"}, {"name": ""}, {}, None]),
        }
        if isinstance(key, str) and key.endswith(("Endpoints", "Nodes", "CIDR", "CIDRSet", "Entities", "Groups",
                                                  "Requires", "Services", "FQDNs")) and key[:2] in ("fr", "to"):
            return self.peer_value(key)
        if key in ("ingress", "ingressDeny", "egress", "egressDeny"):
            return [self.section_item(key) for _ in range(self.one([0, 1, 1, 2]))]
        if isinstance(key, int):  # a list item: what its list holds
            holder = parent
            if holder.endswith("Entities"):
                return self.one(ENTITIES + ENTITY_ODD)
            if holder.endswith("CIDR") or holder == "except":
                return self.one(CIDRS)
            if holder in ("ingress", "ingressDeny", "egress", "egressDeny"):
                return self.section_item(holder)
            return None
        fn = table.get(key)
        return fn() if fn else None


# ------------------------------------------------------------------------------------------- tree editing

KNOWN_FIELDS = ["endpointSelector", "nodeSelector", "ingress", "ingressDeny", "egress", "egressDeny", "toPorts",
                "icmps", "ports", "port", "protocol", "endPort", "rules", "http", "dns", "fromEndpoints",
                "toEndpoints", "fromEntities", "toEntities", "fromCIDR", "toCIDR", "toCIDRSet", "toFQDNs",
                "matchLabels", "matchExpressions", "fields", "type", "family", "description", "spec", "specs",
                "labels", "listener", "serverNames", "authentication", "fromNodes", "toNodes", "except", "cidr"]


def _nodes(tree, path=()):
    """(path, value) of every node under the tree (the root too)."""
    yield path, tree
    if isinstance(tree, Pairs):
        return
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _nodes(value, path + (key,))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from _nodes(value, path + (i,))


def _get(tree, path):
    for part in path:
        tree = tree[part]
    return tree


def _set(tree, path, value):
    _get(tree, path[:-1])[path[-1]] = value


def _case_variants(key: str, path: tuple = ()) -> list[str]:
    variants = [key[:1].upper() + key[1:], key.lower(), key.upper(), key + "s", key[:-1], key.replace("I", "i")]
    if path in ((), ("metadata",)):
        # cnp-oracle reads an object's head (kind, apiVersion, metadata.name, items) case-insensitively to pick
        # what to check, a shortcut of its own, not Cilium's: variants of those keys would test the oracle
        variants = [v for v in variants if v.lower() not in ("kind", "apiversion", "metadata", "items", "name")]
    return variants or [key + "x"]


def _extended_key(key: str) -> str:
    """labels.GetExtendedKeyFrom: the source-qualified key Cilium validates and matches a selector key as."""
    src, sep, rest = key.partition(":")
    if key.startswith("$"):
        src, rest = "reserved", key[1:]
    elif not sep:
        src, rest = "", key
    return (src or "any") + "." + rest.partition("=")[0]


def drop_colliding_label_keys(tree) -> None:
    """Two matchLabels keys naming one label (`app` and `any:app`, `$host` and `reserved:host`) make Cilium's
    verdict random: it keeps one of them in Go's map order. Keep the first key of each such pair (looking into
    mappings written with duplicate keys too)."""
    if isinstance(tree, (dict, Pairs)):
        items = list(tree.items()) if isinstance(tree, dict) else list(tree)
        seen: set = set()
        for name, labels in items:
            if isinstance(name, str) and name.lower() == "matchlabels" and isinstance(labels, dict):
                for key in list(labels):
                    ext = _extended_key(str(key))
                    if ext in seen:
                        del labels[key]
                    seen.add(ext)
        for _, value in items:
            drop_colliding_label_keys(value)
    elif isinstance(tree, list):
        for value in tree:
            drop_colliding_label_keys(value)


class Generator:
    def __init__(self, seeds: list[dict], seed: int = 0):
        if not seeds:
            raise ValueError("no seed policies")
        self.seeds = seeds
        self.rng = random.Random(seed)
        self.values = Values(self.rng)
        self._shapes = self._index_subtrees(seeds)

    @staticmethod
    def _index_subtrees(seeds) -> dict:
        """Subtrees of the seeds by the key that names them, for crossing parts between policies."""
        out: dict = {}
        for doc in seeds:
            for path, value in _nodes(doc):
                if path and isinstance(path[-1], str):
                    out.setdefault(path[-1], []).append(value)
        return out

    # -- one document
    def document(self) -> dict:
        r = self.rng
        if r.random() < 0.12:
            doc = self._fresh()
        else:
            doc = copy.deepcopy(r.choice(self.seeds))
        for _ in range(r.choice([1, 1, 1, 2, 2, 3, 4])):
            doc = self.mutate(doc)
        drop_colliding_label_keys(doc)
        return doc

    def _fresh(self) -> dict:
        r = self.rng
        kind = r.choice(POLICY_KINDS)
        meta = {"name": f"gen-{r.randint(0, 999)}"}
        if kind == "CiliumNetworkPolicy" and r.random() < 0.7:
            meta["namespace"] = "default"
        doc = {"apiVersion": "cilium.io/v2", "kind": kind, "metadata": meta}
        host = kind != "CiliumNetworkPolicy" and r.random() < 0.3
        if r.random() < 0.8:
            doc["spec"] = self.values.rule(host)
        if r.random() < 0.3:
            doc["specs"] = [self.values.rule(host=r.random() < 0.3) for _ in range(r.randint(0, 2))]
        return doc

    def mutate(self, doc):
        r = self.rng
        nodes = [(p, v) for p, v in _nodes(doc) if not isinstance(v, Pairs)]
        path, value = r.choice(nodes)
        op = r.random()
        if not path:
            return self._mutate_root(doc)
        key = path[-1]
        if op < 0.40:
            new = self.values.for_field(key, path)
            if new is None:
                new = self._generic()
            _set(doc, path, new)
        elif op < 0.50:
            _set(doc, path, self._generic())
        elif op < 0.58:
            parent = _get(doc, path[:-1])
            if isinstance(parent, dict):
                del parent[key]
            elif isinstance(parent, list):
                del parent[key]
        elif op < 0.68 and isinstance(value, dict):
            self._add_field(value, path)
        elif op < 0.74 and isinstance(value, dict) and value:
            _set(doc, path, self._duplicate_key(value, path))
        elif op < 0.80 and isinstance(value, dict) and value:
            old = r.choice(list(value))
            if isinstance(old, str):
                value[r.choice(_case_variants(old, path))] = value.pop(old)
        elif op < 0.88 and isinstance(key, str) and self._shapes.get(key):
            _set(doc, path, copy.deepcopy(r.choice(self._shapes[key])))
        elif op < 0.94 and isinstance(value, list):
            if value and r.random() < 0.5:
                value.append(copy.deepcopy(r.choice(value)))
            else:
                value.append(self._generic() if r.random() < 0.3 else None)
        else:
            new = self.values.for_field(key, path)
            _set(doc, path, new if new is not None else self._generic())
        return doc

    def _mutate_root(self, doc):
        r = self.rng
        if not isinstance(doc, dict):
            return doc
        x = r.random()
        if x < 0.2 and isinstance(doc.get("spec"), dict):
            doc["specs"] = [doc.pop("spec")] + ([self.values.rule()] if r.random() < 0.5 else [])
        elif x < 0.35:
            doc["kind"] = r.choice(POLICY_KINDS)
        elif x < 0.5:
            meta = doc.get("metadata")
            if isinstance(meta, dict):
                meta.pop("namespace", None) if r.random() < 0.5 else meta.update(namespace=self.values.one(NAMESPACES))
        elif x < 0.65:
            doc["spec" if r.random() < 0.6 else "specs"] = self.values.for_field(
                "spec" if r.random() < 0.6 else "specs", ("spec",))
        elif x < 0.75:
            doc[r.choice(["status", "description", "Spec", "specs ", "extra"])] = self.values.one(GENERIC)
        elif x < 0.85:
            doc.pop(r.choice(["spec", "specs", "metadata", "apiVersion"]), None)
        else:
            self._add_field(doc, ())
        return doc

    def _generic(self):
        return self.values.one(GENERIC)

    def _add_field(self, mapping: dict, path: tuple) -> None:
        r = self.rng
        x = r.random()
        if x < 0.5:
            key = r.choice(KNOWN_FIELDS)
            value = self.values.for_field(key, path + (key,))
            mapping[key] = value if value is not None else self._generic()
        elif x < 0.8 and mapping:
            old = r.choice(list(mapping))
            if isinstance(old, str):
                mapping[r.choice(_case_variants(old, path))] = copy.deepcopy(mapping[old])
        else:
            mapping[r.choice(["foo", "x-extra", "Type", "ports ", "", "nodeselector", "toFQDN"])] = self._generic()

    def _duplicate_key(self, mapping: dict, path: tuple) -> Pairs:
        r = self.rng
        key = r.choice(list(mapping))
        other = self.values.for_field(key, path + (key,))
        pairs = Pairs(mapping.items())
        at = r.randint(0, len(pairs))
        pairs.insert(at, (key, other if other is not None else copy.deepcopy(mapping[key])))
        return pairs

    # -- files
    def file_text(self, docs_per_file: int) -> tuple[str, int]:
        """One YAML stream of about `docs_per_file` cases (empty documents, comments and Lists mixed in);
        returns the text and the number of policy documents written."""
        r = self.rng
        parts = []
        written = 0
        if r.random() < 0.3:
            parts.append("# generated\n")
        while written < docs_per_file:
            x = r.random()
            if x < 0.04:
                parts.append("")                       # an empty document: `---` right after `---`
                continue
            if x < 0.06:
                parts.append("# only a comment\n")
                continue
            if x < 0.09:
                items = [self.document() for _ in range(r.randint(1, 3))]
                written += len(items)
                parts.append(to_yaml({"apiVersion": "v1", "kind": "List", "items": items}))
                continue
            doc = self.document()
            written += 1
            parts.append(to_yaml(doc, flow=r.random() < 0.08))
        sep = "---\n" if r.random() < 0.9 else "--- # next\n"
        text = sep.join(parts)
        if parts and parts[0].startswith("# generated") and r.random() < 0.5:
            text = text.replace("# generated\n", "# generated\n---\n", 1) if len(parts) == 1 else text
        return text, written

    def files(self, cases: int, docs_per_file: int = 25) -> list[tuple[str, str]]:
        out = []
        made = 0
        while made < cases:
            text, n = self.file_text(min(docs_per_file, cases - made))
            out.append((f"case-{len(out):05d}.yaml", text))
            made += n
        return out
