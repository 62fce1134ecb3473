"""The one reader of the datapath's pinned BPF ring buffer (kernel/bpf/ringbuf.c layout), no BCC: bpf_obj_get on
the pin, mmap of the consumer page (read-write), producer page and data pages (read-only, data mapped twice so a
wrapping run of records is one contiguous span), epoll on the map fd for wake-ups, and batch reading: a run of
regular records is validated with one strided compare of the headers and copied out with one memcpy, never one
Python call per event. The agent keeps the raw batches; events() decodes them for the demo and the tests.

Also reads the per-CPU lost-events counter the datapath increments when a reserve fails."""

from __future__ import annotations

import ctypes
import mmap
import os
import select
import struct
import time

from ciliumctl.base.errors import EnvironmentProblem
from ciliumctl.datapath import bpfsys
from ciliumctl.datapath.events import EVENT_SIZE, Event, decode

# Ring buffer record header: length with the BUSY and DISCARD bits, then the page offset (kernel/bpf/ringbuf.c).
HDR_SIZE = 8
RINGBUF_BUSY = 1 << 31
RINGBUF_DISCARD = 1 << 30
RECORD_SIZE = (HDR_SIZE + EVENT_SIZE + 7) & ~7   # every datapath event record: 64 bytes
BPF_MAP_TYPE_RINGBUF = 27
_U64 = struct.Struct("<Q")
# The positions shared with the kernel must be read and written as single 8-byte accesses. struct's "<Q" reads
# byte by byte, and every struct.pack_into zero-fills the target before writing: for a moment the kernel would see
# consumer_pos == 0, take the ring for full and drop events. Reads use native "Q" (one memcpy, one aligned 64-bit
# load); the consumer position is written through a ctypes c_uint64 laid over the mapped page (one store).
_POS = struct.Struct("Q")


def open_pin(path: str | os.PathLike) -> int:
    try:
        return bpfsys.obj_get(path)
    except OSError as err:
        hint = "run `ciliumctl install` first" if err.errno == 2 else "needs root and a mounted bpffs"
        raise EnvironmentProblem(f"cannot open pinned BPF object {path}: {err.strerror}; {hint}") from None


class LostCounter:
    """The datapath's events_lost map: a per-CPU (or plain) array whose slot 0 counts failed reserves."""

    def __init__(self, pin: str | os.PathLike):
        self._map = bpfsys.Map(open_pin(pin))
        self._slot = (self._map.value_size + 7) & ~7
        self._key = bytes(self._map.key_size)

    def read(self) -> int:
        try:
            raw = self._map.lookup(self._key)
        except OSError:
            return 0
        if raw is None:
            return 0
        return sum(_U64.unpack_from(raw, off)[0] for off in range(0, len(raw), self._slot))

    def close(self) -> None:
        self._map.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RingReader:
    """Consumer of one BPF ring buffer. read() returns raw 64-byte records, many at a time."""

    def __init__(self, pin: str | os.PathLike, max_batch_bytes: int = 1 << 20, batch_interval: float = 0.02):
        self.fd = open_pin(pin)
        info = bpfsys.map_info(self.fd)
        if info.type != BPF_MAP_TYPE_RINGBUF:
            os.close(self.fd)
            raise EnvironmentProblem(f"{pin} is not a BPF ring buffer (map type {info.type})")
        self.size = info.max_entries
        self.mask = self.size - 1
        page = mmap.PAGESIZE
        self._cons_map = mmap.mmap(self.fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._cons = ctypes.c_uint64.from_buffer(self._cons_map)
        self._prod_map = mmap.mmap(self.fd, page + 2 * self.size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._data = memoryview(self._prod_map)[page:]
        self.max_batch = max(RECORD_SIZE, max_batch_bytes - max_batch_bytes % RECORD_SIZE)
        self._expected_hdrs = struct.pack("<I", RECORD_SIZE - HDR_SIZE) * (self.max_batch // RECORD_SIZE)
        self._ep = select.epoll()
        self._ep.register(self.fd, select.EPOLLIN)
        self.odd_records = 0  # records of another size or discarded (skipped)
        self.batch_interval = batch_interval
        self._found = False   # a read() since the last wait() returned records
        self.wakeups = 0      # wait() calls that returned with something to read (tests, status)

    def fileno(self) -> int:
        return self.fd

    def wait(self, timeout: float) -> bool:
        """Block until the kernel signals new data (or timeout). True if something may be there.

        While events keep coming (the last reads found some), sleep batch_interval instead: the next read then takes
        a batch, one wake-up per interval instead of one per event (the 4 MiB ring holds 65,536 records, ~0.3 s at
        200k events/s), and a wake-up the kernel skipped is not waited for (it signals a consumer only when that
        one had caught up: a record committed while the consumer position was being written rings no bell)."""
        found, self._found = self._found, False
        if found:
            time.sleep(self.batch_interval)
            self.wakeups += 1
            return True
        ready = bool(self._ep.poll(timeout))
        self.wakeups += ready
        return ready

    def pending_bytes(self) -> int:
        return _POS.unpack_from(self._prod_map, 0)[0] - self._cons.value

    def read(self) -> tuple[bytes, int]:
        """Committed regular records since the last call, as one bytes object of n*RECORD_SIZE, and n."""
        chunks = []
        total = 0
        cons = self._cons.value
        prod = _POS.unpack_from(self._prod_map, 0)[0]
        data = self._data
        while cons < prod and total < self.max_batch:
            off = cons & self.mask
            avail = min(prod - cons, self.max_batch - total)
            n = avail // RECORD_SIZE
            if n:
                # header words of n back-to-back regular records, compared in one go
                hdrs = data[off:off + n * RECORD_SIZE].cast("I")[0::RECORD_SIZE // 4].tobytes()
                expected = self._expected_hdrs[:4 * n]
                if hdrs != expected:
                    # the first irregular record ends the fast run
                    n = next(i for i in range(n) if hdrs[4 * i:4 * i + 4] != expected[4 * i:4 * i + 4])
            if n:
                chunks.append(data[off:off + n * RECORD_SIZE].tobytes())
                cons += n * RECORD_SIZE
                total += n * RECORD_SIZE
                continue
            hdr = struct.unpack_from("<I", data, off)[0]
            if hdr & RINGBUF_BUSY:
                break  # reserved, not yet committed: later records must wait too
            length = hdr & ~(RINGBUF_BUSY | RINGBUF_DISCARD)
            self.odd_records += 1
            cons += (length + HDR_SIZE + 7) & ~7
        self._cons.value = cons  # release the space to the producer (x86: stores are not reordered with loads)
        if not chunks:
            return b"", 0
        self._found = True
        blob = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return blob, total // RECORD_SIZE

    def events(self) -> list[Event]:
        """Committed events since the last call, decoded (for the demo and tests; the agent keeps raw batches)."""
        out: list[Event] = []
        while True:
            blob, n = self.read()
            if not n:
                return out
            out.extend(decode(blob, i * RECORD_SIZE + HDR_SIZE) for i in range(n))

    def drain(self) -> None:
        """Skip everything committed so far."""
        while self.read()[1]:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        try:
            self._ep.close()
            self._data.release()
            del self._cons  # the ctypes view pins the mapping
            self._cons_map.close()
            self._prod_map.close()
        finally:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
