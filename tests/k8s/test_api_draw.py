"""`policy draw --kubeconfig` against a real API server (the shared one of tests/k8s/conftest.py): the cluster's
policies and pods, through the one API client, drawn with members and the matrix."""

import json

import pytest
from support.cli import cli_env, run_cli
from support.policies import allow_ingress

from ciliumctl.cluster import policy_apply as pa
from ciliumctl.connectivity import graph, inputs
from k8s.objects import add_pod

pytestmark = [pytest.mark.root]


def test_draw_the_clusters_policies_and_pods(installed, kubeconfig, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(allow_ingress("allow-web", {"app": "web"}, {"app": "client"}, port=80))
    pa.apply_policies([str(path)], kube=installed)
    add_pod(installed, "web-1", "node1", "10.244.1.2", {"app": "web"})
    add_pod(installed, "client-1", "node1", "10.244.1.3", {"app": "client"})
    add_pod(installed, "other-1", "node1", "10.244.1.4", {"app": "other"})

    g = graph.build(inputs.from_cluster(kubeconfig, None))
    (edge,) = [e for e in g.edges if e.policy == "CiliumNetworkPolicy default/allow-web"]
    assert edge.ports == ["80/TCP"] and edge.where == "cluster"
    assert g.nodes[edge.dst].members == ["default/web-1"] and g.nodes[edge.src].members == ["default/client-1"]

    r = run_cli("policy", "draw", "--kubeconfig", kubeconfig, "--matrix", "-o", "json", env=cli_env(), check=True)
    cells = {(c["source"], c["destination"]): c for c in json.loads(r.stdout)["matrix"]["cells"]}
    assert cells[("default/client-1", "default/web-1")]["allowed"] == "80/TCP"
    assert cells[("default/other-1", "default/web-1")]["verdict"] == "default-deny"
    assert cells[("default/web-1", "default/other-1")]["verdict"] == "all"
