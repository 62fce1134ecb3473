"""`ciliumctl install` and `ciliumctl uninstall`: node mode by default, cluster mode with a kubeconfig."""

import os
import sys

import typer


class _Progress:
    """Install/uninstall progress: a spinner and coloured ticks on a terminal, plain `step: status` lines else."""

    MARKS = {"ok": "[green]✓[/]", "done": "[green]✓[/]", "removed": "[green]✓[/]", "would": "[yellow]•[/]",
             "skipped": "[dim]-[/]"}

    def __init__(self):
        from ciliumctl.cli.common import console

        self.con = console()
        self.tty = sys.stdout.isatty()
        self.spinner = None

    def starting(self, step: str) -> None:
        if self.tty:
            self._stop()
            self.spinner = self.con.status(f"{step}...")
            self.spinner.start()

    def _stop(self) -> None:
        if self.spinner is not None:
            self.spinner.stop()
            self.spinner = None

    def __call__(self, o) -> None:
        detail = f" {o.detail}" if o.detail else ""
        if self.tty:
            self._stop()
            from rich.markup import escape

            self.con.print(f"{self.MARKS.get(o.status, '')} {escape(o.step)}: {o.status}{escape(detail)}", markup=True)
        else:
            sys.stdout.write(f"{o.step}: {o.status}{detail}\n")
            sys.stdout.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stop()


def _cluster(action: str, kubeconfig: str, **kwargs) -> None:
    """Cluster mode lives in ciliumctl.cluster.install (imported only when a kubeconfig is given)."""
    from ciliumctl.base.errors import EnvironmentProblem

    try:
        from ciliumctl.cluster import install as cluster_install
    except ImportError:
        raise EnvironmentProblem(f"cluster mode not available in this build; unset KUBECONFIG/--kubeconfig to "
                                 f"{action} on this node") from None
    import inspect

    from ciliumctl.base.errors import UsageError

    fn = getattr(cluster_install, action)
    accepted = inspect.signature(fn).parameters
    given = {k: v for k, v in kwargs.items() if v not in (None, False)}
    unsupported = [k for k in given if k not in accepted]
    if unsupported:
        flags = ", ".join("--" + k.replace("_", "-") for k in unsupported)
        raise UsageError(f"{flags} is not supported by `ciliumctl {action}` in cluster mode; drop it or unset "
                         "KUBECONFIG/--kubeconfig for node mode")
    fn(kubeconfig=kubeconfig, **given)


