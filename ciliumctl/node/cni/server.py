"""The agent side of the CNI plugin: a unix-socket server that networks a runtime's pod and puts it under policy.

Protocol (one request per connection): the plugin sends one JSON object (the CNI command, its configuration and
its environment) and shuts down its write side; an open descriptor of the pod's network namespace rides along
(SCM_RIGHTS) with the first bytes. The server answers {"ok": true, "result": {...}, "stderr": "..."} or
{"ok": false, "code": N, "msg": "...", "details": "...", "stderr": "..."} (CNI error codes; stderr: the IPAM
plugin's, for the plugin's stderr).

Addresses: a configuration without an "ipam" section (the conflist `install` writes) gets one from the agent's own
pool, in this process (node/cni/pool.py, as Cilium's agent allocates for its plugin). One with an "ipam" section
delegates to that IPAM plugin (endpoints/cni_ipam.py): an ADD starts it as the request arrives and creates the
veth meanwhile (no address needed), then addresses it. The attachment record says which ("ipam": "agent" or the
delegated section), so that DEL releases the address where it came from even after the conflist changed.

ADD returns only when the veth, routes, endpoint registration, identity, datapath attachment and the policy
reconcile are all done, so in `always` mode a pod never runs unprotected. The programs go on as clsact filters
(no kernel wait); a thread then moves them onto tcx links (an RCU grace period each) after the answer.
Attachments are keyed by (network name, container id, ifname) as the spec asks, and recorded in
`<state>/cni/<key>.json` (atomic writes); work that touches shared node state runs under one lock (a thread lock
plus the node's file lock).

Run it inside the agent (CniServer(path).start(), after ciliumctl.nodens.enter_node_netns()) or standalone:
`python -m ciliumctl.endpoints.cni_server --socket PATH`.
"""

from __future__ import annotations

import array
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import queue
import socket
import sys
import threading
from pathlib import Path

from ciliumctl.base import paths, statefile
from ciliumctl.endpoints import cni_plumbing
from ciliumctl.endpoints.cni_ipam import CniFailure, Ipam
from ciliumctl.node.cni import attach as cni_node
from ciliumctl.node.cni.pool import AgentPool, PoolExhausted

log = logging.getLogger("ciliumctl.cni")

E_UNKNOWN_CONTAINER = 3
E_INVALID_CONFIG = 7
E_TRY_AGAIN_LATER = 11
E_INTERNAL = 999
MAX_REQUEST = 4 << 20

__all__ = ["CniFailure", "CniHandler", "CniServer"]


def attachment_key(network: str, container_id: str, ifname: str) -> str:
    return hashlib.sha256(f"{network}\0{container_id}\0{ifname}".encode()).hexdigest()


def host_ifname(prefix: str, key: str) -> str:
    """Deterministic, so a DEL without state (or after a crash) still finds the host side."""
    prefix = prefix or "lxc"
    if len(prefix) > 8 or not prefix.isalnum():
        raise CniFailure(E_INVALID_CONFIG, f"hostVethPrefix {prefix!r}: use at most 8 letters or digits")
    return prefix + key[: 15 - len(prefix)]


def state_dir() -> Path:
    return paths.state_dir() / "cni"


def _state_path(key: str) -> Path:
    return state_dir() / f"{key}.json"


def load_attachments() -> list[dict]:
    d = state_dir()
    if not d.is_dir():
        return []
    return [a for a in (_read_record(p) for p in sorted(d.glob("*.json"))) if a]


def _read_record(path: Path) -> dict | None:
    """An attachment record; None when missing or torn. Records are written without fsync (one wait less on every
    pod's ADD) and that is still crash-safe: a process crash keeps them (page cache); an OS crash may tear one, but
    it also takes everything the record describes (veth, netns, programs), and a DEL without a record still finds
    the endpoint through the registry (fsynced) and the veth by its derived name."""
    try:
        found = statefile.read_json(path)
    except statefile.CorruptStateFile:
        log.warning("CNI attachment record %s is torn (an OS crash after its write?): treated as lost", path)
        return None
    return found if isinstance(found, dict) else None


def _first_ipv4(ipam_result: dict) -> str:
    for ip in ipam_result.get("ips") or []:
        addr = str(ip.get("address", "")).split("/")[0]
        if addr and ":" not in addr:
            return addr
    raise CniFailure(E_INVALID_CONFIG, "the IPAM result holds no IPv4 address (only IPv4 is supported)")


