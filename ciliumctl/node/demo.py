"""`ciliumctl demo`: Cilium's getting-started (Star Wars) scenario on a sandbox node.

A node network namespace of its own (`cctl-demo-<rand>`), with state, run files and pins beside it, so the demo
never touches the machine's routes or an installed ciliumctl. Endpoints deathstar (org=empire, class=deathstar)
serving HTTP on port 80, tiefighter (org=empire) and xwing (org=alliance). Without policy both ships land; with
an L3/L4 policy that lets only org=empire reach deathstar on 80/TCP, tiefighter lands and xwing is dropped; with
the L7 version of that rule (rules.http, enforced by HAProxy as the agent runs it) tiefighter's landing POST passes
and its PUT to the exhaust port gets 403 "Access denied", each request shown as an L7 flow.
Verdict events are read from the pinned ring buffer after each request and handed to the caller's UI.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ciliumctl.base.errors import EnvironmentProblem, Finding
from ciliumctl.datapath import events as E

ENDPOINTS = (
    ("deathstar", {"org": "empire", "class": "deathstar"}),
    ("tiefighter", {"org": "empire", "class": "tiefighter"}),
    ("xwing", {"org": "alliance", "class": "xwing"}),
)

# Cilium's getting-started L3/L4 rule (used when examples/policies has no such policy).
DEMO_POLICY = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: rule1
spec:
  description: L3-L4 policy to restrict deathstar access to empire ships only
  endpointSelector:
    matchLabels:
      org: empire
      class: deathstar
  ingress:
  - fromEndpoints:
    - matchLabels:
        org: empire
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
"""

# Cilium's getting-started L7 rule (sw_l3_l4_l7_policy.yaml): the same rule1, its port now with rules.http
DEMO_L7_POLICY = DEMO_POLICY.replace("L3-L4 policy to restrict deathstar access to empire ships only",
                                     "L7 policy to restrict access to specific HTTP call") + """\
      rules:
        http:
        - method: "POST"
          path: "/v1/request-landing"
"""

REQUEST_TIMEOUT = 2.0   # seconds; a dropped SYN shows as a timeout
# argv: address, timeout[, method, path]; prints the body; exit 3 on an HTTP error status
CLIENT = r"""
import socket, sys
method, path = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else ("GET", "/v1/request-landing")
s = socket.create_connection((sys.argv[1], 80), timeout=float(sys.argv[2]))
s.sendall(f"{method} {path} HTTP/1.0\r\nHost: deathstar\r\nContent-Length: 0\r\n\r\n".encode())
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
head, _, body = data.partition(b"\r\n\r\n")
sys.stdout.write(body.decode(errors="replace"))
sys.exit(3 if int(head.split()[1]) >= 400 else 0)
"""


# http.server's CLI resolves its own address by reverse DNS at start (seconds when DNS is unreachable or dropped):
# a TCPServer with the same request handler starts at once.
SERVER = r"""
import functools, http.server, socketserver, sys
socketserver.TCPServer.allow_reuse_address = True
ANSWERS = {("POST", "/v1/request-landing"): b"Ship landed\n",
           ("PUT", "/v1/exhaust-port"): b"Panic: deathstar exploded\n"}
class Handler(http.server.SimpleHTTPRequestHandler):
    def _answer(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = ANSWERS.get((self.command, self.path))
        if body is None:
            return self.send_error(404)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_POST = do_PUT = _answer
handler = functools.partial(Handler, directory=sys.argv[3])
with socketserver.ThreadingTCPServer((sys.argv[1], int(sys.argv[2])), handler) as srv:
    srv.serve_forever()
"""


class DemoUI(Protocol):
    def step(self, text: str) -> None: ...
    def detail(self, text: str) -> None: ...
    def endpoints(self, endpoints: list) -> None: ...
    def event(self, text: str) -> None: ...
    def outcome(self, who: str, ok: bool, text: str, expected: bool) -> None: ...


@dataclass
class Sandbox:
    name: str
    workdir: Path
    bpffs: Path
    env: dict[str, str] = field(default_factory=dict)


