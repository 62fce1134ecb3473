"""--strict (what kubectl apply refuses) and the warnings for policies Cilium accepts but that are likely wrong."""

from tests.unit.validate_helpers import check, check_text, errors, warnings

SEL = "endpointSelector:\n  matchLabels:\n    app: web\n"


def test_field_dropped_because_of_case_is_a_warning_and_strict_error():
    spec = SEL + "ingress:\n- toPorts:\n  - ports:\n    - {port: '80', protocol: TCP}\n    rules:\n      HTTP:\n" \
                 "      - method: GET\n"
    report = check(spec)
    assert report.valid
    [w] = [w for w in warnings(report) if "HTTP" in w]
    assert w.startswith("spec.ingress[0].toPorts[0].rules.HTTP:") and "did you mean 'http'" in w
    strict = check(spec, strict=True)
    assert not strict.valid and any("case-sensitive" in e for e in errors(strict))


def test_unknown_field_with_typo_suggestion():
    report = check(SEL + "ingres:\n- {}\negress:\n- {}\n")
    assert any("'ingres'" in w and "did you mean 'ingress'" in w for w in warnings(report))


def test_field_position_points_at_the_key():
    report = check(SEL + "egress:\n- {}\nfoo: bar\n")
    [f] = [f for f in report.findings if "foo" in f.message]
    assert (f.line, f.column) == (12, 3)


def test_deny_rules_with_l7_rules_or_fqdns_warn_that_they_are_ignored():
    report = check(SEL + "egressDeny:\n- toEntities: [world]\n  toPorts:\n  - ports:\n    - {port: '80'}\n"
                         "    rules:\n      http:\n      - method: GET\n- toFQDNs:\n  - matchName: a.com\n")
    assert report.valid
    ws = warnings(report)
    assert any(w.startswith("spec.egressDeny[0].toPorts[0].rules:") and "denies the whole port" in w for w in ws)
    assert any(w.startswith("spec.egressDeny[1].toFQDNs:") and "NOT denied" in w for w in ws)


def test_top_level_description_warns_and_is_refused_by_strict():
    [report] = check_text("""\
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        description: meant for spec
        metadata: {name: a}
        spec: {endpointSelector: {}, ingress: [{}]}
    """)
    assert report.valid and any(w.startswith("description:") and "spec.description" in w
                                for w in warnings(report))
    [strict] = check_text("""\
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        description: meant for spec
        metadata: {name: a}
        spec: {endpointSelector: {}, ingress: [{}]}
    """, strict=True)
    assert not strict.valid


def test_empty_selectors_warn_that_they_select_everything():
    report = check("endpointSelector: {}\ningress:\n- {}\n")
    assert any("every endpoint in the namespace" in w for w in warnings(report))
    report = check("nodeSelector:\n  matchLabels: {}\ningress:\n- {}\n", kind="CiliumClusterwideNetworkPolicy")
    assert any("every node" in w for w in warnings(report))


def test_duplicate_keys_warn_and_strict_refuses():
    text = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a}\n" \
           "spec:\n  endpointSelector: {}\n  ingress: [{}]\n  ingress: [{fromEntities: [world]}]\n"
    [report] = check_text(text)
    assert report.valid
    [f] = [f for f in report.findings if "duplicate" in f.message]
    assert (f.severity, f.path, f.line, f.column) == ("warning", "spec.ingress", 7, 3)
    [strict] = check_text(text, strict=True)
    assert not strict.valid


def test_names_the_api_server_refuses_only_fail_strict():
    text = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: My_Policy\n" \
           "  namespace: Team.A\nspec: {endpointSelector: {}, ingress: [{}]}\n"
    [report] = check_text(text)
    assert report.valid and len([w for w in warnings(report) if "refused by the API server" in w]) == 2
    [strict] = check_text(text, strict=True)
    assert [f.path for f in strict.errors] == ["metadata.name", "metadata.namespace"]


