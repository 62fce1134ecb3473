"""`ciliumctl fqdn cache list|clean`: the DNS names the agent's DNS proxy learned, as `cilium-dbg fqdn cache`."""

import time

import typer

from ciliumctl.cli.common import Output, print_data
from ciliumctl.cli.typer_app import App

app = App(help="Inspect the DNS names learned for toFQDNs policies.")
cache = App(help="List or clean the DNS names and addresses the DNS proxy learned.")
app.add_typer(cache, name="cache")

_EP = typer.Option(None, "--endpoint", "-e", metavar="ID", help="Only this endpoint's entries.")
_PATTERN = typer.Option(None, "--matchpattern", "-p", metavar="PATTERN",
                        help="Only names matching this matchPattern (e.g. '*.example.test').")


def _rows(entries) -> list[dict]:
    now = time.time()
    return [{"endpoint": e.endpoint, "source": e.source, "fqdn": e.name, "ttl": e.ttl,
             "expirationTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.expires)),
             "expiresIn": max(0, round(e.expires - now)), "ip": e.ip} for e in entries]


@cache.command("list")
def list_(endpoint: int | None = _EP, pattern: str | None = _PATTERN,
          output: Output = typer.Option(Output.table, "--output", "-o", help="Output format.")) -> None:
    """List the learned names and their addresses.

    The columns of `cilium-dbg fqdn cache list`: endpoint, source, name, TTL, expiration time, addresses. An
    address leaves the ipcache at its expiration time (plus --tofqdns-idle-connection-grace-period)."""
    from ciliumctl.node.dns_proxy import cache_ops as fqdn_ops

    rows = _rows(fqdn_ops.entries(endpoint, pattern))
    if output != Output.table:
        print_data(rows, output)
        return
    # cilium/cmd/fqdn.go listFQDNCache: Endpoint Source FQDN TTL ExpirationTime IPs, one line per name
    grouped: dict[tuple, list[str]] = {}
    for r in rows:
        grouped.setdefault((r["endpoint"], r["source"], r["fqdn"], r["ttl"], r["expirationTime"]), []).append(r["ip"])
    lines: list[tuple[str, ...]] = [("Endpoint", "Source", "FQDN", "TTL", "ExpirationTime", "IPs")]
    lines += [(str(k[0]), k[1], k[2], str(k[3]), k[4], ",".join(ips)) for k, ips in grouped.items()]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]) - 1)]
    for line in lines:
        typer.echo("   ".join(c.ljust(w) for c, w in zip(line, widths)) + "   " + line[-1])


@cache.command("clean")
def clean(endpoint: int | None = _EP, pattern: str | None = _PATTERN) -> None:
    """Remove learned names: their addresses leave the ipcache at once.

    Connections to them are then decided again (and dropped when nothing else allows them) until the next
    lookup learns them again."""
    from ciliumctl.node.dns_proxy import cache_ops as fqdn_ops

    n = fqdn_ops.clean(endpoint, pattern)
    typer.echo(f"{n} DNS cache entr{'y' if n == 1 else 'ies'} removed")
