"""Is a string a valid Go (RE2) regular expression? Go's regexp.Compile decides HTTP path/method validity.

Python's `re` is a different dialect, so the pattern is first scanned for what RE2 refuses (look-around,
backreferences, possessive and nested repetition, repeat counts over 1000, unknown group flags...) and for
RE2-only syntax (\\z, \\Q...\\E, \\pL, \\x{...}, [[:alpha:]], (?<name>...), (?U)), which is rewritten into an
equivalent Python form; then `re.compile` checks what is left (brackets, ranges, nothing-to-repeat).
"""

from __future__ import annotations

import re
import warnings

_POSIX = {"alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct", "space",
          "upper", "word", "xdigit"}
_PERL = set("dDsSwW")
_ASSERT = set("bBAz")
_SIMPLE_ESC = set("afnrtv")
_REPEAT = re.compile(r"\{(\d+)(,(\d*))?\}")


def check(pattern: str) -> str | None:
    """None if Go's regexp.Compile accepts the pattern, else a short reason like Go's."""
    try:
        py = _translate(pattern)
    except ValueError as err:
        return f"error parsing regexp: {err}: `{pattern}`"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            re.compile(py)
    except re.error as err:
        return f"error parsing regexp: {_go_words(err.msg)}: `{pattern}`"
    except (OverflowError, RecursionError):
        return f"error parsing regexp: expression too large: `{pattern}`"
    return None


def _go_words(msg: str) -> str:
    if "missing ), unterminated subpattern" in msg:
        return "missing closing )"
    if "unterminated character set" in msg:
        return "missing closing ]"
    if "unbalanced parenthesis" in msg:
        return "unexpected )"
    if "nothing to repeat" in msg or "multiple repeat" in msg:
        return "missing argument to repetition operator"
    if "bad character range" in msg:
        return "invalid character class range"
    return msg


def _escape_at(p: str, i: int, in_class: bool) -> tuple[str, int]:
    """Translate the escape starting at p[i] == '\\'; returns (python text, next index)."""
    if i + 1 >= len(p):
        raise ValueError("trailing backslash at end of expression")
    c = p[i + 1]
    if c in _PERL or c in _SIMPLE_ESC:
        return p[i:i + 2], i + 2
    if c in _ASSERT and not in_class:
        return ("\\Z" if c == "z" else p[i:i + 2]), i + 2
    if c == "x":
        if i + 2 < len(p) and p[i + 2] == "{":
            end = p.find("}", i + 3)
            digits = p[i + 3:end] if end > 0 else ""
            if end < 0 or not digits or not all(ch in "0123456789abcdefABCDEF" for ch in digits) \
                    or int(digits, 16) > 0x10FFFF:
                raise ValueError("invalid escape sequence")
            return "a", end + 1
        digits = p[i + 2:i + 4]
        if len(digits) != 2 or not all(ch in "0123456789abcdefABCDEF" for ch in digits):
            raise ValueError("invalid escape sequence")
        return p[i:i + 4], i + 4
    if c in "pP":
        if i + 2 < len(p) and p[i + 2] == "{":
            end = p.find("}", i + 3)
            if end < 0 or end == i + 3:
                raise ValueError("invalid character class range")
            return ("a" if in_class else "\\w"), end + 1
        if i + 2 >= len(p):
            raise ValueError("invalid character class range")
        return ("a" if in_class else "\\w"), i + 3
    if c in "01234567":
        j = i + 1
        while j < len(p) and j < i + 4 and p[j] in "01234567":
            j += 1
        if c != "0" and j == i + 2:
            raise ValueError("invalid escape sequence")  # \1: a backreference, which RE2 lacks
        return ("\\0" + p[i + 1:j] if c != "0" else p[i:j]), j
    if c.isascii() and c.isalnum():
        raise ValueError("invalid escape sequence")
    if c == "Q" and not in_class:
        raise ValueError("invalid escape sequence")
    return "\\" + c if c.isascii() else c, i + 2