def register(app: typer.Typer) -> None:
    @app.command("install")
    def install(
        dry_run: bool = typer.Option(False, "--dry-run", help="Check everything and print the plan; change nothing."),
        enforcement_mode: str | None = typer.Option(None, "--enforcement-mode",
                                                       metavar="{default,always,never}",
                                                       help="Policy enforcement mode (kept when omitted)."),
        audit: bool | None = typer.Option(None, "--audit/--no-audit",
                                             help="Report would-be drops as AUDIT and forward them."),
        pool: str | None = typer.Option(None, "--pool", metavar="CIDR",
                                           help="Address pool for sandbox endpoints."),
        monitor_aggregation: str | None = typer.Option(
            None, "--monitor-aggregation", metavar="{none,low,medium,maximum}",
            help="How much the datapath traces, as Cilium's: medium (the default) reports a connection's first "
                 "packet, new TCP flags and closing, not every packet (kept when omitted)."),
        monitor_aggregation_interval: str | None = typer.Option(
            None, "--monitor-aggregation-interval", metavar="DURATION",
            help="Report an active connection again after this long (default 5s)."),
        monitor_aggregation_flags: str | None = typer.Option(
            None, "--monitor-aggregation-flags", metavar="FLAGS",
            help="TCP flags whose first sight is reported (default syn,fin,rst)."),
        service_cidr: str | None = typer.Option(
            None, "--service-cidr", metavar="CIDR",
            help="Where ClusterIP service addresses come from (default 10.96.0.0/12, Kubernetes' default; kept "
                 "when omitted)."),
        devices: str | None = typer.Option(
            None, "--devices", metavar="DEV[,DEV]",
            help="The node's interfaces that take NodePort traffic from outside (kept when omitted; \"\": none; "
                 "detected as Cilium does when --host-firewall turns on without any). Cluster mode: every "
                 "node's; omitted, each agent detects its node's."),
        host_firewall: bool | None = typer.Option(
            None, "--host-firewall/--no-host-firewall", show_default=False,
            help="Enforce nodeSelector policies on the node's own traffic, on --devices and from endpoints "
                 "(Cilium's --enable-host-firewall; off unless asked, kept when omitted)."),
        host_firewall_audit: bool | None = typer.Option(
            None, "--host-firewall-audit/--no-host-firewall-audit", show_default=False,
            help="The host firewall reports would-be drops as AUDIT and forwards them."),
        node_labels: str | None = typer.Option(
            None, "--node-labels", metavar="K=V[,K=V]",
            help="This node's labels, which nodeSelector policies match (kept when omitted)."),
        remote_nodes: str | None = typer.Option(
            None, "--remote-nodes", metavar="IP[,CIDR]",
            help="The other nodes' addresses: identity remote-node (6) instead of world (kept when omitted)."),
        remote_node_labels: list[str] | None = typer.Option(
            None, "--remote-node-labels", metavar="ADDR:K=V[,K=V]",
            help="Another node's labels, one option per node (an address or prefix of --remote-nodes); "
                 "fromNodes/toNodes select by them (kept when omitted; \"\": none)."),
        node_selector_labels: bool | None = typer.Option(
            None, "--enable-node-selector-labels/--disable-node-selector-labels", show_default=False,
            help="Other nodes get identities of their labels (cluster mode: their Node's; node mode: "
                 "--remote-node-labels), which fromNodes/toNodes select (Cilium's flag; off unless asked, "
                 "kept when omitted)."),
        force: bool = typer.Option(False, "--force",
                                   help="Turn the host firewall on even when its policies would cut live "
                                        "connections of this node (refused otherwise, naming them)."),
        agent: bool = typer.Option(True, "--agent/--no-agent", show_default=False,
                                   help="Start the node agent (flows, Hubble API, metrics, CNI requests); "
                                        "on by default."),
        cni_conf_dir: str | None = typer.Option(None, "--cni-conf-dir", metavar="DIR",
                                                   help="Write the CNI conflist here (default /etc/cni/net.d)."),
        cni_bin_dir: str | None = typer.Option(None, "--cni-bin-dir", metavar="DIR",
                                                  help="Install the ciliumctl-cni plugin here (default /opt/cni/bin)."),
        kubeconfig: str | None = typer.Option(None, "--kubeconfig", metavar="FILE",
                                                 help="Install into a cluster instead "
                                                 "(default: $KUBECONFIG; node mode without one)."),
        context: str | None = typer.Option(None, "--context", metavar="NAME",
                                              help="Kubeconfig context (cluster mode)."),
        image: str | None = typer.Option(None, "--image", help="Agent image for the DaemonSet (cluster mode)."),
        image_pull_policy: str | None = typer.Option(None, "--image-pull-policy",
                                                        metavar="{IfNotPresent,Always,Never}",
                                                        help="Cluster mode: when kubelets pull the agent image "
                                                        "(Never: it was imported on every node)."),
        wait: bool = typer.Option(False, "--wait", help="Cluster mode: wait until the DaemonSet is ready."),
        # cilium-cli's default (defaults.StatusWaitDuration = 5 * time.Minute, cilium-cli/defaults/defaults.go)
        wait_duration: str | None = typer.Option(None, "--wait-duration", metavar="DURATION",
                                                 help="Cluster mode with --wait: give up after this long (default "
                                                      "5m, as cilium's)."),
        output: str | None = typer.Option(None, "-o", "--output", metavar="{yaml,json}",
                                             help="Cluster mode: print the manifests (--dry-run) or what was "
                                                  "applied."),
    ) -> None:
        """Install the eBPF datapath on this node.

        Checks the machine, compiles, loads and pins the datapath, starts the agent and installs the CNI
        plugin. Idempotent. With a kubeconfig (--kubeconfig or $KUBECONFIG), deploys the agent DaemonSet into
        the cluster instead."""
        from ciliumctl.cli.common import parse_duration, refuse_unused

        kc = kubeconfig or os.environ.get("KUBECONFIG")
        if kc:
            refuse_unused("in cluster mode (the agent's DaemonSet sets up each node)", {
                "--pool": pool is not None, "--service-cidr": service_cidr is not None,
                "--host-firewall": host_firewall is not None,
                "--host-firewall-audit": host_firewall_audit is not None, "--node-labels": node_labels is not None,
                "--remote-nodes": remote_nodes is not None, "--force": force,
                "--remote-node-labels": remote_node_labels is not None,
                "--enable-node-selector-labels": node_selector_labels is not None,
                "--cni-conf-dir": cni_conf_dir is not None, "--cni-bin-dir": cni_bin_dir is not None,
                "--no-agent": not agent})
            refuse_unused("without --wait", {"--wait-duration": wait_duration is not None and not wait})
            refuse_unused("with --dry-run (nothing is applied)", {"--wait": wait and dry_run})
            timeout = parse_duration("--wait-duration", wait_duration) if wait_duration else None
            _cluster("install", kc, dry_run=dry_run, enforcement_mode=enforcement_mode, audit=audit,
                     monitor_aggregation=monitor_aggregation, monitor_aggregation_interval=monitor_aggregation_interval,
                     monitor_aggregation_flags=monitor_aggregation_flags,
                     context=context, image=image, image_pull_policy=image_pull_policy, wait=wait, output=output,
                     timeout=timeout, devices=devices)
            return
        refuse_unused("in node mode (cluster mode takes it: pass --kubeconfig or set KUBECONFIG)", {
            "--wait": wait, "--wait-duration": wait_duration is not None, "-o/--output": output is not None,
            "--context": context is not None, "--image": image is not None,
            "--image-pull-policy": image_pull_policy is not None})
        from ciliumctl.node import install as install_node

        extra = {k: v for k, v in (("cni_conf_dir", cni_conf_dir), ("cni_bin_dir", cni_bin_dir)) if v}
        only = None if agent else tuple(s.name for s in install_node.STEPS if s.name != "agent")
        opts = install_node.Options(enforcement_mode=enforcement_mode, audit=audit, pool=pool, extra=extra,
                                    only=only, monitor_aggregation=monitor_aggregation,
                                    monitor_aggregation_interval=monitor_aggregation_interval,
                                    monitor_aggregation_flags=monitor_aggregation_flags,
                                    service_cidr=service_cidr, devices=devices, host_firewall=host_firewall,
                                    host_firewall_audit=host_firewall_audit, node_labels=node_labels,
                                    remote_nodes=remote_nodes, remote_node_labels=remote_node_labels,
                                    node_selector_labels=node_selector_labels,
                                    force=force)
        with _Progress() as show:
            outcomes = install_node.install(opts, plan_only=dry_run, progress=show, starting=show.starting)
        if dry_run:
            todo = [o for o in outcomes if o.status == "would"]
            typer.echo(f"dry run: {len(todo)} step(s) to do, nothing changed" if todo
                       else "dry run: already installed, nothing to do")
        else:
            typer.echo("ciliumctl is installed on this node")

    @app.command("uninstall")
    def uninstall(
        dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be removed; change nothing."),
        kubeconfig: str | None = typer.Option(None, "--kubeconfig", metavar="FILE",
                                                 help="Uninstall from a cluster instead "
                                                 "(default: $KUBECONFIG; node mode without one)."),
        context: str | None = typer.Option(None, "--context", metavar="NAME",
                                              help="Kubeconfig context (cluster mode)."),
    ) -> None:
        """Remove everything ciliumctl made on this node.

        Every endpoint namespace, veth, route, program, map, pin and state file."""
        from ciliumctl.cli.common import refuse_unused

        kc = kubeconfig or os.environ.get("KUBECONFIG")
        if kc:
            _cluster("uninstall", kc, dry_run=dry_run, context=context)
            return
        refuse_unused("in node mode (cluster mode takes it: pass --kubeconfig or set KUBECONFIG)",
                      {"--context": context is not None})
        from ciliumctl.node import install as install_node

        with _Progress() as show:
            install_node.uninstall(plan_only=dry_run, progress=show)
        typer.echo("dry run: nothing removed" if dry_run else "ciliumctl is uninstalled from this node")
