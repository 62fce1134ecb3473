"""Decode a document the way the API server and then the agent's Go json decoder see it.

- unknown fields are dropped (a warning; an error with strict field validation), with a hint when only the
  case differs (`HTTP:` for `http:`) or a known typo;
- null-valued fields are dropped (the API server prunes nulls of non-nullable fields);
- a JSON type Go cannot store in the field (a string in endPort, a boolean in matchLabels) is an error:
  the import fails;
- the CRD schema's own checks (enum, pattern, maxItems...) are reported with the `schema` severity chosen by
  the caller: warnings by default, errors with --strict.

The result is a tree with only known, well-typed fields, ready for the Sanitize checks.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from ciliumctl.policy import goparse
from ciliumctl.policy.findings import ERROR, WARNING, Collector
from ciliumctl.policy.schema import GO_INT_RANGES, Arr, Bool, CiliumLabel, Int, IntOrStr, Map, Obj, Opaque, Str, T, Time

INVALID = object()
_LABEL = Obj("Label", {"key": Str(), "value": Str(), "source": Str()}, go_json=True)
_PATTERNS: dict = {}


def describe(value) -> str:
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f'a string ("{value}")'
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "null"


def _hint(expected: str, value) -> str:
    if expected == "a string":
        if isinstance(value, bool):
            return ("; YAML 1.1 (which kubectl uses) reads unquoted yes/no/on/off/y/n/true/false as booleans: "
                    "quote the value")
        if isinstance(value, (int, float)):
            return f'; quote it: "{value}"'
    if expected.startswith("an integer") and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return f"; remove the quotes: {value.strip()}"
    return ""


def go_fold(name: str) -> str:
    """encoding/json's foldName: the form in which two field names match case-insensitively (per rune
    ToUpper(ToLower(r)), so the Kelvin sign folds with k and the long s with s)."""
    out = []
    for c in name:
        low = c.lower()
        up = low.upper()
        out.append(up if len(up) == 1 else (low if len(low) == 1 else c))
    return "".join(out)


def _pattern(p: str):
    rx = _PATTERNS.get(p)
    if rx is None:
        rx = _PATTERNS[p] = re.compile(p)
    return rx


class Decoder:
    """Walks data against a type; reports into a Collector."""

    def __init__(self, col: Collector, strict_fields: bool = False, strict_schema: bool = False):
        self.col = col
        self.field_severity = ERROR if strict_fields else WARNING
        self.schema_severity = ERROR if strict_schema else WARNING

    # -- reporting
    def _type_error(self, path, expected: str, value) -> None:
        self.col.error(path, f"must be {expected}, not {describe(value)}{_hint(expected, value)}; "
                             f"the agent cannot decode the policy", rule="decode/type")

    def _schema(self, path, message: str, key: bool = False) -> None:
        suffix = "" if self.schema_severity == ERROR else " (kubectl apply fails on it)"
        self.col.add(self.schema_severity, path, f"CRD schema: {message}{suffix}", rule="schema", key=key)

    def _unknown(self, path, key: str, t: Obj) -> None:
        where = path + (key,)
        if key in t.notes:
            if self.field_severity == ERROR:
                self.col.error(where, f"unknown field {key!r} in {t.name}, refused by strict field validation: "
                                      f"{t.notes[key]}", rule="strict/unknown-field", key=True)
            else:
                self.col.warn(where, t.notes[key], rule="lint/dropped-field", key=True)
            return
        by_lower = {name.lower(): name for name in t.fields}
        if key.lower() in by_lower:
            right = by_lower[key.lower()]
            msg = (f"unknown field {key!r} in {t.name}: field names are case-sensitive, did you mean {right!r}? "
                   f"The API server drops {key!r}, so it has no effect")
            self.col.add(self.field_severity, where, msg, rule="strict/unknown-field", key=True)
            return
        close = difflib.get_close_matches(key, list(t.fields), n=1, cutoff=0.75)
        hint = f", did you mean {close[0]!r}?" if close else ""
        msg = f"unknown field {key!r} in {t.name}{hint}; the API server drops it, so it has no effect"
        self.col.add(self.field_severity, where, msg, rule="strict/unknown-field", key=True)

    # -- decoding
    def decode(self, value, t: T, path=()):
        if isinstance(t, Obj):
            return self._obj(value, t, path)
        if isinstance(t, Arr):
            return self._arr(value, t, path)
        if isinstance(t, Map):
            return self._map(value, t, path)
        if isinstance(t, Str):
            return self._str(value, t, path)
        if isinstance(t, Int):
            return self._int(value, t, path)
        if isinstance(t, Bool):
            if not isinstance(value, bool):
                self._type_error(path, "a boolean (true or false)", value)
                return INVALID
            return value
        if isinstance(t, IntOrStr):
            return self._int_or_str(value, t, path)
        if isinstance(t, CiliumLabel):
            return self._label(value, path)
        if isinstance(t, Time):
            if not isinstance(value, str):
                self._type_error(path, "a time string (RFC 3339, like 2024-01-02T15:04:05Z)", value)
                return INVALID
            if not goparse.is_rfc3339(value):
                self.col.error(path, f"{value!r} is not an RFC 3339 time (like 2024-01-02T15:04:05Z); the agent "
                                     f"cannot decode the policy", rule="decode/type")
                return INVALID
            return value
        if isinstance(t, Opaque):
            return value
        raise TypeError(t)

    def _obj(self, value, t: Obj, path):
        if not isinstance(value, dict):
            self._type_error(path, "an object", value)
            return INVALID
        out: dict[str, Any] = {}
        # encoding/json (inside a custom UnmarshalJSON) sees the keys in sorted order, since sigs.k8s.io/yaml
        # wrote them from a Go map; a later key naming the same field overwrites an earlier one
        keys = sorted(value) if t.go_json else value
        for key in keys:
            item = value[key]
            name = key if key in t.fields else (self._folded(t).get(go_fold(key)) if t.go_json else None)
            if name is None:
                self._unknown(path, key, t)
                continue
            if name != key:
                self._case_variant(path, key, name, t)
            ft = t.fields[name]
            if item is None:
                if isinstance(ft, Obj) and ft.null == "empty":
                    item = {}
                elif isinstance(ft, Obj) and ft.null:
                    self.col.error(path + (key,), ft.null, rule="decode/null")
                    continue
                else:
                    if not isinstance(ft, (Str, Int, Bool)):
                        out.pop(name, None)  # null sets a map, slice or pointer to nil; a string stays
                    continue  # pruned by the API server
            decoded = self.decode(item, ft, path + (key,))
            if decoded is INVALID:
                continue
            if isinstance(ft, Map) and isinstance(out.get(name), dict):
                decoded = {**out[name], **decoded}  # encoding/json decodes into the map already there
            out[name] = decoded
        for key in t.required:
            if key not in value or value[key] is None:
                self._schema(path, f"{key!r} is required in {t.name}")
        if t.one_of:
            present = [k for k in t.one_of if value.get(k) is not None]
            if len(present) != 1:
                names = " or ".join(repr(k) for k in t.one_of)
                what = "none" if not present else "several: " + ", ".join(present)
                self._schema(path, f"exactly one of {names} must be set in {t.name} ({what} given)")
        if t.any_of and not any(value.get(k) is not None for k in t.any_of):
            names = ", ".join(t.any_of)
            self._schema(path, f"at least one of {names} must be set in {t.name}")
        return out

    _FOLDED: dict = {}

    @classmethod
    def _folded(cls, t: Obj) -> dict:
        folded = cls._FOLDED.get(id(t))
        if folded is None:
            folded = cls._FOLDED[id(t)] = {go_fold(name): name for name in t.fields}
        return folded

    def _case_variant(self, path, key: str, name: str, t: Obj) -> None:
        """A key that only Cilium's case-insensitive decoder reads: the API server drops it."""
        msg = (f"unknown field {key!r} in {t.name}: field names are case-sensitive, write {name!r}; the API server "
               f"drops {key!r}, while Cilium's own decoder reads it as {name!r}")
        self.col.add(self.field_severity, path + (key,), msg, rule="strict/unknown-field", key=True)

    def _arr(self, value, t: Arr, path):
        if not isinstance(value, list):
            self._type_error(path, "a list", value)
            return INVALID
        out = []
        for i, item in enumerate(value):
            if item is None:
                self._schema(path + (i,), "a list item may not be null")
                if isinstance(t.item, Obj) and t.item.null not in ("", "empty"):
                    self.col.error(path + (i,), t.item.null, rule="decode/null")
                    continue
                if isinstance(t.item, CiliumLabel):
                    self.col.error(path + (i,), "a label may not be null: write key=value (or an object with key)",
                                   rule="decode/null")
                    continue
                # Go decodes null into the item's zero value, which still counts as an item: {} for a struct
                # or a map (an EndpointSelector's UnmarshalJSON makes it the empty selector), "" for a string
                item = {} if isinstance(t.item, (Obj, Map)) else ("" if isinstance(t.item, Str) else None)
                if item is None:
                    continue
            decoded = self.decode(item, t.item, path + (i,))
            if decoded is not INVALID:
                out.append(decoded)
        if t.max_items is not None and len(value) > t.max_items:
            self._schema(path, f"at most {t.max_items} items allowed, {len(value)} given")
        if t.min_items is not None and len(value) < t.min_items:
            self._schema(path, f"at least {t.min_items} item(s) required")
        return out

    def _map(self, value, t: Map, path):
        if not isinstance(value, dict):
            self._type_error(path, "an object (a map of names to values)", value)
            return INVALID
        out = {}
        for key, item in value.items():
            if item is None:
                item = "" if isinstance(t.value, Str) else item
                if item is None:
                    continue
            decoded = self.decode(item, t.value, path + (key,))
            if decoded is not INVALID:
                out[key] = decoded
        return out

    def _str(self, value, t: Str, path):
        if not isinstance(value, str):
            self._type_error(path, "a string", value)
            return INVALID
        if t.enum is not None and value not in t.enum:
            note = t.notes.get(value)
            self._schema(path, f"{value!r} is not one of {', '.join(t.enum)}" + (f": {note}" if note else ""))
        if t.max_len is not None and len(value) > t.max_len:
            self._schema(path, f"at most {t.max_len} characters allowed, {len(value)} given")
        if t.min_len is not None and len(value) < t.min_len:
            self._schema(path, f"at least {t.min_len} character(s) required")
        if t.pattern is not None and not _pattern(t.pattern).search(value):
            self._schema(path, f"{value!r} does not match the pattern {t.pattern}")
        if t.fmt == "cidr" and not goparse.is_k8s_cidr(value):
            self._schema(path, f"{value!r} is not in CIDR notation (address/prefix-length)")
        return value

    def _int(self, value, t: Int, path):
        if isinstance(value, bool) or not isinstance(value, int):
            self._type_error(path, "an integer", value)
            return INVALID
        lo, hi = GO_INT_RANGES[t.go]
        if not lo <= value <= hi:
            self._type_error(path, f"an integer that fits a Go {t.go} ({lo}..{hi})", value)
            return INVALID
        if t.minimum is not None and value < t.minimum:
            self._schema(path, f"{value} is less than the minimum {t.minimum}")
        if t.maximum is not None and value > t.maximum:
            self._schema(path, f"{value} is more than the maximum {t.maximum}")
        return value

    def _int_or_str(self, value, t: IntOrStr, path):
        if isinstance(value, str):
            if t.pattern is not None and not _pattern(t.pattern).search(value):
                self._schema(path, f"{value!r} does not match the pattern {t.pattern}")
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            self._type_error(path, "an integer or a string", value)
            return INVALID
        lo, hi = GO_INT_RANGES["int32"]
        if not lo <= value <= hi:
            self._type_error(path, "an integer that fits a Go int32", value)
            return INVALID
        return value

    def _label(self, value, path):
        """labels.Label.UnmarshalJSON (pkg/labels/labels.go): an object {source, key, value} decoded by
        encoding/json (names case-insensitive, unknown names ignored) with a non-empty key, or a non-empty
        "[source:]key[=value]" string."""
        if isinstance(value, str):
            if value == "":
                self.col.error(path, "a label may not be empty: write key=value (or an object with key)",
                               rule="decode/type")
                return INVALID
            self._schema(path, "labels items must be objects {key, value, source}")
            return value
        if not isinstance(value, dict):
            self._type_error(path, "an object {key, value, source} or a \"key=value\" string", value)
            return INVALID
        label_type = _LABEL
        out = {}
        for key in sorted(value):
            name = key if key in label_type.fields else self._folded(label_type).get(go_fold(key))
            if name is None:
                self._unknown(path, key, label_type)
                continue
            if name != key:
                self._case_variant(path, key, name, label_type)
            item = value[key]
            if item is None:
                continue
            if not isinstance(item, str):
                self._type_error(path + (key,), "a string", item)
                return INVALID
            out[name] = item
        if not out.get("key"):
            self.col.error(path, "a label needs a non-empty `key`", rule="decode/type")
            return INVALID
        return out
