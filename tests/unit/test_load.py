"""Loading YAML/JSON policy files: kubectl's YAML 1.1 view of scalars, positions, documents, Lists, errors."""

import io
import textwrap

import pytest

from ciliumctl.base.errors import UsageError
from ciliumctl.policy import load


def one(text: str):
    docs = load.load_text(textwrap.dedent(text).lstrip("\n"), "f.yaml")
    assert len(docs) == 1
    return docs[0]


@pytest.mark.parametrize("text,value", [
    ("yes", True), ("Yes", True), ("on", True), ("ON", True), ("y", True), ("Y", True), ("true", True),
    ("no", False), ("off", False), ("n", False), ("N", False), ("False", False),
    ("~", None), ("null", None), ("", None),
    ("80", 80), ("+80", 80), ("-1", -1), ("0x1F", 31), ("0o17", 15), ("017", 15), ("0b101", 5),
    ("1_000", 1000), ("08", 8), ("1e3", 1000), ("80.0", 80), ("1.5", 1.5), (".5", 0.5),
    ("2024-01-01", "2024-01-01"), ("1:30", "1:30"), ("http", "http"), ("0x", "0x"), ("-", "-"),
])
def test_plain_scalars_resolve_like_go_yaml_v2(text, value):
    assert load.resolve_plain(text) == value
    assert type(load.resolve_plain(text)) is type(value)


def test_quoted_and_tagged_scalars_stay_strings():
    doc = one("""
        a: "yes"
        b: '80'
        c: !!str on
        d: |
          block
    """)
    assert doc.data == {"a": "yes", "b": "80", "c": "on", "d": "block\n"}


def test_non_string_keys_become_strings():
    doc = one("""
        on: a
        80: b
        1.5: c
    """)
    assert doc.data == {"true": "a", "80": "b", "1.5": "c"}


def test_positions_of_values_and_keys_are_one_based():
    doc = one("""
        kind: CiliumNetworkPolicy
        spec:
          egress:
          - toPorts:
            - ports:
              - port: "80"
    """)
    path = ("spec", "egress", 0, "toPorts", 0, "ports", 0, "port")
    assert doc.positions[path] == (6, 15)
    assert doc.key_positions[path] == (6, 9)
    assert doc.pos(path + ("missing",)) == (6, 15)  # nearest existing ancestor
    assert doc.pos(("spec",), key=True) == (2, 1)


def test_documents_counted_from_zero_empty_ones_too():
    # as YAML and Cilium's own tools number them: `---` right after `---` is an (empty) document
    docs = load.load_text("---\n---\nkind: A\n---\n# only a comment\n---\nkind: B\n...\n", "f.yaml")
    assert [(d.index, d.kind) for d in docs] == [(1, "A"), (3, "B")]
    docs = load.load_text("# head comment\n---\nkind: A\n---\n---\nkind: B\n", "f.yaml")
    assert [(d.index, d.kind) for d in docs] == [(0, "A"), (2, "B")]


def test_list_objects_become_one_document_per_item_with_item_positions():
    docs = load.load_text(textwrap.dedent("""\
        apiVersion: v1
        kind: List
        items:
        - kind: CiliumNetworkPolicy
          metadata: {name: a}
        - kind: NetworkPolicy
          metadata:
            name: b
            namespace: ns
    """), "f.yaml")
    # the items share their List's document index (as cnp-oracle numbers them); path_prefix tells them apart
    assert [(d.index, d.kind, d.name, d.namespace) for d in docs] == [
        (0, "CiliumNetworkPolicy", "a", None), (0, "NetworkPolicy", "b", "ns")]
    assert docs[1].path_prefix == "items[1]"
    assert docs[1].positions[("metadata", "name")] == (8, 11)


def test_duplicate_keys_are_recorded_and_the_last_one_wins():
    doc = one("""
        metadata:
          name: a
          name: b
    """)
    assert doc.data["metadata"]["name"] == "b"
    [issue] = doc.issues
    assert issue.kind == "duplicate-key" and issue.path == ("metadata", "name") and issue.pos == (3, 3)


def test_anchors_and_merge_keys_expand_and_explicit_keys_win():
    doc = one("""
        base: &b {a: 1, b: 2}
        merged:
          <<: *b
          b: 3
        alias: *b
        y: key y is a YAML 1.1 boolean
    """)
    assert doc.data["merged"] == {"b": 3, "a": 1}
    assert doc.data["alias"] == {"a": 1, "b": 2}
    assert doc.data["true"] == "key y is a YAML 1.1 boolean"
    assert doc.positions[("merged", "a")] == (1, 14)


def test_nan_is_an_issue_because_json_has_no_nan():
    doc = one("a: .nan\n")
    assert doc.issues[0].kind == "unsupported-value"


