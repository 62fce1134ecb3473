"""A plain reader of the pinned events ring buffer (bpf_obj_get + mmap), no BCC. Used by tests and simple tools;
the agent has its own batch reader. Layout: kernel/bpf/ringbuf.c (consumer page, producer page, data twice)."""

from __future__ import annotations

import ctypes
import mmap
import os
import struct

from ciliumctl.datapath import bpfsys
from ciliumctl.datapath.events import EVENT_SIZE, Event, decode

_BUSY = 1 << 31
_DISCARD = 1 << 30
_HDR = 8


class RingReader:
    def __init__(self, pin_path: str | os.PathLike):
        self.fd = bpfsys.obj_get(pin_path)
        info = bpfsys.map_info(self.fd)
        self.size = info.max_entries          # data area bytes, a power of two
        page = mmap.PAGESIZE
        self._cons = mmap.mmap(self.fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod = mmap.mmap(self.fd, page + 2 * self.size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._page = page

    def close(self) -> None:
        self._cons.close()
        self._prod.close()
        os.close(self.fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def read_raw(self) -> list[bytes]:
        """All committed records since the last read."""
        out = []
        cons = struct.unpack_from("<Q", self._cons, 0)[0]
        prod = struct.unpack_from("<Q", self._prod, 0)[0]
        mask = self.size - 1
        while cons < prod:
            off = self._page + (cons & mask)
            hdr = struct.unpack_from("<I", self._prod, off)[0]
            if hdr & _BUSY:
                break
            length = hdr & ~(_BUSY | _DISCARD)
            if not hdr & _DISCARD:
                out.append(bytes(self._prod[off + _HDR:off + _HDR + length]))
            cons += (length + _HDR + 7) & ~7
        # One aligned 8-byte store: struct.pack_into zero-fills first, and the kernel would briefly see
        # consumer position 0 (ring full) and drop events.
        ctypes.c_uint64.from_buffer(self._cons).value = cons
        return out

    def read(self) -> list[Event]:
        return [decode(r) for r in self.read_raw() if len(r) >= EVENT_SIZE]

    def drain(self) -> None:
        self.read_raw()
