"""The bpf(2) system call through ctypes: open pinned objects, read and write maps, batch updates.

Re-opening a pinned datapath needs no BCC at all (BCC cannot re-open its tables from pins without a recompile),
so everything after the first load goes through here. x86_64 and aarch64 syscall numbers only.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform

_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)

BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_MAP_LOOKUP_BATCH = 24
BPF_MAP_UPDATE_BATCH = 26
BPF_MAP_DELETE_BATCH = 27

BPF_ANY = 0

MAP_TYPES = {1: "hash", 2: "array", 5: "percpu_hash", 6: "percpu_array", 9: "lru_hash", 11: "lpm_trie",
             27: "ringbuf"}
PROG_TYPES = {3: "sched_cls"}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(OSError):
    pass


_possible: int | None = None


def possible_cpus() -> int:
    """Number of possible CPUs (/sys/devices/system/cpu/possible, e.g. "0-3"): per-CPU map value count."""
    global _possible
    if _possible is None:
        n = 0
        with open("/sys/devices/system/cpu/possible") as f:
            for part in f.read().strip().split(","):
                lo, _, hi = part.partition("-")
                n += int(hi or lo) - int(lo) + 1
        _possible = n
    return _possible


class _Attr(ctypes.Structure):
    _fields_ = [("raw", ctypes.c_uint8 * 128)]


def _call(cmd: int, attr: ctypes.Array | ctypes.Structure, size: int | None = None) -> int:
    ret = _libc.syscall(_SYS_BPF, cmd, ctypes.byref(attr), size if size is not None else ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise BpfError(err, os.strerror(err))
    return ret


class _ElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("key", ctypes.c_uint64),
                ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _ObjAttr(ctypes.Structure):
    _fields_ = [("pathname", ctypes.c_uint64), ("bpf_fd", ctypes.c_uint32), ("file_flags", ctypes.c_uint32)]


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


class _BatchAttr(ctypes.Structure):
    _fields_ = [("in_batch", ctypes.c_uint64), ("out_batch", ctypes.c_uint64), ("keys", ctypes.c_uint64),
                ("values", ctypes.c_uint64), ("count", ctypes.c_uint32), ("map_fd", ctypes.c_uint32),
                ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class MapInfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32),
                ("name", ctypes.c_char * 16), ("rest", ctypes.c_uint8 * 128)]


class ProgInfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
                ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
                ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
                ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32),
                ("nr_map_ids", ctypes.c_uint32), ("map_ids", ctypes.c_uint64), ("name", ctypes.c_char * 16),
                ("ifindex", ctypes.c_uint32), ("gpl_compatible", ctypes.c_uint32), ("netns_dev", ctypes.c_uint64),
                ("netns_ino", ctypes.c_uint64), ("nr_jited_ksyms", ctypes.c_uint32),
                ("nr_jited_func_lens", ctypes.c_uint32), ("jited_ksyms", ctypes.c_uint64),
                ("jited_func_lens", ctypes.c_uint64), ("btf_id", ctypes.c_uint32),
                ("func_info_rec_size", ctypes.c_uint32), ("func_info", ctypes.c_uint64),
                ("nr_func_info", ctypes.c_uint32), ("nr_line_info", ctypes.c_uint32), ("line_info", ctypes.c_uint64),
                ("jited_line_info", ctypes.c_uint64), ("nr_jited_line_info", ctypes.c_uint32),
                ("line_info_rec_size", ctypes.c_uint32), ("jited_line_info_rec_size", ctypes.c_uint32),
                ("nr_prog_tags", ctypes.c_uint32), ("prog_tags", ctypes.c_uint64),
                ("run_time_ns", ctypes.c_uint64), ("run_cnt", ctypes.c_uint64),
                ("rest", ctypes.c_uint8 * 128)]


def obj_get(path: str | os.PathLike) -> int:
    """fd of a pinned program or map."""
    p = ctypes.create_string_buffer(os.fsencode(path))
    attr = _ObjAttr(pathname=ctypes.addressof(p))
    return _call(BPF_OBJ_GET, attr)


def obj_pin(fd: int, path: str | os.PathLike) -> None:
    p = ctypes.create_string_buffer(os.fsencode(path))
    attr = _ObjAttr(pathname=ctypes.addressof(p), bpf_fd=fd)
    _call(BPF_OBJ_PIN, attr)


def map_info(fd: int) -> MapInfo:
    info = MapInfo()
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    _call(BPF_OBJ_GET_INFO_BY_FD, attr)
    return info


def prog_info(fd: int) -> ProgInfo:
    info = ProgInfo()
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    _call(BPF_OBJ_GET_INFO_BY_FD, attr)
    return info


class Map:
    """A BPF map by fd, with fixed-size byte keys and values."""

    def __init__(self, fd: int, name: str = ""):
        self.fd = fd
        info = map_info(fd)
        self.name = name or info.name.decode()
        self.type = info.type
        self.id = info.id
        self.key_size = info.key_size
        self.value_size = info.value_size
        self.max_entries = info.max_entries
        # per-CPU maps read and write one (8-byte aligned) value per possible CPU
        self.percpu = self.type in (5, 6, 10)
        self.value_bytes = ((self.value_size + 7) // 8 * 8 * possible_cpus()) if self.percpu else self.value_size

    @classmethod
    def from_pin(cls, path: str | os.PathLike) -> Map:
        return cls(obj_get(path), os.path.basename(os.fspath(path)))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def lookup(self, key: bytes) -> bytes | None:
        """The value; for per-CPU maps all CPUs' values back to back (see value_bytes)."""
        k = ctypes.create_string_buffer(key, self.key_size)
        v = ctypes.create_string_buffer(self.value_bytes)
        attr = _ElemAttr(map_fd=self.fd, key=ctypes.addressof(k), value=ctypes.addressof(v))
        try:
            _call(BPF_MAP_LOOKUP_ELEM, attr)
        except BpfError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        return v.raw

    def lookup_array(self, index: int) -> bytes:
        """Entry `index` of an array map: always there (the kernel zero-fills arrays); KeyError past the end."""
        value = self.lookup(index.to_bytes(4, "little"))
        if value is None:
            raise KeyError(index)
        return value

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        k = ctypes.create_string_buffer(key, self.key_size)
        v = ctypes.create_string_buffer(value, self.value_bytes)
        attr = _ElemAttr(map_fd=self.fd, key=ctypes.addressof(k), value=ctypes.addressof(v), flags=flags)
        _call(BPF_MAP_UPDATE_ELEM, attr)

    def delete(self, key: bytes) -> bool:
        k = ctypes.create_string_buffer(key, self.key_size)
        attr = _ElemAttr(map_fd=self.fd, key=ctypes.addressof(k))
        try:
            _call(BPF_MAP_DELETE_ELEM, attr)
        except BpfError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
        return True

    def keys(self) -> list[bytes]:
        out: list[bytes] = []
        cur = ctypes.create_string_buffer(self.key_size)
        nxt = ctypes.create_string_buffer(self.key_size)
        attr = _ElemAttr(map_fd=self.fd, key=0, value=ctypes.addressof(nxt))
        while True:
            try:
                _call(BPF_MAP_GET_NEXT_KEY, attr)
            except BpfError as e:
                if e.errno == errno.ENOENT:
                    return out
                raise
            out.append(nxt.raw)
            ctypes.memmove(cur, nxt, self.key_size)
            attr.key = ctypes.addressof(cur)

    def items(self) -> dict[bytes, bytes]:
        """All entries; one batch syscall where the map type supports it."""
        try:
            return self._lookup_batch()
        except BpfError as e:
            if e.errno not in (errno.EINVAL, errno.ENOTSUPP if hasattr(errno, "ENOTSUPP") else 524, 524,
                               errno.EOPNOTSUPP):
                raise
        out = {}
        for k in self.keys():
            v = self.lookup(k)
            if v is not None:
                out[k] = v
        return out

    def _lookup_batch(self) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        chunk = 4096
        keys = ctypes.create_string_buffer(self.key_size * chunk)
        vals = ctypes.create_string_buffer(self.value_bytes * chunk)
        # in/out batch tokens: key-sized is enough for hash and generic (key-based) batching
        tok_in = ctypes.create_string_buffer(max(self.key_size, 8))
        tok_out = ctypes.create_string_buffer(max(self.key_size, 8))
        first = True
        while True:
            attr = _BatchAttr(in_batch=0 if first else ctypes.addressof(tok_in), out_batch=ctypes.addressof(tok_out),
                              keys=ctypes.addressof(keys), values=ctypes.addressof(vals), count=chunk,
                              map_fd=self.fd)
            done = False
            try:
                _call(BPF_MAP_LOOKUP_BATCH, attr)
            except BpfError as e:
                if e.errno != errno.ENOENT:
                    raise
                done = True
            n = attr.count
            kr, vr = keys.raw, vals.raw
            ks, vs = self.key_size, self.value_bytes
            out.update(zip([kr[i:i + ks] for i in range(0, n * ks, ks)],
                           [vr[i:i + vs] for i in range(0, n * vs, vs)]))
            if done:
                return out
            ctypes.memmove(tok_in, tok_out, len(tok_in))
            first = False

    def update_batch(self, entries: list[tuple[bytes, bytes]]) -> None:
        """Write many entries in one syscall (falls back to one per entry where unsupported)."""
        if not entries:
            return
        n = len(entries)
        keys = ctypes.create_string_buffer(b"".join(k for k, _ in entries), self.key_size * n)
        vals = ctypes.create_string_buffer(b"".join(v for _, v in entries), self.value_bytes * n)
        attr = _BatchAttr(keys=ctypes.addressof(keys), values=ctypes.addressof(vals), count=n, map_fd=self.fd)
        try:
            _call(BPF_MAP_UPDATE_BATCH, attr)
            return
        except BpfError as e:
            if e.errno not in (errno.EINVAL, 524, errno.EOPNOTSUPP):
                raise
            done = attr.count
        for k, v in entries[done:]:
            self.update(k, v)

    def delete_batch(self, keys_list: list[bytes]) -> None:
        if not keys_list:
            return
        n = len(keys_list)
        keys = ctypes.create_string_buffer(b"".join(keys_list), self.key_size * n)
        attr = _BatchAttr(keys=ctypes.addressof(keys), count=n, map_fd=self.fd)
        try:
            _call(BPF_MAP_DELETE_BATCH, attr)
            return
        except BpfError as e:
            if e.errno not in (errno.EINVAL, 524, errno.EOPNOTSUPP, errno.ENOENT):
                raise
            done = attr.count
        for k in keys_list[done:]:
            self.delete(k)

    def count(self) -> int:
        return len(self.items())


