"""The IPAM plugin of a CNI attachment, run by the agent for the plugin (delegation as the CNI spec defines it:
containernetworking/cni SPEC.md, section 4 "Plugin Delegation", "Delegated plugin execution procedure"): looked
up in the runtime's CNI_PATH, executed with the environment the plugin received (CNI_COMMAND set per call) and the
whole network configuration on stdin, its stderr handed back for the plugin's stderr; on a failed ADD it runs
again with DEL; DEL and CHECK run it too.

The agent runs it, not the plugin, so that an ADD's allocation overlaps the veth's creation (which needs no
address) and the plugin stays a thin client. The agent must see the runtime's CNI_PATH and the IPAM plugin's data
directory at the same paths: in node mode it runs in the host's mount namespace; the cluster DaemonSet mounts
/opt/cni/bin and /var/lib/cni/networks (ciliumctl/cluster/manifests.py). Only root can reach the agent socket
(mode 0600), so the environment it gets (CNI_PATH included) comes from a caller that could exec anything anyway."""

from __future__ import annotations

import json
import os
import subprocess
import threading

E_DECODE = 6
E_INVALID_CONFIG = 7
E_TRY_AGAIN_LATER = 11
E_INTERNAL = 999
TIMEOUT = 60.0


class CniFailure(Exception):
    """A CNI error: the plugin prints it as the spec's error object (code, msg, details)."""

    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details


_versions: dict[tuple, list] = {}   # (path, inode, mtime) -> the plugin's supportedVersions
_versions_lock = threading.Lock()


class Ipam:
    """The IPAM plugin named in one request's configuration, with that request's environment."""

    def __init__(self, conf: dict, env: dict | None):
        ipam = conf.get("ipam")
        self.type = str(ipam.get("type") or "") if isinstance(ipam, dict) else ""
        self.conf = conf
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.stderr: list[str] = []   # the delegated plugin's stderr, for the plugin's own

    def run(self, command: str, **env: str) -> dict | None:
        """Run it with CNI_COMMAND=command (env: variables to change); its parsed stdout (None when empty)."""
        return self.spawn(command, **env).result()

    def spawn(self, command: str, **env: str) -> Running:
        """Start it; Running.result() waits for it (it runs as its own process meanwhile, no thread of ours)."""
        path = self._find()
        data = json.dumps(self._conf_for(path)).encode()
        try:
            proc = subprocess.Popen([path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=dict(self.env, CNI_COMMAND=command, **env), close_fds=True, bufsize=0)
        except OSError as err:
            raise CniFailure(E_INVALID_CONFIG, f"IPAM plugin {path}: {err.strerror}") from None
        assert proc.stdin is not None
        try:
            # the plugin reads all of stdin first: a configuration past the pipe's 64 KiB waits for that, no longer
            view = memoryview(data)
            while view:   # unbuffered (bufsize=0): a write may take part of it
                view = view[proc.stdin.write(view) or 0:]
        except BrokenPipeError:
            pass   # it stopped reading: its exit code says why
        finally:
            proc.stdin.close()
        proc.stdin = None   # written and closed: communicate() only reads stdout and stderr
        return Running(self, command, proc)

    def release(self) -> None:
        """DEL after a failed ADD; the ADD's own error is what the runtime needs to see, so this one only goes to
        the plugin's stderr."""
        try:
            self.run("DEL")
        except CniFailure as err:
            self.stderr.append(f"releasing the address after a failed ADD: {err.msg}\n")

    def supports(self, version: str) -> bool:
        return version in self._versions(self._find())

    def _find(self) -> str:
        name = self.type
        if not name or "/" in name:
            raise CniFailure(E_INVALID_CONFIG, f"invalid IPAM plugin type {name!r}")
        search = self.env.get("CNI_PATH", "")
        for d in search.split(":"):
            if d and os.access(os.path.join(d, name), os.X_OK):
                return os.path.join(d, name)
        raise CniFailure(E_INVALID_CONFIG, f"IPAM plugin {name!r} not found in CNI_PATH={search!r} as the ciliumctl "
                                           "agent sees it", "the agent runs the IPAM plugin: it must see the "
                                           "runtime's CNI bin directory at the same path")

    def _conf_for(self, path: str) -> dict:
        """A 1.1.0 request goes to a 1.0.0-only plugin (Debian's host-local) as 1.0.0, whose ADD result has the
        same shape."""
        if self.conf.get("cniVersion") != "1.1.0" or "1.1.0" in self._versions(path):
            return self.conf
        return dict(self.conf, cniVersion="1.0.0")

    def _versions(self, path: str) -> list:
        st = os.stat(path)
        key = (path, st.st_ino, st.st_mtime_ns)   # a replaced binary is asked again
        with _versions_lock:
            known = _versions.get(key)
        if known is None:
            probe = Ipam({"cniVersion": "1.0.0"}, self.env)
            probe.type = self.type
            info = probe.run("VERSION") or {}
            known = list(info.get("supportedVersions") or [])
            with _versions_lock:
                _versions[key] = known
        return known


class Running:
    """A started IPAM plugin."""

    def __init__(self, ipam: Ipam, command: str, proc: subprocess.Popen):
        self.ipam, self.command, self.proc = ipam, command, proc
        self._parsed: dict | None = None
        self._error: CniFailure | None = None
        self._done = False

    def result(self) -> dict | None:
        """Its parsed stdout (None when empty), or its error as a CniFailure (the same one when asked again)."""
        if not self._done:
            self._done = True
            try:
                self._parsed = self._wait()
            except CniFailure as err:
                self._error = err
        if self._error is not None:
            raise self._error
        return self._parsed

    def _wait(self) -> dict | None:
        name, command, proc = self.ipam.type, self.command, self.proc
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise CniFailure(E_TRY_AGAIN_LATER,
                             f"IPAM plugin {name} {command} did not finish in {TIMEOUT:g} s") from None
        if err:
            self.ipam.stderr.append(err.decode(errors="replace"))
        out = out.strip()
        parsed = None
        if out:
            try:
                parsed = json.loads(out)
            except ValueError:
                raise CniFailure(E_DECODE, f"IPAM plugin {name} {command}: output is not JSON",
                                 out[:200].decode(errors="replace")) from None
        if proc.returncode != 0:
            if isinstance(parsed, dict) and "code" in parsed:
                raise CniFailure(int(parsed.get("code") or E_INTERNAL), f"IPAM plugin {name}: "
                                 f"{parsed.get('msg', '')}", str(parsed.get("details", "")))
            raise CniFailure(E_INTERNAL, f"IPAM plugin {name} {command} failed with exit code {proc.returncode}")
        return parsed
