"""A pinned tc program's own run time on crafted packets, by BPF_PROG_TEST_RUN: the kernel runs the program on the
packet `repeat` times and returns the mean time of one run. The benchmarks time their programs this way and never
switch on the kernel-wide BPF run-time statistics (BPF_ENABLE_STATS has the effect of the kernel.bpf_stats_enabled
sysctl for every program on the machine). A test run has the program's side effects (conntrack entries, events,
map updates) but sends nothing: a redirect only returns TC_ACT_REDIRECT.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import struct
import subprocess
from pathlib import Path

TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT = 0, 2, 7     # include/uapi/linux/pkt_cls.h
TCP_SYN, TCP_ACK = 0x02, 0x10
SKB_CTX_SIZE = 192       # sizeof(struct __sk_buff); the kernel takes ifindex (offset 40) from it
SKB_IFINDEX_OFF = 40
BPF_PROG_TEST_RUN = 10   # enum bpf_cmd (include/uapi/linux/bpf.h)
SYS_BPF = 321            # x86_64
CLONE_NEWNET = 0x40000000


class _TestRunAttr(ctypes.Structure):   # union bpf_attr, BPF_PROG_TEST_RUN (include/uapi/linux/bpf.h)
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32), ("data_size_in", ctypes.c_uint32),
                ("data_size_out", ctypes.c_uint32), ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32), ("ctx_size_in", ctypes.c_uint32),
                ("ctx_size_out", ctypes.c_uint32), ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32),
                ("pad", ctypes.c_uint32)]


def _ipv4(src: str, dst: str, proto: int, l4: bytes) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0x4000, 64, proto, 0, socket.inet_aton(src),
                     socket.inet_aton(dst))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + l4


def tcp_frame(src: str, dst: str, sport: int, dport: int, flags: int) -> bytes:
    """An Ethernet frame with an IPv4 TCP segment (checksums left zero: the programs do not check them)."""
    return _ipv4(src, dst, 6, struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0))


def udp_frame(src: str, dst: str, sport: int, dport: int, payload: bytes = b"x" * 18) -> bytes:
    return _ipv4(src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)


def ifindex_in(netns: str, ifname: str) -> int:
    out = subprocess.run(["ip", "-n", netns, "-o", "link", "show", "dev", ifname], capture_output=True, text=True,
                         check=True).stdout
    return int(out.split(":")[0])


def run(netns: str, prog_pin: Path, ifname: str, packets: list[tuple[bytes, int]]) -> list[tuple[int, float]]:
    """(return code, ns per run) of each (frame, repeat) of `packets`, in order, through the program pinned at
    `prog_pin`, as if it arrived at `ifname` of namespace `netns` (the test run happens in a child that enters it:
    the kernel looks the context's ifindex up in the caller's namespace)."""
    from ciliumctl.datapath import bpfsys

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ifindex = ifindex_in(netns, ifname)
    prog = bpfsys.obj_get(prog_pin)
    ns_fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: setns, run, write the results as JSON, exit
        try:
            if libc.setns(ns_fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            ctx = ctypes.create_string_buffer(SKB_CTX_SIZE)
            ctypes.c_uint32.from_buffer(ctx, SKB_IFINDEX_OFF).value = ifindex
            out = ctypes.create_string_buffer(2048)
            got = []
            for frame, repeat in packets:
                data = ctypes.create_string_buffer(frame, len(frame))
                attr = _TestRunAttr(prog_fd=prog, data_size_in=len(frame), data_in=ctypes.addressof(data),
                                    data_size_out=len(out), data_out=ctypes.addressof(out), repeat=repeat,
                                    ctx_size_in=SKB_CTX_SIZE, ctx_in=ctypes.addressof(ctx))
                if libc.syscall(SYS_BPF, BPF_PROG_TEST_RUN, ctypes.byref(attr), ctypes.sizeof(attr)) < 0:
                    raise OSError(ctypes.get_errno(), "BPF_PROG_TEST_RUN")
                got.append((attr.retval, float(attr.duration)))
            os.write(wfd, json.dumps(got).encode())
            os._exit(0)
        except BaseException as err:
            os.write(wfd, json.dumps({"error": str(err)}).encode())
            os._exit(1)
    os.close(wfd)
    chunks = []
    while chunk := os.read(rfd, 65536):
        chunks.append(chunk)
    os.waitpid(pid, 0)
    for fd in (rfd, ns_fd, prog):
        os.close(fd)
    got = json.loads(b"".join(chunks) or b'{"error": "no answer"}')
    if isinstance(got, dict):
        raise RuntimeError(f"BPF_PROG_TEST_RUN of {prog_pin.name} at {ifname}: {got['error']}")
    return [(int(r), ns) for r, ns in got]


def expect(results: list[tuple[int, float]], verdicts: tuple[int, ...], what: str) -> list[float]:
    """The run times of `results`, each of whose return codes must be one of `verdicts` (a benchmark that timed
    drops instead of its traffic would measure the wrong path)."""
    bad = sorted({r for r, _ in results if r not in verdicts})
    if bad:
        raise RuntimeError(f"{what}: the program returned {bad}, expected {list(verdicts)}")
    return [ns for _, ns in results]
