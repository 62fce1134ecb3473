"""A small type language for the Go structs behind the policy kinds, with their CRD/OpenAPI constraints.

One description serves three purposes: which field names exist (anything else is dropped by the API
server), which JSON types Go's decoder accepts (anything else fails the import), and the CRD schema's own
checks (enums, patterns, max items) that `kubectl apply` meets before the agent sees the object.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class T:
    """Base of all types."""


@dataclass
class Str(T):
    enum: tuple | None = None
    pattern: str | None = None       # JSON-schema pattern: unanchored search, as the API server does it
    max_len: int | None = None
    min_len: int | None = None
    fmt: str | None = None           # "cidr"
    notes: dict = field(default_factory=dict)  # value -> why the CRD refuses it (added to the schema finding)


@dataclass
class Int(T):
    go: str = "int32"                # the Go type, for the decoder's range
    minimum: int | None = None
    maximum: int | None = None


@dataclass
class Bool(T):
    pass


@dataclass
class IntOrStr(T):
    pattern: str | None = None       # applies to the string form only


@dataclass
class Arr(T):
    item: T
    max_items: int | None = None
    min_items: int | None = None


@dataclass
class Map(T):
    value: T
    key_note: str = ""


@dataclass
class Obj(T):
    name: str                                    # the Go type name, for messages
    fields: dict
    required: tuple = ()
    one_of: tuple = ()                           # each entry: a field that must be the only one of the group
    any_of: tuple = ()                           # at least one of these fields
    notes: dict = field(default_factory=dict)    # unknown-field name -> why it is dropped (for warnings)
    # Decoded by Go's encoding/json inside a custom UnmarshalJSON (EndpointSelector, ICMPField): field names
    # match case-insensitively there, and of two keys naming one field the later in sorted order wins.
    go_json: bool = False
    # What a JSON null does to a field of this type: "" leaves the field unset (Go's decoder and the API
    # server's pruning agree); "empty" decodes it as {} (EndpointSelector.UnmarshalJSON runs on null);
    # any other text is an error message (the import fails on it).
    null: str = ""


@dataclass
class Time(T):
    """metav1.Time: null, or an RFC 3339 string (time.Parse(time.RFC3339, ...))."""


@dataclass
class Opaque(T):
    """Anything goes (status, managedFields): not checked."""


@dataclass
class CiliumLabel(T):
    """labels.Label: an object {key, value, source} with a key, or a "[source:]key[=value]" string."""


GO_INT_RANGES = {
    "int32": (-(1 << 31), (1 << 31) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "uint8": (0, 255),
    "uint16": (0, 65535),
    "uint64": (0, (1 << 64) - 1),
}
