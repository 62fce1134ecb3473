"""Command-line conventions checked without a node: a flag with no effect in the chosen mode is refused (one line,
exit 2), never ignored; durations and -n/-A/--context as kubectl reads them.

Each run points the CLI at this test's own state and at a node namespace that does not exist, and KUBECONFIG (when
set) at a file that does not exist: were a refusal to regress, the command would fail there, never touch the
machine."""

import logging
import subprocess
import sys

import pytest
from support.cli import cli_env, run_cli
from support.node_state import write_node_state


@pytest.fixture
def env(tmp_path):
    return cli_env(CILIUMCTL_NODE_NETNS="cctl-no-such-node", CILIUMCTL_STATE_DIR=str(tmp_path / "state"),
                   CILIUMCTL_RUN_DIR=str(tmp_path / "run"), CILIUMCTL_BPFFS_DIR=str(tmp_path / "bpffs"))


@pytest.fixture
def stored(env, tmp_path):
    """The env of a node with endpoints default/deathstar and rebels/xwing, policies default/rule1 and prod/other."""
    return {**env, **write_node_state(tmp_path / "state")}


def refused(res, *words: str) -> None:
    lines = res.stderr.splitlines()
    assert res.returncode == 2 and res.stdout == "" and len(lines) == 1, res
    assert lines[0].startswith("Error: ") and all(w in lines[0] for w in words), lines


@pytest.mark.parametrize("args, flag", [
    (["--wait"], "--wait"), (["--dry-run", "-o", "yaml"], "-o/--output"),
    (["--wait-duration", "1m"], "--wait-duration"),
    (["--image", "x:1"], "--image"), (["--image-pull-policy", "Never"], "--image-pull-policy"),
    (["--context", "kind"], "--context")])
def test_install_refuses_cluster_flags_in_node_mode(env, args, flag):
    refused(run_cli("install", *args, env=env), flag, "no effect in node mode", "--kubeconfig")


@pytest.mark.parametrize("args, words", [
    (["--pool", "10.9.0.0/16", "--no-agent"], ["--pool, --no-agent", "cluster mode"]),
    (["--cni-conf-dir", "/tmp/x"], ["--cni-conf-dir", "cluster mode"]),
    (["--wait-duration", "30s"], ["--wait-duration", "without --wait"]),
    (["--dry-run", "--wait"], ["--wait", "--dry-run"]),
    (["--wait", "--wait-duration", "5x"], ["--wait-duration '5x'", "90s"])])
def test_install_refuses_node_flags_and_unused_waits_in_cluster_mode(env, args, words):
    refused(run_cli("install", *args, env={**env, "KUBECONFIG": "/nonexistent/kubeconfig"}), *words)


def test_install_dry_run_prints_manifests_without_a_cluster(env):
    res = run_cli("install", "--dry-run", "-o", "yaml", env={**env, "KUBECONFIG": "/nonexistent/kubeconfig"})
    assert res.returncode == 0 and "kind: DaemonSet" in res.stdout


def test_uninstall_and_policy_commands_take_context_only_with_a_cluster(env):
    refused(run_cli("uninstall", "--context", "kind", env=env), "--context", "node mode")
    for args in (["apply", "-f", "-"], ["get"], ["delete", "x"]):
        refused(run_cli("policy", *args, "--context", "kind", env=env), "--context", "KUBECONFIG")


def test_policy_get_namespace_and_all_namespaces_exclude_each_other(env):
    refused(run_cli("policy", "get", "-n", "prod", "-A", env=env), "-n and -A")


def test_status_of_a_node_without_ciliumctl_is_exit_1_and_still_printed(env):
    for args in ([], ["-o", "json"]):
        res = run_cli("status", *args, env=env)
        assert res.returncode == 1 and "Traceback" not in res.stderr, res
        assert ("Installed:" in res.stdout and "no (run `ciliumctl install`)" in res.stdout) if not args else \
            '"installed": false' in res.stdout
    rows = [line.split(":", 1) for line in run_cli("status", env=env).stdout.splitlines()]
    assert not {"True", "False", "None", "[]", "{}"} & {value.strip() for _, value in rows}, rows   # no Python
    keys = [key for key, _ in rows if key != "Problem"]              # one row per problem; every other key once
    assert len(keys) == len(set(keys)), rows


