"""The ring buffer reader against a real BPF program (the tests' own emitter) writing known events into a real
BPF ring buffer, pinned like the datapath's: exact records, order, wrap-around, and lost-event counting."""

import socket

import pytest

from ciliumctl.datapath.ringbuf import LostCounter, RingReader
from ciliumctl.flows.records import R_DPORT, R_PACKETS, R_SADDR, R_SPORT, R_TYPE, R_VERDICT, RECORD

pytestmark = pytest.mark.root


def records(blob, n):
    return [RECORD.unpack_from(blob, i * RECORD.size) for i in range(n)]


def test_reads_exact_events_in_order(emitter, bpffs_dir):
    emitter.set_template(type=1, subtype=133, verdict=2, proto=17, sport=5353, dport=53,
                         saddr=socket.inet_aton("10.9.0.1"))
    with RingReader(bpffs_dir / "events") as reader:
        assert reader.read() == (b"", 0)
        emitter.emit(100)
        assert reader.wait(1.0)
        blob, n = reader.read()
        assert n == 100
        recs = records(blob, n)
        assert [r[R_PACKETS] for r in recs] == list(range(100))   # the program's sequence numbers, in order
        assert {(r[R_TYPE], r[R_VERDICT], r[R_SPORT], r[R_DPORT], r[R_SADDR]) for r in recs} == {
            (1, 2, 5353, 53, socket.inet_aton("10.9.0.1"))}
        assert reader.read() == (b"", 0)          # consumed: the consumer position moved


def test_wraps_around_the_ring_many_times(emitter, bpffs_dir):
    # 64 pages = 256 KiB = 4096 records; 50 rounds of 3000 wrap it ~37 times
    with RingReader(bpffs_dir / "events") as reader:
        seen = []
        for _ in range(50):
            emitter.emit(3000)
            blob, n = reader.read()
            seen += [r[R_PACKETS] for r in records(blob, n)]
        assert seen == list(range(150_000))
        assert reader.odd_records == 0


def test_full_ring_counts_lost_events(emitter, bpffs_dir):
    with RingReader(bpffs_dir / "events") as reader, LostCounter(bpffs_dir / "events_lost") as lost:
        capacity = reader.size // RECORD.size
        emitter.emit(capacity + 500)           # nobody reads meanwhile
        blob, n = reader.read()
        assert n < capacity + 500
        assert lost.read() == capacity + 500 - n == emitter.lost()
        assert [r[R_PACKETS] for r in records(blob, n)] == list(range(n))   # the first n made it, intact
        emitter.emit(10)
        blob, n2 = reader.read()
        assert n2 == 10 and lost.read() == capacity + 500 - n


def test_a_busy_ring_is_read_a_batch_per_wakeup(emitter, bpffs_dir):
    """While events keep coming, wait() sleeps the batch interval instead of waking per event: what arrived
    meanwhile (many separate submits) is one read; an idle ring goes back to waiting for the kernel's signal."""
    with RingReader(bpffs_dir / "events", batch_interval=0.05) as reader:
        emitter.emit(1)
        assert reader.wait(1.0) and reader.read()[1] == 1
        for _ in range(20):
            emitter.emit(3)          # 20 commits, each one a wake-up for a consumer that had caught up
        assert reader.wait(1.0) and reader.wakeups == 2
        assert reader.read()[1] == 60
        assert reader.read() == (b"", 0)         # drained, as the agent drains after each wait
        assert reader.wait(1.0) and reader.read() == (b"", 0)    # one more interval after a busy one
        assert not reader.wait(0.05)             # then nothing: back to the kernel's signal
        assert reader.wakeups == 3
