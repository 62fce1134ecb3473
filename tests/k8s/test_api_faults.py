"""Bad input and faults in cluster mode, on a real API server (the shared one of tests/k8s/conftest.py) and through
the real `ciliumctl`: one line that says what, where and what to do, exit 2, no traceback, and nothing
half-installed. (An image that does not exist under `install --wait` needs nodes: test_cluster_e2e.py.)"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import threading

import pytest
from support.cli import cli_env, run_cli
from support.policies import allow_ingress
from support.shell import wait_until

from ciliumctl.cluster import manifests
from ciliumctl.cluster.kube import KINDS
from k8s.cluster import free_port
from k8s.objects import kubeconfig_variant, remove_crds

pytestmark = [pytest.mark.root]

CILIUM_KINDS = ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy", "CiliumIdentity", "CiliumEndpoint",
                "CiliumLocalRedirectPolicy", "CiliumCIDRGroup")


def ciliumctl(*args: str, **env: str):
    return run_cli(*args, env=cli_env(**env), timeout=90)


def one_line(res) -> str:
    """The one line on stderr of a failed command (run_cli already checks there is no traceback)."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, (res.returncode, res.stdout, res.stderr)
    return lines[0]


def crds(kube) -> set[str]:
    return {c["metadata"]["name"] for c in kube.list(KINDS["CustomResourceDefinition"])[0]
            if c["metadata"]["name"].endswith(".cilium.io")}


# ------------------------------------------------------------------------------------- kubeconfig, server


def test_a_missing_kubeconfig_and_an_unknown_context_are_one_line(kubeconfig):
    line = one_line(ciliumctl("install", "--kubeconfig", "/nonexistent/kc"))
    assert line.startswith("Error: kubeconfig /nonexistent/kc (from --kubeconfig): no such file; ") and \
        "--kubeconfig/--context" in line, line
    line = one_line(ciliumctl("install", "--kubeconfig", kubeconfig, "--context", "no-such-context"))
    assert f"kubeconfig {kubeconfig}" in line and "no-such-context" in line, line


def test_an_unreachable_server_is_one_line_naming_it(kubeconfig, tmp_path):
    server = f"https://127.0.0.1:{free_port()}"        # nothing listens there
    kc = kubeconfig_variant(kubeconfig, tmp_path / "kc", server=server)
    line = one_line(ciliumctl("install", "--kubeconfig", kc))
    assert line.startswith(f"Error: cannot reach the Kubernetes API server at {server}: "), line
    assert "Connection refused" in line and "cluster is up" in line, line