OWNER_FILE = "owner.pid"   # the demo process; a sandbox whose owner died without cleaning up is reclaimed
KEPT_FILE = "kept"         # --keep: the user owns it now, never reclaimed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reclaim_abandoned(tmp: Path | None = None) -> list[str]:
    """Remove sandboxes of demos that were killed (SIGKILL, power loss) before their own cleanup ran: their
    namespaces (the node's and its endpoints'), pins and files. Returns the names reclaimed."""
    gone = []
    for workdir in sorted(Path(tmp or tempfile.gettempdir()).glob("cctl-demo-*-*")):
        owner = workdir / OWNER_FILE
        if not owner.is_file() or (workdir / KEPT_FILE).exists():
            continue
        try:
            pid = int(owner.read_text().strip())
        except (OSError, ValueError):
            continue
        if _pid_alive(pid):
            continue
        name = "-".join(workdir.name.split("-")[:3])   # cctl-demo-<rand>
        for ns in [*Path("/run/netns").glob(f"{name}-*"), Path("/run/netns") / name]:
            if ns.exists():
                subprocess.run(["ip", "netns", "delete", ns.name], capture_output=True)
        shutil.rmtree(Path("/sys/fs/bpf") / name, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
        gone.append(name)
    return gone


def new_sandbox() -> Sandbox:
    name = f"cctl-demo-{secrets.token_hex(2)}"
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    (workdir / OWNER_FILE).write_text(f"{os.getpid()}\n")
    bpffs = Path("/sys/fs/bpf") / name
    env = {"CILIUMCTL_NODE_NETNS": name, "CILIUMCTL_STATE_DIR": str(workdir / "state"),
           "CILIUMCTL_RUN_DIR": str(workdir / "run"), "CILIUMCTL_BPFFS_DIR": str(bpffs),
           "CILIUMCTL_POOL": "10.200.0.0/24"}
    return Sandbox(name, workdir, bpffs, env)


def policy_file(workdir: Path) -> Path:
    """examples/policies' deathstar L3/L4 policy when the source tree has one, else the embedded copy."""
    from ciliumctl.base import paths

    examples = paths.bpf_src_dir().parent / "examples" / "policies"
    if examples.is_dir():
        for p in sorted(examples.rglob("*.y*ml")):
            text = p.read_text(errors="replace")
            if ("deathstar" in text and "org: empire" in text and "http:" not in text
                    and "kind: CiliumNetworkPolicy" in text and text.count("\n---") == 0
                    and "Deny" not in text):
                return p
    out = workdir / "demo-policy.yaml"
    out.write_text(DEMO_POLICY)
    return out


def _require_root() -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem("ciliumctl demo needs root (network namespaces, veth, eBPF): run `sudo make demo` "
                                 "or `sudo .venv/bin/ciliumctl demo`")
    for tool in ("ip", "mount"):
        if shutil.which(tool) is None:
            raise EnvironmentProblem(f"ciliumctl demo needs `{tool}` (iproute2/util-linux); run `make setup`")


class _Events:
    """Follows the pinned ring buffer in a thread and hands each verdict event (policy verdicts and drops) to
    `show` as it happens."""

    POLL = 0.05

    def __init__(self, names: dict[str, str], show):
        import threading

        from ciliumctl.base import paths
        from ciliumctl.datapath.ringbuf import RingReader

        self.reader = RingReader(paths.bpffs_dir() / "events")
        self.reader.drain()
        self.names, self.show = names, show
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            events = [ev for ev in self.reader.events() if ev.type in (E.EVENT_DROP, E.EVENT_POLICY_VERDICT)]
            for ev in events:
                self.show(format_event(ev, self.names))
            if not events:
                self._idle.set()
            self._stop.wait(self.POLL)

    def flush(self) -> None:
        """Wait until the reader has caught up (events of a finished request are printed)."""
        self._idle.clear()
        self._idle.wait(1.0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.reader.close()


def format_event(ev, names: dict[str, str]) -> str:
    proto = {1: "ICMP", 6: "TCP", 17: "UDP"}.get(ev.proto, str(ev.proto))
    src = f"{names.get(ev.saddr, ev.saddr)} ({ev.saddr}:{ev.sport})"
    dst = f"{names.get(ev.daddr, ev.daddr)} ({ev.daddr}:{ev.dport}/{proto})"
    direction = {E.DIR_INGRESS: "ingress", E.DIR_EGRESS: "egress"}.get(ev.direction, "?")
    verdict = {E.VERDICT_FORWARDED: "FORWARDED", E.VERDICT_DROPPED: "DROPPED", E.VERDICT_AUDIT: "AUDIT"}.get(
        ev.verdict, str(ev.verdict))
    if ev.type == E.EVENT_DROP:
        reason = {E.DROP_POLICY: "Policy denied", E.DROP_POLICY_DENY: "Policy denied by denylist"}.get(
            ev.subtype, f"reason {ev.subtype}")
        return (f"drop            {src} -> {dst}  {direction}  DROPPED ({reason}, "
                f"identity {ev.src_identity}->{ev.dst_identity})")
    match = ["none", "L3-only", "L3-L4", "L4-only", "all"][ev.match_type] if ev.match_type < 5 else ev.match_type
    return (f"policy-verdict  {src} -> {dst}  {direction}  {verdict} (identity {ev.src_identity}->{ev.dst_identity}, "
            f"match {match})")


def _request(netns: str, target: str, method: str = "GET", path: str = "/v1/request-landing") -> tuple[bool, str]:
    from ciliumctl.endpoints import plumbing

    proc = plumbing.run_in(netns, [sys.executable, "-c", CLIENT, target, str(REQUEST_TIMEOUT), method, path],
                           capture_output=True, text=True, timeout=REQUEST_TIMEOUT + 5)
    if proc.returncode in (0, 3):
        return proc.returncode == 0, proc.stdout.strip() or "(empty reply)"
    last = (proc.stderr.strip().splitlines() or ["failed"])[-1]
    return False, "timed out (dropped)" if "timed out" in last else last.split(": ", 1)[-1]


def _serve(netns: str, addr: str, www: Path) -> subprocess.Popen:
    from ciliumctl.endpoints import plumbing

    (www / "v1").mkdir(parents=True, exist_ok=True)
    (www / "v1" / "request-landing").write_text("Ship landed\n")
    server = plumbing.popen_in(netns, [sys.executable, "-c", SERVER, addr, "80", str(www)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise EnvironmentProblem("the deathstar HTTP server (python3 -m http.server) exited at start")
        probe = plumbing.run_in(netns, [sys.executable, "-c",
                                        "import socket,sys; socket.create_connection((sys.argv[1], 80), 0.2)", addr],
                                capture_output=True)
        if probe.returncode == 0:
            return server
        time.sleep(0.05)
    raise EnvironmentProblem("the deathstar HTTP server did not start listening on port 80 within 5 s")


def run(ui: DemoUI, keep: bool = False) -> Sandbox:
    """The whole demo. Raises Finding when a verdict is not what Cilium would give (exit 1)."""
    _require_root()
    for name in reclaim_abandoned():
        ui.step(f"Removed the sandbox {name} of an earlier demo that was killed before cleaning up")
    sb = new_sandbox()
    os.environ.update(sb.env)
    server = None
    events = None
    http = None
    created_netns = False
    failures: list[str] = []
    try:
        from ciliumctl.endpoints import registry
        from ciliumctl.node import endpoint_ops, policy_ops
        from ciliumctl.node import install as install_node

        ui.step(f"Sandbox node: network namespace {sb.name}, state in {sb.workdir}, pins in {sb.bpffs}")
        from ciliumctl.endpoints import plumbing

        plumbing.ip_netns("add", sb.name)
        created_netns = True
        ui.step("Installing the datapath (checks, compile, load, pin)")
        # Only the node's own steps: an agent started here would consume the ring buffer the demo reads.
        install_node.install(install_node.Options(only=install_node.CORE_STEPS), progress=lambda o: ui.detail(
            f"{o.step}: {o.status}{(' ' + o.detail) if o.detail else ''}"))

        ui.step("Creating endpoints")
        for name, labels in ENDPOINTS:
            ep = endpoint_ops.add_endpoint(name, labels)
            ui.detail(f"endpoint/{name} created (id {ep.id}, identity {ep.identity}, {ep.ipv4})")
        eps = {ep.name: ep for ep in registry.load_all()}
        names = {ep.ipv4: ep.name for ep in eps.values()}
        ui.endpoints(registry.load_all())
        events = _Events(names, ui.event)

        death = eps["deathstar"]
        server = _serve(death.netns, death.ipv4, sb.workdir / "www")
        ui.step(f"deathstar serves HTTP on {death.ipv4}:80")

        def land(ship: str, expect: bool) -> None:
            ok, text = _request(eps[ship].netns, death.ipv4)
            time.sleep(0.05)            # the last packets' events reach the ring buffer
            events.flush()
            ui.outcome(ship, ok, f"{ship} -> deathstar: {text}", expect)
            if ok != expect:
                failures.append(f"{ship} {'landed' if ok else 'did not land'} but should "
                                f"{'' if expect else 'not '}have")

        ui.step("No policy: every ship lands")
        land("tiefighter", True)
        land("xwing", True)

        pfile = policy_file(sb.workdir)
        shown = os.path.relpath(pfile) if str(pfile).startswith(os.getcwd() + os.sep) else str(pfile)
        ui.step(f"Applying an L3/L4 policy: only org=empire may reach deathstar on 80/TCP ({shown})")
        for line in pfile.read_text().rstrip().splitlines():
            ui.detail(f"  {line}")
        result = policy_ops.apply_policies(policy_ops.load_and_validate([str(pfile)]))
        for c in result.changes:
            ui.detail(f"{c.resource} {c.verb} (policy revision {result.revision})")
        ui.endpoints(registry.load_all())
        land("tiefighter", True)
        land("xwing", False)
        http = _l7_step(ui, sb, eps, names, failures)
    finally:
        if http is not None:
            http.stop()
        if events is not None:
            events.close()
        if not keep:
            if server is not None:
                server.kill()
                server.wait()
            cleanup(sb, created_netns, ui)
        else:
            (sb.workdir / KEPT_FILE).touch()
    if failures:
        raise Finding("demo: " + "; ".join(failures))
    return sb


def format_http(e, names: dict[str, str]) -> str:
    """One request through the HTTP proxy as the demo shows it (the L7 flow's request and response)."""
    src, dst = names.get(e.client[0], e.client[0]), names.get(e.server[0], e.server[0])
    verdict = "FORWARDED" if e.allowed else "DROPPED"
    return f"http-request   {src} -> {dst}  {e.method} {e.path}  {verdict}, response {e.code}"


def _l7_step(ui: DemoUI, sb: Sandbox, eps: dict, names: dict[str, str], failures: list[str]):
    """The L7 step: rule1 with rules.http, enforced by HAProxy (run here as the agent runs it,
    node/http_proxy/service.py): tiefighter's landing POST passes, its PUT to the exhaust port gets 403. Returns the
    HTTP service to stop."""
    from ciliumctl.node import policy_ops
    from ciliumctl.node.http_proxy.service import HTTPService

    pfile = sb.workdir / "demo-l7-policy.yaml"
    pfile.write_text(DEMO_L7_POLICY)
    ui.step("Applying the L7 policy: org=empire may only POST /v1/request-landing on deathstar's port 80 "
            "(HAProxy enforces it)")
    for line in DEMO_L7_POLICY.rstrip().splitlines():
        ui.detail(f"  {line}")
    http = HTTPService(on_flow=lambda e: ui.event(format_http(e, names))).start()
    result = policy_ops.apply_policies(policy_ops.load_and_validate([str(pfile)]))
    for c in result.changes:
        ui.detail(f"{c.resource} {c.verb} (policy revision {result.revision})")
    deadline = time.monotonic() + 15
    while not http.ready() and time.monotonic() < deadline:
        time.sleep(0.05)
    death = eps["deathstar"]
    for method, path, expect in (("POST", "/v1/request-landing", True), ("PUT", "/v1/exhaust-port", False)):
        ok, text = _request(eps["tiefighter"].netns, death.ipv4, method, path)
        time.sleep(0.2)             # the proxy's log line reaches the service
        ui.outcome("tiefighter", ok, f"tiefighter {method} {path}: {text}", expect)
        if ok != expect:
            failures.append(f"tiefighter's {method} {path} was {'allowed' if ok else 'refused'} but should "
                            f"{'' if expect else 'not '}have been")
    return http


def cleanup(sb: Sandbox, created_netns: bool = True, ui: DemoUI | None = None) -> None:
    """Uninstall the sandbox node and remove its namespace and files (best effort, never raises)."""
    from ciliumctl.node import install as install_node

    if ui:
        ui.step("Cleaning up (uninstall, remove the sandbox node)")
    with contextlib.suppress(Exception):
        install_node.uninstall()
    if created_netns:
        subprocess.run(["ip", "netns", "delete", sb.name], capture_output=True)
    shutil.rmtree(sb.workdir, ignore_errors=True)
    with contextlib.suppress(OSError):
        if sb.bpffs.is_dir():
            shutil.rmtree(sb.bpffs, ignore_errors=True)


def keep_hint(sb: Sandbox) -> list[str]:
    exports = " ".join(f"{k}={v}" for k, v in sb.env.items())
    return [f"The sandbox stays. To look around:  export {exports}",
            "  ciliumctl endpoint list; ciliumctl status; ciliumctl endpoint exec xwing -- ping -c1 <deathstar-ip>",
            f"Remove it with (same exports):  ciliumctl uninstall && ip netns delete {sb.name} && rm -rf {sb.workdir}"]
