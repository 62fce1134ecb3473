"""Cilium 1.19 import checks, one behaviour per case: verdict, the error's field path and wording."""

import pytest

from tests.unit.validate_helpers import check, errors, warnings

SEL = "endpointSelector:\n  matchLabels:\n    app: web\n"


def ports(*entries: str, direction: str = "ingress", rules: str = "") -> str:
    lines = [SEL + f"{direction}:", "- toPorts:", "  - ports:"]
    for e in entries:
        lines.append(f"    - {e}")
    if rules:
        lines.append("    rules:")
        lines.extend("      " + line for line in rules.strip("\n").splitlines())
    return "\n".join(lines) + "\n"


CASES = [
    # name, spec, options, want_valid, path fragment, message fragment
    ("minimal ingress", SEL + "ingress:\n- {}\n", {}, True, None, None),
    ("no direction", SEL, {}, False, "spec", "at least one of ingress"),
    ("empty lists are no direction", SEL + "ingress: []\negress: []\n", {}, False, "spec", "at least one of"),
    ("no selector", "ingress:\n- {}\n", {}, False, "spec", "one of endpointSelector or nodeSelector"),
    ("both selectors", SEL + "nodeSelector: {}\ningress:\n- {}\n", {}, False, "spec.nodeSelector",
     "cannot have both"),
    ("port string", ports('port: "80"\n      protocol: TCP'), {}, True, None, None),
    ("port number unquoted", ports("port: 80"), {}, False, "ports[0].port", 'quote it: "80"'),
    ("port named", ports("port: http-alt"), {}, True, None, None),
    ("port hex is a name", ports('port: "0x10"'), {}, True, None, None),
    ("port too big", ports('port: "65536"'), {}, False, "ports[0].port", "value out of range"),
    ("port 65535", ports('port: "65535"'), {}, True, None, None),
    ("port negative", ports('port: "-1"'), {}, False, "ports[0].port", "invalid syntax"),
    ("port octal 8 digit", ports('port: "0080"'), {}, False, "ports[0].port", "octal"),
    ("port leading space", ports('port: " 80"'), {}, False, "ports[0].port", "remove the spaces"),
    ("port bad underscore", ports('port: "1__0"'), {}, False, "ports[0].port", "invalid syntax"),
    ("port name too long", ports('port: "abcdefghijklmnop"'), {}, False, "ports[0].port", "unable to parse"),
    ("port missing", ports("protocol: TCP"), {}, False, "ports[0]", "port must be specified"),
    ("port missing, extended", ports("protocol: TCP"), {"enable_extended_ip_protocols": True}, True, None, None),
    ("endPort string", ports('port: "80"\n      endPort: "90"'), {}, False, "ports[0].endPort",
     "remove the quotes"),
    ("endPort number", ports('port: "80"\n      endPort: 90'), {}, True, None, None),
    ("endPort float integral", ports('port: "80"\n      endPort: 90.0'), {}, True, None, None),
    ("endPort fractional", ports('port: "80"\n      endPort: 90.5'), {}, False, "endPort", "integer"),
    ("protocol lowercase", ports('port: "53"\n      protocol: udp'), {}, True, None, None),
    ("protocol ICMP", ports('port: "0"\n      protocol: ICMP'), {}, False, "protocol", "invalid protocol"),
    ("protocol VRRP without flag", ports('port: "0"\n      protocol: VRRP'), {}, True, None, None),
    ("protocol VRRP without port needs flag", ports("protocol: VRRP"), {}, False, "ports[0]",
     "port must be specified"),
    ("protocol VRRP with flag", ports('port: "0"\n      protocol: VRRP'), {"enable_extended_ip_protocols": True},
     True, None, None),
    ("IGMP with port", ports('port: "2"\n      protocol: IGMP'), {"enable_extended_ip_protocols": True}, False,
     "ports[0].port", "port must be empty or 0"),
    ("41 ports", ports(*[f'port: "{p}"' for p in range(1000, 1041)]), {}, False, "toPorts[0].ports",
     "too many ports"),
    ("40 ports", ports(*[f'port: "{p}"' for p in range(1000, 1040)]), {}, True, None, None),
    ("http rule", ports('port: "80"\n      protocol: TCP', rules="http:\n- method: GET\n  path: /v1/.*"), {},
     True, None, None),
    ("http bad regex", ports('port: "80"\n      protocol: TCP', rules="http:\n- path: '/a/(b'"), {}, False,
     "http[0].path", "missing closing )"),
    ("http lookahead is not RE2", ports('port: "80"\n      protocol: TCP', rules="http:\n- path: '/(?=a)'"), {},
     False, "http[0].path", "error parsing regexp"),
    ("http on UDP", ports('port: "80"\n      protocol: UDP', rules="http:\n- {}"), {}, False, "ports[0]",
     "only apply to TCP"),
    # the protocol is upper-cased (PortProtocol.sanitize) before PortRule.sanitize compares it with TCP
    ("http with lowercase tcp", ports('port: "80"\n      protocol: tcp', rules="http:\n- {}"), {}, True, "", ""),
    ("l7 list of a null item is an L7 rule", ports('port: "80"', rules="l7proto: r2d2\nl7:\n- null"), {}, False,
     "ports[0]", "only apply to TCP"),
    ("http on port 0", ports('port: "0"\n      protocol: TCP', rules="http:\n- {}"), {}, False, "rules",
     "port is 0"),
    ("empty http list is no L7 rule", ports('port: "80"\n      protocol: UDP', rules="http: []"), {}, True,
     None, None),
    ("http plus empty dns list is two L7 kinds", ports('port: "80"\n      protocol: TCP', direction="egress",
                                                      rules="http:\n- {}\ndns: []"), {}, False, "rules",
     "multiple L7"),
    ("L7 with proxy disabled", ports('port: "80"\n      protocol: TCP', rules="http:\n- {}"),
     {"enable_l7_proxy": False}, False, "toPorts", "L7 proxy is disabled"),
    ("header match no name", ports('port: "80"\n      protocol: TCP', rules="http:\n- headerMatches:\n  - value: x"),
     {}, False, "headerMatches[0]", "Header name missing"),
    ("header match bad action", ports('port: "80"\n      protocol: TCP',
                                      rules="http:\n- headerMatches:\n  - name: a\n    mismatch: DROP"),
     {}, False, "mismatch", "Invalid header action"),
    ("dns on ingress", ports('port: "53"\n      protocol: UDP', rules="dns:\n- matchName: a.com"), {}, False,
     "rules.dns", "not supported on ingress"),
    ("dns on egress", ports('port: "53"\n      protocol: ANY', direction="egress", rules="dns:\n- matchPattern: '*'"),
     {}, True, None, None),
    ("dns port range", ports('port: "53"\n      endPort: 60\n      protocol: UDP', direction="egress",
                             rules="dns:\n- matchName: a.com"), {}, False, "endPort", "port ranges"),
    ("dns matchName wildcard", ports('port: "53"', direction="egress", rules="dns:\n- matchName: '*.a.com'"), {},
     False, "matchName", "wildcards belong in matchPattern"),
    ("two L7 kinds", ports('port: "80"\n      protocol: TCP', direction="egress",
                           rules="http:\n- {}\ndns:\n- matchName: a.com"), {}, False, "rules", "multiple L7"),
    ("kafka ok", ports('port: "9092"\n      protocol: TCP', rules="kafka:\n- role: produce\n  topic: t1"), {}, True,
     None, None),
    ("kafka bad key", ports('port: "9092"\n      protocol: TCP', rules="kafka:\n- apiKey: nope"), {}, False,
     "apiKey", "invalid Kafka APIKey"),
    ("kafka version", ports('port: "9092"\n      protocol: TCP', rules="kafka:\n- apiVersion: '-1'"), {}, False,
     "apiVersion", "APIVersion"),
    ("l7 generic", ports('port: "4040"\n      protocol: TCP', rules="l7proto: r2d2\nl7:\n- cmd: READ"), {}, True,
     None, None),
    ("l7 without proto", ports('port: "4040"\n      protocol: TCP', rules="l7:\n- cmd: READ"), {}, False,
     "rules.l7", "l7proto"),
    ("server names empty", ports('port: "443"', direction="egress") + "    serverNames: ['']\n", {}, False,
     "serverNames[0]", "empty server name"),
    ("listener on ingress", ports('port: "80"') + "    listener:\n      envoyConfig: {name: c}\n      name: l\n",
     {}, False, "listener", "not allowed on ingress"),
    ("listener on egress", ports('port: "80"', direction="egress")
     + "    listener:\n      envoyConfig: {name: c}\n      name: l\n", {}, True, None, None),
    ("icmp", SEL + "egress:\n- icmps:\n  - fields:\n    - type: 8\n      family: IPv4\n", {}, True, None, None),
    ("icmp named type", SEL + "egress:\n- icmps:\n  - fields:\n    - type: EchoRequest\n", {}, True, None, None),
    ("icmp family", SEL + "egress:\n- icmps:\n  - fields:\n    - type: 8\n      family: ipv6\n", {}, False,
     "family", "wrong family"),
    ("icmp disabled", SEL + "egress:\n- icmps:\n  - fields:\n    - type: 8\n", {"enable_icmp_rules": False}, False,
     "icmps", "enable-icmp-rules"),
    ("icmp with ports", SEL + "ingress:\n- icmps:\n  - fields:\n    - type: 8\n  toPorts:\n  - ports:\n"
                              "    - port: '80'\n", {}, False, "icmps", "without ToPorts"),
    ("41 icmp fields", SEL + "egress:\n- icmps:\n  - fields:\n"
     + "".join(f"    - type: {i}\n" for i in range(41)), {}, False, "fields", "too many types"),
    ("cidr ok", SEL + "egress:\n- toCIDR: [10.0.0.0/8, 1.1.1.1, '2001:db8::/32']\n", {}, True, None, None),
    ("cidr bits too large", SEL + "egress:\n- toCIDR: [10.0.0.0/33]\n", {}, False, "toCIDR[0]",
     "unable to parse CIDR"),
    ("cidr leading zero", SEL + "egress:\n- toCIDR: [010.0.0.1]\n", {}, False, "toCIDR[0]", "unable to parse"),
    ("cidr bits leading zero", SEL + "egress:\n- toCIDR: [10.0.0.0/08]\n", {}, False, "toCIDR[0]",
     "unable to parse"),
    ("cidr empty", SEL + "egress:\n- toCIDR: ['']\n", {}, False, "toCIDR[0]", "IP must be specified"),
    ("cidrset bare ip", SEL + "egress:\n- toCIDRSet:\n  - cidr: 10.1.2.3\n", {}, False, "cidr", "/32"),
    ("cidrset except inside", SEL + "egress:\n- toCIDRSet:\n  - cidr: 10.0.0.0/8\n    except: [10.1.0.0/16]\n",
     {}, True, None, None),
    ("cidrset except outside", SEL + "egress:\n- toCIDRSet:\n  - cidr: 10.0.0.0/8\n    except: [11.0.0.0/16]\n",
     {}, False, "except[0]", "does not contain"),
    ("cidrset except other family", SEL + "egress:\n- toCIDRSet:\n  - cidr: 10.0.0.0/8\n    except: ['::/64']\n",
     {}, False, "except[0]", "does not contain"),
    ("cidrset except bare ip", SEL + "egress:\n- toCIDRSet:\n  - cidr: 10.0.0.0/8\n    except: [10.0.0.1]\n",
     {}, False, "except[0]", "no '/'"),
    ("cidrset group ref", SEL + "ingress:\n- fromCIDRSet:\n  - cidrGroupRef: office\n", {}, True, None, None),
    ("cidrset two of", SEL + "ingress:\n- fromCIDRSet:\n  - cidrGroupRef: office\n    cidr: 10.0.0.0/8\n", {},
     False, "fromCIDRSet[0]", "more than one"),
    ("cidrset none of", SEL + "ingress:\n- fromCIDRSet:\n  - except: [10.0.0.0/8]\n", {}, False,
     "fromCIDRSet[0]", "one of cidr"),
    ("combining cidr entities", SEL + "egress:\n- toCIDR: [10.0.0.0/8]\n  toEntities: [world]\n", {}, False,
     "egress[0]", "combining ToCIDR and ToEntities"),
    ("combining endpoints services", SEL + "egress:\n- toEndpoints: [{}]\n  toServices:\n"
                                           "  - k8sService: {serviceName: s, namespace: d}\n", {}, False,
     "egress[0]", "combining ToEndpoints and ToServices"),
    ("combining fqdn cidr", SEL + "egress:\n- toFQDNs: [{matchName: a.com}]\n  toCIDR: [1.1.1.1/32]\n", {}, False,
     "egress[0]", "combining ToCIDR and ToFQDNs"),
    ("services with ports", SEL + "egress:\n- toServices:\n  - k8sService: {serviceName: s, namespace: d}\n"
                                  "  toPorts:\n  - ports:\n    - port: '80'\n", {}, True, None, None),
    ("combining from", SEL + "ingress:\n- fromEndpoints: [{}]\n  fromEntities: [world]\n", {}, False,
     "ingress[0]", "combining FromEndpoints and FromEntities"),
    ("entity case", SEL + "ingress:\n- fromEntities: [World]\n", {}, False, "fromEntities[0]",
     "did you mean 'world'"),
    ("entity world-ipv6", SEL + "egress:\n- toEntities: [world-ipv6, kube-apiserver]\n", {}, True, None, None),
    ("from nodes needs flag", SEL + "ingress:\n- fromNodes: [{}]\n", {}, False, "fromNodes",
     "--enable-node-selector-labels"),
    ("from nodes with flag", SEL + "ingress:\n- fromNodes: [{}]\n", {"enable_node_selector_labels": True}, True,
     None, None),
    ("fqdn both", SEL + "egress:\n- toFQDNs:\n  - matchName: a.com\n    matchPattern: '*.a.com'\n", {}, False,
     "toFQDNs[0]", "only one of"),
    ("fqdn pattern regex", SEL + "egress:\n- toFQDNs:\n  - matchPattern: 'a.(com|org)'\n", {}, False,
     "matchPattern", "not a regular expression"),
    # FQDNSelector.sanitize checks matchName's characters only; its length is the CRD schema's (--strict)
    ("fqdn name too long", SEL + "egress:\n- toFQDNs:\n  - matchName: " + "a" * 256 + "\n", {}, True, "", ""),
    ("fqdn name too long, strict", SEL + "egress:\n- toFQDNs:\n  - matchName: " + "a" * 256 + "\n",
     {"strict": True}, False, "matchName", "255"),
    ("fqdn underscore trailing dot", SEL + "egress:\n- toFQDNs:\n  - matchName: _srv._tcp.a.com.\n", {}, True,
     None, None),
    ("selector k8s source prefix", "endpointSelector:\n  matchLabels:\n    k8s:io.kubernetes.pod.namespace: x\n"
                                   "ingress:\n- {}\n", {}, True, None, None),
    ("selector key with prefix", "endpointSelector:\n  matchLabels:\n    app.kubernetes.io/name: x\n"
                                 "ingress:\n- {}\n", {}, True, None, None),
    ("selector key 60 chars too long with any.", "endpointSelector:\n  matchLabels:\n    " + "k" * 60
     + ": x\ningress:\n- {}\n", {}, False, "matchLabels", "checked as 'any."),
    ("selector value bad", "endpointSelector:\n  matchLabels:\n    app: 'a b'\ningress:\n- {}\n", {}, False,
     "matchLabels.app", "valid label"),
    ("selector value yes", "endpointSelector:\n  matchLabels:\n    app: yes\ningress:\n- {}\n", {}, False,
     "matchLabels.app", "booleans"),
    ("selector value number", "endpointSelector:\n  matchLabels:\n    tier: 1\ningress:\n- {}\n", {}, False,
     "matchLabels.tier", "quote it"),
    ("selector operator", "endpointSelector:\n  matchExpressions:\n  - {key: a, operator: in, values: [b]}\n"
                          "ingress:\n- {}\n", {}, False, "operator", "not a valid selector operator"),
    ("selector exists with values", "endpointSelector:\n  matchExpressions:\n  - {key: a, operator: Exists, "
                                    "values: [b]}\ningress:\n- {}\n", {}, False, "values", "may not be specified"),
    ("selector notin without values", "endpointSelector:\n  matchExpressions:\n  - {key: a, operator: NotIn}\n"
                                      "ingress:\n- {}\n", {}, False, "matchExpressions[0]", "must be specified"),
    ("selector expression value bad", "endpointSelector:\n  matchExpressions:\n  - {key: a, operator: In, "
                                      "values: ['-x']}\ningress:\n- {}\n", {}, False, "values[0]", "valid label"),
    ("peer selector checked", SEL + "ingress:\n- fromEndpoints:\n  - matchLabels: {'a b': c}\n", {}, False,
     "fromEndpoints[0].matchLabels", "invalid key"),
    ("deny with ports", SEL + "egressDeny:\n- toEntities: [world]\n  toPorts:\n  - ports:\n    - port: '80'\n", {},
     True, None, None),
    ("deny port checked", SEL + "ingressDeny:\n- toPorts:\n  - ports:\n    - port: 'x y'\n", {}, False,
     "ingressDeny[0].toPorts[0].ports[0].port", "unable to parse port"),
    ("enableDefaultDeny string", SEL + "enableDefaultDeny:\n  ingress: 'false'\ningress:\n- {}\n", {}, False,
     "enableDefaultDeny.ingress", "boolean"),
    ("ingress not a list", SEL + "ingress:\n  fromEntities: [world]\n", {}, False, "spec.ingress", "a list"),
]


