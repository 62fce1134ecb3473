"""`ciliumctl-cni`: the CNI plugin (spec 1.0.0, plus STATUS and GC of 1.1.0).

Container runtimes exec this once per ADD/DEL/CHECK with the network configuration on stdin and the attachment
in CNI_* variables. It stays light (standard library only, no ciliumctl imports beyond this file) because its
start-up is part of every pod's start: it runs the IPAM plugin named in the configuration itself (it has the
runtime's CNI_PATH and mount namespace), then hands the attachment to the node agent over a unix socket
together with an open descriptor of the pod's network namespace (the runtime's netns bind mount may live in a
mount namespace the agent cannot see), and prints the agent's result. The agent does the netlink and BPF work
(ciliumctl/endpoints/cni_server.py).

Plugin configuration keys (all optional, in the conflist so that runtimes that drop environment variables,
like podman's cleanup process, still reach the right agent):
  agentSocket      unix socket of the agent (default $CILIUMCTL_RUN_DIR/agent.sock or /var/run/ciliumctl/agent.sock)
  hostVethPrefix   prefix of host-side veth names (default "lxc")
  agentTimeout     seconds to wait for the agent (default 60)
  ipam             the IPAM plugin's configuration ({"type": "host-local", ...}); required for ADD
"""

import _json  # the C half of json: `import json` (re, enum) would cost more than the rest of a run
import _socket  # without socket.py, which imports enum and selectors
import os
import sys

MYPY = False
if MYPY:   # what mypy reads; the plugin never imports typing (8 ms)
    from typing import Any

SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
DEFAULT_VERSION = "1.0.0"

# Well-known error codes of the CNI spec.
E_INCOMPATIBLE_VERSION = 1
E_UNSUPPORTED_FIELD = 2
E_UNKNOWN_CONTAINER = 3
E_INVALID_ENV = 4
E_IO = 5
E_DECODE = 6
E_INVALID_CONFIG = 7
E_TRY_AGAIN_LATER = 11
E_PLUGIN_NOT_AVAILABLE = 50


# --- JSON with the json module's own C scanner and encoder (as json.loads / json.dumps with defaults) ----------

class _Scanner:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}.__getitem__


# any object with these attributes will do
_scan = _json.make_scanner(_Scanner())   # type: ignore[arg-type]
_WS = " \t\n\r"


def json_loads(text: str | bytes) -> "Any":
    """json.loads: a ValueError for anything that is not one JSON value."""
    if isinstance(text, bytes):
        text = text.decode()
    start, end = len(text) - len(text.lstrip(_WS)), len(text.rstrip(_WS))
    try:
        value, stop = _scan(text, start)
        if stop == end:
            return value
    except Exception:   # StopIteration, or the scanner's own error
        pass
    import json  # not JSON: the json module says what is wrong, with its own ValueError

    return json.loads(text)


def _not_json(o: object) -> object:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def json_dumps(value: object) -> str:
    """json.dumps(value) (ASCII, ", " and ": " separators)."""
    enc = _json.make_encoder({}, _not_json, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True)
    return "".join(enc(value, 0))


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details


def default_agent_socket() -> str:
    return os.path.join(os.environ.get("CILIUMCTL_RUN_DIR", "/var/run/ciliumctl"), "agent.sock")


def _version_tuple(v: str) -> tuple:
    try:
        return tuple(int(p) for p in v.split("."))
    except ValueError:
        return (0,)


# --- the IPAM plugin (delegated plugin protocol: same environment, whole config on stdin) -------------------

def find_plugin(name: str) -> str:
    if not name or "/" in name:
        raise CniError(E_INVALID_CONFIG, f"invalid IPAM plugin type {name!r}")
    for d in os.environ.get("CNI_PATH", "").split(":"):
        if d and os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    raise CniError(E_INVALID_CONFIG, f"IPAM plugin {name!r} not found in CNI_PATH={os.environ.get('CNI_PATH', '')!r}")


_ipam_versions: dict[str, list] = {}


def ipam_conf(name: str, conf: dict) -> dict:
    """The configuration for the IPAM plugin: a 1.1.0 request goes to a 1.0.0-only plugin (Debian's
    host-local) as 1.0.0, whose ADD result has the same shape."""
    if conf.get("cniVersion") != "1.1.0":
        return conf
    if name not in _ipam_versions:
        info = exec_plugin(name, "VERSION", {"cniVersion": "1.0.0"}) or {}
        _ipam_versions[name] = list(info.get("supportedVersions") or [])
    return conf if "1.1.0" in _ipam_versions[name] else dict(conf, cniVersion="1.0.0")


