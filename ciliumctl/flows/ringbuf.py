"""Reading the datapath's pinned BPF ring buffer directly: bpf_obj_get on the pin, mmap of the consumer page
(read-write), producer page and data pages (read-only, data mapped twice so a wrapping run of records is one
contiguous span), epoll on the map fd for wake-ups, and batch decoding: a run of regular records is validated
with one strided compare of the headers and copied out with one memcpy, never one Python call per event.

Also reads the per-CPU lost-events counter the datapath increments when a reserve fails."""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import select
import struct

from ciliumctl.errors import EnvironmentProblem
from ciliumctl.flows.records import HDR_SIZE, RECORD_SIZE, RINGBUF_BUSY, RINGBUF_DISCARD

_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)
_BPF_MAP_LOOKUP_ELEM = 1
_BPF_OBJ_GET = 7
_BPF_OBJ_GET_INFO_BY_FD = 15
BPF_MAP_TYPE_RINGBUF = 27
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_U64 = struct.Struct("<Q")
# The positions shared with the kernel must be read and written as single 8-byte accesses. struct's "<Q" reads
# byte by byte, and every struct.pack_into zero-fills the target before writing: for a moment the kernel would see
# consumer_pos == 0, take the ring for full and drop events. Reads use native "Q" (one memcpy, one aligned 64-bit
# load); the consumer position is written through a ctypes c_uint64 laid over the mapped page (one store).
_POS = struct.Struct("Q")


class _ObjAttr(ctypes.Structure):
    _fields_ = [("pathname", ctypes.c_uint64), ("bpf_fd", ctypes.c_uint32), ("file_flags", ctypes.c_uint32)]


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


class _ElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("key", ctypes.c_uint64),
                ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _MapInfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32),
                ("name", ctypes.c_char * 16), ("rest", ctypes.c_uint8 * 128)]


def _bpf(cmd: int, attr) -> int:
    ret = _libc.syscall(_SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def obj_get(path: str | os.PathLike) -> int:
    buf = ctypes.create_string_buffer(os.fsencode(path))
    try:
        return _bpf(_BPF_OBJ_GET, _ObjAttr(pathname=ctypes.addressof(buf)))
    except OSError as err:
        hint = "run `ciliumctl install` first" if err.errno == 2 else "needs root and a mounted bpffs"
        raise EnvironmentProblem(f"cannot open pinned BPF object {path}: {err.strerror}; {hint}") from None


def map_info(fd: int) -> _MapInfo:
    info = _MapInfo()
    _bpf(_BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info)))
    return info


def possible_cpus() -> int:
    """Per-CPU map values hold one slot per possible CPU (not online CPU)."""
    try:
        text = open("/sys/devices/system/cpu/possible").read().strip()
    except OSError:
        return os.cpu_count() or 1
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n += (int(hi) if hi else int(lo)) - int(lo) + 1
    return n


class LostCounter:
    """The datapath's events_lost map: a per-CPU (or plain) array whose slot 0 counts failed reserves."""

    def __init__(self, pin: str | os.PathLike):
        self.fd = obj_get(pin)
        info = map_info(self.fd)
        percpu = info.type in (6, 10)  # PERCPU_ARRAY, PERCPU_HASH
        self.ncpu = possible_cpus() if percpu else 1
        self.slot = (info.value_size + 7) & ~7
        self._key = ctypes.c_uint32(0)
        self._val = ctypes.create_string_buffer(self.slot * self.ncpu)
        self._attr = _ElemAttr(map_fd=self.fd, key=ctypes.addressof(self._key), value=ctypes.addressof(self._val))

    def read(self) -> int:
        try:
            _bpf(_BPF_MAP_LOOKUP_ELEM, self._attr)
        except OSError:
            return 0
        raw = self._val.raw
        return sum(_U64.unpack_from(raw, i * self.slot)[0] for i in range(self.ncpu))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RingReader:
    """Consumer of one BPF ring buffer. read() returns raw 64-byte records, many at a time."""

    def __init__(self, pin: str | os.PathLike, max_batch_bytes: int = 1 << 20):
        self.fd = obj_get(pin)
        info = map_info(self.fd)
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

    def fileno(self) -> int:
        return self.fd

    def wait(self, timeout: float) -> bool:
        """Block until the kernel signals new data (or timeout). True if something may be there."""
        return bool(self._ep.poll(timeout))

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
        blob = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return blob, total // RECORD_SIZE

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
