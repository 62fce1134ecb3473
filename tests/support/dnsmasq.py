"""A real DNS server for the DNS tests: Debian's dnsmasq serving a small zone of the test's own names, inside a
network namespace the test created. Authoritative for `example.test` only (no upstream, no /etc/hosts, no
resolv.conf), so nothing it answers comes from outside the test."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from .shell import stop, wait_until

ZONE = "example.test"


def require_dnsmasq() -> str:
    import os

    import pytest

    path = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not Path(path).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("dnsmasq is missing: scripts/setup.sh installs dnsmasq-base")
        pytest.skip("dnsmasq is missing (apt-get install dnsmasq-base)")
    return path


class Dnsmasq:
    """dnsmasq in netns `netns` on address:port; records: name -> IPv4 address(es), all with TTL `ttl`."""

    def __init__(self, netns: str, address: str, records: Mapping[str, str | list[str]], ttl: int = 60,
                 port: int = 53, workdir: Path | None = None):
        self.netns, self.address, self.port, self.ttl = netns, address, port, ttl
        self.records = {k: [v] if isinstance(v, str) else list(v) for k, v in records.items()}
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Dnsmasq:
        args = [require_dnsmasq(), "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                "--no-poll", "--pid-file=", "--user=root", "--group=root", f"--listen-address={self.address}",
                "--bind-interfaces", f"--port={self.port}", f"--local-ttl={self.ttl}", f"--local=/{ZONE}/",
                "--log-facility=-"]
        for name, ips in self.records.items():
            args.append(f"--host-record={name},{','.join(ips)}")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.netns, *args], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        if not wait_until(self._answers, 5):
            stop(self.proc)
            raise AssertionError(f"dnsmasq did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            return True      # exited: __enter__ reports it
        res = subprocess.run(["ip", "netns", "exec", self.netns, "ss", "-ulnH", f"sport = :{self.port}"],
                             capture_output=True, text=True)
        return self.address in res.stdout

    def __exit__(self, *exc) -> None:
        stop(self.proc, 5)