@pytest.mark.parametrize("name,spec,options,valid,path,message", CASES, ids=[c[0] for c in CASES])
def test_rule(name, spec, options, valid, path, message):
    report = check(spec, **options)
    assert report.valid is valid, errors(report)
    if not valid:
        hits = [e for e in errors(report) if path in e.split(": ", 1)[0] and message in e]
        assert hits, errors(report)


def test_cnp_spec_cannot_have_a_node_selector():
    report = check("nodeSelector: {}\ningress:\n- {}\n")
    assert not report.valid
    assert any("nodeSelector" in e and "Clusterwide" in e for e in errors(report))


def test_ccnp_host_policy_and_its_l7_limits():
    assert check("nodeSelector: {}\ningress:\n- fromEntities: [cluster]\n",
                 kind="CiliumClusterwideNetworkPolicy").valid
    report = check("nodeSelector: {}\ningress:\n- toPorts:\n  - ports:\n    - {port: '80', protocol: TCP}\n"
                   "    rules:\n      http:\n      - {}\n", kind="CiliumClusterwideNetworkPolicy")
    assert any("host ingress" in e for e in errors(report))
    report = check("nodeSelector: {}\negress:\n- toPorts:\n  - ports:\n    - {port: '80', protocol: TCP}\n"
                   "    rules:\n      http:\n      - {}\n", kind="CiliumClusterwideNetworkPolicy")
    assert any("HTTP is not supported on host egress" in e for e in errors(report))


