"""`ciliumctl-cni`: the CNI plugin (spec 1.0.0, plus STATUS and GC of 1.1.0).

Container runtimes exec this once per ADD/DEL/CHECK with the network configuration on stdin and the attachment
in CNI_* variables. It stays light (standard library only, no ciliumctl imports beyond this file) because its
start-up is part of every pod's start: it checks the request, hands it to the node agent over a unix socket
(the configuration and its environment, with an open descriptor of the pod's network namespace: the runtime's
netns bind mount may live in a mount namespace the agent cannot see), and prints the agent's result and the IPAM
plugin's stderr. The agent allocates the address (from its own pool, or through the IPAM plugin the configuration
names, which it runs as the plugin's delegate) and does the netlink and BPF work (ciliumctl/node/cni/server.py,
ciliumctl/node/cni/pool.py, ciliumctl/endpoints/cni_ipam.py).

Plugin configuration keys (all optional, in the conflist so that runtimes that drop environment variables,
like podman's cleanup process, still reach the right agent):
  agentSocket      unix socket of the agent (default $CILIUMCTL_RUN_DIR/agent.sock or /var/run/ciliumctl/agent.sock)
  hostVethPrefix   prefix of host-side veth names (default "lxc")
  agentTimeout     seconds to wait for the agent (default 60)
  ipam             an IPAM plugin's configuration ({"type": "host-local", ...}) to delegate to; without it the
                   agent allocates from the node's pool, as Cilium's agent does for its plugin
"""

import _json  # the C half of json: `import json` (re, enum) would cost more than the rest of a run
import _socket  # without socket.py, which imports enum and selectors
import posix  # os without os.py, which imports stat, posixpath and _collections_abc (~0.6 ms of every run)
import sys

# the environment as ENV decodes it (posix.environ holds bytes)
ENV = {k.decode(errors="surrogateescape"): v.decode(errors="surrogateescape") for k, v in posix.environ.items()}

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
    return ENV.get("CILIUMCTL_RUN_DIR", "/var/run/ciliumctl").rstrip("/") + "/agent.sock"


def _version_tuple(v: str) -> tuple:
    try:
        return tuple(int(p) for p in v.split("."))
    except ValueError:
        return (0,)


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
        _stderr(reply)
        raise CniError(int(reply.get("code") or 999), reply.get("msg") or "agent error", reply.get("details") or "")
    _stderr(reply)
    return reply.get("result") or {}


def _stderr(reply: dict) -> None:
    """The delegated IPAM plugin's stderr goes to ours (CNI SPEC.md, "Delegated plugin execution procedure")."""
    if reply.get("stderr"):
        sys.stderr.write(str(reply["stderr"]))
        sys.stderr.flush()


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
    missing = [n for n in names if not ENV.get(n)]
    if missing:
        raise CniError(E_INVALID_ENV, "required environment variables missing: " + ", ".join(missing))
    cid, ifname = ENV.get("CNI_CONTAINERID", ""), ENV.get("CNI_IFNAME", "")
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
        return posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError as err:
        raise CniError(E_INVALID_ENV, f"CNI_NETNS={path}: {err.strerror}") from None


def base_request(command: str, conf: dict) -> dict:
    return {
        "command": command,
        "containerID": ENV.get("CNI_CONTAINERID", ""),
        "netns": ENV.get("CNI_NETNS", ""),
        "ifname": ENV.get("CNI_IFNAME", ""),
        "args": parse_args(ENV.get("CNI_ARGS", "")),
        "config": conf,
        "env": dict(ENV),   # the IPAM plugin, run by the agent, gets the environment we got
    }


def require_ipam(conf: dict) -> None:
    """No "ipam" section: the agent's own IPAM. One that is there names its plugin."""
    ipam = conf.get("ipam")
    if "ipam" in conf and (not isinstance(ipam, dict) or not ipam.get("type")):
        raise CniError(E_INVALID_CONFIG, "the \"ipam\" section of the network configuration has no \"type\"",
                       'name an IPAM plugin, e.g. "ipam": {"type": "host-local", "subnet": "10.200.0.0/24"}, or '
                       'leave "ipam" out for the agent\'s own')


def cmd_add(conf: dict) -> dict:
    require_env("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME")
    version = check_version(conf)
    require_ipam(conf)
    request = base_request("ADD", conf)   # parses CNI_ARGS before anything is allocated
    fd = open_netns(ENV["CNI_NETNS"])
    try:
        # the agent allocates the address (its pool, or the IPAM plugin beside the veth), and releases it on failure
        result = call_agent(connect_agent(conf), request, fd)
    finally:
        posix.close(fd)
    return format_result(result, version)


def cmd_del(conf: dict) -> None:
    require_env("CNI_CONTAINERID", "CNI_IFNAME")
    check_version(conf)
    netns = ENV.get("CNI_NETNS", "")
    fd = None
    if netns:
        try:
            fd = posix.open(netns, posix.O_RDONLY | posix.O_CLOEXEC)
        except OSError:
            fd = None   # the namespace is already gone: clean up what is left on the host
    try:
        # The agent releases the address (IPAM DEL) only after the endpoint is gone: handing it to a new pod while
        # the old endpoint still holds it (veth, ipcache identity) would mix the two. The runtime retries the DEL.
        call_agent(connect_agent(conf), base_request("DEL", conf), fd)
    finally:
        if fd is not None:
            posix.close(fd)


def cmd_check(conf: dict) -> None:
    require_env("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME")
    version = check_version(conf)
    if _version_tuple(version) < (0, 4, 0):
        raise CniError(E_INCOMPATIBLE_VERSION, f"CHECK needs cniVersion 0.4.0 or later, got {version}")
    if not isinstance(conf.get("prevResult"), dict):
        raise CniError(E_INVALID_CONFIG, "CHECK needs prevResult in the network configuration")
    fd = open_netns(ENV["CNI_NETNS"])
    try:
        call_agent(connect_agent(conf), base_request("CHECK", conf), fd)
    finally:
        posix.close(fd)


def cmd_status(conf: dict) -> None:
    check_version(conf)
    try:
        call_agent(connect_agent(conf), {"command": "STATUS", "config": conf}, None)
    except CniError as err:
        raise CniError(E_PLUGIN_NOT_AVAILABLE, f"ciliumctl cannot service ADD: {err.msg}", err.details) from err


def cmd_gc(conf: dict) -> None:
    check_version(conf)
    request = {"command": "GC", "config": conf, "env": dict(ENV)}
    call_agent(connect_agent(conf), request, None)


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
    command = ENV.get("CNI_COMMAND", "")
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