def exec_ipam(name: str, command: str, conf: dict) -> dict | None:
    return exec_plugin(name, command, ipam_conf(name, conf))


def exec_plugin(name: str, command: str, conf: dict) -> dict | None:
    """Run a delegated plugin; its stderr goes to ours. Returns its parsed stdout (None when empty)."""
    path = find_plugin(name)
    code, out = _run(path, json_dumps(conf).encode(), dict(os.environ, CNI_COMMAND=command), 60.0)
    if code is None:
        raise CniError(E_TRY_AGAIN_LATER, f"IPAM plugin {name} {command} did not finish in 60 s")
    out = out.strip()
    parsed = None
    if out:
        try:
            parsed = json_loads(out)
        except ValueError:
            raise CniError(E_DECODE, f"IPAM plugin {name} {command}: output is not JSON",
                           out[:200].decode(errors="replace")) from None
    if code != 0:
        if isinstance(parsed, dict) and "code" in parsed:
            raise CniError(int(parsed.get("code") or 999), f"IPAM plugin {name}: {parsed.get('msg', '')}",
                           str(parsed.get("details", "")))
        raise CniError(999, f"IPAM plugin {name} {command} failed with exit code {code}")
    return parsed


def _run(path: str, data: bytes, env: dict, timeout: float) -> tuple[int | None, bytes]:
    """(exit code, stdout) of path fed data on stdin; (None, ...) when it ran out of time (killed). posix_spawn and
    pipes instead of subprocess, whose import costs more than the plugin runs here."""
    import select  # built into the interpreter, as time is
    import time

    in_r, in_w = os.pipe()     # non-inheritable: only the dup2'd copies reach the child
    out_r, out_w = os.pipe()
    try:
        pid = os.posix_spawn(path, [path], env, file_actions=[(os.POSIX_SPAWN_DUP2, in_r, 0),
                                                               (os.POSIX_SPAWN_DUP2, out_w, 1)])
    finally:
        os.close(in_r)
        os.close(out_w)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(in_w, view):]
    except BrokenPipeError:
        pass   # it stopped reading: its exit code says why
    finally:
        os.close(in_w)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([out_r], [], [], left)[0]:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                return None, b""
            chunk = os.read(out_r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(out_r)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), b"".join(chunks)


# --- the agent ---------------------------------------------------------------------------------------------

def connect_agent(conf: dict) -> _socket.socket:
    path = conf.get("agentSocket") or default_agent_socket()
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(float(conf.get("agentTimeout") or 60))
    try:
        sock.connect(path)
    except OSError as err:
        sock.close()
        raise CniError(E_TRY_AGAIN_LATER, f"ciliumctl agent is not running (cannot connect to {path}: "
                                          f"{err.strerror}); start it with `ciliumctl agent` or "
                                          "`ciliumctl install`") from None
    return sock