def test_every_finding_of_a_document_is_reported_not_only_the_first():
    report = check(SEL + "ingress:\n- fromEntities: [bogus]\n  toPorts:\n  - ports:\n    - port: '99999'\n"
                         "egress:\n- toCIDR: [300.0.0.1]\n")
    paths = [f.path for f in report.errors]
    assert paths == ["spec.ingress[0].fromEntities[0]", "spec.ingress[0].toPorts[0].ports[0].port",
                     "spec.egress[0].toCIDR[0]"]


def test_errors_carry_the_line_and_column_of_the_offending_node():
    report = check(SEL + "egress:\n- toCIDR:\n  - 10.0.0.0/8\n  - 10.0.0.0/99\n")
    [err] = report.errors
    # header is 5 lines, "spec:" line 6, selector 3 lines, egress line 10, "- toCIDR:" 11, entries 12 and 13
    assert (err.line, err.column, err.path) == (13, 7, "spec.egress[0].toCIDR[1]")


def test_specs_are_each_checked_with_their_index():
    report = check(SEL + "ingress:\n- {}\n")  # sanity
    assert report.valid
    from tests.unit.validate_helpers import check_text
    [report] = check_text("""\
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: x}
        specs:
        - endpointSelector: {}
          ingress: [{}]
        - endpointSelector: {}
          egress:
          - toEntities: [internet]
    """)
    assert [f.path for f in report.errors] == ["specs[1].egress[0].toEntities[0]"]
    assert report.namespace == "default" and report.document.namespace is None