def _translate(p: str) -> str:
    out = []
    i = 0
    n = len(p)
    last_repeat = False  # the previous item was a repetition operator (for RE2's nested-repetition error)
    while i < n:
        c = p[i]
        if c == "\\":
            if p.startswith("\\Q", i):
                end = p.find("\\E", i + 2)
                lit = p[i + 2:] if end < 0 else p[i + 2:end]
                out.append(re.escape(lit) if lit else "")
                i = n if end < 0 else end + 2
                last_repeat = False
                continue
            text, i = _escape_at(p, i, in_class=False)
            out.append(text)
            last_repeat = False
            continue
        if c == "[":
            text, i = _char_class(p, i)
            out.append(text)
            last_repeat = False
            continue
        if c == "(":
            text, i = _group_open(p, i)
            out.append(text)
            last_repeat = False
            continue
        if c in "*+?":
            if last_repeat:
                raise ValueError(f"invalid nested repetition operator: `{p[i - 1:i + 1]}`")
            out.append(c)
            i += 1
            if i < n and p[i] == "?":
                out.append("?")
                i += 1
            last_repeat = True
            continue
        if c == "{":
            m = _REPEAT.match(p, i)
            if m:
                lo = int(m.group(1))
                hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
                if lo > 1000 or (hi is not None and (hi > 1000 or hi < lo)):
                    raise ValueError(f"invalid repeat count: `{m.group(0)}`")
                if last_repeat:
                    raise ValueError(f"invalid nested repetition operator: `{m.group(0)}`")
                out.append(m.group(0))
                i = m.end()
                if i < n and p[i] == "?":
                    out.append("?")
                    i += 1
                last_repeat = True
                continue
            out.append("\\{")  # RE2 reads a brace that is not a repeat count literally
            i += 1
            last_repeat = False
            continue
        if c == "}":
            out.append("\\}")
            i += 1
            last_repeat = False
            continue
        if c == "#" or c == " ":
            out.append("\\" + c)  # literal in RE2, even if a Python flag (?x) were around
            i += 1
            last_repeat = False
            continue
        out.append(c)
        i += 1
        last_repeat = False
    return "".join(out)


def _group_open(p: str, i: int) -> tuple[str, int]:
    if not p.startswith("(?", i):
        return "(", i + 1
    j = i + 2
    if p.startswith("P<", j) or p.startswith("<", j):
        start = j + (2 if p[j] == "P" else 1)
        end = p.find(">", start)
        name = p[start:end] if end > 0 else ""
        if end < 0 or not name or not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise ValueError(f"invalid named capture: `{p[i:end + 1 if end > 0 else len(p)]}`")
        return f"(?P<{name}>", end + 1
    m = re.match(r"([imsU]*)(-([imsU]*))?([:)])", p[j:])
    if not m or (m.group(2) is not None and not m.group(3)):
        raise ValueError(f"invalid or unsupported Perl syntax: `{p[i:j + 1]}`")
    flags_on = m.group(1).replace("U", "")
    flags_off = (m.group(3) or "").replace("U", "")
    close = m.group(4)
    end = j + m.end()
    if close == ")":
        if not m.group(1) and not m.group(3):
            raise ValueError("missing argument to repetition operator")
        # a bare flag group applies to the rest of the group in RE2; keep it local in Python
        return (f"(?{flags_on}{'-' + flags_off if flags_off else ''}:)" if (flags_on or flags_off) else ""), end
    if flags_on or flags_off:
        return f"(?{flags_on}{'-' + flags_off if flags_off else ''}:", end
    return "(?:", end


def _char_class(p: str, i: int) -> tuple[str, int]:
    out = ["["]
    j = i + 1
    if j < len(p) and p[j] == "^":
        out.append("^")
        j += 1
    first = True
    while j < len(p):
        c = p[j]
        if c == "]" and not first:
            out.append("]")
            return "".join(out), j + 1
        first = False
        if c == "[" and p.startswith("[:", j):
            end = p.find(":]", j + 2)
            if end > 0:
                name = p[j + 2:end].lstrip("^")
                if name not in _POSIX:
                    raise ValueError(f"invalid character class range: `{p[j:end + 2]}`")
                out.append("a-z")
                j = end + 2
                continue
        if c == "\\":
            text, j = _escape_at(p, j, in_class=True)
            out.append(text)
            continue
        if c in "[&~|":
            out.append("\\" + c)  # literal in RE2; set operations or nested sets in Python
            j += 1
            continue
        out.append(c)
        j += 1
    raise ValueError(f"missing closing ]: `{p[i:]}`")
