"""The agent's flow ring: the last N events, kept as raw ring-buffer records and turned into flows only when a
client asks (so that taking events in costs a memcpy per batch, not a Python object per event).

Every entry has a sequence number; the ring holds entries [next_seq - capacity, next_seq). Entries are stored in
chunks: a run of raw records that arrived together (with the metadata snapshot current at arrival, so a flow is
enriched as the node looked when it happened), one lost-events marker, or one event of a proxy (L7: an HTTP
request and its answer, a DNS query or answer) with that snapshot and the number of flows it makes, which are
built the first time a reader walks the chunk and kept on it."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from ciliumctl.flows.meta import Snapshot
from ciliumctl.flows.records import METRIC_VIEW, RECORD, RECORD_SIZE

KIND_RECORDS = 0
KIND_LOST = 1
KIND_L7 = 2         # one event of a proxy, its flows made outside the datapath (flows.http, flows.dns)

log = logging.getLogger("ciliumctl.flows.store")

# Builds L7 flows: one at a time, so that readers who meet a chunk together get the same flows (same uuids)
_BUILDING = threading.Lock()


@dataclass(slots=True)
class Chunk:
    start: int          # sequence number of the first entry
    count: int
    kind: int
    data: bytes = b""   # KIND_RECORDS: count * RECORD_SIZE bytes
    snap: Snapshot | None = None
    lost: tuple = ()    # KIND_LOST: (source, num_events_lost, arrival wall time ns)
    event: object = None   # KIND_L7: the proxy's event, as parsed
    build: Callable | None = None   # KIND_L7: (event, snap) -> its `count` flows (flow_pb2.Flow, times set)
    built: list | None = None       # KIND_L7: those flows, once a reader asked

    def flows(self) -> list:
        """KIND_L7: the chunk's flows, built on the first call; none when they cannot be built (logged once: the
        event's flows are lost, its sequence numbers skipped, and readers go on with the rest of the ring)."""
        built = self.built
        if built is None:
            with _BUILDING:
                if self.built is None:
                    self.built = self._build()
                built = self.built
        return built

    def _build(self) -> list:
        assert self.build is not None
        try:
            flows = self.build(self.event, self.snap)
        except Exception as err:  # noqa: BLE001 - one event's flows lost, not every reader's stream
            log.warning("L7 flows of %r not made: %s", self.event, err)
            return []
        if len(flows) != self.count:    # the entries after this chunk are numbered on its count
            log.warning("L7 event %r made %d flows, stored as %d: none kept", self.event, len(flows), self.count)
            return []
        return flows


@dataclass(frozen=True)
class Entry:
    seq: int
    kind: int
    record: tuple | None = None
    snap: Snapshot | None = None
    lost: tuple = ()


class FlowStore:
    def __init__(self, capacity: int = 4095):
        if capacity < 1:
            raise ValueError("flow buffer size must be at least 1")
        self.capacity = capacity
        self._chunks: deque[Chunk] = deque()
        self._held = 0            # entries in _chunks (may exceed capacity by part of the oldest chunk)
        self.next_seq = 0
        self.seen_flows = 0
        self.lost_in_kernel = 0
        self.metric_keys: Counter = Counter()   # (len, type, subtype, verdict, direction, proto, match, svc) -> n
        self.cond = threading.Condition()
        self.started = time.time()
        self._rate_marks: deque[tuple[float, int]] = deque(maxlen=90)   # (monotonic s, seen_flows), ~1/s

    # --- writer side (the agent's reader thread) ---

    def add_records(self, blob: bytes, n: int, snap: Snapshot) -> None:
        if not n:
            return
        keys = METRIC_VIEW.iter_unpack(blob)
        with self.cond:
            self.metric_keys.update(keys)
            self._append(Chunk(self.next_seq, n, KIND_RECORDS, blob, snap))
            self._mark_rate()
            self.seen_flows += n
            self.cond.notify_all()

    def add_lost(self, source: int, num: int) -> None:
        if num <= 0:
            return
        with self.cond:
            if source == 1:
                self.lost_in_kernel += num
            self._append(Chunk(self.next_seq, 1, KIND_LOST, lost=(source, num, time.time_ns())))
            self.cond.notify_all()

    def add_l7(self, event, count: int, snap: Snapshot, build: Callable) -> None:
        """An event of a proxy that makes `count` flows: kept as it is, with the snapshot current now; build(event,
        snap) makes its flows when a reader first walks them (never, when nobody does before the ring moves on)."""
        with self.cond:
            self._append(Chunk(self.next_seq, count, KIND_L7, snap=snap, event=event, build=build))
            self._mark_rate()
            self.seen_flows += count
            self.cond.notify_all()

    def _mark_rate(self) -> None:
        now = time.monotonic()
        if not self._rate_marks or now - self._rate_marks[-1][0] >= 1.0:
            self._rate_marks.append((now, self.seen_flows))

    def flows_rate(self, window: float = 60.0) -> float:
        """Flows per second over about the last minute (what Hubble's ServerStatus reports)."""
        now = time.monotonic()
        with self.cond:
            marks = [m for m in self._rate_marks if now - m[0] <= window]
            seen = self.seen_flows
        if not marks:
            return 0.0
        t0, seen0 = marks[0]
        return (seen - seen0) / max(now - t0, 1.0)

    def _append(self, chunk: Chunk) -> None:
        self._chunks.append(chunk)
        self._held += chunk.count
        self.next_seq += chunk.count
        # drop whole chunks that fell out of the window entirely
        while self._chunks and self._held - self._chunks[0].count >= self.capacity:
            self._held -= self._chunks.popleft().count

    # --- reader side (gRPC handlers) ---

    @property
    def oldest_seq(self) -> int:
        return max(0, self.next_seq - self.capacity, self._chunks[0].start if self._chunks else self.next_seq)

    def num_entries(self) -> int:
        return self.next_seq - self.oldest_seq

    def runs(self, start: int, stop: int, reverse: bool = False) -> list[tuple[Chunk, int, int]]:
        """(chunk, lo, hi): the parts of the chunks with start <= seq < stop still in the ring, oldest first (or
        newest first with reverse). Readers that want raw records walk these instead of entries()."""
        with self.cond:
            start = max(start, self.oldest_seq)
            stop = min(stop, self.next_seq)
            chunks = [c for c in self._chunks if c.start + c.count > start and c.start < stop]
        if reverse:
            chunks.reverse()
        return [(c, max(start, c.start), min(stop, c.start + c.count)) for c in chunks]

    def entries(self, start: int, stop: int, reverse: bool = False):
        """Entries with start <= seq < stop still in the ring, oldest first (or newest first with reverse)."""
        for c, lo, hi in self.runs(start, stop, reverse):
            if c.kind == KIND_LOST:
                yield Entry(c.start, KIND_LOST, lost=c.lost)
                continue
            rng = range(hi - 1, lo - 1, -1) if reverse else range(lo, hi)
            if c.kind == KIND_L7:
                flows = c.flows()
                for seq in rng if flows else ():
                    yield Entry(seq, KIND_L7, record=(flows[seq - c.start],), snap=c.snap)
                continue
            data, snap, base = c.data, c.snap, c.start
            unpack = RECORD.unpack_from
            for seq in rng:
                yield Entry(seq, KIND_RECORDS, unpack(data, (seq - base) * RECORD_SIZE), snap)

    def wait_beyond(self, seq: int, timeout: float) -> bool:
        """Block until an entry with sequence >= seq exists (True) or timeout (False)."""
        with self.cond:
            if self.next_seq > seq:
                return True
            self.cond.wait(timeout)
            return self.next_seq > seq
