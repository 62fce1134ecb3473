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

# \p{Name} names Go's regexp/syntax knows (Go 1.25+: looked up ignoring case, spaces, '_' and '-'): the general
# categories and their long aliases (unicode.Categories, unicode.CategoryAliases), the scripts of Unicode 16
# (unicode.Scripts, full names only) and Any, ASCII, Assigned.
_CATEGORIES = """C Other Cc Control cntrl Cf Format Cn Unassigned Co Private_Use Cs Surrogate L Letter LC Cased_Letter
Ll Lowercase_Letter Lm Modifier_Letter Lo Other_Letter Lt Titlecase_Letter Lu Uppercase_Letter M Mark Combining_Mark
Mc Spacing_Mark Me Enclosing_Mark Mn Nonspacing_Mark N Number Nd Decimal_Number digit Nl Letter_Number No Other_Number
P Punctuation punct Pc Connector_Punctuation Pd Dash_Punctuation Pe Close_Punctuation Pf Final_Punctuation
Pi Initial_Punctuation Po Other_Punctuation Ps Open_Punctuation S Symbol Sc Currency_Symbol Sk Modifier_Symbol
Sm Math_Symbol So Other_Symbol Z Separator Zl Line_Separator Zp Paragraph_Separator Zs Space_Separator
Any ASCII Assigned"""
_SCRIPTS = """Adlam Ahom Anatolian_Hieroglyphs Arabic Armenian Avestan Balinese Bamum Bassa_Vah Batak Bengali Bhaiksuki
Bopomofo Brahmi Braille Buginese Buhid Canadian_Aboriginal Carian Caucasian_Albanian Chakma Cham Cherokee Chorasmian
Common Coptic Cuneiform Cypriot Cypro_Minoan Cyrillic Deseret Devanagari Dives_Akuru Dogra Duployan
Egyptian_Hieroglyphs Elbasan Elymaic Ethiopic Garay Georgian Glagolitic Gothic Grantha Greek Gujarati Gunjala_Gondi
Gurmukhi Gurung_Khema Han Hangul Hanifi_Rohingya Hanunoo Hatran Hebrew Hiragana Imperial_Aramaic Inherited
Inscriptional_Pahlavi Inscriptional_Parthian Javanese Kaithi Kannada Katakana Kawi Kayah_Li Kharoshthi
Khitan_Small_Script Khmer Khojki Khudawadi Kirat_Rai Lao Latin Lepcha Limbu Linear_A Linear_B Lisu Lycian Lydian
Mahajani Makasar Malayalam Mandaic Manichaean Marchen Masaram_Gondi Medefaidrin Meetei_Mayek Mende_Kikakui
Meroitic_Cursive Meroitic_Hieroglyphs Miao Modi Mongolian Mro Multani Myanmar Nabataean Nag_Mundari Nandinagari
New_Tai_Lue Newa Nko Nushu Nyiakeng_Puachue_Hmong Ogham Ol_Chiki Ol_Onal Old_Hungarian Old_Italic Old_North_Arabian
Old_Permic Old_Persian Old_Sogdian Old_South_Arabian Old_Turkic Old_Uyghur Oriya Osage Osmanya Pahawh_Hmong
Palmyrene Pau_Cin_Hau Phags_Pa Phoenician Psalter_Pahlavi Rejang Runic Samaritan Saurashtra Sharada Shavian
Siddham SignWriting Sinhala Sogdian Sora_Sompeng Soyombo Sundanese Sunuwar Syloti_Nagri Syriac Tagalog Tagbanwa
Tai_Le Tai_Tham Tai_Viet Takri Tamil Tangsa Tangut Telugu Thaana Thai Tibetan Tifinagh Tirhuta Todhri Toto
Tulu_Tigalari Ugaritic Vai Vithkuqi Wancho Warang_Citi Yezidi Yi Zanabazar_Square"""


def _loose(name: str) -> str:
    return "".join(c for c in name.lower() if c not in " _-")


_UNICODE_NAMES = frozenset(_loose(n) for n in (_CATEGORIES + " " + _SCRIPTS).split())


def _unicode_class(name: str) -> None:
    """regexp/syntax's unicodeTable: an unknown \\p name is an invalid character class range."""
    if name.startswith("^"):
        name = name[1:]
    if not name or _loose(name) not in _UNICODE_NAMES:
        raise ValueError("invalid character class range")


def fullmatch(pattern: str, value: str) -> bool:
    """Whether the RE2 pattern matches the whole value (as Envoy's safe_regex and HAProxy's anchored ACLs)."""
    return re.fullmatch(_translate(pattern), value) is not None


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
            if end < 0:
                raise ValueError("invalid character class range")
            _unicode_class(p[i + 3:end])
            return ("a" if in_class else "\\w"), end + 1
        if i + 2 >= len(p):
            raise ValueError("invalid character class range")
        _unicode_class(p[i + 2])
        return ("a" if in_class else "\\w"), i + 3
    if c in "01234567":
        j = i + 1
        while j < len(p) and j < i + 4 and p[j] in "01234567":
            j += 1
        if c != "0" and j == i + 2:
            raise ValueError("invalid escape sequence")  # \1: a backreference, which RE2 lacks
        return ("\\0" + p[i + 1:j] if c != "0" else p[i:j]), j
    if not c.isascii() or c.isalnum():
        raise ValueError("invalid escape sequence")  # Go escapes only ASCII punctuation
    if c == "Q" and not in_class:
        raise ValueError("invalid escape sequence")
    return "\\" + c if c.isascii() else c, i + 2