BPF_PROG_GET_FD_BY_ID = 13
BPF_MAP_GET_FD_BY_ID = 14


def _get_fd_by_id(cmd: int, obj_id: int) -> int | None:
    attr = (ctypes.c_uint32 * 4)(obj_id, 0, 0, 0)
    try:
        return _call(cmd, attr)
    except BpfError as e:
        if e.errno == errno.ENOENT:
            return None
        raise


def prog_exists(prog_id: int) -> bool:
    fd = _get_fd_by_id(BPF_PROG_GET_FD_BY_ID, prog_id)
    if fd is None:
        return False
    os.close(fd)
    return True


def map_exists(map_id: int) -> bool:
    fd = _get_fd_by_id(BPF_MAP_GET_FD_BY_ID, map_id)
    if fd is None:
        return False
    os.close(fd)
    return True


BPF_MAP_CREATE = 0
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_ARRAY_OF_MAPS = 12


def _map_create(map_type: int, key_size: int, value_size: int, max_entries: int, inner_fd: int = 0) -> int:
    # union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries, map_flags, inner_map_fd
    attr = (ctypes.c_uint32 * 16)(map_type, key_size, value_size, max_entries, 0, inner_fd)
    return _call(BPF_MAP_CREATE, attr)


def wait_for_running_programs() -> None:
    """Return only after every BPF program that was running has finished (an RCU grace period).

    The kernel calls synchronize_rcu() after any update of a map-of-maps, so that user space knows running
    programs see the new value: a throw-away array-of-maps gives that barrier without any sysctl or helper."""
    inner = _map_create(BPF_MAP_TYPE_ARRAY, 4, 4, 1)
    try:
        outer = _map_create(BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, 1, inner)
        try:
            k = ctypes.c_uint32(0)
            v = ctypes.c_uint32(inner)
            _call(BPF_MAP_UPDATE_ELEM, _ElemAttr(map_fd=outer, key=ctypes.addressof(k), value=ctypes.addressof(v)))
        finally:
            os.close(outer)
    finally:
        os.close(inner)


