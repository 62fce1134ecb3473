"""The man pages' EXIT STATUS and ENVIRONMENT sections, per command (docgen renders them).

Exit codes are the project's convention (0 ok, 1 a finding, 2 bad input, usage or environment), with what a
finding is for each command; tests/unit/test_help_manual.py runs each claim about exit 1 that needs no root
and checks that every environment variable the code reads is listed here (and nothing else)."""

from __future__ import annotations

USAGE = "bad input or usage (one `Error:` line on stderr), or an environment problem: not root, no BPF, no cluster"

EXIT_STATUS: dict[str, dict[int, str]] = {
    "policy validate": {0: "every policy is valid (warnings allowed)",
                        1: "some policy is invalid, or a file is not valid YAML",
                        2: "bad input or usage, unreadable files, or no policy files at all"},
    "policy trace": {0: "the connection is allowed", 1: "the connection is denied",
                     2: "bad input or usage (an invalid policy included)"},
    "policy apply": {0: "applied (parts the datapath does not enforce yet are named on stderr)",
                     1: "some policy is invalid, or --strict-enforcement refused unenforced parts; nothing applied"},
    "policy get": {0: "listed", 1: "the policy NAME was not found"},
    "policy delete": {0: "deleted", 1: "the policy NAME was not found"},
    "status": {0: "installed and healthy",
               1: "not installed, outdated or with problems; with --verify, a difference from the kernel"},
    "agent status": {0: "the agent runs", 1: "the agent does not run"},
    "endpoint exec": {0: "the command exited 0; any other code is the command's own",
                      126: "the command is not executable", 127: "the command was not found"},
    "demo": {0: "every verdict is the one Cilium gives", 1: "some verdict differs"},
}

# name, what it does, the commands it matters to (path prefixes; "" = every command)
ENVIRONMENT: list[tuple[str, str, tuple[str, ...]]] = [
    ("CILIUMCTL_STATE_DIR", "Node state: policy store, endpoint registry, identities, settings (default "
     "/var/lib/ciliumctl).", ("install", "uninstall", "status", "policy", "endpoint", "agent", "demo")),
    ("CILIUMCTL_RUN_DIR", "Runtime files: the agent's pid file, log and sockets (default /var/run/ciliumctl).",
     ("install", "uninstall", "status", "endpoint", "observe", "agent", "demo")),
    ("CILIUMCTL_BPFFS_DIR", "Pinned programs and maps (default /sys/fs/bpf/ciliumctl).",
     ("install", "uninstall", "status", "policy", "endpoint", "agent", "demo")),
    ("CILIUMCTL_POOL", "Address pool of sandbox endpoints when --pool is not given (before the node's setting; "
     "default 10.200.0.0/16).", ("install", "endpoint add", "agent")),
    ("CILIUMCTL_NODE_NAME", "Node name in flows and cluster objects when --node-name is not given (default: the "
     "hostname).", ("install", "observe", "agent")),
    ("CILIUMCTL_NAMESPACE", "The agent pod's namespace (the DaemonSet sets it from metadata.namespace): an agent "
     "whose DaemonSet is gone or being deleted detaches the node's NodePort programs.", ("agent",)),
    ("CILIUMCTL_NODE_NETNS", "A network namespace (name or path) that plays the node, so that nothing touches "
     "the machine's own interfaces (the tests and the demo use it).",
     ("install", "uninstall", "status", "policy", "endpoint", "agent")),
    ("CILIUMCTL_TC_ATTACH", "How programs attach to interfaces: tcx, clsact or auto (the default: tcx where the "
     "kernel has it).", ("install", "status", "endpoint", "agent")),
    ("CILIUMCTL_CNI_CONF_DIR", "Where install writes the CNI conflist when --cni-conf-dir is not given.",
     ("install", "uninstall", "agent")),
    ("CILIUMCTL_CNI_BIN_DIR", "Where install puts the ciliumctl-cni plugin when --cni-bin-dir is not given.",
     ("install", "uninstall", "agent")),
    ("CILIUMCTL_FLOW_BUFFER_SIZE", "Flows the agent keeps in memory when --flow-buffer-size is not given.",
     ("agent run", "agent start")),
    ("CILIUMCTL_CLUSTER", "in-cluster: the agent talks to the API server with its pod's service account (the "
     "DaemonSet sets it).", ("agent run", "agent start")),
    ("CILIUMCTL_ENFORCEMENT", "Cluster mode: the agent's enforcement mode, default, always or never (the "
     "DaemonSet sets it from the ConfigMap).", ("agent run", "agent start")),
    ("CILIUMCTL_AUDIT", "Cluster mode: true puts the agent in audit mode (the DaemonSet sets it from the "
     "ConfigMap).", ("agent run", "agent start")),
    ("CILIUMCTL_DEBUG", "Set to anything: an unexpected error prints its full Python traceback (-D/--debug sets "
     "it).", ("",)),
    ("KUBECONFIG", "The kubeconfig when --kubeconfig is not given: with one, install, uninstall, status, policy "
     "apply/get/delete, endpoint list --all-nodes and agent work on the cluster.",
     ("install", "uninstall", "status", "policy apply", "policy get", "policy delete", "endpoint list", "agent")),
    ("CILIUMCTL_REQUEST_TIMEOUT", "Seconds one request may wait for the Kubernetes API server before the command "
     "fails with one line (default 30).",
     ("install", "uninstall", "status", "policy apply", "policy get", "policy delete", "endpoint list", "agent",
      "observe")),
    ("COMP_WORDS", "With _CILIUMCTL_COMPLETE=bash_complete (what the completion scripts set): the command line "
     "so far, whose values <TAB> asks ciliumctl for.", ("completion",)),
    ("COMP_CWORD", "With COMP_WORDS: the index of the word being completed.", ("completion",)),
    ("HUBBLE_SERVER", "The Hubble API address when --server is not given, as for the hubble CLI.", ("observe", "ui")),
    ("NO_COLOR", "Set to anything: never colour the output (colour is only used on a terminal anyway; observe "
     "--color always still colours, as hubble).",
     ("status", "policy validate", "observe", "agent", "demo", "install", "uninstall", "endpoint")),
    ("TERM", "dumb: observe --color auto does not colour, as hubble.", ("observe",)),
]


def exit_status_of(path: list[str] | tuple[str, ...]) -> dict[int, str]:
    """Exit codes of a command: its own, with 0 and 2 filled in by the convention."""
    codes = {0: "success", 2: USAGE, **EXIT_STATUS.get(" ".join(path), {})}
    return dict(sorted(codes.items()))


def environment_of(path: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """The variables that matter to a command; the root's page lists them all."""
    key = " ".join(path)
    return [(name, text) for name, text, scope in ENVIRONMENT
            if not key or any(s == "" or key == s or key.startswith(s + " ") or s.startswith(key + " ")
                              for s in scope)]
