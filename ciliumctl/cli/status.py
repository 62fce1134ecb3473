"""`ciliumctl status`."""

import typer

from ciliumctl.cli.common import Output


def _lines(st: dict) -> list[tuple[str, str]]:
    out = [("Installed", "yes" if st["installed"] else "no (run `ciliumctl install`)"),
           ("Enforcement mode", st["enforcement_mode"] + (" (audit)" if st["audit"] else "")),
           ("Policy revision", str(st["policy_revision"])),
           ("Policies", _policies(st)),
           ("Endpoints", f"{st['endpoints']['ready']}/{st['endpoints']['total']} ready"),
           ("Services", _services(st.get("services") or {})),
           ("Host firewall", _host_firewall(st.get("host_firewall") or {})),
           ("Address pool", st["address_pool"]),
           ("Pins", st["bpffs"])]
    dp = st.get("datapath") or {}
    if "error" in dp:
        out.append(("Datapath", dp["error"]))
        return out
    progs = dp.get("programs")
    if isinstance(progs, dict):
        out.append(("Programs", ", ".join(sorted(progs)) or "none"))
    elif isinstance(progs, list):
        out.append(("Programs", ", ".join(str(p.get("name", p)) if isinstance(p, dict) else str(p)
                                          for p in progs) or "none"))
    maps = dp.get("maps")
    if isinstance(maps, dict):
        for name, m in sorted(maps.items()):
            if isinstance(m, dict) and "max_entries" in m:
                fill = m.get("entries")
                out.append((f"Map {name}", f"{fill if fill is not None else '?'}/{m['max_entries']}"))
            else:
                out.append((f"Map {name}", str(m)))
    elif isinstance(maps, list):
        for m in maps:
            cap = m.get("capacity", m.get("max_entries", "?"))
            kind = m.get("type", "")
            if "entries" in m:
                fill = f"{m['entries']}/{cap} entries"
                if isinstance(cap, int) and cap:
                    fill += f" ({100 * m['entries'] / cap:.1f}%)"
            elif kind == "ringbuf" and isinstance(cap, int):
                fill = f"{cap // 1024} KiB ring buffer"
            else:
                fill = f"capacity {cap}"
            out.append((f"Map {m.get('name', '?')}", f"{fill}{'  ' + kind if kind else ''}"))
    mon = dp.get("monitor_aggregation")
    if isinstance(mon, dict):
        out.append(("Monitor aggregation", f"{mon['level']} (report flags {mon['flags']}, interval "
                                           f"{mon['interval_seconds']:g}s)"))
    if "events_lost" in dp:
        out.append(("Events lost", str(dp["events_lost"])))
    drops = dp.get("drops")
    if isinstance(drops, list):
        reasons = {133: "Policy denied", 181: "Policy denied by denylist"}
        out.append(("Drops", ", ".join(
            f"{d.get('packets')} {d.get('direction')} "
            f"({reasons.get(d.get('reason'), 'reason ' + str(d.get('reason')))})"
            for d in drops) or "none"))
    for k, v in dp.items():
        if k in _SHOWN_ELSEWHERE or not isinstance(v, (str, int, float, bool)):
            continue
        if k == "revision":     # the datapath's own revision: worth a row only when it lags the stored one
            if v != st["policy_revision"]:
                out.append(("Datapath revision", f"{v} (stored: {st['policy_revision']})"))
        elif k == "outdated":
            if v:
                out.append(("Datapath build", "outdated: built from older sources (`ciliumctl install` upgrades "
                                              "it)"))
        else:
            out.append((k.replace("_", " ").capitalize(), _text(v)))
    return out


# keys of the datapath's status with a row of their own above (pin_dir is `Pins`)
_SHOWN_ELSEWHERE = {"programs", "maps", "events_lost", "drops", "monitor_aggregation", "pin_dir"}