class CniHandler:
    """Turns plugin requests into node changes. Thread-safe: one attachment change at a time."""

    def __init__(self):
        self._lock = threading.Lock()
        # host interface -> set once its programs are moved onto tcx links (cni_node.finish_attach); a teardown
        # of that interface waits for it first. One long-lived thread moves them, in order: a thread started per
        # ADD made the ADD wait for its first run (Thread.start), several ms on a loaded 2-core node.
        self._moving: dict[str, threading.Event] = {}
        self._moves: queue.SimpleQueue | None = None
        self._pool: AgentPool | None = None   # the agent's own IPAM, built at its first use (lock held)

    def agent_pool(self) -> AgentPool:
        """The node pool's pod range with the addresses in use, restored from the attachment records and the endpoint
        registry at first use (call with the lock held)."""
        if self._pool is None:
            pool = AgentPool(cni_node.node_pool())
            pool.restore(a.get("ipv4") for a in load_attachments())
            pool.restore(cni_node.registered_addresses())
            self._pool = pool
        return self._pool

    @contextlib.contextmanager
    def _locked(self):
        with self._lock, statefile.locked(cni_node.lock_path()):
            yield

    def handle(self, request: dict, netns_fd: int | None, ipam: Ipam | None = None) -> dict:
        """ipam: the request's IPAM plugin (its stderr is the caller's to send back)."""
        command = request.get("command")
        if command == "STATUS":
            return cni_node.status()
        conf = request.get("config") or {}
        ipam = ipam or Ipam(conf, request.get("env"))
        network = str(conf.get("name") or "")
        if not network:
            raise CniFailure(E_INVALID_CONFIG, "network configuration has no \"name\"")
        if command == "GC":
            return self.gc(conf, ipam)
        cid, ifname = request.get("containerID") or "", request.get("ifname") or ""
        if not cid or not ifname:
            raise CniFailure(4, "CNI_CONTAINERID and CNI_IFNAME are required")
        key = attachment_key(network, cid, ifname)
        if command == "ADD":
            if netns_fd is None:
                raise CniFailure(4, "ADD needs the pod's network namespace (CNI_NETNS)")
            if "ipam" in conf and not ipam.type:
                raise CniFailure(E_INVALID_CONFIG, "the \"ipam\" section of the network configuration has no "
                                                   "\"type\"", "name an IPAM plugin, or leave \"ipam\" out for "
                                                   "the agent's own")
            if not ipam.type:
                return self.add_agent_ipam(request, conf, key, netns_fd)
            return self.add(request, conf, key, netns_fd, ipam)
        if command == "DEL":
            delegated = self.delete(conf, key, cid)
            if not ipam.type and delegated:   # added through an IPAM plugin the configuration no longer names
                then = Ipam(dict(conf, ipam=delegated), request.get("env"))
                then.stderr = ipam.stderr   # the caller sends this list back as the plugin's stderr
                ipam = then
            if ipam.type:   # after the endpoint is gone: an address is never handed out while still in use
                ipam.run("DEL")
            return {}
        if command == "CHECK":
            agent_ipam = self.check(request, conf, key, netns_fd)
            if ipam.type and not agent_ipam:
                ipam.run("CHECK")
            return {}
        raise CniFailure(4, f"unknown command {command!r}")

    # --- ADD -----------------------------------------------------------------------------------------------
    def add(self, request: dict, conf: dict, key: str, netns_fd: int, ipam: Ipam) -> dict:
        ifname = request["ifname"]
        hostif = host_ifname(str(conf.get("hostVethPrefix") or "lxc"), key)
        # the IPAM plugin runs from now on, also while this request waits for the lock: under a burst of ADDs
        # its address is there when the lock comes; alone, it runs while the veth is made
        running = ipam.spawn("ADD")
        try:
            with self._locked():
                old = _read_record(_state_path(key))
                if old:   # a repeated ADD without DEL (runtime retry): start from a clean slate
                    self._teardown(old)
                links = cni_plumbing.create_veth(hostif, netns_fd, ifname, int(conf.get("mtu") or 1500))
                try:
                    ipam_result = running.result() or {}
                    if not ipam_result.get("ips"):
                        raise CniFailure(E_INVALID_CONFIG, f"IPAM plugin {ipam.type} returned no addresses")
                    ipv4 = _first_ipv4(ipam_result)
                    cni_plumbing.address_veth(hostif, netns_fd, links, ipv4)
                except BaseException:
                    cni_plumbing.teardown_veth(hostif)
                    raise
                return self._register(request, conf, key, ipam_result, links, hostif, conf.get("ipam"))
        except BaseException:
            # a failed ADD runs the IPAM plugin again with DEL (CNI SPEC.md, "Delegated plugin execution
            # procedure"), once its ADD has finished
            with contextlib.suppress(CniFailure):
                running.result()
            ipam.release()
            raise

    def add_agent_ipam(self, request: dict, conf: dict, key: str, netns_fd: int) -> dict:
        """ADD with the agent's own IPAM: the address is taken from memory under the lock (no plugin to wait for)."""
        ifname = request["ifname"]
        hostif = host_ifname(str(conf.get("hostVethPrefix") or "lxc"), key)
        with self._locked():
            old = _read_record(_state_path(key))
            if old:   # a repeated ADD without DEL (runtime retry): start from a clean slate
                self._teardown(old)
            pool = self.agent_pool()
            try:
                ipv4 = pool.allocate()
            except PoolExhausted as err:
                raise CniFailure(E_TRY_AGAIN_LATER, str(err), "delete pods, or install with a larger --pool") from None
            try:
                links = cni_plumbing.create_veth(hostif, netns_fd, ifname, int(conf.get("mtu") or 1500))
                try:
                    cni_plumbing.address_veth(hostif, netns_fd, links, ipv4)
                except BaseException:
                    cni_plumbing.teardown_veth(hostif)
                    raise
                # _register tears down what it made on failure; the address is released here
                return self._register(request, conf, key, {"ips": [{"address": f"{ipv4}/32"}]}, links, hostif,
                                      "agent")
            except BaseException:
                pool.release(ipv4)
                raise

    def _register(self, request: dict, conf: dict, key: str, ipam_result: dict, links: dict, hostif: str,
                  ipam_source: object) -> dict:
        """The endpoint and its record for an addressed veth, and the ADD's result (node lock held). ipam_source:
        "agent" (node/cni/pool.py) or the delegated "ipam" section the address came from, for DEL."""
        ifname = request["ifname"]
        args = request.get("args") or {}
        runtime_conf = conf.get("runtimeConfig") or {}
        ipv4 = _first_ipv4(ipam_result)
        attachment = {
            "network": conf["name"], "containerID": request["containerID"], "ifname": ifname,
            "netns": request.get("netns", ""), "hostIfname": hostif, "ipv4": ipv4, "endpointID": 0,
            "ipam": ipam_source,
        }
        try:
            ep = cni_node.register(
                name=args.get("K8S_POD_NAME") or request["containerID"][:12],
                namespace=args.get("K8S_POD_NAMESPACE") or "default",
                annotations=runtime_conf.get("io.kubernetes.cri.pod-annotations") or {},
                ipv4=ipv4, netns=request.get("netns", ""), host_ifname=hostif,
                host_ifindex=links["host_ifindex"], container_id=request["containerID"])
            attachment["endpointID"] = ep.id
            statefile.write_json(_state_path(key), attachment, durable=False)   # _read_record says why
        except BaseException:
            self._teardown(dict(attachment, ipam=None))   # the caller releases the address
            raise
        self._queue_move(hostif, links["host_ifindex"])
        dns = ipam_result.get("dns") or conf.get("dns") or {}
        result: dict[str, object] = {
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": hostif, "mac": links["host_mac"]},
                {"name": ifname, "mac": links["pod_mac"], "sandbox": request.get("netns", "")},
            ],
            "ips": [{"address": f"{ipv4}/32", "gateway": cni_plumbing.GATEWAY, "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": cni_plumbing.GATEWAY}],
        }
        if dns:
            result["dns"] = dns
        return result

    # --- DEL -----------------------------------------------------------------------------------------------
    def delete(self, conf: dict, key: str, container_id: str) -> dict | None:
        """Tear the attachment down (idempotent). Returns the delegated "ipam" section its address came from when
        the record names one, for the caller to release there after the endpoint is gone."""
        with self._locked():
            attachment = _read_record(_state_path(key))
            if attachment is None:   # unknown or already deleted: still remove what a crash may have left
                hostif = host_ifname(str(conf.get("hostVethPrefix") or "lxc"), key)
                attachment = {"hostIfname": hostif, "ipv4": None, "endpointID": 0, "network": conf.get("name"),
                              "containerID": container_id}
                for ep_id in cni_node.find(container_id, hostif):
                    ep_addr = cni_node.address_of(ep_id)
                    cni_node.unregister(ep_id, container_id)
                    if not conf.get("ipam") and ep_addr:   # the agent's address, if it was: free again
                        self.agent_pool().release(ep_addr)
            self._teardown(attachment)
            with contextlib.suppress(FileNotFoundError):
                _state_path(key).unlink()
        delegated = attachment.get("ipam")
        return delegated if isinstance(delegated, dict) else None

    def _queue_move(self, hostif: str, ifindex: int) -> None:
        """Hand the move onto tcx links to the mover thread (lock held)."""
        done = threading.Event()
        self._moving[hostif] = done
        if self._moves is None:
            self._moves = queue.SimpleQueue()
            # started from this thread, in the node's network namespace, which threads inherit
            threading.Thread(target=self._mover, args=(self._moves,), name="cni-tcx-mover", daemon=True).start()
        self._moves.put((hostif, ifindex, done))

    def _mover(self, moves: queue.SimpleQueue) -> None:
        while True:
            hostif, ifindex, done = moves.get()
            try:
                cni_node.finish_attach(ifindex)
            except Exception:   # the clsact filters stay and keep enforcing
                log.exception("moving %s onto tcx links failed", hostif)
            finally:
                if self._moving.get(hostif) is done:
                    self._moving.pop(hostif, None)
                done.set()

    def wait_moves(self) -> None:
        """Wait for every pending move onto tcx links (before the server stops)."""
        for done in list(self._moving.values()):
            done.wait()

    def _teardown(self, attachment: dict) -> None:
        """Endpoint first (detach and drop from policy), then the links. Each step tolerates absence."""
        moving = self._moving.pop(attachment["hostIfname"], None)
        if moving is not None:
            moving.wait()
        if attachment.get("endpointID"):
            cni_node.unregister(int(attachment["endpointID"]), attachment.get("containerID", ""))
        cni_plumbing.teardown_veth(attachment["hostIfname"])
        if attachment.get("ipam") == "agent":   # last: the address is free only once nothing has it
            self.agent_pool().release(attachment.get("ipv4"))

    # --- CHECK ---------------------------------------------------------------------------------------------
    def check(self, request: dict, conf: dict, key: str, netns_fd: int | None) -> bool:
        """Raises what is broken; True when the address is the agent's (no IPAM plugin to ask)."""
        attachment = _read_record(_state_path(key))
        if attachment is None:
            raise CniFailure(E_UNKNOWN_CONTAINER, f"no attachment of container {request['containerID']} "
                                                  f"({request['ifname']}) on network {conf['name']}")
        if netns_fd is None:
            raise CniFailure(4, "CHECK needs the pod's network namespace (CNI_NETNS)")
        prev_ips = [str(ip.get("address", "")).split("/")[0] for ip in (conf.get("prevResult") or {}).get("ips", [])]
        problems = []
        if prev_ips and attachment["ipv4"] not in prev_ips:
            problems.append(f"prevResult lists {prev_ips}, the attachment has {attachment['ipv4']}")
        problems += cni_plumbing.check_veth(attachment["hostIfname"], netns_fd, attachment["ifname"],
                                            attachment["ipv4"])
        problems += cni_node.check(int(attachment["endpointID"]))
        agent_ipam = attachment.get("ipam") == "agent"
        if agent_ipam:
            with self._locked():
                if not self.agent_pool().holds(attachment["ipv4"]):
                    problems.append(f"the agent's pool does not hold {attachment['ipv4']} as in use")
        if problems:
            raise CniFailure(E_INTERNAL, "attachment is broken: " + "; ".join(problems))
        return agent_ipam

    # --- GC (spec 1.1) -------------------------------------------------------------------------------------
    def gc(self, conf: dict, ipam: Ipam) -> dict:
        valid = {(a.get("containerID"), a.get("ifname")) for a in conf.get("cni.dev/valid-attachments") or []}
        removed, delegated = [], []
        with self._locked():
            for attachment in load_attachments():
                if attachment.get("network") != conf["name"]:
                    continue
                if (attachment["containerID"], attachment["ifname"]) in valid:
                    continue
                self._teardown(attachment)
                key = attachment_key(attachment["network"], attachment["containerID"], attachment["ifname"])
                with contextlib.suppress(FileNotFoundError):
                    _state_path(key).unlink()
                if attachment.get("ipam") != "agent":   # released by _teardown
                    delegated.append({"containerID": attachment["containerID"], "ifname": attachment["ifname"]})
                removed.append({"containerID": attachment["containerID"], "ifname": attachment["ifname"]})
        if ipam.type:
            if conf.get("cniVersion") == "1.1.0" and ipam.supports("1.1.0"):
                ipam.run("GC")
            else:   # an IPAM plugin older than 1.1 (Debian's host-local): release the stale attachments one by one
                for att in delegated:
                    ipam.run("DEL", CNI_CONTAINERID=att["containerID"], CNI_IFNAME=att["ifname"], CNI_NETNS="")
        return {"removed": removed}


