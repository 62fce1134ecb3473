"""Building the datapath: one translation unit from bpf/, compiled by BCC, and its pins.

BCC is imported only here and only when something must be compiled (install, upgrade): every other use of the
datapath goes through the pins."""

from __future__ import annotations

import ctypes
import os
import re
import zlib
from pathlib import Path

from ciliumctl.base import paths
from ciliumctl.base.errors import EnvironmentProblem
from ciliumctl.datapath import bpfsys, maps
from ciliumctl.datapath.environment import check_headers, import_bcc

compile_count = 0   # BCC compiles in this process (attach must never add one)


def _expand_includes(path: Path, seen: set[Path]) -> str:
    # BCC rewrites map method calls only in the main file: hand it one translation unit.
    out = []
    for line in path.read_text().splitlines():
        m = re.match(r'\s*#include\s+"([^"]+)"', line)
        if m:
            inc = (path.parent / m.group(1)).resolve()
            if inc not in seen:
                seen.add(inc)
                out.append(_expand_includes(inc, seen))
            continue
        out.append(line)
    return "\n".join(out)


# one file per attach point (Cilium's layout): the endpoints' veths, then the node's devices; one unit, one set of maps
SOURCES = ("bpf_lxc.c", "bpf_host.c")


def datapath_source() -> str:
    seen: set[Path] = set()
    return "\n".join(_expand_includes(paths.bpf_src_dir() / name, seen) for name in SOURCES)


def source_crc(src: str | None = None) -> int:
    return zlib.crc32((src if src is not None else datapath_source()).encode())


def compile_programs():
    """(BCC module, {program name: loaded function}) of bpf/bpf_lxc.c + bpf_host.c, with the source's crc in `state`.
    The caller pins what it keeps and calls .cleanup() on the module."""
    global compile_count
    check_headers()
    BPF = import_bcc()
    src = datapath_source()
    try:
        bpf = BPF(text=src.encode(), cflags=["-w"])
        fns = {name: bpf.load_func(name.encode(), BPF.SCHED_CLS) for name in maps.PROGRAMS}
    except Exception as err:   # BCC raises bare Exception with the compiler/verifier output on stderr
        raise EnvironmentProblem(f"compiling or loading {paths.bpf_src_dir()}/{'+'.join(SOURCES)} failed: {err}; "
                                 "see the compiler/verifier output above") from None
    compile_count += 1
    # what the programs were built from, so a later open() can tell the pins are outdated
    bpf[b"state"][ctypes.c_int(0)] = bpf[b"state"].Leaf(0, source_crc(src), 0, 0)
    # Cilium's default monitor aggregation (medium) until the node's settings say otherwise
    from ciliumctl.datapath.monitor import MonitorConfig

    raw = MonitorConfig().pack()
    bpf[b"monitor_config"][ctypes.c_int(0)] = bpf[b"monitor_config"].Leaf.from_buffer_copy(raw)
    return bpf, fns


def pin_all(pin_dir: Path, map_fds: dict[str, int], prog_fds: dict[str, int]) -> None:
    try:
        for name in maps.MAPS:
            bpfsys.obj_pin(map_fds[name], pin_dir / name)
        for name in maps.PROGRAMS:
            bpfsys.obj_pin(prog_fds[name], pin_dir / name)
    except Exception:
        remove_pins(pin_dir)
        raise


def compile_and_pin(pin_dir: Path) -> None:
    bpf, fns = compile_programs()
    try:
        pin_all(pin_dir, {n: bpf[n.encode()].map_fd for n in maps.MAPS}, {n: f.fd for n, f in fns.items()})
    finally:
        bpf.cleanup()


def pins_present(pin_dir: Path) -> bool:
    return all((pin_dir / n).exists() for n in maps.REQUIRED_MAPS + maps.REQUIRED_PROGRAMS)


def remove_pins(pin_dir: Path) -> list[str]:
    removed = []
    for name in maps.MAPS + maps.PROGRAMS:
        try:
            os.unlink(pin_dir / name)
            removed.append(name)
        except FileNotFoundError:
            pass
    return removed


def refuse_if_endpoints_attached(pin_dir: Path) -> None:
    """Pins of another datapath version (another set of maps) with endpoints attached: replacing them here would
    leave those endpoints on the old programs and maps, enforcing a policy nobody updates any more."""
    path = pin_dir / "endpoints"
    if not path.exists():
        return
    try:
        m = bpfsys.Map.from_pin(path)
    except OSError:
        return
    try:
        n = len(m.keys())
    finally:
        m.close()
    if n:
        raise EnvironmentProblem(f"{pin_dir} holds a datapath of another ciliumctl version with {n} endpoint(s) "
                                 "attached: run `ciliumctl uninstall`, then `ciliumctl install` and re-add them")
