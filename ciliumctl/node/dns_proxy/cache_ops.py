"""`ciliumctl fqdn cache list|clean`: the node's DNS cache (node/dns_proxy/cache.py) read, and emptied with the
datapath following (the addresses leave the ipcache at once, as `cilium-dbg fqdn cache clean`)."""

from __future__ import annotations

from ciliumctl.node.dns_proxy.cache import Entry, FQDNCache
from ciliumctl.policy.fqdn import NameMatch


def entries(endpoint: int | None = None, pattern: str | None = None) -> list[Entry]:
    """The live entries, by name then endpoint then address; filtered by endpoint and matchPattern."""
    cache = FQDNCache()
    with cache.locked():
        cache.load()
    match = NameMatch(pattern=pattern) if pattern else None
    out = [e for e in cache.live() if (endpoint is None or e.endpoint == endpoint)
           and (match is None or match.matches(e.name))]
    return sorted(out, key=lambda e: (e.name, e.endpoint, e.ip))


def clean(endpoint: int | None = None, pattern: str | None = None) -> int:
    """Remove entries and reprogram; the number removed from the file. The clean is recorded there, so a running
    agent drops what it learned and had not saved yet too (FQDNCache.merge_file); such an address may be in the
    active revision's ipcache already (written in place), so an installed datapath is always reprogrammed."""
    from ciliumctl.base import paths
    from ciliumctl.node import reconcile
    from ciliumctl.node.settings import environment_errors, locked, require_root

    require_root("fqdn cache clean")
    with environment_errors("fqdn cache clean"), locked():
        cache = FQDNCache()
        with cache.locked():
            cache.load()
            gone = cache.clean(pattern, endpoint)
            cache.save()
        if gone or (paths.bpffs_dir() / "state").exists():
            reconcile.reconcile()
    return len(gone)
