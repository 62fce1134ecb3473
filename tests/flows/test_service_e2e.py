"""Real traffic to a service on a sandbox node, through the real datapath and the real agent: the flows of the
translated connection name the service, both where the client sends (policy verdict on its egress) and where the
backend receives it (marked by the client's side, lib/lb.h), the reply names it as its source; the real hubble CLI
and `ciliumctl observe` select them with --to-service / --from-service; the agent's metrics count them."""

import os
import socket
import subprocess
import sys

import pytest
from e2e.conftest import node, write  # noqa: F401  (the sandbox node fixture)

from .test_e2e import DEATHSTAR, flows, start_empire, wait_flows

pytestmark = pytest.mark.root

VIP = "10.96.0.10"


def test_flows_of_a_service_name_it_for_observe_hubble_and_metrics(node, tmp_path, hubble):  # noqa: F811
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        metrics_port = s.getsockname()[1]
    start_empire(node, tmp_path)
    node.cli("agent", "stop")
    node.cli("agent", "start", "--metrics-listen", f"127.0.0.1:{metrics_port}", "--no-cni")
    try:
        node.cli("service", "update", "--frontend", f"{VIP}:80", "--backends", f"{DEATHSTAR}:80", "--name",
                 "deathstar")
        assert node.connect("tiefighter", VIP, 80)
        assert not node.connect("xwing", VIP, 80, timeout=0.5)
        assert node.connect("tiefighter", DEATHSTAR, 80)                 # direct: no service
        to_svc = wait_flows(node, lambda f: f["event_type"]["type"] == 1, "--to-service", "deathstar")
        assert to_svc and to_svc[0]["source"]["pod_name"] == "xwing", flows(node, "--all")
        got = flows(node, "--all", "--to-service", "default/deathstar")
        assert all(f["destination_service"] == {"name": "deathstar", "namespace": "default"} for f in got)
        # where deathstar receives them: tiefighter's allowed SYN and xwing's dropped ones
        allowed = [f for f in got if f["event_type"]["type"] == 5 and f["verdict"] == "FORWARDED"]
        assert allowed and allowed[0]["source"]["pod_name"] == "tiefighter"
        assert allowed[0]["IP"]["destination"] == DEATHSTAR            # the packet names the backend
        everything = flows(node, "--all")
        direct = [f for f in everything if f["event_type"]["type"] == 5 and f["verdict"] == "FORWARDED"]
        assert len(direct) == 2 and "destination_service" not in direct[1]
        replies = flows(node, "--all", "--from-service", "deathstar")
        assert replies and all(f["IP"]["source"] == VIP and f["destination"]["pod_name"] == "tiefighter"
                               for f in replies)

        server = f"unix://{node.env['CILIUMCTL_RUN_DIR']}/hubble.sock"
        for args in (["--to-service", "default/deathstar"], ["--from-service", "deathstar"]):
            r = subprocess.run([str(hubble), "observe", "--server", server, "--all", "-o", "jsonpb", *args],
                               capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": "/nonexistent"})
            assert r.returncode == 0, r.stderr
            ours = node.cli("observe", "--server", server, "--all", "-o", "jsonpb", *args).stdout
            assert r.stdout.splitlines() and ours.splitlines() == r.stdout.splitlines()

        # the agent listens in the node's network namespace
        fetch = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{metrics_port}/metrics').read().decode())"
        body = subprocess.run(["ip", "netns", "exec", node.name, sys.executable, "-c", fetch], capture_output=True,
                              text=True, timeout=30, check=True).stdout
        dropped = [line for line in body.splitlines() if line.startswith(
            'ciliumctl_service_flows_total{namespace="default",service="deathstar",verdict="DROPPED"}')]
        assert dropped and int(dropped[0].split()[-1]) >= 1, body
    finally:
        node.cli("agent", "stop", check=False)
