"""The `policy apply|get|delete` commands in cluster mode (a kubeconfig given): the same command line, served by
ciliumctl.cluster.policy_apply against the fake API server (no root needed)."""

from support.cli import cli_env, run_cli
from support.policies import allow_ingress

POLICY = allow_ingress("allow-web", {"app": "web"}, {"app": "client"})


def run(*args, kubeconfig=None, state=None):
    env = cli_env()
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    if state:
        env["CILIUMCTL_STATE_DIR"] = str(state)
    return run_cli(*args, env=env)


def test_policy_commands_follow_the_kubeconfig(installed, kubeconfig, tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(POLICY)
    res = run("policy", "apply", "-f", str(f), kubeconfig=kubeconfig, state=tmp_path / "node")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ciliumnetworkpolicy.cilium.io/allow-web created"
    assert not (tmp_path / "node" / "policies").exists()            # the node's own store is untouched
    assert run("policy", "apply", "-f", str(f), kubeconfig=kubeconfig).stdout.strip().endswith("unchanged")
    table = run("policy", "get", kubeconfig=kubeconfig).stdout
    assert "allow-web" in table and "VALID" in table
    assert "name: allow-web" in run("policy", "get", "allow-web", "-o", "yaml", kubeconfig=kubeconfig).stdout
    assert run("policy", "delete", "allow-web", kubeconfig=kubeconfig).stdout.strip().endswith("deleted")
    gone = run("policy", "delete", "allow-web", kubeconfig=kubeconfig)
    assert gone.returncode == 1 and "not found" in gone.stderr
    assert "Traceback" not in gone.stderr