def test_empty_policy_and_missing_name():
    from tests.unit.validate_helpers import check_text
    [report] = check_text("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {}\n")
    msgs = errors(report)
    assert any("must have a name" in m for m in msgs) and any("empty policy" in m for m in msgs)
    [report] = check_text("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a}\nspecs: []\n")
    assert report.valid


def test_wrong_api_version_and_missing_kind():
    from tests.unit.validate_helpers import check_text
    [report] = check_text("apiVersion: cilium.io/v2alpha1\nkind: CiliumNetworkPolicy\nmetadata: {name: a}\n"
                          "spec: {endpointSelector: {}, ingress: [{}]}\n")
    assert any('no matches for kind "CiliumNetworkPolicy" in version "cilium.io/v2alpha1"' in e
               for e in errors(report))
    [report] = check_text("apiVersion: cilium.io/v2\nmetadata: {name: a}\n")
    assert any("kind is missing" in e for e in errors(report))
    [report] = check_text("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicys\nmetadata: {name: a}\n")
    assert any("did you mean 'CiliumNetworkPolicy'" in e for e in errors(report))


def test_other_kinds_are_skipped_not_judged():
    from tests.unit.validate_helpers import check_text
    [report] = check_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {x: y}\n")
    assert report.checked is False and report.valid and not report.findings