def call_agent(sock: _socket.socket, request: dict, netns_fd: int | None) -> dict:
    """One request per connection: JSON then EOF; the netns descriptor travels with the first bytes."""
    data = json_dumps(request).encode()
    try:
        if netns_fd is not None:
            rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, netns_fd.to_bytes(4, sys.byteorder))]
            sent = sock.sendmsg([data], rights)
            data = data[sent:]
        sock.sendall(data)
        sock.shutdown(_socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except TimeoutError:
        raise CniError(E_TRY_AGAIN_LATER, f"ciliumctl agent did not answer {request['command']} in time") from None
    except OSError as err:
        raise CniError(E_TRY_AGAIN_LATER,
                       f"lost the connection to the ciliumctl agent: {err.strerror or err}") from None
    finally:
        sock.close()
    try:
        reply = json_loads(b"".join(chunks))
    except ValueError:
        raise CniError(E_TRY_AGAIN_LATER, "ciliumctl agent closed the connection without an answer") from None
    if not isinstance(reply, dict) or not reply.get("ok"):
        reply = reply if isinstance(reply, dict) else {}
        raise CniError(int(reply.get("code") or 999), reply.get("msg") or "agent error", reply.get("details") or "")
    return reply.get("result") or {}


# --- result formatting -------------------------------------------------------------------------------------

def format_result(result: dict, version: str) -> dict:
    """The agent answers in 1.0.0 form; older versions want "version" on each IP."""
    out = dict(result)
    out["cniVersion"] = version
    if _version_tuple(version) < (1, 0, 0):
        out["ips"] = [dict(ip, version="6" if ":" in ip.get("address", "") else "4") for ip in out.get("ips", [])]
    return out


# --- commands ----------------------------------------------------------------------------------------------

def parse_args(raw: str) -> dict:
    args = {}
    for part in raw.split(";"):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise CniError(E_INVALID_ENV, f"CNI_ARGS: {part!r} is not KEY=VALUE")
        args[key] = value
    return args


def require_env(*names: str) -> None:
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise CniError(E_INVALID_ENV, "required environment variables missing: " + ", ".join(missing))
    cid, ifname = os.environ.get("CNI_CONTAINERID", ""), os.environ.get("CNI_IFNAME", "")
    if cid and not (cid[0].isascii() and cid[0].isalnum()
                    and all(c.isascii() and (c.isalnum() or c in "_.-") for c in cid)):
        raise CniError(E_INVALID_ENV, f"CNI_CONTAINERID {cid!r}: must start with a letter or digit and hold only "
                                      "letters, digits, '_', '.' and '-'")
    if ifname and (len(ifname) > 15 or ifname in (".", "..") or any(c in "/:" or c.isspace() for c in ifname)):
        raise CniError(E_INVALID_ENV, f"CNI_IFNAME {ifname!r}: must be at most 15 characters, not . or .., "
                                      "without '/', ':' or spaces")


def read_conf() -> dict:
    try:
        raw = sys.stdin.buffer.read()
    except OSError as err:
        raise CniError(E_IO, f"cannot read the network configuration from stdin: {err.strerror}") from None
    try:
        conf = json_loads(raw) if raw.strip() else None
    except ValueError as err:
        raise CniError(E_DECODE, f"network configuration on stdin is not JSON: {err}") from None
    if not isinstance(conf, dict):
        raise CniError(E_DECODE, "network configuration on stdin must be a JSON object")
    return conf


_error_version = DEFAULT_VERSION   # errors answer in the version the runtime asked for, when it is one we speak


def check_version(conf: dict) -> str:
    global _error_version
    version = str(conf.get("cniVersion") or "")
    if version in SUPPORTED_VERSIONS:
        _error_version = version
    else:
        raise CniError(E_INCOMPATIBLE_VERSION, f"cniVersion {version!r} is not supported",
                       "supported: " + ", ".join(SUPPORTED_VERSIONS))
    return version


def open_netns(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise CniError(E_INVALID_ENV, f"CNI_NETNS={path}: {err.strerror}") from None


def base_request(command: str, conf: dict) -> dict:
    return {
        "command": command,
        "containerID": os.environ.get("CNI_CONTAINERID", ""),
        "netns": os.environ.get("CNI_NETNS", ""),
        "ifname": os.environ.get("CNI_IFNAME", ""),
        "args": parse_args(os.environ.get("CNI_ARGS", "")),
        "config": conf,
    }


def ipam_type(conf: dict, required: bool) -> str | None:
    ipam = conf.get("ipam")
    if not isinstance(ipam, dict) or not ipam.get("type"):
        if required:
            raise CniError(E_INVALID_CONFIG, "network configuration has no \"ipam\" section with a \"type\"",
                           'add e.g. "ipam": {"type": "host-local", "subnet": "10.200.0.0/24"}')
        return None
    return ipam["type"]


def cmd_add(conf: dict) -> dict:
    require_env("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME")
    version = check_version(conf)
    ipam = ipam_type(conf, required=True)
    assert ipam is not None                # required: ipam_type raised a CniError instead
    request = base_request("ADD", conf)   # parses CNI_ARGS before anything is allocated
    fd = open_netns(os.environ["CNI_NETNS"])
    try:
        sock = connect_agent(conf)        # before IPAM: nothing to roll back when the agent is down
        try:
            ipam_result = exec_ipam(ipam, "ADD", conf) or {}
        except BaseException:
            sock.close()
            raise
        if not ipam_result.get("ips"):
            sock.close()
            _release_ipam(ipam, conf)
            raise CniError(E_INVALID_CONFIG, f"IPAM plugin {ipam} returned no addresses")
        request["ipamResult"] = ipam_result
        try:
            result = call_agent(sock, request, fd)
        except BaseException:
            _release_ipam(ipam, conf)
            raise
    finally:
        os.close(fd)
    return format_result(result, version)


def _release_ipam(ipam: str, conf: dict) -> None:
    try:
        exec_ipam(ipam, "DEL", conf)
    except Exception as err:  # the original error is what the runtime needs to see
        sys.stderr.write(f"ciliumctl-cni: releasing the address after a failed ADD: {err}\n")


def cmd_del(conf: dict) -> None:
    require_env("CNI_CONTAINERID", "CNI_IFNAME")
    check_version(conf)
    netns = os.environ.get("CNI_NETNS", "")
    fd = None
    if netns:
        try:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            fd = None   # the namespace is already gone: clean up what is left on the host
    try:
        # When the agent cannot clean up, the address stays leased: handing it to a new pod while the old
        # endpoint still holds it (veth, ipcache identity) would mix the two. The runtime retries the DEL.
        call_agent(connect_agent(conf), base_request("DEL", conf), fd)
    finally:
        if fd is not None:
            os.close(fd)
    ipam = ipam_type(conf, required=False)
    if ipam:
        exec_ipam(ipam, "DEL", conf)


def cmd_check(conf: dict) -> None:
    require_env("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME")
    version = check_version(conf)
    if _version_tuple(version) < (0, 4, 0):
        raise CniError(E_INCOMPATIBLE_VERSION, f"CHECK needs cniVersion 0.4.0 or later, got {version}")
    if not isinstance(conf.get("prevResult"), dict):
        raise CniError(E_INVALID_CONFIG, "CHECK needs prevResult in the network configuration")
    fd = open_netns(os.environ["CNI_NETNS"])
    try:
        call_agent(connect_agent(conf), base_request("CHECK", conf), fd)
    finally:
        os.close(fd)
    ipam = ipam_type(conf, required=False)
    if ipam:
        exec_ipam(ipam, "CHECK", conf)


def cmd_status(conf: dict) -> None:
    check_version(conf)
    try:
        call_agent(connect_agent(conf), {"command": "STATUS", "config": conf}, None)
    except CniError as err:
        raise CniError(E_PLUGIN_NOT_AVAILABLE, f"ciliumctl cannot service ADD: {err.msg}", err.details) from err


def cmd_gc(conf: dict) -> None:
    check_version(conf)
    removed = call_agent(connect_agent(conf), {"command": "GC", "config": conf}, None).get("removed", [])
    ipam = ipam_type(conf, required=False)
    if ipam:
        if ipam_conf(ipam, conf)["cniVersion"] == "1.1.0":
            exec_plugin(ipam, "GC", conf)
        else:   # an IPAM plugin older than 1.1 (Debian's host-local): release the stale attachments one by one
            for att in removed:
                os.environ.update(CNI_CONTAINERID=att["containerID"], CNI_IFNAME=att["ifname"], CNI_NETNS="")
                exec_ipam(ipam, "DEL", conf)


def cmd_version() -> dict:
    try:
        raw = sys.stdin.buffer.read()
        conf = json_loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        conf = {}
    version = conf.get("cniVersion") if isinstance(conf, dict) else None
    return {"cniVersion": version if version in SUPPORTED_VERSIONS else DEFAULT_VERSION,
            "supportedVersions": SUPPORTED_VERSIONS}


def run() -> tuple[int, dict | None]:
    command = os.environ.get("CNI_COMMAND", "")
    if command == "VERSION":
        return 0, cmd_version()
    if command not in ("ADD", "DEL", "CHECK", "STATUS", "GC"):
        if not command:
            raise CniError(E_INVALID_ENV, "CNI_COMMAND is not set (this program is a CNI plugin, run by a "
                                          "container runtime; see https://www.cni.dev)")
        raise CniError(E_INVALID_ENV, f"CNI_COMMAND={command!r} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION")
    conf = read_conf()
    if command == "ADD":
        return 0, cmd_add(conf)
    {"DEL": cmd_del, "CHECK": cmd_check, "STATUS": cmd_status, "GC": cmd_gc}[command](conf)
    return 0, None


def main() -> None:
    try:
        code, out = run()
    except CniError as err:
        out = {"cniVersion": _error_version, "code": err.code, "msg": err.msg}
        if err.details:
            out["details"] = err.details
        code = 1
    except Exception as err:  # never a traceback on the runtime's log without the spec's error object
        out = {"cniVersion": _error_version, "code": 999, "msg": f"ciliumctl-cni internal error: {err!r}"}
        code = 1
    if out is not None:
        sys.stdout.write(json_dumps(out) + "\n")
        sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