def test_endpoint_list_namespace_and_all_namespaces_exclude_each_other(env):
    refused(run_cli("endpoint", "list", "-n", "prod", "-A", env=env), "-n and -A")


def test_trace_takes_policies_with_the_same_flag_as_apply(env, tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\nspec:\n"
                      "  endpointSelector: {matchLabels: {app: a}}\n"
                      "  ingress: [{fromEndpoints: [{matchLabels: {app: b}}]}]\n")
    for flag in ("--filename", "-f", "--file"):
        allowed = run_cli("policy", "trace", flag, str(policy), "-s", "app=b", "-d", "app=a", env=env)
        denied = run_cli("policy", "trace", flag, str(policy), "-s", "app=c", "-d", "app=a", env=env)
        assert (allowed.returncode, denied.returncode) == (0, 1), (flag, allowed, denied)


def test_context_and_kubeconfig_are_refused_where_nothing_would_read_them(env):
    refused(run_cli("status", "--context", "kind", env=env), "--context", "node mode", "KUBECONFIG")
    for command in (["agent", "run"], ["agent", "start"]):
        refused(run_cli(*command, "--context", "kind", env=env), "--context", "node mode", "KUBECONFIG")
    refused(run_cli("endpoint", "list", "--context", "kind", env=env), "--context", "without --all-nodes")
    refused(run_cli("endpoint", "list", "--kubeconfig", "/nonexistent/kubeconfig", env=env), "--kubeconfig",
            "without --all-nodes")


def test_status_takes_the_cluster_from_kubeconfig_as_install_and_policy_do(env):
    cluster = {**env, "KUBECONFIG": "/nonexistent/kubeconfig"}
    refused(run_cli("status", env=cluster), "/nonexistent/kubeconfig")        # the cluster's status, not the node's
    refused(run_cli("status", "--verify", env=cluster), "--verify", "unset KUBECONFIG")


def test_debug_flag_before_or_after_the_command_prints_the_full_trace(env):
    """-D/--debug is global, as hubble's: an unexpected error (here a planted one) is one line without it, the
    whole trace with it, wherever it stands; ciliumctl's loggers go down to DEBUG."""
    code = ("import logging, sys\nfrom ciliumctl.cli import main, version\n"
            "def planted():\n    raise RuntimeError('planted')\n"
            "version.version_line = planted\nsys.argv = ['ciliumctl', *sys.argv[1:]]\n"
            "try:\n    main.run()\n"
            "finally:\n    print('LEVEL', logging.getLogger('ciliumctl').getEffectiveLevel())\n")

    def run(*args):
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                              timeout=60)

    plain = run("version")
    assert plain.returncode == 2 and plain.stdout == f"LEVEL {logging.WARNING}\n", plain
    assert plain.stderr == ("Error: RuntimeError: planted; run again with CILIUMCTL_DEBUG=1 for the full trace "
                            "and report it\n")
    for args in (["-D", "version"], ["--debug", "version"], ["version", "-D"], ["version", "--debug"]):
        traced = run(*args)
        assert traced.returncode == 1 and traced.stdout == f"LEVEL {logging.DEBUG}\n", (args, traced)
        assert "Traceback (most recent call last)" in traced.stderr and "RuntimeError: planted" in traced.stderr
        assert f"ciliumctl.cli DEBUG state {env['CILIUMCTL_STATE_DIR']}, " in traced.stderr, traced.stderr