class CniServer:
    """Accepts plugin connections on a unix socket; one thread per request."""

    def __init__(self, path: str | os.PathLike | None = None, handler: CniHandler | None = None):
        self.path = str(path or paths.agent_socket())
        self.handler = handler or CniHandler()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def bind(self) -> socket.socket:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.path)
        os.chmod(self.path, 0o600)
        sock.listen(64)
        self._sock = sock
        return sock

    def start(self) -> CniServer:
        """Serve in a background thread (call enter_node_netns() before: threads inherit the namespace)."""
        if self._sock is None:
            self.bind()
        self._thread = threading.Thread(target=self.serve_forever, name="cni-server", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        sock = self._sock if self._sock is not None else self.bind()
        # threads kept between requests (created here, in the node's namespace): Thread.start() per request waited
        # for the new thread's first run, several ms of every ADD on a loaded node
        workers = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="cni-request")
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                workers.shutdown(wait=False)
                return   # closed
            workers.submit(self._serve_one, conn)

    def close(self) -> None:
        self.handler.wait_moves()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def _serve_one(self, conn: socket.socket) -> None:
        fds: list[int] = []
        try:
            data, fds = _recv_request(conn)
            if not data.strip():
                return   # a plugin that connected, then failed before asking (e.g. its IPAM plugin failed)
            ipam: Ipam | None = None
            try:
                request = json.loads(data)
                ipam = Ipam(request.get("config") or {}, request.get("env"))
                result = self.handler.handle(request, fds[0] if fds else None, ipam)
                reply: dict[str, object] = {"ok": True, "result": result}
            except CniFailure as err:
                reply = {"ok": False, "code": err.code, "msg": err.msg, "details": err.details}
            except ValueError as err:
                reply = {"ok": False, "code": 6, "msg": f"request is not JSON: {err}"}
            except Exception as err:   # the plugin prints it as a CNI error; the agent log keeps the trace
                log.exception("CNI request failed")
                msg = getattr(err, "strerror", None) or str(err) or type(err).__name__
                reply = {"ok": False, "code": E_INTERNAL, "msg": f"ciliumctl agent: {msg}"}
            if ipam is not None and ipam.stderr:
                reply["stderr"] = "".join(ipam.stderr)
            conn.sendall(json.dumps(reply).encode())
        except OSError:
            log.exception("CNI connection failed")
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()


