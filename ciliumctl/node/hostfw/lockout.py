"""The host firewall's lock-out guard (issue 13): before a host policy is enforced for real, the node's live TCP
connections and connected UDP sockets are judged by the new policy, as the datapath would judge their next packet
(a forward packet is decided again under a new revision, lib/enforce.h revalidate). A policy that would cut one,
the agent's own API-server connection included, is refused, naming them; `policy apply --force` applies it
anyway. In cluster mode the agent applies policies, not a command: it holds back such a host policy and says why
on the policy (hold_back; node.cluster_sync), unless the policy carries FORCE_ANNOTATION.

Cilium has no such guard. Connections come from the node namespace's socket tables (/proc/net/tcp and udp, the
text form of what `ss` reads over sock_diag: what conntrack also holds, and the kernel's own view of which side
listens): a connection whose local port has a listening socket is inbound (the host's ingress policy, on that
port), any other outbound (egress, on the peer's port). UDP: a socket connect()ed to a peer is a flow with a known
peer (state ESTABLISHED in the table: DNS resolvers, NTP, QUIC/WireGuard clients); it is inbound when an unconnected
socket is bound to the same local port (a server's per-peer socket), else outbound. Unconnected UDP sockets (a
server answering with sendto, a client using sendto) name no peer in any socket table, so they cannot be judged
here; their flows live only in conntrack, which this guard does not read.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from ciliumctl.base.errors import Finding
from ciliumctl.identity import allocator as ids
from ciliumctl.policy.resolve import HOST_ENDPOINT_ID, REMOTE_NODE_SCOPE
from ciliumctl.policy.resolved import PROTO_TCP, PROTO_UDP, Direction, ResolvedState
from ciliumctl.policy.trace import judge, lpm_identity

TCP_ESTABLISHED, TCP_LISTEN = 0x01, 0x0A     # include/net/tcp_states.h
SHOWN = 5                                    # connections named in the refusal; the rest counted


@dataclass(frozen=True)
class Connection:
    local: str
    lport: int
    remote: str
    rport: int
    inbound: bool
    inode: int = 0
    agent: bool = False          # held by the node's agent (its API-server connection in cluster mode)
    proto: int = PROTO_TCP

    def text(self, peer: int) -> str:
        # a node's own identity (--enable-node-selector-labels) is a remote node's all the same
        who = ids.RESERVED_NAMES.get(peer) or ("remote-node" if REMOTE_NODE_SCOPE <= peer < 2 * REMOTE_NODE_SCOPE
                                               else f"identity {peer}")
        arrow = f"{self.remote}:{self.rport} -> {self.local}:{self.lport}" if self.inbound else \
            f"{self.local}:{self.lport} -> {self.remote}:{self.rport}"
        whose = "the agent's own connection " if self.agent else ""
        name = "udp" if self.proto == PROTO_UDP else "tcp"
        return f"{whose}{arrow}/{name} ({'from' if self.inbound else 'to'} {who})"


class LockoutRefused(Finding):
    """A host policy that would cut live connections of the node (exit 1); nothing was applied."""


def _addr(hexaddr: str) -> tuple[str, int]:
    ip, port = hexaddr.split(":")
    return socket.inet_ntoa(struct.pack("<I", int(ip, 16))), int(port, 16)


def _agent_inodes(pid: int | None) -> set[int]:
    """Socket inodes of the node's agent process, for naming its connections."""
    if pid is None:
        return set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return set()
    out = set()
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


def _read(name: str) -> str:
    from ciliumctl.base import netns as nodens

    nodens.enter_node_netns()
    with open(f"/proc/self/net/{name}") as f:   # the calling thread's network namespace
        return f.read()


def live_connections(table: str | None = None, udp_table: str | None = None,
                     agent_pid: int | None = None) -> list[Connection]:
    """Established IPv4 TCP connections and connected UDP sockets of the current network namespace (call in the
    node's), with their direction. table / udp_table: the text of /proc/net/tcp and udp (tests), else read.
    agent_pid: the node's agent process, whose connections are named as its own (node.agent.running_pid; in
    cluster mode the agent calls this itself)."""
    if table is None and udp_table is None:
        table, udp_table = _read("tcp"), _read("udp")
    agent = _agent_inodes(agent_pid)
    return _connections(table or "", PROTO_TCP, agent) + _connections(udp_table or "", PROTO_UDP, agent)


def _connections(table: str, proto: int, agent: set[int]) -> list[Connection]:
    rows = []
    for line in table.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10:
            continue
        local, remote, st, inode = _addr(parts[1]), _addr(parts[2]), int(parts[3], 16), int(parts[9])
        rows.append((local, remote, st, inode))
    if proto == PROTO_TCP:
        listening = {lp for (la, lp), _r, st, _i in rows if st == TCP_LISTEN}
    else:   # an unconnected UDP socket (state 07, TCP_CLOSE in the table) on the port serves it
        listening = {lp for (la, lp), (ra, rp), st, _i in rows if st != TCP_ESTABLISHED and rp == 0}
    return [Connection(la, lp, ra, rp, lp in listening, inode, inode in agent, proto)
            for (la, lp), (ra, rp), st, inode in rows if st == TCP_ESTABLISHED and rp != 0]


