"""`ciliumctl agent run|start|stop|status`: the node agent in the foreground or supervised in the background."""

from pathlib import Path

import typer

from ciliumctl.cli.common import Output, console, print_data
from ciliumctl.cli.typer_app import App

app = App(help="Run the node agent: flows, Hubble API, metrics, CNI socket.")

_BUF = typer.Option(4095, "--flow-buffer-size", envvar="CILIUMCTL_FLOW_BUFFER_SIZE",
                    help="Flows kept in memory (the last N).")
_SOCK = typer.Option(None, "--hubble-socket", metavar="PATH",
                     help="Unix socket of the Hubble API (default: <run dir>/hubble.sock).")
_LISTEN = typer.Option(None, "--hubble-listen", metavar="HOST:PORT",
                       help="Also serve the Hubble API on TCP, e.g. 127.0.0.1:4244.")
_METRICS = typer.Option("127.0.0.1:9965", "--metrics-listen", metavar="HOST:PORT",
                        help="Prometheus metrics address ('' = off).")
_NODE = typer.Option(None, "--node-name", metavar="NAME",
                     help="Node name in flows (default: $CILIUMCTL_NODE_NAME or the hostname).")
_NO_CNI = typer.Option(False, "--no-cni", help="Do not serve the CNI plugin's socket.")
_KUBECONFIG = typer.Option(None, "--kubeconfig", metavar="FILE",
                           help="Cluster mode: the cluster to watch (or $KUBECONFIG).")
_CONTEXT = typer.Option(None, "--context", metavar="NAME", help="Cluster mode: kubeconfig context.")
# Cilium's flag names (pkg/option/config.go: ToFQDNsProxyPort, ToFQDNsMinTTL, ToFQDNsIdleConnectionGracePeriod)
_DNS_PORT = typer.Option(10053, "--tofqdns-proxy-port", metavar="PORT", min=0, max=65535,   # fqdn_agent's default
                         help="Port of the DNS proxy, UDP and TCP (0 = any free port).")
_MIN_TTL = typer.Option(0, "--tofqdns-min-ttl", metavar="SECONDS", min=0,
                        help="Keep a learned address at least this long, whatever its DNS TTL (0 = the TTL).")
_GRACE = typer.Option(0.0, "--tofqdns-idle-connection-grace-period", metavar="SECONDS", min=0,
                      help="Keep an expired learned address this much longer before it leaves the ipcache.")


def _dns(port: int, min_ttl: int, grace: float):
    from ciliumctl.node.dns_proxy.service import DNSOptions

    return DNSOptions(proxy_port=port, min_ttl=min_ttl, grace=grace)


def _refuse_context_in_node_mode(kubeconfig: str | None, context: str | None) -> None:
    """--context picks a kubeconfig context: without a kubeconfig (flag, $KUBECONFIG or in-cluster, as
    node.agent reads them) the agent runs in node mode, where it would be ignored."""
    import os

    from ciliumctl.cli.common import refuse_unused

    if not (kubeconfig or os.environ.get("KUBECONFIG") or os.environ.get("CILIUMCTL_CLUSTER") == "in-cluster"):
        refuse_unused("in node mode (cluster mode takes it: pass --kubeconfig or set KUBECONFIG)",
                      {"--context": context is not None})


def _args(flow_buffer_size, hubble_socket, hubble_listen, metrics_listen, node_name, no_cni, kubeconfig=None,
          context=None, dns_port=10053, min_ttl=0, grace=0.0) -> list[str]:
    args = ["--flow-buffer-size", str(flow_buffer_size), "--metrics-listen", metrics_listen]
    if dns_port != 10053:
        args += ["--tofqdns-proxy-port", str(dns_port)]
    if min_ttl:
        args += ["--tofqdns-min-ttl", str(min_ttl)]
    if grace:
        args += ["--tofqdns-idle-connection-grace-period", str(grace)]
    if hubble_socket:
        args += ["--hubble-socket", str(hubble_socket)]
    if hubble_listen:
        args += ["--hubble-listen", hubble_listen]
    if node_name:
        args += ["--node-name", node_name]
    if no_cni:
        args.append("--no-cni")
    if kubeconfig:
        args += ["--kubeconfig", kubeconfig]
    if context:
        args += ["--context", context]
    return args


