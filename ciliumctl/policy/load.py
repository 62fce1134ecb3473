"""Load policy documents from YAML/JSON files, directories and stdin, keeping the line:column of every node.

Values are converted the way `kubectl apply` hands them to the API server: sigs.k8s.io/yaml turns YAML into
JSON with go-yaml v2, i.e. YAML 1.1 scalars (`yes`/`no`/`on`/`off`/`y`/`n` are booleans, `0o17` and `017`
are integers, `1e3` is a float, map keys become strings). PyYAML only parses; the scalar resolution is ours.
"""

from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from ciliumctl.base.errors import UsageError
from ciliumctl.policy.findings import format_path

Path = tuple  # a path into the data tree: ("spec", "egress", 0, "toPorts")
Pos = tuple  # (line, column), both 1-based

YAML_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass
class LoadIssue:
    """A problem found while converting YAML to JSON (a duplicate key, a NaN...)."""

    kind: str  # "duplicate-key" | "unsupported-value" | "not-an-object" | "syntax" (not valid YAML)
    path: Path
    message: str
    pos: Pos


@dataclass
class Document:
    """One Kubernetes object from a file: its data as the API server would see it, plus where each node is."""

    file: str
    index: int
    kind: str | None
    name: str | None
    namespace: str | None
    data: Any
    positions: dict = field(default_factory=dict)      # Path -> Pos of the value node
    key_positions: dict = field(default_factory=dict)  # Path -> Pos of the mapping key naming it
    issues: list = field(default_factory=list)         # LoadIssue
    path_prefix: str = ""                             # "items[3]" for an object inside a List
    api_version: str | None = None

    def pos(self, path: Path, key: bool = False) -> Pos:
        """Best position for a path: the node itself, else its nearest ancestor that exists."""
        path = tuple(path)
        while True:
            if key and path in self.key_positions:
                return self.key_positions[path]
            if path in self.positions:
                return self.positions[path]
            if not path:
                return (1, 1)
            path = path[:-1]


# ---------------------------------------------------------------------------------------------- file walking

# One policy object may be as large as etcd stores one by default (--max-request-bytes, 1.5 MiB), which is what
# the API server accepts; a file or stdin may hold many of them. `--max-size` raises both.
DEFAULT_MAX_SIZE = 3 * 1024 * 1024 // 2
FILE_FACTOR = 16
_SIZE = re.compile(r"^\s*([0-9]+)\s*(|K|Ki|M|Mi|G|Gi)\s*$")
_UNITS = {"": 1, "K": 1000, "Ki": 1024, "M": 1000**2, "Mi": 1024**2, "G": 1000**3, "Gi": 1024**3}