def _recv_request(conn: socket.socket) -> tuple[bytes, list[int]]:
    chunks: list[bytes] = []
    fds: list[int] = []
    size = 0
    while True:
        fdarr = array.array("i")
        msg, anc, _flags, _addr = conn.recvmsg(65536, socket.CMSG_SPACE(4 * fdarr.itemsize))
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fdarr.frombytes(payload[: len(payload) - (len(payload) % fdarr.itemsize)])
                fds.extend(fdarr)
        if not msg:
            return b"".join(chunks), fds
        chunks.append(msg)
        size += len(msg)
        if size > MAX_REQUEST:
            raise OSError("request too large")


def serve(path: str | None = None) -> None:
    """Standalone server (the agent embeds CniServer instead)."""
    from ciliumctl.base.netns import enter_node_netns

    enter_node_netns()
    server = CniServer(path)
    server.bind()
    sys.stderr.write(f"ciliumctl CNI server listening on {server.path}\n")
    sys.stderr.flush()
    try:
        server.serve_forever()
    finally:
        server.close()


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ciliumctl.endpoints.cni_server")
    parser.add_argument("--socket", default=None, help="unix socket path (default: the agent socket)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from ciliumctl.base.errors import CiliumctlError

    try:
        serve(args.socket)
    except CiliumctlError as err:
        sys.stderr.write(f"Error: {err}\n")
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