@pytest.mark.parametrize("argv, name, command, namespace", [
    (["xwing", "-n", "rebels", "--", "ls", "-n", "x"], "xwing", ["ls", "-n", "x"], "rebels"),
    (["-n", "rebels", "xwing", "--", "ls"], "xwing", ["ls"], "rebels"),
    (["xwing", "--namespace=rebels", "--", "ls"], "xwing", ["ls"], "rebels"),
    (["xwing", "--namespace", "rebels", "ip", "-4", "addr"], "xwing", ["ip", "-4", "addr"], "rebels"),
    (["xwing", "--", "-n", "rebels"], "xwing", ["-n", "rebels"], None),
    (["rebels/xwing", "-D", "--", "true"], "rebels/xwing", ["true"], None),
])
def test_endpoint_exec_takes_its_options_after_the_name(monkeypatch, argv, name, command, namespace):
    """`endpoint exec NAME -n NS -- CMD` as kubectl exec reads it: -n after NAME is ours, the command starts after
    -- (or at the first word that is not ours) and keeps its own options."""
    from typer.testing import CliRunner

    from ciliumctl.cli import main, typer_app
    from ciliumctl.node import endpoint_ops

    calls, debug = [], []
    monkeypatch.setattr(endpoint_ops, "exec_in_endpoint", lambda *call: calls.append(call))
    monkeypatch.setattr(typer_app, "debug_on", lambda: debug.append(True))
    result = CliRunner().invoke(main.app, ["endpoint", "exec", *argv], prog_name="ciliumctl")
    assert result.exit_code == 0, result.output
    assert calls == [(name, command, namespace)]
    assert debug == [True] * argv.count("-D")


@pytest.mark.parametrize("argv, words", [
    (["xwing", "-n"], ["option -n needs a namespace"]),
    (["xwing", "-x", "--", "true"], ["no such option '-x'", "after --"]),
    (["xwing"], ["missing argument -- CMD"]),
])
def test_endpoint_exec_bad_options_are_one_line(env, argv, words):
    refused(run_cli("endpoint", "exec", *argv, env=env), *words)


def test_not_found_is_exit_1_as_kubectls_notfound(env):
    for args, words in ((["endpoint", "get", "nope"], "endpoint 'nope' not found"),
                        (["policy", "get", "nope"], "policy 'nope' not found in namespace default"),
                        (["policy", "get", "nope", "-n", "prod"], "not found in namespace prod")):
        res = run_cli(*args, env=env)
        assert res.returncode == 1 and res.stdout == "" and res.stderr.count("\n") == 1, res
        assert res.stderr.startswith("Error: ") and words in res.stderr, res


def test_policy_namespaces_as_kubectl_reads_them_and_a_listing_apply_reads_back(stored):
    def names(*args):
        return run_cli("policy", "get", "-o", "name", *args, env=stored, check=True).stdout.split()

    assert names() == names("-n", "") == ["ciliumnetworkpolicy.cilium.io/rule1"]      # no -n or an empty one
    assert names("-n", "prod") == ["ciliumnetworkpolicy.cilium.io/other"]
    assert names("-A") == names("--all-namespaces") == ["ciliumnetworkpolicy.cilium.io/rule1",
                                                         "ciliumnetworkpolicy.cilium.io/other"]
    listed = run_cli("policy", "get", "-A", "-o", "yaml", env=stored, check=True).stdout
    assert listed.startswith("apiVersion: v1\nkind: List\nitems:\n"), listed
    back = run_cli("policy", "apply", "--dry-run", "-f", "-", input=listed, env=stored, check=True).stdout
    assert back.splitlines()[:2] == ["ciliumnetworkpolicy/rule1 unchanged (dry run)",
                                     "ciliumnetworkpolicy/other unchanged (dry run)"], back
    assert run_cli("policy", "get", "-A", "-o", "wide", env=stored, check=True).stdout.split()[:6] == [
        "KIND", "NAMESPACE", "NAME", "ENFORCED", "SOURCE", "NOT"]


