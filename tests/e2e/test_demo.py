"""`ciliumctl demo` end to end: both ships land without policy; with it tiefighter lands and xwing is dropped;
with the L7 rule tiefighter's landing POST passes and its exhaust-port PUT gets 403; the verdict events and L7
flows are printed; nothing is left behind."""

import os
import re
from pathlib import Path

import pytest
from support.cli import cli_env, run_cli

pytestmark = pytest.mark.root


def test_demo(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    res = run_cli("demo", env=cli_env(), timeout=120)
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    name = re.search(r"network namespace (cctl-demo-[0-9a-f]+)", out).group(1)
    no_policy, with_policy = out.split("Applying an L3/L4 policy", 1)
    with_policy, l7 = with_policy.split("Applying the L7 policy", 1)
    assert "tiefighter -> deathstar: Ship landed" in no_policy and "xwing -> deathstar: Ship landed" in no_policy
    assert "tiefighter -> deathstar: Ship landed" in with_policy
    assert "xwing -> deathstar: timed out (dropped)" in with_policy
    assert re.search(r"event drop +xwing \(10\.200\.0\.3:\d+\) -> deathstar \(10\.200\.0\.1:80/TCP\) +ingress +"
                     r"DROPPED \(Policy denied", with_policy)
    assert re.search(r"event policy-verdict +tiefighter .* FORWARDED", with_policy)
    # the L7 step: HAProxy lets the landing POST through and answers the exhaust-port PUT with 403; both are L7 flows
    assert "tiefighter POST /v1/request-landing: Ship landed" in l7
    assert "tiefighter PUT /v1/exhaust-port: Access denied" in l7
    assert re.search(r"http-request +tiefighter -> deathstar +POST /v1/request-landing +FORWARDED, response 200", l7)
    assert re.search(r"http-request +tiefighter -> deathstar +PUT /v1/exhaust-port +DROPPED, response 403", l7)
    assert "ciliumnetworkpolicy/rule1 configured" in l7
    assert "ENDPOINT" in out and "k8s:org=empire" in out and "ciliumnetworkpolicy/rule1 created" in out
    assert not list(Path("/run/netns").glob(f"{name}*"))
    assert not Path(f"/sys/fs/bpf/{name}").exists()
    assert not list(Path("/tmp").glob(f"{name}-*"))