def test_schema_checks_are_warnings_by_default_and_errors_with_strict():
    spec = SEL + "ingress:\n- toPorts:\n  - ports:\n    - {port: '53', protocol: udp}\n"
    report = check(spec)
    assert report.valid and any("CRD schema" in w and "'udp'" in w for w in warnings(report))
    assert not check(spec, strict=True).valid
    assert check(spec, strict=True, schema=False).valid
    assert not check(spec, schema=True).valid


def test_schema_oneof_any_of_and_max_items():
    report = check(SEL + "egress:\n- toFQDNs:\n  - {}\n", strict=True)
    assert any("exactly one of 'matchName' or 'matchPattern'" in e for e in errors(report))
    report = check(SEL + "ingress:\n- fromRequires: [a]\n", strict=True)
    assert any("at most 0 items" in e for e in errors(report))
    assert check(SEL + "ingress:\n- fromRequires: [a]\n").valid  # the agent ignores the deprecated field


def test_schema_warning_is_not_repeated_where_the_agent_already_errs():
    report = check(SEL + "ingress:\n- fromEntities: [World]\n")
    assert [f.severity for f in report.findings if f.path == "spec.ingress[0].fromEntities[0]"] == ["error"]


def test_clusterwide_policy_namespace_is_ignored_with_a_warning():
    [report] = check_text("apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\n"
                          "metadata: {name: a, namespace: x}\nspec: {endpointSelector: {}, ingress: [{}]}\n")
    assert report.valid and any("cluster-scoped" in w for w in warnings(report))


def test_metadata_label_values_must_be_strings():
    [report] = check_text("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n"
                          "metadata: {name: a, labels: {enabled: on}}\nspec: {endpointSelector: {}, ingress: [{}]}\n")
    assert not report.valid and report.errors[0].path == "metadata.labels.enabled"


def test_rule_labels_accept_objects_and_strings_but_need_a_key():
    assert check(SEL + "ingress: [{}]\nlabels:\n- {key: a, value: b}\n- k8s:x=y\n").valid
    assert not check(SEL + "ingress: [{}]\nlabels:\n- {value: b}\n").valid


def test_list_items_are_validated_with_item_paths_and_positions():
    reports = check_text("""\
        apiVersion: v1
        kind: List
        items:
        - apiVersion: cilium.io/v2
          kind: CiliumNetworkPolicy
          metadata: {name: a}
          spec: {endpointSelector: {}, ingress: [{}]}
        - apiVersion: cilium.io/v2
          kind: CiliumNetworkPolicy
          metadata: {name: b}
          spec:
            endpointSelector: {}
            egress:
            - toEntities: [wrold]
    """)
    # items share the List's document index; items[i] tells them apart
    assert [(r.document.index, r.document.path_prefix, r.valid) for r in reports] == [
        (0, "items[0]", True), (0, "items[1]", False)]
    [err] = reports[1].errors
    assert (err.path, err.line, err.column) == ("items[1].spec.egress[0].toEntities[0]", 14, 20)


def test_strict_reports_a_dropped_deny_field_once_as_an_error_with_the_reason():
    report = check(SEL + "egressDeny:\n- toFQDNs:\n  - matchName: a.com\n", strict=True)
    found = [f for f in report.findings if f.path == "spec.egressDeny[0].toFQDNs"]
    assert [f.severity for f in found] == ["error"] and "NOT denied" in found[0].message


def test_report_carries_the_object_as_the_api_server_would_store_it():
    report = check(SEL + "ingress:\n- fromEndpoints: [{matchLabels: {a: b}}]\n  HTTP: x\negress: null\n")
    assert report.object["spec"] == {"endpointSelector": {"matchLabels": {"app": "web"}},
                                     "ingress": [{"fromEndpoints": [{"matchLabels": {"a": "b"}}]}]}
    assert report.object["metadata"] == {"name": "t", "namespace": "default"}