def would_cut(state: ResolvedState, conns: list[Connection]) -> list[str]:
    """The connections the host endpoint's policy in `state` would drop, as text. Nothing when the state has no
    host endpoint or reports only (audit); loopback and addresses that are not the node's never meet the host's
    programs."""
    host = state.endpoints.get(HOST_ENDPOINT_ID)
    if host is None or host.audit or state.audit:
        return []
    mine = {p.split("/")[0] for p, i in state.ipcache.items() if i == ids.HOST and p.endswith("/32")}
    out = []
    for c in conns:
        if c.local not in mine or c.remote.startswith("127.") or c.remote in mine:
            continue
        d = host.direction(Direction.INGRESS if c.inbound else Direction.EGRESS)
        if not d.enforced:
            continue
        peer = lpm_identity(state.ipcache, c.remote)
        verdict, _ = judge(d, peer, c.proto, c.lport if c.inbound else c.rport)
        if verdict != "allow":
            out.append((not c.agent, c.text(peer)))
    return [t for _, t in sorted(out)]          # the agent's own first


def check(state: ResolvedState, what: str = "policy apply", agent_pid: int | None = None) -> None:
    """Refuse `state` when its host policy would cut a live connection of the node (LockoutRefused). agent_pid:
    the node's agent, whose connections are named first."""
    cut = would_cut(state, live_connections(agent_pid=agent_pid))
    if not cut:
        return
    more = f" and {len(cut) - SHOWN} more" if len(cut) > SHOWN else ""
    raise LockoutRefused(f"{what} refused: the host policy would cut {len(cut)} live connection(s) of this node: "
                         f"{'; '.join(cut[:SHOWN])}{more}; allow them first, or run it with --force "
                         "(or try it with install --host-firewall-audit)")


# ------------------------------------------------------------------------------------------------- cluster mode

# In cluster mode the agent applies what `kubectl apply` stored: there is no command to refuse, so the agent holds
# back (does not enforce) a host policy that would cut a live connection of its node and says so on the policy
# (node.cluster_sync: a condition of this node's, an Event, a log line), unless the policy carries this annotation,
# the cluster's `--force`.
FORCE_ANNOTATION = "ciliumctl.io/host-firewall-force"


def is_host_policy(data: dict) -> bool:
    """Whether a policy object has a nodeSelector rule (the host endpoint's)."""
    specs = [data.get("spec"), *(data.get("specs") or [])]
    return any(isinstance(s, dict) and s.get("nodeSelector") is not None for s in specs)


def forced(obj: dict) -> bool:
    return str(((obj.get("metadata") or {}).get("annotations") or {}).get(FORCE_ANNOTATION, "")).lower() == "true"


def hold_back(policies: list[tuple[str, dict]], forced_refs: set[str], in_force: set[str],
              cuts: Callable[[list[dict]], list[str]]) -> dict[str, list[str]]:
    """The host policies to leave out, each with the live connections it would cut: enforcing the rest cuts no
    connection the forced ones do not. `policies`: (ref, object) of every policy to enforce; `cuts(objects)`: the
    connections the state of those policies would cut (would_cut). Host policies join one at a time, those in force
    before first (a held policy is the new one, not the one the node already enforces), then by name; one that
    would cut a connection more waits, and joins once others make it harmless (an allow for its connections
    applied in the same change, in any order)."""
    everything = [p for _, p in policies]
    if not cuts(everything):
        return {}
    waiting = sorted(((ref, p) for ref, p in policies if is_host_policy(p) and ref not in forced_refs),
                     key=lambda rp: (rp[0] not in in_force, rp[0]))
    taken = [p for ref, p in policies if not is_host_policy(p) or ref in forced_refs]
    accepted_cut = set(cuts(taken))          # what the non-host and forced policies cut: asked for
    held: dict[str, list[str]] = {}
    joined = True
    while waiting and joined:
        joined, still = False, []
        for ref, p in waiting:
            now = set(cuts(taken + [p]))
            more = now - accepted_cut
            if more:
                held[ref] = sorted(more)
                still.append((ref, p))
            else:
                taken.append(p)
                accepted_cut, joined = now, True
                held.pop(ref, None)
        waiting = still
    return held


def held_message(cut: list[str]) -> str:
    """Why a host policy is held back, and what to do: the text of its condition and Event."""
    more = f" and {len(cut) - SHOWN} more" if len(cut) > SHOWN else ""
    return (f"not enforced on this node: the host policy would cut {len(cut)} live connection(s): "
            f"{'; '.join(cut[:SHOWN])}{more}; allow them first, or annotate the policy "
            f"{FORCE_ANNOTATION}=true to enforce it anyway")