BPF_PROG_QUERY = 16
BPF_LINK_CREATE = 28
BPF_LINK_UPDATE = 29
BPF_TCX_INGRESS = 46
BPF_TCX_EGRESS = 47


def link_create_tcx(prog_fd: int, ifindex: int, attach_type: int) -> int:
    """A tcx link (kernel 6.6+): the program on the device's tc hook without a qdisc. Lives while the fd or a
    pin of it does."""
    attr = (ctypes.c_uint32 * 16)(prog_fd, ifindex, attach_type, 0)
    return _call(BPF_LINK_CREATE, attr)


def link_update(link_fd: int, prog_fd: int) -> None:
    """Swap the link's program atomically."""
    attr = (ctypes.c_uint32 * 4)(link_fd, prog_fd, 0, 0)
    _call(BPF_LINK_UPDATE, attr)


class _QueryAttr(ctypes.Structure):
    _fields_ = [("target", ctypes.c_uint32), ("attach_type", ctypes.c_uint32), ("query_flags", ctypes.c_uint32),
                ("attach_flags", ctypes.c_uint32), ("prog_ids", ctypes.c_uint64), ("count", ctypes.c_uint32),
                ("pad", ctypes.c_uint32), ("prog_attach_flags", ctypes.c_uint64), ("link_ids", ctypes.c_uint64),
                ("link_attach_flags", ctypes.c_uint64), ("revision", ctypes.c_uint64)]


def tcx_prog_ids(ifindex: int, attach_type: int) -> list[int]:
    """Programs attached through tcx to a device (in the caller's network namespace)."""
    ids = (ctypes.c_uint32 * 64)()
    attr = _QueryAttr(target=ifindex, attach_type=attach_type, prog_ids=ctypes.addressof(ids), count=64)
    try:
        _call(BPF_PROG_QUERY, attr)
    except BpfError as e:
        if e.errno in (errno.ENODEV, errno.ENOENT):
            return []
        raise
    return list(ids[:attr.count])