def _text(value) -> str:
    """A value as a person reads it: yes/no, never Python's True/False/None."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value is None else str(value)


def unhealthy(st: dict) -> list[str]:
    """Why this node is not fine (exit 1, as `cilium status` fails when Cilium is not ready): not installed, a
    datapath that cannot be read or is outdated, or problems in the endpoint records and leases."""
    dp = st.get("datapath") or {}
    why = [] if st["installed"] else ["not installed"]
    if "error" in dp and st["installed"]:
        why.append(f"datapath: {dp['error']}")
    if dp.get("outdated"):
        why.append("datapath outdated")
    why += [f"problem: {p}" for p in st.get("problems", [])]
    return why


def _host_firewall(h: dict) -> str:
    if not h.get("enabled"):
        return "off"
    on = ", ".join(h.get("devices") or []) or "no device (the endpoints' packets to the host only)"
    return f"on{' (audit)' if h.get('audit') else ''}, {on}; node labels {h.get('node_labels') or 'none'}"


def _services(s: dict) -> str:
    if "error" in s:
        return s["error"]
    return (f"{s.get('services', 0)} ({s.get('backends', 0)} backends: {s.get('active', 0)} active, "
            f"{s.get('terminating', 0)} terminating)")


def _budget(b: dict) -> str:
    per10k = b.get("cores_per_10k_new_connections_per_second")
    head = f"{per10k:.3f} cores per 10k new connections/s" if per10k is not None else "- per 10k new connections/s"
    return (f"{head} ({b.get('agent_cpu_cores', 0):.3f} cores at {b.get('new_connections_per_second', 0):,.0f} "
            f"new connections/s, last {b.get('window_seconds', 0):.0f}s)")


def _policies(st: dict) -> str:
    partial = st.get("partially_enforced") or []
    if not partial:
        return str(st["policies"])
    names = ", ".join(p["policy"] for p in partial)
    return (f"{st['policies']} ({len(partial)} partially enforced: {names}; "
            "`ciliumctl policy get NAME -o yaml` shows what is not enforced)")


def register(app: typer.Typer) -> None:
    @app.command("status")
    def _cmd(
        output: Output = typer.Option(Output.table, "--output", "-o", help="Output format."),
        kubeconfig: str | None = typer.Option(None, "--kubeconfig", metavar="FILE",
                                                 help="Report the cluster install instead "
                                                 "(DaemonSet readiness, per-node agent health; default: "
                                                 "$KUBECONFIG; this node without one)."),
        context: str | None = typer.Option(None, "--context", metavar="NAME",
                                              help="Kubeconfig context (cluster mode)."),
        verify: bool = typer.Option(False, "--verify",
                                    help="Compare the stored policies, endpoints and settings with the kernel's "
                                    "maps and programs; exit 1 on a difference."),
        repair: bool = typer.Option(False, "--repair",
                                    help="Verify, make the kernel follow the stored state, verify again."),
    ) -> None:
        """Show the datapath, endpoints, policies and agent of this node.

        Datapath programs and maps (with their fill), endpoints, policy revision, enforcement mode, lost events,
        the agent. --verify lists every difference between the stored state and the kernel; --repair fixes them.

        Exit 1 when the node is not installed, its datapath cannot be read or is outdated, or problems are
        listed (as `cilium status` fails when Cilium is not ready); the status is printed all the same."""
        import os

        from ciliumctl.cli.common import print_data, refuse_unused

        kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or None   # as install and policy read it
        if not kubeconfig:
            refuse_unused("in node mode (cluster mode takes it: pass --kubeconfig or set KUBECONFIG)",
                          {"--context": context is not None})
        else:
            if verify or repair:
                from ciliumctl.base.errors import UsageError

                raise UsageError("--verify and --repair check this node against its own store; in cluster mode "
                                 "the agent reprograms the node from the cluster at every resync (on a node-mode "
                                 "node: unset KUBECONFIG)")
            _cluster_status(kubeconfig, context, output)
            return
        if verify or repair:
            _verify(repair, output)
            return
        from ciliumctl.node import agent, agent_budget
        from ciliumctl.node import view as node_view

        st = node_view.status()
        st["agent"] = agent.status()
        if st["agent"].get("running"):
            st["agent"]["cpu_budget"] = agent_budget.read()
        if output != Output.table:
            print_data(st, output)
            if unhealthy(st):
                raise typer.Exit(1)
            return
        rows = _lines(st)
        ag = st["agent"]
        rows.append(("Agent", f"running, pid {ag['pid']}" if ag.get("running")
                     else "not running (`ciliumctl agent start`)"))
        if ag.get("cpu_budget"):
            rows.append(("Agent CPU", _budget(ag["cpu_budget"])))
        rows += [("Problem", p) for p in st.get("problems", [])]
        width = max(len(k) for k, _ in rows) + 1
        for k, v in rows:
            typer.echo(f"{(k + ':').ljust(width)}  {v}")
        if unhealthy(st):
            raise typer.Exit(1)


def _verify(repair: bool, output: Output) -> None:
    from ciliumctl.cli.common import print_data
    from ciliumctl.node import settings as node_settings
    from ciliumctl.node import verify

    node_settings.require_root("status --verify")
    with node_settings.environment_errors("status --verify"):
        res = verify.verify(fix=repair)
    if output != Output.table:
        print_data(res.to_dict(), output)
    else:
        for line in res.lines():
            typer.echo(line)
        last = res.remaining or res.found
        c = last.checked
        if res.clean:
            typer.echo(f"The kernel follows the stored state: {c.get('policies', 0)} policies, "
                       f"{c.get('endpoints', 0)} endpoints; {c.get('policy', 0)} policy, {c.get('ipcache', 0)} "
                       f"ipcache and {c.get('epcfg', 0)} endpoint entries in slot {last.slot} of revision "
                       f"{last.revision}.")
        elif not repair:
            typer.echo(f"{len(last.differences)} difference(s) between the stored state and the kernel; "
                       "`ciliumctl status --repair` makes the kernel follow the stored state.")
    if not res.clean:
        raise typer.Exit(1)


def _cluster_status(kubeconfig: str, context, output: Output) -> None:
    from ciliumctl.cli.common import print_data, render_table
    from ciliumctl.cluster.install import status

    st = status(kubeconfig=kubeconfig, context=context)
    if output != Output.table:
        print_data(st.to_dict(), output)
    else:
        typer.echo(f"DaemonSet:  {'installed' if st.installed else 'not installed'}, {st.ready}/{st.desired} ready, "
                   f"image {st.image or '-'}")
        if st.missing_crds:
            typer.echo(f"Missing CRDs: {', '.join(st.missing_crds)}")
        if st.partially_enforced:
            typer.echo(f"Partially enforced: {', '.join(st.partially_enforced)} (`ciliumctl policy get` shows "
                       "what is not enforced)")
        if st.held_back:
            typer.echo(f"Held back by the host firewall's lock-out guard: {', '.join(st.held_back)} (their "
                       "HostPolicyHeldBack condition names the connections)")
        rows = [[a.node, a.pod, a.phase, "yes" if a.ready else "no", str(a.restarts), str(a.endpoints), a.message]
                for a in st.agents]
        typer.echo(render_table(["NODE", "AGENT POD", "PHASE", "READY", "RESTARTS", "ENDPOINTS", "MESSAGE"], rows),
                   nl=False)
    if not st.healthy:
        raise typer.Exit(1)
