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

import json
import os
import socket
import sys

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
    import subprocess

    path = find_plugin(name)
    env = dict(os.environ, CNI_COMMAND=command)
    proc = subprocess.run([path], input=json.dumps(conf).encode(), stdout=subprocess.PIPE, env=env, timeout=60)
    out = proc.stdout.strip()
    parsed = None
    if out:
        try:
            parsed = json.loads(out)
        except ValueError:
            raise CniError(E_DECODE, f"IPAM plugin {name} {command}: output is not JSON",
                           out[:200].decode(errors="replace")) from None
    if proc.returncode != 0:
        if isinstance(parsed, dict) and "code" in parsed:
            raise CniError(int(parsed.get("code") or 999), f"IPAM plugin {name}: {parsed.get('msg', '')}",
                           str(parsed.get("details", "")))
        raise CniError(999, f"IPAM plugin {name} {command} failed with exit code {proc.returncode}")
    return parsed


# --- the agent ---------------------------------------------------------------------------------------------

def connect_agent(conf: dict) -> socket.socket:
    path = conf.get("agentSocket") or default_agent_socket()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(float(conf.get("agentTimeout") or 60))
    try:
        sock.connect(path)
    except OSError as err:
        sock.close()
        raise CniError(E_TRY_AGAIN_LATER, f"ciliumctl agent is not running (cannot connect to {path}: "
                                          f"{err.strerror}); start it with `ciliumctl agent` or "
                                          "`ciliumctl install`") from None
    return sock


def call_agent(sock: socket.socket, request: dict, netns_fd: int | None) -> dict:
    """One request per connection: JSON then EOF; the netns descriptor travels with the first bytes."""
    data = json.dumps(request).encode()
    try:
        if netns_fd is not None:
            sent = socket.send_fds(sock, [data], [netns_fd])
            data = data[sent:]
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
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
        reply = json.loads(b"".join(chunks))
    except ValueError:
        raise CniError(E_TRY_AGAIN_LATER, "ciliumctl agent closed the connection without an answer") from None
    if not reply.get("ok"):
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
        conf = json.loads(raw) if raw.strip() else None
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
        conf = json.loads(raw) if raw.strip() else {}
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
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