@contextlib.contextmanager
def silent_server():
    """A listener on 127.0.0.1 that accepts connections and never says a word (not even TLS's hello)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(5)
        for conn in held:
            conn.close()


def test_a_server_that_never_answers_is_one_line_after_the_request_timeout(kubeconfig, tmp_path):
    with silent_server() as server:
        kc = kubeconfig_variant(kubeconfig, tmp_path / "kc", server=server)
        line = one_line(ciliumctl("install", "--kubeconfig", kc, CILIUMCTL_REQUEST_TIMEOUT="1"))
    assert line.startswith(f"Error: the Kubernetes API server at {server} did not answer "), line
    assert "within 1s" in line and "CILIUMCTL_REQUEST_TIMEOUT" in line, line


def test_a_server_that_stops_answering_half_way_leaves_nothing(kube, kubeconfig, new_namespace, monkeypatch):
    """The real server turns slow at the ConfigMap, the 12th object: a validating webhook that never answers
    holds its create (for 3 s, then refuses it). The client gives up after 1 s and removes the 10 objects it
    had made (the Namespace was there before)."""
    from ciliumctl.base.errors import EnvironmentProblem
    from ciliumctl.cluster import install as inst
    from ciliumctl.cluster.kube import Kube

    remove_crds(kube, *CILIUM_KINDS)
    for kind in ("ClusterRoleBinding", "ClusterRole"):
        kube.delete(KINDS[kind], manifests.AGENT)
    ns = new_namespace("cctl-slow")
    hooks = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
    with silent_server() as webhook:
        kube.request("POST", hooks, body={
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": ns}, "webhooks": [{
                "name": "slow.ciliumctl.test", "clientConfig": {"url": f"{webhook}/"},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                           "resources": ["configmaps"]}],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 3}]})
        try:
            monkeypatch.setenv("CILIUMCTL_REQUEST_TIMEOUT", "1")
            slow = Kube.connect(kubeconfig)

            def webhook_holds_creates() -> bool:     # the server takes a moment to start calling it
                probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe", "namespace": ns}}
                try:
                    slow.create(probe)
                except EnvironmentProblem:
                    return True
                slow.delete(KINDS["ConfigMap"], "probe", ns)
                return False

            assert wait_until(webhook_holds_creates, 30, 0.2)
            with pytest.raises(EnvironmentProblem) as err:
                inst.install(kube=slow, namespace=ns, out=io.StringIO())
        finally:
            kube.request("DELETE", f"{hooks}/{ns}")
    line = str(err.value)
    assert "\n" not in line and err.value.exit_code == 2
    assert line.startswith(f"the Kubernetes API server at {slow.host} did not answer PATCH "
                           f"/api/v1/namespaces/{ns}/configmaps/"), line
    assert line.endswith("; the 10 objects it had created were removed again, nothing is installed"), line
    assert wait_until(lambda: not crds(kube), 30, 0.1), crds(kube)
    assert kube.get(KINDS["ClusterRole"], manifests.AGENT) is None
    assert kube.get(KINDS["ClusterRoleBinding"], manifests.AGENT) is None
    assert kube.list(KINDS["ServiceAccount"], ns)[0] == [] and kube.list(KINDS["ResourceQuota"], ns)[0] == []
    assert kube.list(KINDS["ConfigMap"], ns)[0] == [] and kube.get(KINDS["DaemonSet"], manifests.AGENT, ns) is None


# ------------------------------------------------------------------------------------------- a CRD missing


def test_a_missing_crd_says_to_run_install(installed, kubeconfig, tmp_path):
    from ciliumctl.base.errors import EnvironmentProblem
    from ciliumctl.cluster.identity import CiliumIdentityBackend

    remove_crds(installed, "CiliumEndpoint", "CiliumIdentity", "CiliumNetworkPolicy")
    line = one_line(ciliumctl("endpoint", "list", "--all-nodes", "--kubeconfig", kubeconfig))
    assert "CiliumEndpoint" in line and "run `ciliumctl install" in line, line
    policy = tmp_path / "p.yaml"
    policy.write_text(allow_ingress("allow-web", {"app": "web"}, {"app": "client"}))
    line = one_line(ciliumctl("policy", "apply", "-f", str(policy), "--kubeconfig", kubeconfig))
    assert "ciliumnetworkpolicies.cilium.io is not served: the CRDs are not installed (run `ciliumctl install" \
           in line, line
    # the agent's allocator, the one user of CiliumIdentity objects
    with pytest.raises(EnvironmentProblem, match=r"^the cluster has no CiliumIdentity resource; run `ciliumctl "
                                                 r"install --kubeconfig \.\.\.` first$"):
        CiliumIdentityBackend(installed).allocate(frozenset({"k8s:app=web"}))
    res = ciliumctl("status", "--kubeconfig", kubeconfig)
    assert res.returncode == 1
    assert "Missing CRDs: ciliumnetworkpolicies.cilium.io, ciliumidentities.cilium.io, ciliumendpoints.cilium.io" \
        in res.stdout, res.stdout


# ------------------------------------------------------------------------------------------- RBAC denied


@pytest.fixture
def user(kube, api_shared):
    """user(name, rules) -> the kubeconfig of a user of the shared server holding a ClusterRole of exactly
    `rules` (none: no binding at all); the role and binding are removed afterwards."""
    made: list[str] = []

    def make(prefix: str, rules: list[dict] | None) -> str:
        name = f"{prefix}-{os.urandom(3).hex()}"
        if rules is not None:
            made.append(name)
            kube.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                         "metadata": {"name": name}, "rules": rules})
            kube.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                         "metadata": {"name": name},
                         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}]})
        return str(api_shared.user_kubeconfig(name))

    yield make
    for name in made:
        kube.delete(KINDS["ClusterRoleBinding"], name)
        kube.delete(KINDS["ClusterRole"], name)


def crd_rule(*verbs: str) -> dict:
    return {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": list(verbs)}


def test_a_user_without_rights_gets_one_line_naming_the_forbidden_resource(kube, user):
    before = crds(kube)
    line = one_line(ciliumctl("install", "--kubeconfig", user("cctl-nobody", None)))
    assert "install: applying CustomResourceDefinition ciliumnetworkpolicies.cilium.io failed" in line, line
    assert 'cannot get resource "customresourcedefinitions"' in line and "forbidden" in line, line
    assert "install with a user who may manage all" in line and line.endswith("nothing was installed"), line
    assert crds(kube) == before


def test_a_user_who_may_create_some_kinds_leaves_nothing_behind(kube, user):
    """The user may make the CRDs but not the Namespace: install makes five objects, is refused at the sixth and
    removes the five again."""
    remove_crds(kube, *CILIUM_KINDS)
    line = one_line(ciliumctl("install", "--kubeconfig", user("cctl-crds-only", [
        crd_rule("get", "create", "patch", "delete")])))
    assert f"install: applying Namespace {manifests.NAMESPACE} failed" in line, line
    assert 'cannot get resource "namespaces"' in line, line
    assert line.endswith("the 6 objects it had created were removed again, nothing is installed"), line
    assert wait_until(lambda: not crds(kube), 30, 0.1), crds(kube)


def test_a_user_who_may_not_delete_hears_what_is_left(kube, user):
    remove_crds(kube, *CILIUM_KINDS)
    line = one_line(ciliumctl("install", "--kubeconfig", user("cctl-no-delete", [
        crd_rule("get", "create", "patch")])))
    assert f"install: applying Namespace {manifests.NAMESPACE} failed" in line, line
    assert "could not remove the 6 objects it had created again (403 Forbidden: CustomResourceDefinition " \
           "ciliumcidrgroups.cilium.io, " in line, line
    assert line.endswith("run `ciliumctl uninstall` when fixed"), line
    assert len(crds(kube)) == 6        # what it says is left is what is left
