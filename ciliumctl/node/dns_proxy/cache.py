"""The node's DNS cache: the addresses the DNS proxy saw in allowed answers, per endpoint and name, with their
expiry; what toFQDNs selects (reconcile hands `learned_ips()` to resolve).

As Cilium's pkg/fqdn/cache.go: an address expires at lookup time + max(record TTL, --tofqdns-min-ttl); a later
answer with the same address moves its expiry on. An expired address stays for --tofqdns-idle-connection-grace-
period more (Cilium keeps it while connections to it live, plus the grace; this node does not look at
connections: the grace alone). Persisted in `<state>/fqdn-cache.json` (atomic writes under a file lock), so a
restarted agent restores what was learned and allowed connections keep working.

Two writers: the agent, which keeps the cache in memory and saves it within a second of a lookup, and `fqdn cache
clean` in another process. A clean is recorded in the file (`cleaned`: when, which names, which endpoint), so the
agent, finding the file changed under it, merges (`merge_file`) instead of overwriting: what it learned and did
not save yet stays, unless a later clean covers it. An address the agent programs before its next save is
appended to `<state>/fqdn-cache.json.journal` first (`append`: a line, no rewrite of the whole file), which every
load reads too, so a reconcile in the meantime (any process) keeps it; a save folds the journal in and removes it.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ciliumctl.base import paths, statefile
from ciliumctl.base.errors import EnvironmentProblem

FILE_VERSION = 1
# Cilium 1.19's defaults (pkg/defaults: ToFQDNsMinTTL 0 = the record's TTL; ToFQDNsIdleConnectionGracePeriod 0)
DEFAULT_MIN_TTL = 0
DEFAULT_GRACE = 0.0
# how long a clean's record stays in the file: the agent merges within a second or two; an entry it holds unsaved
# from before the oldest record kept is dropped at its merge (fail closed: learned again at the next lookup)
CLEAN_KEEP = 600.0


def cache_path() -> Path:
    return paths.state_dir() / "fqdn-cache.json"


@dataclass
class Entry:
    endpoint: int
    name: str            # FQDN form: lower case, trailing dot
    ip: str
    ttl: int             # as the answer gave it
    lookup: float        # wall clock (epoch seconds) of the answer
    expires: float       # lookup + max(ttl, min_ttl)
    until: float         # expires + the grace period: when it leaves the ipcache
    source: str = "lookup"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Clean:
    """One `fqdn cache clean`: entries looked up before `time` that match went."""

    time: float
    pattern: str | None = None
    endpoint: int | None = None

    def matches(self, e: Entry) -> bool:
        from ciliumctl.policy.fqdn import NameMatch

        return ((self.endpoint is None or e.endpoint == self.endpoint)
                and (self.pattern is None or NameMatch(pattern=self.pattern).matches(e.name)))

    def covers(self, e: Entry) -> bool:
        """The entry was looked up before the clean and matches it: the clean removed it."""
        return e.lookup <= self.time and self.matches(e)


class FQDNCache:
    """The entries in memory; load()/save() with the file. Edit under `locked()`."""

    def __init__(self, path: Path | None = None, min_ttl: int = DEFAULT_MIN_TTL, grace: float = DEFAULT_GRACE):
        self.path = path or cache_path()
        self.min_ttl = min_ttl
        self.grace = grace
        self.entries: dict[tuple[int, str, str], Entry] = {}
        self._names: dict[str, dict[str, int]] = {}     # ip -> name -> entries (endpoints) holding it
        self.cleaned: list[Clean] = []                  # the cleans of the last CLEAN_KEEP seconds
        self.pruned_before = 0.0                        # the records of cleans up to then are gone

    def _put(self, e: Entry) -> None:
        key = (e.endpoint, e.name, e.ip)
        if key not in self.entries:
            names = self._names.setdefault(e.ip, {})
            names[e.name] = names.get(e.name, 0) + 1
        self.entries[key] = e

    def _drop(self, e: Entry) -> None:
        del self.entries[(e.endpoint, e.name, e.ip)]
        names = self._names[e.ip]
        names[e.name] -= 1
        if not names[e.name]:
            del names[e.name]
            if not names:
                del self._names[e.ip]

    def locked(self):
        return statefile.locked(self.path.with_name(self.path.name + ".lock"))

    @property
    def journal_path(self) -> Path:
        return self.path.with_name(self.path.name + ".journal")

    def load(self) -> FQDNCache:
        data = statefile.read_json(self.path, default=None)
        self.entries, self._names, self.cleaned, self.pruned_before = {}, {}, [], 0.0
        if data is not None:
            try:
                for row in data["entries"]:
                    self._put(_entry(row))
                self.cleaned = [Clean(float(c["time"]), c.get("pattern"), c.get("endpoint"))
                                for c in data.get("cleaned", ())]
                self.pruned_before = float(data.get("pruned_before", 0.0))
            except (KeyError, TypeError, ValueError, AttributeError):
                raise EnvironmentProblem(f"{self.path}: not a DNS cache; remove it (learned names are learned "
                                         "again at the next lookups)") from None
        self._read_journal()
        return self

    def _read_journal(self) -> None:
        """The entries appended since the last save, as merge_file takes them (a clean recorded since covers
        them; of an entry in both, the later expiry); a line torn by a crash is skipped."""
        try:
            lines = self.journal_path.read_text().splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                e = _entry(json.loads(line))
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
            self._merge_entry(e)

    def _merge_entry(self, e: Entry) -> None:
        disk = self.entries.get((e.endpoint, e.name, e.ip))
        if disk is None:
            if e.lookup > self.pruned_before and not any(c.covers(e) for c in self.cleaned):
                self._put(e)
        elif disk.expires < e.expires:
            self._put(e)

    def append(self, entries: list[Entry]) -> None:
        """Entries into the journal, for loads before the next save (under locked()). No fsync: the maps they
        are programmed into do not outlive the machine either."""
        if entries:
            with self.journal_path.open("a") as fh:
                fh.write("".join(json.dumps(e.to_dict(), separators=(",", ":")) + "\n" for e in entries))

    def save(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        kept = [c for c in self.cleaned if c.time > now - CLEAN_KEEP]
        self.pruned_before = max([self.pruned_before, *(c.time for c in self.cleaned if c not in kept)])
        self.cleaned = kept
        statefile.write_json(self.path, {
            "version": FILE_VERSION,
            "entries": [e.to_dict() for e in sorted(self.entries.values(), key=lambda e: (e.name, e.endpoint, e.ip))],
            "cleaned": [asdict(c) for c in self.cleaned], "pruned_before": self.pruned_before})
        with contextlib.suppress(FileNotFoundError):
            self.journal_path.unlink()          # folded in (a crash before this: its lines load the same again)

    def merge_file(self) -> FQDNCache:
        """Read the file another process changed and keep what only this cache holds (learned, not saved yet)
        unless a clean recorded there covers it; of an entry in both, the later expiry. Under locked()."""
        mine = list(self.entries.values())
        self.load()
        for e in mine:
            self._merge_entry(e)
        return self

    # ---- changes

    def add(self, endpoint: int, names: list[str], ips: list[tuple[str, int]], now: float | None = None) -> bool:
        """An allowed answer: every address (with its TTL) under every name of it (the question and its CNAMEs).
        True when an address is new for a name (what toFQDNs selects changed), False when only expiries moved."""
        now = time.time() if now is None else now
        new = False
        for name in names:
            for ip, ttl in ips:
                if self.is_new(name, ip):
                    new = True
                expires = now + max(int(ttl), self.min_ttl)
                old = self.entries.get((endpoint, name, ip))
                if old is None or old.expires < expires:
                    self._put(Entry(endpoint, name, ip, int(ttl), now, expires, expires + self.grace))
        return new

    def expire(self, now: float | None = None) -> list[Entry]:
        """Remove what is past its expiry and the grace period; the removed entries."""
        now = time.time() if now is None else now
        gone = [e for e in self.entries.values() if e.until <= now]
        for e in gone:
            self._drop(e)
        return gone

    def clean(self, name_glob: str | None = None, endpoint: int | None = None,
              now: float | None = None) -> list[Entry]:
        """Remove entries (all, or those whose name matches a matchPattern-style glob / of one endpoint), and
        record the clean (saved with the file), so an agent holding such entries unsaved drops them too."""
        record = Clean(time.time() if now is None else now, name_glob or None, endpoint)
        gone = [e for e in self.entries.values() if record.matches(e)]
        for e in gone:
            self._drop(e)
        self.cleaned.append(record)
        return gone

    # ---- views

    def live(self, now: float | None = None) -> list[Entry]:
        now = time.time() if now is None else now
        return [e for e in self.entries.values() if e.until > now]

    def live_ips(self, now: float | None = None) -> dict[str, set[str]]:
        """address -> the names it was learned for (what resolve's fqdn_ips takes)."""
        out: dict[str, set[str]] = {}
        for e in self.live(now):
            out.setdefault(e.ip, set()).add(e.name)
        return out

    def is_new(self, name: str, ip: str) -> bool:
        """The address is not (yet) held under this name: add() would return True."""
        return name not in self._names.get(ip, ())

    def names_of(self, ip: str) -> set[str]:
        """The names the cache holds the address under (expired ones too until expire() removes them)."""
        return set(self._names.get(ip, ()))

    def next_expiry(self) -> float | None:
        return min((e.until for e in self.entries.values()), default=None)


def _entry(row: dict) -> Entry:
    return Entry(int(row["endpoint"]), str(row["name"]), str(row["ip"]), int(row["ttl"]), float(row["lookup"]),
                 float(row["expires"]), float(row["until"]), str(row.get("source", "lookup")))


def learned_ips() -> dict[str, set[str]]:
    """What the node's DNS cache holds now (reconcile's input for toFQDNs)."""
    cache = FQDNCache()
    if not cache.path.exists() and not cache.journal_path.exists():
        return {}          # nothing learned yet: no lock file on every reconcile
    with cache.locked():
        cache.load()
    return cache.live_ips()
