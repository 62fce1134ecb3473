"""`ciliumctl service redirect apply|list|delete` (node mode): CiliumLocalRedirectPolicy objects from YAML files,
checked all together (one bad document: nothing changes), stored (services.redirect_store) and programmed through
the one reconcile, rolled back when the datapath refuses. In cluster mode the agent reads them from the API server
(node.cluster_sync): apply and delete are refused, list shows what the agent programmed."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from ciliumctl.base.errors import NotFound, UsageError
from ciliumctl.node.reconcile import reconcile
from ciliumctl.node.services.ops import refuse_in_cluster_mode
from ciliumctl.node.settings import environment_errors, load_settings, locked, require_root
from ciliumctl.node.verify import heal_if_interrupted, node_mode
from ciliumctl.services import redirect_store
from ciliumctl.services.local_redirect import KIND, LocalRedirect, parse


def read_files(files: list[str]) -> list[LocalRedirect]:
    """Every document of `files` (YAML, `-` for stdin), each a valid CiliumLocalRedirectPolicy, else UsageError."""
    import sys

    import yaml  # noqa: PLC0415

    out: list[LocalRedirect] = []
    for f in files:
        try:
            text = sys.stdin.read() if f == "-" else open(f, encoding="utf-8").read()
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except OSError as err:
            raise UsageError(f"{f}: cannot read it ({err.strerror}); give a YAML file") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{f}:{mark.line + 1}" if mark else f
            raise UsageError(f"{where}: not valid YAML ({getattr(err, 'problem', None) or err})") from None
        for i, d in enumerate(docs):
            for item in d.get("items", []) if isinstance(d, dict) and d.get("kind") == "List" else [d]:
                kind = item.get("kind") if isinstance(item, dict) else None
                if kind != KIND:
                    raise UsageError(f"{f} (document {i + 1}): a {kind or 'document without kind'} is not a {KIND}; "
                                     "network policies go to `ciliumctl policy apply`")
                out.append(parse(item, f"{f} (document {i + 1})"))
    if not out:
        raise UsageError(f"no {KIND} found in {', '.join(files)}")
    seen = set()
    for lrp in out:
        if lrp.ref in seen:
            raise UsageError(f"{KIND} {lrp.ref} is given twice; give each once")
        seen.add(lrp.ref)
    return out


@contextlib.contextmanager
def _rollback():
    before = redirect_store.load()
    try:
        yield
    except BaseException:
        redirect_store.save(before)
        raise


def apply(lrps: list[LocalRedirect]) -> list[tuple[str, str]]:
    """Store and program; (namespace/name, created|configured|unchanged) per object. What is left out (a frontend
    that is a service's, two policies on one frontend): skipped()."""
    require_root("service redirect apply")
    refuse_in_cluster_mode("service redirect apply")
    with environment_errors("service redirect apply"), locked():
        heal_if_interrupted()
        stored = {x.ref: x for x in redirect_store.load()}
        verbs = []
        for lrp in lrps:
            old = stored.get(lrp.ref)
            if old is not None and old.skip_from_backend != lrp.skip_from_backend:
                # Cilium's CRD: spec.skipRedirectFromBackend's x-kubernetes-validations rule self == oldSelf
                raise UsageError(f"{KIND} {lrp.ref}: spec.skipRedirectFromBackend cannot change on an existing "
                                 f"policy; delete it first (service redirect delete {lrp.name} -n {lrp.namespace})")
            verbs.append((lrp.ref, "created" if old is None else "unchanged" if old.obj == lrp.obj else "configured"))
            stored[lrp.ref] = lrp
        if all(v == "unchanged" for _, v in verbs):
            return verbs
        with _rollback():
            redirect_store.save(list(stored.values()))
            reconcile(settings=load_settings())
        return verbs


def delete(name: str, namespace: str) -> LocalRedirect:
    require_root("service redirect delete")
    refuse_in_cluster_mode("service redirect delete")
    with environment_errors("service redirect delete"), locked():
        heal_if_interrupted()
        stored = redirect_store.load()
        gone = next((x for x in stored if (x.namespace, x.name) == (namespace, name)), None)
        if gone is None:
            raise NotFound(f"{KIND} {namespace}/{name} not found; see `ciliumctl service redirect list`")
        with _rollback():
            redirect_store.save([x for x in stored if x is not gone])
            reconcile(settings=load_settings())
        return gone


@dataclass
class Row:
    ref: str
    frontend: str
    backends: list[str]       # local backends in force (empty: nothing redirected)
    service_ids: list[int]


def rows() -> list[Row]:
    """Each stored LRP with the frontends and local backends in force now; in cluster mode the redirects the agent
    last programmed (the cluster's policies without a local backend are not known here)."""
    from ciliumctl.endpoints import registry
    from ciliumctl.node.services.local_redirect import in_force
    from ciliumctl.services import store

    if not node_mode():
        return _cluster_rows()
    lrps = redirect_store.load()
    red = in_force(store.load(), registry.load_all()) if lrps else None
    out = []
    for lrp in lrps:
        ids = sorted(sid for sid, ref in (red.by.items() if red else ()) if ref == lrp.ref)
        backs = sorted({f"{b}/{red.table.services[i].frontend.protocol.upper()}" for i in ids
                        for b in red.table.services[i].backends}) if red else []
        out.append(Row(lrp.ref, lrp.frontend_text, backs, ids))
    return out




def _cluster_rows() -> list[Row]:
    import re

    from ciliumctl.node.services.ops import cluster_view

    view = cluster_view()
    found: dict[str, Row] = {}
    for sid, label in sorted(view.names.items()) if view is not None else ():
        m = re.search(r"\(local redirect ([^)]+)\)$", label)
        svc = view.table.services.get(sid) if m else None
        if m and svc is not None:
            row = found.setdefault(m.group(1), Row(m.group(1), "", [], []))
            row.frontend = ", ".join(filter(None, [row.frontend, str(svc.frontend)]))
            row.backends = sorted(set(row.backends) | {f"{b}/{svc.frontend.protocol.upper()}" for b in svc.backends})
            row.service_ids.append(sid)
    return [found[k] for k in sorted(found)]


def skipped() -> list[str]:
    """Node mode: the parts of the stored redirects that are not in force, and why."""
    from ciliumctl.node.services.local_redirect import in_force
    from ciliumctl.services import store

    return in_force(store.load()).skipped if node_mode() else []
