"""Verdicts where Cilium 1.19's own decoding decides (found by differential runs against cnp-oracle): ICMP type
names per family, nodeSelector in a CNP's specs, null selectors, case-insensitive fields inside custom
decoders, typed status, List documents, document numbering, and the entities the CRD enum leaves out."""

from ciliumctl.policy import load
from tests.unit.validate_helpers import check, check_text, errors, warnings

SEL = "endpointSelector: {matchLabels: {app: web}}\n"


def icmp(fields: str, **options):
    return check(SEL + "egress:\n- icmps:\n  - fields:\n" + fields, **options)


# ---------------------------------------------------------------------------------------- ICMP type names

def test_icmp_names_are_looked_up_in_the_family_table():
    assert icmp("    - {type: EchoRequest}\n").valid                    # IPv4 is the default family
    assert icmp("    - {type: EchoRequest, family: IPv6}\n").valid
    assert icmp("    - {type: Echo, family: IPv4}\n").valid
    assert icmp("    - {type: RouterSolicitation, family: IPv6}\n").valid


def test_an_ipv6_name_under_ipv4_and_the_reverse_are_refused_with_the_right_family():
    report = icmp("    - {type: PacketTooBig, family: IPv4}\n")
    assert not report.valid
    assert "PacketTooBig not found in IPv4" in errors(report)[0] and "family: IPv6" in errors(report)[0]
    report = icmp("    - {type: Echo, family: IPv6}\n")
    assert "Echo not found in IPv6" in errors(report)[0] and "family: IPv4" in errors(report)[0]
    assert not icmp("    - {type: RedirectMessage}\n").valid             # IPv6-only name, default family IPv4
    assert not icmp("    - {type: Photuris, family: IPv6}\n").valid      # IPv4-only name


def test_unknown_and_miscased_icmp_names_are_refused():
    report = icmp("    - {type: echoRequest}\n")
    assert not report.valid and "did you mean 'EchoRequest'" in errors(report)[0]
    for name in ("Ping", "'ExtendedEcho Reply'", "'00'", "'0x8'", "' 8'", "'1e1'", "''"):
        assert not icmp(f"    - {{type: {name}}}\n").valid, name


def test_numeric_icmp_type_strings_follow_strconv_atoi():
    # IntOrString.IntValue(): a string that Atoi reads as non-zero is a number, not a name
    for value in ("'8'", "'08'", "'-1'", "'+8'", "'0'", "0", "255", "256"):
        assert icmp(f"    - {{type: {value}}}\n").valid, value


def test_an_icmp_field_without_a_type_or_a_null_field_is_refused():
    # ICMPField.UnmarshalJSON dereferences the missing type: Cilium's decoder crashes on it
    assert not icmp("    - {family: IPv4}\n").valid
    assert not icmp("    - {type: null}\n").valid
    assert not icmp("    - null\n").valid


def test_icmp_field_names_are_read_case_insensitively_like_encoding_json():
    # Cilium decodes an ICMPField with encoding/json: `Type` fills `type` (the API server would drop it)
    report = icmp("    - {Type: Nope}\n")
    assert not report.valid
    report = icmp("    - {Type: 8}\n")
    assert report.valid and any("Type" in w for w in warnings(report))
    assert not icmp("    - {Type: 8}\n", strict=True, schema=False).valid


# ------------------------------------------------------------------------------------- selectors, specs

def test_a_null_endpoint_selector_is_the_empty_selector():
    # EndpointSelector.UnmarshalJSON runs on null and leaves an empty (select-all) selector
    assert check("endpointSelector: null\ningress: [{}]\n").valid
    assert check("endpointSelector: ~\ningress: [{fromEndpoints: [null]}]\n").valid
    report = check(SEL + "nodeSelector: null\ningress: [{}]\n", kind="CiliumClusterwideNetworkPolicy")
    assert "rule cannot have both endpointSelector and nodeSelector" in " ".join(errors(report))


def test_a_null_cidr_group_selector_counts_as_set():
    report = check(SEL + "egress:\n- toCIDRSet:\n  - {cidr: 10.0.0.0/8, cidrGroupSelector: null}\n")
    assert "more than one of cidr" in " ".join(errors(report))


def test_node_selector_is_refused_in_every_rule_of_a_cnp():
    text = "specs:\n- " + SEL + "  ingress: [{}]\n- nodeSelector: {}\n  ingress: [{}]\n"
    report = check_text("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a}\n" + text)[0]
    assert ["specs[1].nodeSelector" in e for e in errors(report)] == [True]
    report = check_text("apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: a}\n"
                        + text)[0]
    assert report.valid


def test_selector_fields_are_read_case_insensitively_and_maps_merge():
    # encoding/json inside EndpointSelector.UnmarshalJSON: `MATCHLABELS` fills matchLabels
    assert not check("endpointSelector: {MATCHLABELS: {'bad key': web}}\ningress: [{}]\n").valid
    report = check("endpointSelector:\n  matchLabels: {'bad key': x}\n  matchlabels: {app: x}\ningress: [{}]\n")
    assert not report.valid  # both maps decode into the same one
    report = check("endpointSelector: {MatchLabels: {app: web}}\ningress: [{}]\n")
    assert report.valid and any("MatchLabels" in w for w in warnings(report))


