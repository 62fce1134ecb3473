"""The kubeconfig error names the file ciliumctl actually read and who chose it (--kubeconfig, $KUBECONFIG or
the client's default ~/.kube/config): one line, exit 2. No cluster needed: the file is missing or broken."""

from __future__ import annotations

from tests.support.cli import cli_env, run_cli

REST = "; pass --kubeconfig/--context of a reachable cluster"


def one_line(*args: str, **env: str) -> str:
    res = run_cli(*args, env=cli_env(**env))
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, (res.returncode, res.stdout, res.stderr)
    return lines[0]


def test_the_error_names_the_file_read_and_what_chose_it(tmp_path):
    missing = tmp_path / "nowhere" / "kc"
    assert one_line("policy", "get", KUBECONFIG=str(missing)) == \
        f"Error: kubeconfig {missing} (from $KUBECONFIG): no such file{REST}"
    # the flag wins over the variable, and the message says so
    assert one_line("policy", "get", "--kubeconfig", str(missing), KUBECONFIG="/elsewhere/kc") == \
        f"Error: kubeconfig {missing} (from --kubeconfig): no such file{REST}"
    # neither: the client's default under $HOME, not a literal ~ (observe --context reads what kubectl reads)
    assert one_line("observe", "--context", "c1", HOME=str(tmp_path)) == \
        f"Error: kubeconfig {tmp_path}/.kube/config (the default: no --kubeconfig, no $KUBECONFIG): no such file{REST}"
    # a list in $KUBECONFIG, as kubectl merges it: all of it named
    both = f"{missing}:{tmp_path}/other"
    assert one_line("policy", "get", KUBECONFIG=both) == \
        f"Error: kubeconfig {both} (from $KUBECONFIG): no such file{REST}"


def test_a_kubeconfig_that_is_not_yaml_is_one_line_naming_it(tmp_path):
    broken = tmp_path / "kc"
    broken.write_text("clusters: [\n")
    line = one_line("policy", "get", KUBECONFIG=str(broken))
    assert line.startswith(f"Error: kubeconfig {broken} (from $KUBECONFIG): while parsing ") and \
        line.endswith("; fix it or pass another --kubeconfig"), line
    empty = tmp_path / "empty"
    empty.write_text("apiVersion: v1\n")
    line = one_line("policy", "get", "--kubeconfig", str(empty))
    assert line.startswith(f"Error: kubeconfig {empty} (from --kubeconfig): Invalid kube-config file") and \
        line.endswith(REST), line