def parse_size(text: str) -> int:
    """`1536Ki`, `2Mi`, `2000000` -> bytes (Kubernetes quantity suffixes)."""
    m = _SIZE.match(text or "")
    if not m or int(m.group(1)) == 0:
        raise UsageError(f"size {text!r}: give bytes with an optional suffix, e.g. 2Mi or 1500K")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _human(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def _walk(arg: str) -> list[tuple[str, str]]:
    """(display name, real path) of every policy file named by one command-line argument. From a folder only
    regular files are read: a FIFO or device there would block or never end."""
    if arg == "-":
        return [("-", "-")]
    if os.path.isdir(arg):
        found = []
        for root, dirs, files in os.walk(arg):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(YAML_SUFFIXES):
                    real = os.path.join(root, name)
                    if not os.path.isfile(real):
                        raise UsageError(f"{real}: not a regular file; folders of policies are read for regular "
                                         "files only: remove it or name it on the command line")
                    found.append((real, real))
        return found
    if os.path.exists(arg):
        return [(arg, arg)]
    raise UsageError(f"{arg}: no such file or directory (give policy files, folders, or - for stdin)")


def _read(display: str, real: str, stdin=None, max_size: int = DEFAULT_MAX_SIZE) -> str:
    limit = max_size * FILE_FACTOR
    if real == "-":
        stream = stdin if stdin is not None else sys.stdin
        stream = getattr(stream, "buffer", stream)    # bytes, so that stdin is decoded (and refused) as files are
        raw = stream.read(limit + 1)
    else:
        try:
            with open(real, "rb") as fh:
                raw = fh.read(limit + 1)
        except OSError as err:
            raise UsageError(f"{display}: cannot read: {err.strerror or err}") from None
    if len(raw) > limit:
        what = "standard input" if real == "-" else display
        raise UsageError(f"{what}: more than {_human(limit)} of policies (16 × --max-size {_human(max_size)}); "
                         "split it, or raise --max-size")
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        where, fix = ("standard input", "send UTF-8 text") if real == "-" else (display, "save the file as UTF-8")
        raise UsageError(f"{where}: not UTF-8 text (byte {err.start}); {fix}") from None


def load_paths(paths: list[str], stdin=None, max_size: int = DEFAULT_MAX_SIZE,
               keep_going: bool = False) -> list[Document]:
    """Every object in the files/folders given (`-` reads stdin), in command-line then walk order. With
    keep_going, a file that is not valid YAML becomes a document whose one issue is the syntax error (kind
    "syntax", at its line and column), and the other files are still read.

    Raises UsageError (exit 2) for a missing path, no file at all, a file that is not readable YAML/JSON (without
    keep_going), or one over the limits
    (a file or stdin over FILE_FACTOR × max_size, one policy object over max_size as JSON).
    """
    if not paths:
        raise UsageError("no policy files given: name files, folders, or - for stdin")
    docs: list[Document] = []
    files = 0
    for arg in paths:
        for display, real in _walk(arg):
            files += 1
            text = _read(display, real, stdin, max_size)
            if not keep_going:
                docs.extend(load_text(text, display, max_size))
                continue
            try:
                docs.extend(load_text(text, display, max_size))
            except NotYAML as err:   # the documents before the error, then the error as a document of its own
                docs.extend(err.docs)
                docs.append(err.document())
    if not files:
        raise UsageError(f"no policy files in {', '.join(paths)}: folders are searched for "
                         f"{', '.join(YAML_SUFFIXES)} files")
    return docs


# --------------------------------------------------------------------------------------- YAML -> JSON view

_NULLS = {"", "~", "null", "Null", "NULL"}
_BOOLS = {**{s: True for s in ("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON")},
          **{s: False for s in ("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF")}}
_SPECIAL_FLOATS = {".nan": math.nan, ".NaN": math.nan, ".NAN": math.nan,
                   ".inf": math.inf, ".Inf": math.inf, ".INF": math.inf,
                   "+.inf": math.inf, "+.Inf": math.inf, "+.INF": math.inf,
                   "-.inf": -math.inf, "-.Inf": -math.inf, "-.INF": -math.inf}
_YAML_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_GO_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_DIGITS = {"0": 8, "b": 2, "o": 8, "x": 16}
_STR_TAG = "tag:yaml.org,2002:str"
# first characters of plain scalars that go-yaml v2 or PyYAML may resolve to something other than a string
_RESOLVABLE_FIRST = frozenset("yYnNtTfFoO~+-0123456789.<=")
_IMPLICIT = None  # a PyYAML resolver, to tell an explicit !!str tag from an implicit one


def go_parse_int(text: str) -> int | None:
    """Go's strconv.ParseInt(text, 0, 64) (sign, 0x/0o/0b/0 prefixes); None when it fails."""
    s = text
    neg = False
    if s[:1] in "+-" and s:
        neg = s[0] == "-"
        s = s[1:]
    if not s:
        return None
    base = 10
    if s[0] == "0" and len(s) > 1:
        low = s[1].lower()
        if low in "box" and len(s) >= 3:
            base, s = _DIGITS[low], s[2:]
        else:
            base, s = 8, s[1:]
    try:
        if not s or not all(c.isascii() and c.isalnum() for c in s):
            return None
        value = int(s, base)
    except ValueError:
        return None
    value = -value if neg else value
    if -(1 << 63) <= value < (1 << 64):
        return value
    return None


def resolve_plain(text: str) -> Any:
    """A plain (unquoted) YAML scalar as go-yaml v2 resolves it, already in its JSON form."""
    if text in _NULLS:
        return None
    if text in _BOOLS:
        return _BOOLS[text]
    if text in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[text]
    first = text[0]
    if first == ".":
        if _GO_FLOAT.match(text):
            return _json_number(float(text))
        return text
    if first in "+-0123456789":
        plain = text.replace("_", "")
        if plain:
            value = go_parse_int(plain)
            if value is not None:
                return value
            if _YAML_FLOAT.match(plain):
                return _json_number(float(plain))
            if plain.startswith(("0b", "-0b")):
                try:
                    return int(plain.replace("0b", "", 1), 2)
                except ValueError:
                    pass
    return text


def _json_number(value: float) -> Any:
    """encoding/json writes an integral float64 without a fraction: 80.0 reaches the server as 80."""
    if math.isfinite(value) and value == int(value) and abs(value) < 1e21:
        return int(value)
    return value


def _key_string(value: Any) -> str | None:
    """sigs.k8s.io/yaml turns non-string map keys into strings; None for keys it refuses."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return format(value, ".7g")
    return None


MAX_NODES = 1_000_000    # values one document may expand to (aliases and merge keys included)


class _TooLarge(Exception):
    pass


class _Builder:
    """Turns one composed YAML document into plain data plus positions."""

    def __init__(self, doc: Document, line_offset: int = 0, column_offset: int = 0, budget: list | None = None):
        self.doc = doc
        self.line_offset = line_offset      # where this text starts in the file (JSON streams)
        self.column_offset = column_offset
        # aliases and merge keys can make a small file expand without bound: one budget for the whole document,
        # shared with the builders of merged mappings
        self.budget = budget if budget is not None else [MAX_NODES]

    def _mark(self, mark) -> Pos:
        col = mark.column + 1 + (self.column_offset if mark.line == 0 else 0)
        return (mark.line + 1 + self.line_offset, col)

    @staticmethod
    def _pyyaml_implicit_tag(value: str) -> str:
        import yaml

        global _IMPLICIT
        if _IMPLICIT is None:
            _IMPLICIT = yaml.SafeLoader("")
        return _IMPLICIT.resolve(yaml.ScalarNode, value, (True, False))

    def build(self, node, path: Path) -> Any:
        import yaml

        self.budget[0] -= 1
        if self.budget[0] < 0:
            raise _TooLarge()
        self.doc.positions[path] = self._mark(node.start_mark)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        return self._mapping(node, path)

    def _scalar(self, node, path: Path) -> Any:
        if node.style:  # quoted or block scalar: always a string (plain is None, or "" with libyaml)
            return node.value
        value = node.value
        if (node.tag == _STR_TAG and value and value[0] in _RESOLVABLE_FIRST
                and self._pyyaml_implicit_tag(value) != _STR_TAG):
            return value  # an explicit !!str tag (PyYAML itself would not have resolved it to a string)
        if value and value[0] not in _RESOLVABLE_FIRST:
            return value  # cannot be a number, boolean or null in either resolver
        value = resolve_plain(value)
        if isinstance(value, float) and not math.isfinite(value):
            self.doc.issues.append(LoadIssue(
                "unsupported-value", path,
                f"{node.value} cannot be sent as JSON (NaN and infinity are not JSON numbers); "
                f"quote it if a string is meant", self.doc.positions[path]))
        return value

    def _mapping(self, node, path: Path) -> dict:
        import yaml

        out: dict = {}
        merged: list = []
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and not key_node.style and key_node.value == "<<":
                merged.append(value_node)
                continue
            key_pos = self._mark(key_node.start_mark)
            if isinstance(key_node, yaml.ScalarNode):
                key = _key_string(key_node.value if key_node.style else resolve_plain(key_node.value))
            else:
                key = None
            if key is None:
                self.doc.issues.append(LoadIssue(
                    "unsupported-value", path, "a mapping key must be a string, number or boolean (null and "
                    "nested keys cannot become JSON keys); quote the key", key_pos))
                continue
            child = path + (key,)
            if key in out:
                # the earlier value is gone: so are the problems it had (a NaN there no longer matters)
                n = len(child)
                self.doc.issues[:] = [x for x in self.doc.issues
                                      if x.kind == "duplicate-key" or x.path[:n] != child]
                self.doc.issues.append(LoadIssue(
                    "duplicate-key", child,
                    f"duplicate key {key!r} (first at line {self.doc.key_positions[child][0]}); YAML keeps only "
                    f"the last one: remove or merge the duplicates", key_pos))
            self.doc.key_positions[child] = key_pos
            out[key] = self.build(value_node, child)
        for value_node in merged:  # YAML merge keys: explicitly written keys win
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for src in sources:
                if not isinstance(src, yaml.MappingNode):
                    continue
                sub = _Builder(Document(self.doc.file, 0, None, None, None, None), self.line_offset,
                               self.column_offset, self.budget)
                values = sub._mapping(src, ())
                for key, value in values.items():
                    if key in out:
                        continue
                    out[key] = value
                    for p, pos in sub.doc.positions.items():
                        if p[:1] == (key,):
                            self.doc.positions[path + p] = pos
                    for p, pos in sub.doc.key_positions.items():
                        if p[:1] == (key,):
                            self.doc.key_positions[path + p] = pos
        return out


def _meta(data: Any, key: str) -> str | None:
    if isinstance(data, dict):
        meta = data.get("metadata")
        if isinstance(meta, dict) and isinstance(meta.get(key), str):
            return meta[key]
    return None


def _document(file: str, index: int, data: Any, doc: Document | None = None) -> Document:
    if doc is None:
        doc = Document(file, index, None, None, None, data)
    doc.index = index
    doc.data = data
    if isinstance(data, dict):
        doc.kind = data.get("kind") if isinstance(data.get("kind"), str) else None
        doc.api_version = data.get("apiVersion") if isinstance(data.get("apiVersion"), str) else None
    doc.name = _meta(data, "name")
    doc.namespace = _meta(data, "namespace")
    return doc


def _split_list(doc: Document, index: int) -> list[Document]:
    """A `List` (or `*List`) object becomes one Document per item (all with the List's index), positions
    re-rooted at the item."""
    items = doc.data.get("items")
    if not isinstance(items, list):
        return [doc]
    out = []
    for i, item in enumerate(items):
        prefix = ("items", i)
        sub = Document(doc.file, 0, None, None, None, None, path_prefix=f"{doc.path_prefix}items[{i}]")
        sub.positions = {p[2:]: pos for p, pos in doc.positions.items() if p[:2] == prefix}
        sub.key_positions = {p[2:]: pos for p, pos in doc.key_positions.items() if p[:2] == prefix}
        sub.issues = [LoadIssue(x.kind, x.path[2:], x.message, x.pos) for x in doc.issues if x.path[:2] == prefix]
        # kubectl converts the List's document at once: a value that cannot become JSON anywhere in it stops
        # every item, and so does a duplicate key under strict validation
        sub.issues += [LoadIssue(x.kind, (), f"in the same List, {format_path(x.path)}: {x.message}", x.pos)
                       for x in doc.issues if x.path[:2] != prefix]
        out.append(_document(doc.file, index, item, sub))
    return out


def _is_list(data: Any) -> bool:
    return (isinstance(data, dict) and isinstance(data.get("kind"), str) and data["kind"].endswith("List")
            and isinstance(data.get("items"), list))


def from_data(data: Any, file: str = "-", index: int = 0) -> Document:
    """A Document for an object that is already JSON-like data (from the API server, say): no YAML round trip,
    so no positions (findings point at 1:1) and no YAML 1.1 re-interpretation of its strings."""
    return _document(file, index, data)


def _json_stream(text: str) -> list[tuple[int, int]] | None:
    """Offsets of the values of a concatenated JSON stream (`{...}{...}`, which kubectl accepts), or None."""
    import json

    decoder = json.JSONDecoder()
    spans: list[tuple[int, int]] = []
    i = 0
    while True:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        if i == len(text):
            return spans or None
        try:
            _, end = decoder.raw_decode(text, i)
        except ValueError:
            return None
        spans.append((i, end))
        i = end


def _compose(text: str, file: str, docs: list, line_offset: int = 0, column_offset: int = 0,
             index: int = 0) -> int:
    """Append the objects of one YAML stream to `docs`; returns the index the next document would have.

    Every document counts, empty ones too (`---` right after `---`), as YAML and Cilium's own tools number
    them; the items of a List share their List's index."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for node in yaml.compose_all(text, Loader=loader):
        if node is None or (isinstance(node, yaml.ScalarNode) and not node.style and node.value in _NULLS):
            index += 1  # an empty document: nothing to check, like kubectl, but it has its number
            continue
        doc = Document(file, 0, None, None, None, None)
        data = _Builder(doc, line_offset, column_offset).build(node, ())
        doc = _document(file, index, data, doc)
        if _is_list(data):
            docs.extend(_split_list(doc, index))
        else:
            docs.append(doc)
        index += 1
    return index


def load_text(text: str, file: str = "-", max_size: int = DEFAULT_MAX_SIZE) -> list[Document]:
    """All non-empty documents of one YAML/JSON stream (List objects expanded into their items); a document
    larger than `max_size` as JSON (what the API server would store) is refused."""
    import json

    docs = _load_stream(text, file)
    for doc in docs:
        size = len(json.dumps(doc.data, separators=(",", ":"), ensure_ascii=False).encode())
        if size > max_size:
            name = f" ({doc.kind or 'object'} {doc.name})" if doc.name else ""
            raise UsageError(f"{file}: document {doc.index}{name} is {_human(size)} as JSON, more than --max-size "
                             f"{_human(max_size)} (what etcd stores by default); split it, or raise --max-size")
    return docs


def _load_stream(text: str, file: str) -> list[Document]:
    import yaml

    docs: list[Document] = []
    try:
        _compose(text, file, docs)
    except RecursionError:
        raise UsageError(f"{file}: nested too deeply to read (more than a few hundred levels)") from None
    except _TooLarge:
        raise UsageError(f"{file}: a document expands to more than {MAX_NODES} values (YAML aliases?); "
                         f"refusing to read it") from None
    except yaml.MarkedYAMLError as err:
        spans = _json_stream(text) if text.lstrip()[:1] in ("{", "[") else None
        if spans and len(spans) > 1:
            docs.clear()
            index = 0
            for start, end in spans:
                line = text.count("\n", 0, start)
                column = start - (text.rfind("\n", 0, start) + 1)
                index = _compose(text[start:end], file, docs, line, column, index)
            return docs
        mark = err.problem_mark or err.context_mark
        pos = (mark.line + 1, mark.column + 1) if mark else None
        what = err.problem or err.context or "invalid YAML"
        context = f" ({err.context})" if err.context and err.problem else ""
        raise NotYAML(file, pos, f"not valid YAML: {what}{context}", docs) from None
    except yaml.YAMLError as err:
        raise NotYAML(file, None, f"not valid YAML: {err}", docs) from None
    return docs


class NotYAML(UsageError):
    """A file that is not valid YAML: where (file:line:col), what, and the documents read before the error."""

    def __init__(self, file: str, pos: Pos | None, what: str, docs: list):
        where = f"{file}:{pos[0]}:{pos[1]}" if pos else file
        super().__init__(f"{where}: {what}; fix the syntax")
        self.file, self.pos, self.what, self.docs = file, pos or (1, 1), what, list(docs)

    def document(self) -> Document:
        """The error as a document of its own, numbered after the ones read before it: its one issue says where."""
        index = self.docs[-1].index + 1 if self.docs else 0
        return Document(self.file, index, None, None, None, None, positions={(): self.pos},
                        issues=[LoadIssue("syntax", (), self.what + "; fix the syntax", self.pos)])