def _repeat_ok(chains) -> bool:
    """regexp/syntax's repeatIsValid(re, 1000): along every path of nested {n,m} counts, each count fits what
    is left of 1000 after dividing by the counts outside it."""
    for chain in chains:
        n = 1000
        for m in chain:
            if m > n:
                return False
            n //= m
    return True


class _Frame:
    """One group level: the repeat-count chains of everything in it, and the operand a repetition would take."""

    def __init__(self):
        self.chains: list = []
        self.last = None      # chains of the last operand; None when there is none (start, after | or (?i))

    def add(self, chains: list) -> None:
        self.chains.extend(chains)
        self.last = chains


def _translate(p: str) -> str:
    out = []
    i = 0
    n = len(p)
    last_repeat = False  # the previous item was a repetition operator (for RE2's nested-repetition error)
    frames = [_Frame()]
    while i < n:
        c = p[i]
        frame = frames[-1]
        if c in "*+?" or (c == "{" and _REPEAT.match(p, i)):
            m = _REPEAT.match(p, i) if c == "{" else None
            text = m.group(0) if m else c
            if last_repeat:
                raise ValueError(f"invalid nested repetition operator: `{p[i - 1:i + 1]}`")
            if frame.last is None:
                raise ValueError(f"missing argument to repetition operator: `{text}`")
            if m:
                lo = int(m.group(1))
                hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else -1)
                if lo > 1000 or hi > 1000 or (hi != -1 and hi < lo):
                    raise ValueError(f"invalid repeat count: `{text}`")
                count = hi if hi >= 0 else lo
                chains = [] if count == 0 else [(count,) + chain for chain in frame.last] + [(count,)]
                if (lo >= 2 or hi >= 2) and not _repeat_ok(chains):
                    raise ValueError(f"invalid repeat count: `{text}`")
                frame.chains.extend(chains)
                frame.last = chains
            out.append(text)
            i += len(text)
            if i < n and p[i] == "?":
                out.append("?")
                i += 1
            last_repeat = True
            continue
        last_repeat = False
        if c == "\\":
            if p.startswith("\\Q", i):
                end = p.find("\\E", i + 2)
                lit = p[i + 2:] if end < 0 else p[i + 2:end]
                if lit:
                    out.append("(?:" + re.escape(lit[:-1]) + ")" if len(lit) > 1 else "")
                    out.append(re.escape(lit[-1]))
                    frame.add([])
                i = n if end < 0 else end + 2
                continue
            text, i = _escape_at(p, i, in_class=False)
            out.append(f"(?:{text})" if text in ("\\b", "\\B", "\\A", "\\Z") else text)
            frame.add([])
            continue
        if c == "[":
            text, i = _char_class(p, i)
            out.append(text)
            frame.add([])
            continue
        if c == "(":
            text, i, opens = _group_open(p, i)
            out.append(text)
            if opens:
                frames.append(_Frame())
            else:
                frame.last = None  # a flag group like (?i) is no operand
            continue
        if c == ")":
            if len(frames) > 1:
                inner = frames.pop()
                frames[-1].add(inner.chains)
            out.append(")")
            i += 1
            continue
        if c == "|":
            frame.last = None
            out.append("|")
            i += 1
            continue
        if c in "^$":
            out.append(f"(?:{c})")  # RE2 lets an empty-width assertion be repeated; Python wants a group
            frame.add([])
            i += 1
            continue
        if c in "{}#  ":
            out.append("\\" + c)  # literal in RE2: a brace that is no repeat count; # and space even under (?x)
        else:
            out.append(c)
        frame.add([])
        i += 1
    return "".join(out)


def _group_open(p: str, i: int) -> tuple[str, int, bool]:
    """Python text for the group opening at p[i], the next index, and whether it opens a group (a bare flag
    group like (?i) does not)."""
    if not p.startswith("(?", i):
        return "(", i + 1, True
    j = i + 2
    if p.startswith("P<", j) or p.startswith("<", j):
        start = j + (2 if p[j] == "P" else 1)
        end = p.find(">", start)
        name = p[start:end] if end > 0 else ""
        if end < 0 or not name or not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise ValueError(f"invalid named capture: `{p[i:end + 1 if end > 0 else len(p)]}`")
        return "(", end + 1, True  # RE2 allows a name twice; Python would not, and names change no verdict
    m = re.match(r"([imsU]*)(-([imsU]*))?([:)])", p[j:])
    if not m or (m.group(2) is not None and not m.group(3)):
        raise ValueError(f"invalid or unsupported Perl syntax: `{p[i:j + 1]}`")
    end = j + m.end()
    if m.group(4) == ")":
        return "", end, False  # flags for the rest of the group: they change no verdict
    return "(?:", end, True


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
                if p[j:j + 1] == "-":
                    out.append("\\-")
                    j += 1
                continue
        if c == "\\":
            is_class = p[j + 1:j + 2] in ("d", "D", "s", "S", "w", "W", "p", "P")
            text, j = _escape_at(p, j, in_class=True)
            out.append(text)
            if is_class and p[j:j + 1] == "-":
                out.append("\\-")  # after a class like \d a dash starts no range in RE2
                j += 1
            continue
        if c in "[&~|":
            out.append("\\" + c)  # literal in RE2; set operations or nested sets in Python
            j += 1
            continue
        out.append(c)
        j += 1
    raise ValueError(f"missing closing ]: `{p[i:]}`")
