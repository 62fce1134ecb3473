"""A small BPF program of the flow tests' own that writes struct ctl_event records into a ring buffer exactly as
the datapath does (reserve, fill, submit; a failed reserve counts in a per-CPU events_lost array), driven with
BPF_PROG_TEST_RUN so a test or benchmark chooses how many events and when. Its maps are pinned under a test's
bpffs directory as `events` and `events_lost`, where the agent looks for the datapath's.

The record is a template (a BPF array the test fills from Python); the program stamps ts_ns and writes a running
sequence number into `packets`, so a reader can check order and completeness."""

from __future__ import annotations

import ctypes
import os
import platform
import time

from ciliumctl.flows.records import RECORD, pack_record

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)
BPF_OBJ_PIN = 6
BPF_PROG_TEST_RUN = 10

SOURCE = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include "lib/events.h"

BPF_RINGBUF_OUTPUT(events, RING_PAGES);
BPF_PERCPU_ARRAY(events_lost, u64, 1);
BPF_ARRAY(tmpl, struct ctl_event, 1);
BPF_ARRAY(seqno, u64, 1);

int emit_event(struct __sk_buff *skb)
{
	u32 zero = 0;
	struct ctl_event *t = tmpl.lookup(&zero);
	u64 *seq = seqno.lookup(&zero);
	if (!t || !seq)
		return TC_ACT_OK;
	u64 n = __sync_fetch_and_add(seq, 1);
	struct ctl_event *e = events.ringbuf_reserve(sizeof(struct ctl_event));
	if (!e) {
		u64 *lost = events_lost.lookup(&zero);
		if (lost)
			*lost += 1;
		return TC_ACT_OK;
	}
	__builtin_memcpy(e, t, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->packets = (u32)n;
	events.ringbuf_submit(e, 0);
	return TC_ACT_OK;
}
"""


class _TestRunAttr(ctypes.Structure):
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32), ("data_size_in", ctypes.c_uint32),
                ("data_size_out", ctypes.c_uint32), ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32), ("ctx_size_in", ctypes.c_uint32),
                ("ctx_size_out", ctypes.c_uint32), ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32),
                ("pad", ctypes.c_uint32)]


class _PinAttr(ctypes.Structure):
    _fields_ = [("pathname", ctypes.c_uint64), ("bpf_fd", ctypes.c_uint32), ("file_flags", ctypes.c_uint32)]


def _bpf(cmd, attr):
    ret = _libc.syscall(_SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def pin(fd: int, path) -> None:
    buf = ctypes.create_string_buffer(os.fsencode(path))
    _bpf(BPF_OBJ_PIN, _PinAttr(pathname=ctypes.addressof(buf), bpf_fd=fd))


class Emitter:
    def __init__(self, pin_dir, ring_pages: int = 1024):
        from bcc import BPF

        from ciliumctl.base import paths

        self.bpf = BPF(text=SOURCE.encode(), cflags=[f"-DRING_PAGES={ring_pages}", f"-I{paths.bpf_src_dir()}",
                                            "-Wno-macro-redefined"])
        self.fn = self.bpf.load_func(b"emit_event", BPF.SCHED_CLS)
        os.makedirs(pin_dir, exist_ok=True)
        self.pins = [os.path.join(pin_dir, "events"), os.path.join(pin_dir, "events_lost")]
        pin(self.bpf[b"events"].map_fd, self.pins[0])
        pin(self.bpf[b"events_lost"].map_fd, self.pins[1])
        self._pkt = ctypes.create_string_buffer(b"\0" * 64)
        self.set_template()

    def set_template(self, **fields) -> None:
        """Fields as ciliumctl.flows.records.pack_record takes them."""
        raw = pack_record(**fields)[8:]  # without the ring header
        t = self.bpf[b"tmpl"]
        t[ctypes.c_int(0)] = t.Leaf.from_buffer_copy(raw)

    def emit(self, n: int) -> None:
        """Run the program n times (n events, or lost counts if the ring is full)."""
        while n > 0:
            rep = min(n, 1 << 20)
            attr = _TestRunAttr(prog_fd=self.fn.fd, data_size_in=64, data_in=ctypes.addressof(self._pkt),
                                repeat=rep)
            _bpf(BPF_PROG_TEST_RUN, attr)
            n -= rep

    def emitted(self) -> int:
        return int(self.bpf[b"seqno"][ctypes.c_int(0)].value)

    def lost(self) -> int:
        return sum(int(v) for v in self.bpf[b"events_lost"][ctypes.c_int(0)])

    def close(self) -> None:
        for p in self.pins:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        self.bpf.cleanup()


def emit_at_rate(emitter: Emitter, rate: float, seconds: float, burst: int = 256) -> int:
    """Emit about rate events/s for seconds, in bursts; returns events offered."""
    offered = 0
    start = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return offered
        due = int(rate * elapsed) - offered
        if due <= 0:
            time.sleep(min(0.001, burst / rate))
            continue
        k = min(due, burst * 8)
        emitter.emit(k)
        offered += k


__all__ = ["Emitter", "emit_at_rate", "RECORD"]
