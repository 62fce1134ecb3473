"""The Go parsers behind verdicts: strconv.ParseUint base 0, net/netip, iana service names, RE2 syntax."""

import pytest

from ciliumctl.policy import goparse, re2


@pytest.mark.parametrize("text,value", [
    ("80", 80), ("0", 0), ("65535", 65535), ("0053", 43), ("0o17", 15), ("0x1f", 31), ("0b11", 3),
    ("1_000", 1000), ("0x_1f", 31), ("0_7", 7),
])
def test_parse_uint_accepts_go_literals(text, value):
    assert goparse.parse_uint(text, 16) == (value, "")


@pytest.mark.parametrize("text,why", [
    ("", "invalid syntax"), ("-1", "invalid syntax"), ("+1", "invalid syntax"), (" 80", "invalid syntax"),
    ("08", "invalid syntax"), ("1__0", "invalid syntax"), ("_1", "invalid syntax"), ("1_", "invalid syntax"),
    ("65536", "value out of range"), ("80x", "invalid syntax"),
])
def test_parse_uint_rejects_like_go(text, why):
    assert goparse.parse_uint(text, 16) == (None, why)


@pytest.mark.parametrize("text,ok", [
    ("10.0.0.0/8", True), ("10.1.2.3/8", True), ("0.0.0.0/0", True), ("::/0", True), ("2001:db8::/32", True),
    ("10.0.0.0/33", False), ("10.0.0.0/08", False), ("10.0.0.0/-1", False), ("10.0.0.0", False),
    ("010.0.0.0/8", False), ("fe80::1%eth0/64", False), ("1.2.3/24", False), ("::ffff:1.2.3.4/120", True),
])
def test_parse_prefix(text, ok):
    assert (goparse.parse_prefix(text)[0] is not None) is ok


def test_parse_addr_allows_ipv6_zones_only():
    assert goparse.parse_addr("fe80::1%eth0") is not None
    assert goparse.parse_addr("1.2.3.4%eth0") is None
    assert goparse.parse_addr("1.2.3.04") is None


def test_prefix_contains_checks_family_and_bits():
    p = goparse.parse_prefix("10.0.0.0/8")[0]
    assert goparse.prefix_contains(p, goparse.parse_addr("10.255.0.1"))
    assert not goparse.prefix_contains(p, goparse.parse_addr("11.0.0.1"))
    assert not goparse.prefix_contains(p, goparse.parse_addr("::ffff:10.0.0.1"))
    assert goparse.prefix_contains(goparse.parse_prefix("0.0.0.0/0")[0], goparse.parse_addr("1.1.1.1"))


@pytest.mark.parametrize("name,ok", [
    ("http", True), ("HTTP-Alt", True), ("0x10", True), ("a", True), ("80", False), ("-http", False),
    ("http--alt", False), ("a" * 15, True), ("a" * 16, False), ("my_port", False), ("", False),
])
def test_iana_service_names(name, ok):
    assert goparse.is_svc_name(name) is ok


def test_qualified_names_and_label_values():
    assert goparse.qualified_name("app.kubernetes.io/name") == []
    assert goparse.qualified_name("Example.com/name")  # prefix must be lowercase
    assert goparse.qualified_name("a/b/c")
    assert goparse.qualified_name("k" * 64)
    assert goparse.label_value("") == [] and goparse.label_value("v1.2_x-y") == []
    assert goparse.label_value("-x") and goparse.label_value("x" * 64)


@pytest.mark.parametrize("pattern", [
    "", "GET", "GET|POST", "/v1/.*", "^/api/[0-9]+$", "(?i)get", "(?P<n>x)", "(?<n>x)", r"\pL+", r"\p{Greek}",
    "[[:alpha:]]+", r"\Qa.b\E", r"a\z", "x{2,5}", "x{1000}", "a{,3}", r"\x41\x{263a}", r"[\d\-]", "(?U)a+",
])
def test_re2_accepts(pattern):
    assert re2.check(pattern) is None


@pytest.mark.parametrize("pattern,why", [
    ("[", "missing closing ]"), ("/api/(v1", "missing closing )"), ("a)", "unexpected )"),
    ("*a", "missing argument"), ("a**", "nested repetition"), ("a*+", "nested repetition"),
    ("(?=a)", "Perl syntax"), ("(?<=a)b", "named capture"), (r"(a)\1", "escape"), ("x{1001}", "repeat count"),
    ("x{3,2}", "repeat count"), (r"\y", "escape"), ("(?x)a", "Perl syntax"), ("[[:foo:]]", "class"),
    (r"\Z", "escape"), ("[z-a]", "range"),
])
def test_re2_rejects(pattern, why):
    problem = re2.check(pattern)
    assert problem is not None and why in problem, problem