def test_json_with_tabs_loads():
    doc = one('{\n\t"kind": "NetworkPolicy",\n\t"spec": {"x": [true, "1", 2]}\n}\n')
    assert doc.data == {"kind": "NetworkPolicy", "spec": {"x": [True, "1", 2]}}
    assert doc.positions[("spec", "x", 2)] == (3, 28)


def test_yaml_syntax_error_is_one_usage_line_with_file_line_col():
    with pytest.raises(UsageError) as err:
        load.load_text("a: [1\nb: 2\n", "bad.yaml")
    msg = str(err.value)
    assert msg.startswith("bad.yaml:2:2: not valid YAML") and "\n" not in msg


def test_undefined_alias_is_a_usage_error():
    with pytest.raises(UsageError, match="bad.yaml:1:4"):
        load.load_text("a: *nope\n", "bad.yaml")


def test_missing_path_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no such file or directory"):
        load.load_paths([str(tmp_path / "nope.yaml")])


def test_no_paths_is_a_usage_error():
    with pytest.raises(UsageError):
        load.load_paths([])


def test_directories_are_walked_recursively_in_order_and_names_keep_the_given_prefix(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.yml").write_text("kind: Z\n")
    (tmp_path / "a.yaml").write_text("kind: A\n---\nkind: A2\n")
    (tmp_path / "c.json").write_text('{"kind": "C"}')
    (tmp_path / "notes.txt").write_text("kind: ignored\n")
    docs = load.load_paths([str(tmp_path)])
    assert [(d.file, d.index, d.kind) for d in docs] == [
        (str(tmp_path / "a.yaml"), 0, "A"), (str(tmp_path / "a.yaml"), 1, "A2"),
        (str(tmp_path / "c.json"), 0, "C"), (str(tmp_path / "b" / "z.yml"), 0, "Z")]


def test_relative_directory_argument_is_joined_with_walked_path(tmp_path, monkeypatch):
    (tmp_path / "pol" / "sub").mkdir(parents=True)
    (tmp_path / "pol" / "sub" / "x.yaml").write_text("kind: X\n")
    monkeypatch.chdir(tmp_path)
    assert [d.file for d in load.load_paths(["pol"])] == ["pol/sub/x.yaml"]


def test_stdin_is_read_for_dash():
    docs = load.load_paths(["-"], stdin=io.StringIO("kind: A\n---\nkind: B\n"))
    assert [(d.file, d.index, d.kind) for d in docs] == [("-", 0, "A"), ("-", 1, "B")]


def test_non_utf8_file_is_a_usage_error(tmp_path):
    (tmp_path / "x.yaml").write_bytes(b"kind: \xff\xfe\n")
    with pytest.raises(UsageError, match="UTF-8"):
        load.load_paths([str(tmp_path / "x.yaml")])


def test_from_data_keeps_strings_as_they_are():
    doc = load.from_data({"kind": "CiliumNetworkPolicy", "metadata": {"name": "n", "namespace": "x"},
                          "spec": {"a": "y"}})
    assert (doc.kind, doc.name, doc.namespace, doc.data["spec"]["a"]) == ("CiliumNetworkPolicy", "n", "x", "y")
    assert doc.pos(("spec", "a")) == (1, 1)


def test_concatenated_json_objects_are_documents_with_file_positions():
    text = '{"kind": "A", "x": 1}\n  {"kind": "B",\n   "y": [true]}'
    docs = load.load_text(text, "s.json")
    assert [(d.index, d.kind) for d in docs] == [(0, "A"), (1, "B")]
    assert docs[0].positions[("x",)] == (1, 20)
    assert docs[1].positions[("kind",)] == (2, 12)
    assert docs[1].positions[("y", 0)] == (3, 10)


def test_absurdly_deep_nesting_is_a_usage_error_not_a_crash():
    with pytest.raises(UsageError, match="nested too deeply"):
        load.load_text("a: " + "[" * 900 + "]" * 900 + "\n", "deep.yaml")


def test_alias_bombs_are_refused(monkeypatch):
    monkeypatch.setattr(load, "MAX_NODES", 1000)
    text = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n" \
           "c: [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    with pytest.raises(UsageError, match="expands to more than 1000 values"):
        load.load_text(text, "bomb.yaml")


def test_stdin_that_is_not_utf8_is_refused_like_a_file():
    with pytest.raises(UsageError, match=r"standard input: not UTF-8 text \(byte 5\)"):
        load.load_paths(["-"], stdin=io.BytesIO(b"kind:\xff\xfe A\n"))
    assert load.load_paths(["-"], stdin=io.BytesIO(b"\xef\xbb\xbfkind: A\n"))[0].data == {"kind": "A"}   # BOM