def test_rule_labels_are_decoded_like_labels_label_unmarshal_json():
    assert check(SEL + "ingress: [{}]\nlabels: [{KEY: a}]\n").valid
    assert not check(SEL + "ingress: [{}]\nlabels: [null]\n").valid
    assert not check(SEL + "ingress: [{}]\nlabels: [{key: 5}]\n").valid
    assert not check(SEL + "ingress: [{}]\nlabels: [{value: b}]\n").valid


def test_status_is_typed():
    text = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a}\nspec: {endpointSelector: {}, " \
           "ingress: [{}]}\nstatus: "
    assert check_text(text + "{}\n")[0].valid
    assert check_text(text + "{conditions: [{type: Valid, status: 'True'}]}\n")[0].valid
    assert not check_text(text + "[]\n")[0].valid
    assert not check_text(text + "{conditions: [{lastTransitionTime: yesterday}]}\n")[0].valid
    assert not check_text(text + "{derivativePolicies: {x: {localPolicyRevision: -1}}}\n")[0].valid


def test_listener_priority_is_a_uint8():
    base = SEL + "egress:\n- toPorts:\n  - ports: [{port: '80', protocol: TCP}]\n    listener: {envoyConfig: " \
                 "{name: e}, name: l, priority: %s}\n"
    assert check(base % "100").valid
    assert not check(base % "256").valid


# ------------------------------------------------------------------------------------ entities, --strict

def test_world_ipv4_and_world_ipv6_pass_the_agent_but_not_the_1_19_crd_enum():
    for entity in ("world-ipv4", "world-ipv6"):
        spec = SEL + f"egress:\n- toEntities: [{entity}]\n"
        assert check(spec).valid
        assert check(spec, strict=True, schema=False).valid       # the oracle's valid_strict column
        report = check(spec, strict=True)                         # kubectl apply against the 1.19 CRD
        assert not report.valid and "CRD enum leaves it out" in errors(report)[0]


# ---------------------------------------------------------------------------------- documents and Lists

POLICY = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: %s}\n" \
         "spec: {endpointSelector: {}, ingress: [{}]}\n"


def test_empty_documents_are_counted():
    docs = load.load_text("---\n" + POLICY % "a" + "---\n---\n" + POLICY % "b", "f.yaml")
    assert [(d.index, d.name) for d in docs] == [(0, "a"), (2, "b")]


ITEM = "- {apiVersion: cilium.io/v2, kind: CiliumNetworkPolicy, metadata: {name: %s}, " \
       "spec: {endpointSelector: {}, ingress: [{}]}%s}\n"
LIST = "apiVersion: v1\nkind: List\nitems:\n"


def test_list_items_share_the_document_index():
    docs = load.load_text(POLICY % "a" + "---\n" + LIST + ITEM % ("b", "") + ITEM % ("c", "") + "---\n"
                          + POLICY % "d", "f.yaml")
    assert [(d.index, d.name) for d in docs] == [(0, "a"), (1, "b"), (1, "c"), (2, "d")]


def test_a_value_that_cannot_be_json_stops_every_item_of_its_list():
    reports = check_text(LIST + ITEM % ("a", "") + ITEM % ("b", ", x: .nan"))
    assert [r.valid for r in reports] == [False, False]


def test_a_duplicate_key_in_one_list_item_fails_strict_for_all():
    text = LIST + ITEM % ("a", "") + ITEM % ("b", ", spec: {}")
    assert [r.valid for r in check_text(text, strict=True, schema=False)] == [False, False]


def test_a_value_replaced_by_a_later_duplicate_key_no_longer_counts():
    text = LIST + ITEM % ("a", "") + "- {apiVersion: cilium.io/v2, kind: CiliumNetworkPolicy, metadata: {name: b, " \
                                     "namespace: .nan, namespace: x}, spec: {endpointSelector: {}, ingress: [{}]}}\n"
    assert [r.valid for r in check_text(text)] == [True, True]
    assert [r.valid for r in check_text(text, strict=True, schema=False)] == [False, False]


def test_the_model_reads_a_null_endpoint_selector_as_select_all():
    from ciliumctl.policy import model

    policy = model.parse_policy({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                                 "metadata": {"name": "a", "namespace": "d"},
                                 "spec": {"endpointSelector": None, "ingress": [{"fromEndpoints": [None]}]}})
    rule = policy.rules[0]
    assert rule.endpoint_selector == model.LabelSelector() and rule.node_selector is None
    assert rule.ingress[0].endpoints == (model.LabelSelector(),)


def test_two_selector_keys_naming_one_label_are_flagged():
    report = check("endpointSelector: {matchLabels: {app: a, 'any:app': b}}\ningress: [{}]\n")
    assert report.valid and any("both name the label any.app" in w for w in warnings(report))
    report = check("endpointSelector: {matchLabels: {'$host': '', 'reserved:host': ''}}\ningress: [{}]\n")
    assert any("reserved.host" in w for w in warnings(report))