@app.command("run")
def run(flow_buffer_size: int = _BUF, hubble_socket: Path | None = _SOCK, hubble_listen: str | None = _LISTEN,
        metrics_listen: str = _METRICS, node_name: str | None = _NODE, no_cni: bool = _NO_CNI,
        kubeconfig: str | None = _KUBECONFIG, context: str | None = _CONTEXT, dns_port: int = _DNS_PORT,
        min_ttl: int = _MIN_TTL, grace: float = _GRACE) -> None:
    """Run the agent in the foreground until SIGTERM or SIGINT.

    This is what a DaemonSet or a supervisor runs."""
    import logging

    from ciliumctl.node.agent import Agent, AgentOptions

    _refuse_context_in_node_mode(kubeconfig, context)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    Agent(AgentOptions(flow_buffer_size=flow_buffer_size, hubble_socket=hubble_socket, hubble_listen=hubble_listen,
                       metrics_listen=metrics_listen or None, node_name=node_name, serve_cni=not no_cni,
                       kubeconfig=kubeconfig, context=context, dns=_dns(dns_port, min_ttl, grace))).run()


@app.command("start")
def start(flow_buffer_size: int = _BUF, hubble_socket: Path | None = _SOCK,
          hubble_listen: str | None = _LISTEN, metrics_listen: str = _METRICS,
          node_name: str | None = _NODE, no_cni: bool = _NO_CNI, kubeconfig: str | None = _KUBECONFIG,
          context: str | None = _CONTEXT, dns_port: int = _DNS_PORT, min_ttl: int = _MIN_TTL,
          grace: float = _GRACE) -> None:
    """Start the agent in the background.

    Its pid file and log are under the run directory."""
    from ciliumctl.node.agent import AgentOptions, log_file, start_background

    _refuse_context_in_node_mode(kubeconfig, context)
    AgentOptions(flow_buffer_size=flow_buffer_size, hubble_listen=hubble_listen,
                 metrics_listen=metrics_listen).validate()
    pid = start_background(_args(flow_buffer_size, hubble_socket, hubble_listen, metrics_listen, node_name, no_cni,
                                 kubeconfig, context, dns_port, min_ttl, grace))
    console().print(f"agent running (pid {pid}), log {log_file()}")


@app.command("stop")
def stop() -> None:
    """Stop the background agent.

    Enforcement continues: the datapath is pinned."""
    from ciliumctl.node.agent import stop_background

    pid = stop_background()
    console().print(f"agent stopped (pid {pid})" if pid else "agent was not running")


@app.command("status")
def status(output: Output = typer.Option(Output.table, "-o", "--output", help="Output format."),
           hubble_socket: Path | None = _SOCK) -> None:
    """Whether the agent runs, and its flow buffer."""
    from ciliumctl.node.agent import status as agent_status

    st = agent_status(hubble_socket)
    if output != Output.table:
        print_data(st, output)
    else:
        c = console()
        if not st["running"]:
            c.print(f"agent: not running (socket {st['socket']})")
        else:
            c.print(f"agent: running (pid {st.get('pid') or '?'}), {st.get('version', '')}")
            if "num_flows" in st:
                c.print(f"flows: {st['num_flows']}/{st['max_flows']} in buffer, {st['seen_flows']} seen, "
                        f"uptime {st['uptime_ns'] // 1_000_000_000}s")
            if "error" in st:
                c.print(f"api: {st['error']}")
            c.print(f"socket: {st['socket']}\nlog: {st['log']}")
    raise typer.Exit(0 if st["running"] else 1)

