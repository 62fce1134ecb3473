"""Every policy of ../shared/corpus/policies/real applies with kubectl to a real API server with ciliumctl's CRDs
installed, as it does on a Cilium cluster (CiliumCIDRGroup included, in v2 and v2alpha1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.cli import cli_env, run_cli

pytestmark = [pytest.mark.root, pytest.mark.slow]

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "policies" / "real"
# not Cilium policy kinds that ciliumctl installs, so refused here as on a cluster without their CRDs
FOREIGN = {
    "ccli_client-egress-to-fqdns-and-ccec-listener.yaml": "CiliumClusterwideEnvoyConfig (Cilium's Envoy CRD)",
    "ccli_echo-ingress-from-client-tiered-wildcard-pass-l7.yaml": "ClusterNetworkPolicy (sig-network policy API)",
    # a top-level `description` is no field of the CRD: kubectl's strict field validation refuses it, as
    # Cilium's own CRD does (its root schema has no such property)
    "hubble_l7_80_53.yaml": "unknown top-level field description",
}
NAMESPACES = ("cilium-test-1", "starwars")


def corpus() -> list[Path]:
    files = sorted(CORPUS.glob("*.y*ml"))
    if not files:
        why = f"policy corpus missing at {CORPUS}"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return files


def test_every_real_policy_applies_with_kubectl(api):
    files = corpus()
    assert run_cli("install", "--kubeconfig", str(api.kubeconfig), env=cli_env(), timeout=60).returncode == 0
    for ns in NAMESPACES:
        api.kubectl("create", "namespace", ns)
    refused = {}
    for f in files:
        res = api.kubectl("apply", "-f", f, check=False)
        if res.returncode != 0:
            refused[f.name] = res.stderr.strip().splitlines()[0][:300]
    assert set(refused) == set(FOREIGN), {k: v for k, v in refused.items() if k not in FOREIGN}
    groups = api.kubectl("get", "ccg", "-o", "name").stdout.split()
    assert groups, "no CiliumCIDRGroup was applied"
