"""Examples for every command, shown at the end of its --help and in its man page (EXAMPLES).

Keys are command paths ("" is the root). Each example is (what it does, the shell line). Every `ciliumctl ...`
in a shell line must parse as a real command with real options: tests/unit/test_help_examples.py checks that,
and that every command has examples. Paths point into the repository's own examples/ where a file is needed.
Plain data: the root's --help reads it without loading any command module."""

from __future__ import annotations

STARWARS = "examples/policies/starwars-l3-l4.yaml"

EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "": [
        ("Install the datapath on this node and start the agent", "ciliumctl install"),
        ("Check policies offline, with Cilium 1.19's verdicts", "ciliumctl policy validate examples/policies"),
        ("Follow the flows the datapath drops", "ciliumctl observe -f --verdict DROPPED"),
        ("Load completion for the current bash session", "source <(ciliumctl completion bash)"),
    ],
    "install": [
        ("Install on this node: checks, compile, load, pin, agent, CNI plugin", "ciliumctl install"),
        ("Check everything and print the plan, changing nothing", "ciliumctl install --dry-run"),
        ("Enforce policy on every endpoint, reporting would-be drops only",
         "ciliumctl install --enforcement-mode always --audit"),
        ("Install the CNI plugin where containerd or podman look for it",
         "ciliumctl install --cni-conf-dir /etc/cni/net.d --cni-bin-dir /opt/cni/bin"),
        ("The host firewall on eth0 and from endpoints, reporting only (AUDIT)",
         "ciliumctl install --devices eth0 --host-firewall --host-firewall-audit "
         "--node-labels node-role.kubernetes.io/worker= --remote-nodes 192.168.1.0/24"),
        ("Print the cluster manifests (CRDs, RBAC, DaemonSet) without applying them",
         "ciliumctl install --kubeconfig ~/.kube/config --dry-run -o yaml"),
        ("Deploy the agent DaemonSet with a locally imported image and wait for it",
         "ciliumctl install --kubeconfig ~/.kube/config --image ciliumctl:local --image-pull-policy Never --wait"),
    ],
    "uninstall": [
        ("Show what would be removed", "ciliumctl uninstall --dry-run"),
        ("Remove every endpoint, program, map, pin and state file of this node", "ciliumctl uninstall"),
        ("Remove the agent DaemonSet, CRDs and RBAC from a cluster", "ciliumctl uninstall --kubeconfig ~/.kube/config"),
    ],
    "status": [
        ("Datapath, endpoints, policies and agent of this node", "ciliumctl status"),
        ("The same for scripts", "ciliumctl status -o json"),
        ("Compare the stored state with the kernel, then repair the differences",
         "ciliumctl status --verify || ciliumctl status --repair"),
        ("Per-node agent health of a cluster install", "ciliumctl status --kubeconfig ~/.kube/config"),
    ],
    "policy": [
        ("Check a folder of policies", "ciliumctl policy validate examples/policies"),
        ("Enforce a policy on this node", f"ciliumctl policy apply -f {STARWARS}"),
        ("Ask whether a connection would be allowed, and why",
         f"ciliumctl policy trace -f {STARWARS} -s org=alliance -d org=empire,class=deathstar --dport 80/tcp"),
    ],
    "policy validate": [
        ("Check a folder of policies (file:line:col for each finding)", "ciliumctl policy validate examples/policies"),
        ("SARIF for code scanning in CI", "ciliumctl policy validate -o sarif examples/policies > policies.sarif"),
        ("Also refuse what the API server would refuse", f"ciliumctl policy validate --strict {STARWARS}"),
        ("Check the policies of a cluster", "kubectl get cnp -A -o yaml | ciliumctl policy validate -"),
    ],
    "policy apply": [
        ("Validate and show the map changes, changing nothing", f"ciliumctl policy apply -f {STARWARS} --dry-run"),
        ("Store and enforce a policy", f"ciliumctl policy apply -f {STARWARS}"),
        ("Refuse policies with parts the datapath does not enforce yet",
         "ciliumctl policy apply -f examples/policies --strict-enforcement"),
        ("Apply what another node has", "ciliumctl policy get -A -o yaml | ciliumctl policy apply -f -"),
    ],
    "policy get": [
        ("Policies of the default namespace and cluster-wide ones", "ciliumctl policy get"),
        ("Policies of every namespace, with what is not enforced", "ciliumctl policy get -A -o wide"),
        ("One policy as YAML, with its Enforced condition", "ciliumctl policy get rule1 -n default -o yaml"),
    ],
    "policy delete": [
        ("Stop enforcing a policy of the default namespace", "ciliumctl policy delete rule1"),
        ("When a name is both a CNP and a NetworkPolicy", "ciliumctl policy delete rule1 -n default --kind cnp"),
    ],
    "policy draw": [
        ("The policies of a folder as a tree per workload group", "ciliumctl policy draw examples/policies"),
        ("One self-contained HTML page (Graphviz lays it out)",
         "ciliumctl policy draw examples/policies -o html > policies.html"),
        ("Who may reach whom among this node's endpoints", "ciliumctl policy draw --node --matrix"),
    ],
    "policy generate": [
        ("Least-privilege policies from a hubble flow dump",
         "hubble observe --all -o jsonpb > flows.json && ciliumctl policy generate --input-file flows.json"),
        ("From the agent's buffer, what audit mode would have dropped in the last hour",
         "ciliumctl policy generate --from-audit --since 1h"),
        ("Compared with what this node has applied", "ciliumctl policy generate --input-file flows.json --node"),
    ],
    "policy trace": [
        ("Would xwing reach the deathstar on 80/TCP under these policies?",
         f"ciliumctl policy trace -f {STARWARS} --src-labels org=alliance --dst-labels org=empire,class=deathstar "
         "--dport 80/tcp"),
        ("The same question to this node's endpoints and policies",
         "ciliumctl policy trace --live --src-labels org=empire --dst-ip 10.200.0.2 --dport 80/tcp"),
        ("The verdict for a script", f"ciliumctl policy trace -f {STARWARS} -s org=empire -d class=deathstar -o json"),
        ("Through a service: the frontend is translated to its backends first",
         "ciliumctl policy trace --live --src-ip 10.200.0.1 --dst-ip 10.96.0.10 --dport 80/tcp"),
        ("The L7 verdict of one HTTP request (rules.http)",
         "ciliumctl policy trace -f examples/policies/starwars-l7-http.yaml -s org=empire,class=tiefighter "
         "-d org=empire,class=deathstar --dport 80/tcp --http-method PUT --http-path /v1/exhaust-port"),
    ],
    "endpoint": [
        ("A sandbox endpoint with labels", "ciliumctl endpoint add deathstar --labels org=empire,class=deathstar"),
        ("Endpoints of this node", "ciliumctl endpoint list"),
        ("Run a command in an endpoint", "ciliumctl endpoint exec deathstar -- ip addr"),
    ],
    "endpoint add": [
        ("An endpoint with labels, in the default namespace",
         "ciliumctl endpoint add deathstar --labels org=empire,class=deathstar"),
        ("In another namespace", "ciliumctl endpoint add xwing -l org=alliance -n rebels"),
        ("With a chosen address, printed as YAML",
         "ciliumctl endpoint add tiefighter -l org=empire --ipv4 10.200.0.10 -o yaml"),
    ],
    "endpoint list": [
        ("Endpoints of this node", "ciliumctl endpoint list"),
        ("Endpoints of one namespace, for scripts", "ciliumctl endpoint list -n default -o json"),
        ("Every endpoint of the cluster", "ciliumctl endpoint list --all-nodes --kubeconfig ~/.kube/config"),
    ],
    "endpoint get": [
        ("One endpoint by name", "ciliumctl endpoint get deathstar"),
        ("By namespace and name, as JSON", "ciliumctl endpoint get default/deathstar -o json"),
        ("By id, as a table row", "ciliumctl endpoint get 1 -o table"),
    ],
    "endpoint exec": [
        ("Serve HTTP from an endpoint", "ciliumctl endpoint exec deathstar -- python3 -m http.server 80 &"),
        ("Connect from another one (dropped unless a policy allows it)",
         "ciliumctl endpoint exec xwing -- curl -m2 http://10.200.0.2/"),
        ("An endpoint of another namespace", "ciliumctl endpoint exec xwing -n rebels -- ip route"),
    ],
    "endpoint delete": [
        ("By name", "ciliumctl endpoint delete xwing"),
        ("By id (also what is left of a corrupt record)", "ciliumctl endpoint delete 3"),
    ],
    "service": [
        ("Load-balance a ClusterIP over two endpoints",
         "ciliumctl service update --frontend 10.96.0.10:80 --backends 10.200.0.2:80,10.200.0.3:80"),
        ("Services and backends of this node", "ciliumctl service list"),
        ("Stop translating a frontend", "ciliumctl service delete 10.96.0.10:80"),
    ],
    "service update": [
        ("A ClusterIP over two endpoints",
         "ciliumctl service update --frontend 10.96.0.10:80 --backends 10.200.0.2:80,10.200.0.3:80"),
        ("A UDP service whose clients keep their backend for an hour",
         "ciliumctl service update --frontend 10.96.0.53:53/udp --backends 10.200.0.4:53 --affinity ClientIP "
         "--affinity-timeout 3600"),
        ("Drain a backend: open connections stay, new ones go to the others",
         "ciliumctl service update --id 1 --frontend 10.96.0.10:80 --backends 10.200.0.2:80,10.200.0.3:80 "
         "--states terminating,active"),
        ("A NodePort on one of this node's addresses",
         "ciliumctl service update --type NodePort --frontend 192.168.1.10:30080 --backends 10.200.0.2:80"),
        ("Named, so that its flows say which service (observe --to-service web)",
         "ciliumctl service update --frontend 10.96.0.10:80 --backends 10.200.0.2:80 --name default/web"),
    ],
    "service list": [
        ("Services and backends, as cilium-dbg service list", "ciliumctl service list"),
        ("For scripts", "ciliumctl service list -o json"),
    ],
    "service get": [
        ("One service by id", "ciliumctl service get 1"),
        ("By frontend, as YAML", "ciliumctl service get 10.96.0.10:80/tcp -o yaml"),
    ],
    "service delete": [
        ("By id", "ciliumctl service delete 1"),
        ("By frontend", "ciliumctl service delete 10.96.0.10:80"),
    ],
    "service redirect": [
        ("DNS for kube-dns to the node-local cache pod of this node",
         "ciliumctl service redirect apply -f examples/local-redirect/node-local-dns.yaml"),
        ("Redirects and their local backends", "ciliumctl service redirect list"),
    ],
    "service redirect apply": [
        ("By service (node-local DNS)",
         "ciliumctl service redirect apply -f examples/local-redirect/node-local-dns.yaml"),
        ("By address", "ciliumctl service redirect apply -f examples/local-redirect/metadata-address.yaml"),
    ],
    "service redirect list": [
        ("Redirects and the local backends each has now", "ciliumctl service redirect list"),
        ("For scripts", "ciliumctl service redirect list -o json"),
    ],
    "service redirect delete": [
        ("The service gets its own backends back", "ciliumctl service redirect delete nodelocaldns -n kube-system"),
    ],
    "observe": [
        ("The last 20 flows", "ciliumctl observe"),
        ("Follow the flows the datapath drops", "ciliumctl observe -f --verdict DROPPED"),
        ("Flows from one pod to port 80, with the policies that decided them",
         "ciliumctl observe --last 100 --from-pod default/xwing --to-port 80 --print-policy-names"),
        ("Policy verdicts of the last five minutes as JSON",
         "ciliumctl observe -t policy-verdict --since 5m -o json"),
        ("Everything but forwarded traffic", "ciliumctl observe --not --verdict FORWARDED"),
        ("Flows to a service (its name, or an unnamed one's frontend IP:PORT)",
         "ciliumctl observe --to-service default/web"),
        ("Count flows per source, destination, port and verdict",
         "ciliumctl observe --aggregate-by source,destination,port,verdict --all"),
        ("The flows of every node of a cluster", "ciliumctl observe --kubeconfig ~/.kube/config -f"),
        ("The same API with the hubble CLI", "hubble observe --server unix:///var/run/ciliumctl/hubble.sock"),
    ],
    "agent": [
        ("Start the agent in the background (install does it too)", "ciliumctl agent start"),
        ("Whether it runs", "ciliumctl agent status"),
        ("Stop it; enforcement continues", "ciliumctl agent stop"),
    ],
    "agent run": [
        ("In the foreground, also serving the Hubble API on TCP",
         "ciliumctl agent run --hubble-listen 127.0.0.1:4244"),
        ("Cluster mode, as the DaemonSet runs it",
         "ciliumctl agent run --kubeconfig ~/.kube/config --node-name node-1"),
    ],
    "agent start": [
        ("Start in the background", "ciliumctl agent start"),
        ("A larger flow buffer and no metrics endpoint",
         "ciliumctl agent start --flow-buffer-size 16383 --metrics-listen ''"),
        ("Learned DNS addresses kept at least a minute, the DNS proxy on a fixed port",
         "ciliumctl agent start --tofqdns-min-ttl 60 --tofqdns-proxy-port 10053"),
    ],
    "fqdn": [
        ("Names and addresses learned for toFQDNs", "ciliumctl fqdn cache list"),
        ("Forget them (the addresses leave the ipcache)", "ciliumctl fqdn cache clean"),
    ],
    "fqdn cache": [
        ("What the DNS proxy learned", "ciliumctl fqdn cache list"),
        ("Forget the names of one domain", "ciliumctl fqdn cache clean -p '*.example.test'"),
    ],
    "fqdn cache list": [
        ("Every learned name", "ciliumctl fqdn cache list"),
        ("One endpoint's names under a domain, as JSON", "ciliumctl fqdn cache list -e 3 -p '*.example.test' -o json"),
    ],
    "fqdn cache clean": [
        ("Forget everything learned", "ciliumctl fqdn cache clean"),
        ("Only one endpoint's names", "ciliumctl fqdn cache clean -e 3"),
    ],
    "agent stop": [
        ("Stop the background agent", "ciliumctl agent stop"),
    ],
    "agent status": [
        ("Whether the agent runs, and its flow buffer", "ciliumctl agent status"),
        ("For scripts (exit 1 when it does not run)", "ciliumctl agent status -o json"),
    ],
    "demo": [
        ("Cilium's getting-started scenario on a sandbox node", "ciliumctl demo"),
        ("Leave the sandbox in place to look around", "ciliumctl demo --keep"),
    ],
    "ui": [
        ("The service map of this node's agent, on http://127.0.0.1:12000/", "ciliumctl ui"),
        ("Of another Hubble server, on any free port", "ciliumctl ui --server 127.0.0.1:4245 --listen 127.0.0.1:0"),
    ],
    "version": [
        ("The version", "ciliumctl version"),
        ("The same, as a flag of the root command", "ciliumctl --version"),
    ],
    "completion": [
        ("Load completion for the current bash session", "source <(ciliumctl completion bash)"),
        ("Install it for bash", "ciliumctl completion bash > /etc/bash_completion.d/ciliumctl"),
        ("For zsh", 'ciliumctl completion zsh > "${fpath[1]}/_ciliumctl"'),
        ("For fish", "ciliumctl completion fish > ~/.config/fish/completions/ciliumctl.fish"),
    ],
}


def examples_of(path: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    return EXAMPLES.get(" ".join(path), [])


def wrap_command(line: str, width: int) -> list[str]:
    """A shell line broken at spaces with ` \\` continuations (indented by 4) so that it fits `width`. An option
    stays on one line with its value, and a word is never split (examples quote no spaces)."""
    units: list[str] = []
    for word in line.split(" "):
        if units and units[-1].startswith("-") and " " not in units[-1] and units[-1] != "--" \
                and not word.startswith("-"):
            units[-1] += " " + word
        else:
            units.append(word)
    lines: list[str] = []
    current = units[0]
    for unit in units[1:]:
        if len(current) + 1 + len(unit) + 2 > width:
            lines.append(current + " \\")
            current = "    " + unit
        else:
            current += " " + unit
    return [*lines, current]


def render(path: list[str] | tuple[str, ...], width: int) -> list[str]:
    """The examples as kubectl prints them: a `# what it does` line above each command, a blank line between."""
    out: list[str] = []
    for what, line in examples_of(path):
        if out:
            out.append("")
        out += [f"# {what}", *wrap_command(line, width)]
    return out