def test_endpoint_list_names_what_get_takes_in_80_columns(stored):
    table = run_cli("endpoint", "list", env=stored, check=True).stdout.splitlines()
    assert table[0].split() == ["ID", "NAME", "IDENTITY", "IPv4", "POLICY", "STATUS"]
    assert [row.split()[1] for row in table[1:]] == ["default/deathstar", "rebels/xwing"]
    assert max(map(len, table)) <= 80, table
    for name in ("default/deathstar", "rebels/xwing"):
        assert f"name: {name.split('/')[1]}" in run_cli("endpoint", "get", name, env=stored, check=True).stdout
    # every namespace without -n (as `cilium endpoint list`), -A too; -n one
    for args in ([], ["-n", ""], ["-A"]):
        assert run_cli("endpoint", "list", *args, env=stored, check=True).stdout.splitlines() == table, args
    assert run_cli("endpoint", "list", "-n", "rebels", "--no-headers", env=stored, check=True).stdout.split()[1] \
        == "rebels/xwing"
    wide = run_cli("endpoint", "list", "-o", "wide", env=stored, check=True).stdout
    assert "k8s:org=alliance" in wide and "k8s:class=deathstar" in wide


# one flow as `hubble observe -o jsonpb` writes it (tiefighter -> deathstar:80)
FLOW = ('{"flow":{"time":"2025-11-26T09:40:00Z","verdict":"FORWARDED","IP":{"source":"10.200.0.12",'
        '"destination":"10.200.0.13","ipVersion":"IPv4"},"l4":{"TCP":{"source_port":40000,"destination_port":80,'
        '"flags":{"SYN":true}}},"source":{"identity":300,"namespace":"default","pod_name":"tiefighter"},'
        '"destination":{"identity":301,"namespace":"empire","pod_name":"deathstar"},"Type":"L3_L4",'
        '"node_name":"node-a","event_type":{"type":4},"trace_observation_point":"TO_ENDPOINT"},'
        '"node_name":"node-a","time":"2025-11-26T09:40:00Z"}\n')


@pytest.mark.parametrize("args", [[], ["--ip-translation"], ["--ip-translation", "--numeric"], ["--ip-translation=F"],
                                  ["--ip-translation=0"], ["--ip-translation=false"], ["--ip-translation=TRUE"]])
def test_observe_reads_ip_translation_as_hubbles_bool_flag(env, hubble, tmp_path, args):
    flows = tmp_path / "flows.json"
    flows.write_text(FLOW)
    ours = run_cli("observe", "--input-file", str(flows), *args, env=env, check=True).stdout
    theirs = subprocess.run([str(hubble), "observe", "--color", "never", "--input-file", str(flows), *args],
                            capture_output=True, text=True, check=True, timeout=60,
                            env={**env, "HOME": "/nonexistent"}).stdout
    numeric = "--numeric" in args or any(a.endswith(("=F", "=0", "=false")) for a in args)
    assert ours == theirs and ("10.200.0.12:40000" in ours) == numeric != ("deathstar" in ours), ours


def test_observe_takes_flows_from_one_place(env, tmp_path):
    flows = tmp_path / "flows.json"
    flows.write_text(FLOW)
    for args, words in ((["--server", "unix:///nonexistent", "--kubeconfig", "/nonexistent"], "--kubeconfig and "
                         "--server exclude each other"),
                        (["--input-file", str(flows), "--node", "n1"], "--node and --input-file exclude each other"),
                        (["--context", "kind", "--server", "unix:///nonexistent"], "--context and --server")):
        refused(run_cli("observe", *args, env=env), words)
    # --context alone asks the cluster's agents, with the kubeconfig kubectl would read (here none: one line)
    refused(run_cli("observe", "--context", "kind", env={**env, "HOME": str(tmp_path)}), "kubeconfig", "--context")
    # as hubble: with --input-file, --server is not asked
    assert "deathstar" in run_cli("observe", "--server", "unix:///nonexistent", "--input-file", str(flows), env=env,
                                  check=True).stdout
