"""A transparent proxy in the sandbox node's namespace for datapath tests of bpf/lib/proxy.h: a listener with
IP_TRANSPARENT (as HAProxy's `bind ... transparent`) that records each connection's client and original
destination, and either answers itself or relays one exchange upstream from the client's own address (as
HAProxy's `source 0.0.0.0 usesrc clientip`)."""

from __future__ import annotations

import contextlib
import socket
import threading

from .netns import in_netns

IP_TRANSPARENT = 19          # linux/in.h
IP_RECVORIGDSTADDR = 20


class TransparentProxy:
    def __init__(self, node_ns: str, port: int, relay: bool = False, udp: bool = False):
        self.node_ns, self.relay, self.udp = node_ns, relay, udp
        self.seen: list[tuple[tuple, tuple]] = []      # (client, original destination)
        with in_netns(node_ns):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if udp:
            self.sock.setsockopt(socket.SOL_IP, IP_RECVORIGDSTADDR, 1)
        self.sock.bind(("0.0.0.0", port))
        if not udp:
            self.sock.listen(64)
        self.sock.settimeout(0.2)
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            with contextlib.suppress(OSError):
                if self.udp:
                    self._datagram()
                else:
                    conn, _ = self.sock.accept()
                    threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _datagram(self):
        data, anc, _flags, client = self.sock.recvmsg(2048, socket.CMSG_SPACE(16))
        for level, kind, raw in anc:
            if level == socket.SOL_IP and kind == IP_RECVORIGDSTADDR:
                port = int.from_bytes(raw[2:4], "big")
                self.seen.append((client, (socket.inet_ntoa(raw[4:8]), port)))

    def _serve(self, conn: socket.socket):
        conn.settimeout(5)
        with conn:
            client, dst = conn.getpeername(), conn.getsockname()
            self.seen.append((client, dst))
            data = conn.recv(4096)
            if not self.relay:
                conn.sendall(b"proxied %s:%d\n" % (dst[0].encode(), dst[1]))
                return
            with in_netns(self.node_ns):
                up = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            with up, contextlib.suppress(OSError):     # upstream refused by policy: the client sees it close
                up.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
                up.settimeout(5)
                up.bind((client[0], 0))
                up.connect(dst)
                up.sendall(data)
                conn.sendall(up.recv(4096))

    def close(self):
        self._stop = True
        self._thread.join(2)
        self.sock.close()