def test_warnings_do_not_make_a_policy_invalid():
    report = check("endpointSelector: {}\ningress:\n- toPorts:\n  - ports:\n    - port: '0053'\n")
    assert report.valid
    assert any("every endpoint" in w for w in warnings(report))
    assert any("octal" in w and "43" in w for w in warnings(report))


def test_extended_protocols_warn_that_the_datapath_needs_the_agent_option():
    report = check(ports('port: "0"\n      protocol: IGMP'))
    assert report.valid and any("--enable-extended-ip-protocols" in w for w in warnings(report))
    report = check(ports('port: "0"\n      protocol: IGMP'), enable_extended_ip_protocols=True)
    assert report.valid and not warnings(report)


def test_except_covering_the_whole_cidr_is_accepted_but_warned():
    report = check(SEL + "egress:\n- toCIDRSet:\n  - cidr: 10.0.0.0/16\n    except: [10.0.0.0/8]\n")
    assert report.valid and any("allows nothing" in w for w in warnings(report))


def test_dns_rule_match_name_length_is_left_to_the_schema():
    long_name = "a" * 250 + ".com.x"
    spec = ports('port: "53"', direction="egress", rules=f"dns:\n- matchName: {long_name}")
    assert check(spec).valid
    assert not check(spec, strict=True).valid


def test_a_badly_typed_field_is_one_error_not_also_reported_missing():
    report = check(ports("port: 8080"))
    assert errors(report) == [e for e in errors(report) if "quote it" in e] and len(errors(report)) == 1
    report = check(SEL + "ingress:\n  fromEntities: [world]\n")
    assert len(errors(report)) == 1 and "a list" in errors(report)[0]
    report = check("endpointSelector: [app]\ningress:\n- {}\n")
    assert len(errors(report)) == 1 and "an object" in errors(report)[0]
