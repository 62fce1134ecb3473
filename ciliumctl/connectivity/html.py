"""The policy graph as one self-contained HTML page: the SVG inline, a table of every rule (each edge of the SVG
links to its row: policy, rule, file:line), findings of invalid policies, the matrix when computed, and filters
by namespace and label in a few lines of inline JavaScript (also from the address: #ns=prod&label=app=web).
Nothing is fetched when the page is viewed.

Every user-controlled string is escaped: html.escape in text and attributes, and the JSON the script reads sits
in a <script type="application/json"> with <, > and & written as \\u escapes, so no name can close the tag."""

from __future__ import annotations

import html
import json
import re

from ciliumctl.connectivity import graph as G
from ciliumctl.connectivity.dot import node_ids
from ciliumctl.connectivity.matrix import Matrix

_PROLOG = re.compile(r"^.*?(?=<svg\b)", re.S)

_STYLE = """
body{font-family:Helvetica,Arial,sans-serif;margin:1em;color:#1f2933}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}
#filters{margin:.5em 0;padding:.5em;background:#f4f6f8;border-radius:4px}
#graph{overflow:auto;border:1px solid #d9e2ec;max-height:80vh}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #d9e2ec;padding:2px 6px;text-align:left}
tr.deny td{color:#c62828}tr:target{background:#fff3c4}.finding{color:#c62828;font-family:monospace}
td.m-all{background:#e3f2e5}td.m-ports{background:#f1f8e9}td.m-denied{background:#fdecea}
td.m-default-deny{background:#fbe9e7}
"""

_SCRIPT = """
(function(){
  var data = JSON.parse(document.getElementById('graph-data').textContent);
  var ns = document.getElementById('f-ns'), lab = document.getElementById('f-label');
  data.namespaces.forEach(function(n){ var o = document.createElement('option'); o.value = n; o.textContent = n;
    ns.appendChild(o); });
  function apply(){
    var want = ns.value, text = lab.value.trim().toLowerCase(), shown = {};
    data.nodes.forEach(function(n){
      var ok = (!want || n.namespace === want || n.namespace === '') &&
        (!text || n.labels.concat([n.label]).some(function(l){ return l.toLowerCase().indexOf(text) >= 0; }));
      shown[n.id] = ok; var el = document.getElementById(n.id); if (el) el.style.display = ok ? '' : 'none';
    });
    data.edges.forEach(function(e){
      var ok = shown[e.src] && shown[e.dst];
      var el = document.getElementById(e.id); if (el) el.style.display = ok ? '' : 'none';
      var row = document.getElementById('edge-' + e.id); if (row) row.style.display = ok ? '' : 'none';
    });
  }
  // a filtered view can be linked: page.html#ns=prod&label=app=web
  new URLSearchParams(location.hash.slice(1)).forEach(function(v, k){
    if (k === 'ns') ns.value = v; else if (k === 'label') lab.value = v; });
  function sync(){ var h = new URLSearchParams(); if (ns.value) h.set('ns', ns.value);
    if (lab.value) h.set('label', lab.value); history.replaceState(null, '', '#' + h.toString()); apply(); }
  ns.addEventListener('change', sync); lab.addEventListener('input', sync);
  apply();
})();
"""


def _json_for_script(value) -> str:
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _e(s: str) -> str:
    return html.escape(str(s), quote=True)


def inline_svg(svg: str) -> str:
    """Graphviz's SVG without its XML prolog and DOCTYPE, to sit inside the page."""
    return _PROLOG.sub("", svg, count=1)


def render(g: G.Graph, svg: str, matrix: Matrix | None = None, title: str = "Network policies") -> str:
    ids = node_ids(g)
    data = {"namespaces": sorted({n.namespace for n in g.nodes.values() if n.namespace}),
            "nodes": [{"id": ids[n.id], "namespace": n.namespace, "labels": n.labels, "label": n.label}
                      for n in g.nodes.values()],
            "edges": [{"id": e.id, "src": ids[e.src], "dst": ids[e.dst]} for e in g.edges]}
    rows = []
    for e in g.edges:
        src, dst = g.nodes[e.src].label.replace("\n", " "), g.nodes[e.dst].label.replace("\n", " ")
        rows.append(f'<tr id="edge-{_e(e.id)}" class="{"deny" if e.deny else "allow"}">'
                    f"<td>{_e(src)}</td><td>{_e(dst)}</td><td>{_e(e.section)}</td>"
                    f"<td>{_e(', '.join(e.ports) or 'any port')}</td><td>{_e('; '.join(e.l7))}</td>"
                    f"<td>{_e(e.policy)} {_e(e.rule)}{'' if e.valid else ' (invalid)'}</td>"
                    f"<td>{_e(e.where)}</td></tr>")
    findings = [f'<li><b>{_e(p.ref)}</b><ul>{"".join(f"<li class=finding>{_e(f)}</li>" for f in p.findings)}'
                "</ul></li>" for p in g.policies if p.findings]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'; '
        "script-src 'unsafe-inline'; img-src data:\">",
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p>{len(g.policies)} policies ({sum(1 for p in g.policies if not p.valid)} invalid), "
        f"{len(g.groups)} workload groups, {len(g.edges)} rules drawn. Green: allow; red: deny; dashed: from an "
        "invalid policy. Click an edge for its rule.</p>",
        '<div id="filters">Namespace <select id="f-ns"><option value="">(all)</option></select> '
        'Label <input id="f-label" placeholder="app=web" size="24"></div>',
        f'<div id="graph">{inline_svg(svg)}</div>',
        "<h2>Rules</h2><table><tr><th>from</th><th>to</th><th>section</th><th>ports</th><th>L7</th>"
        "<th>policy</th><th>where</th></tr>", *rows, "</table>",
    ]
    if findings:
        parts += ["<h2>Findings</h2><ul>", *findings, "</ul>"]
    if matrix is not None:
        parts.append(matrix_table(matrix))
    parts += [f'<script type="application/json" id="graph-data">{_json_for_script(data)}</script>',
              f"<script>{_SCRIPT}</script></body></html>"]
    return "\n".join(parts) + "\n"


def matrix_table(m: Matrix) -> str:
    head = "".join(f"<th>{_e(w)}</th>" for w in m.workloads)
    rows = []
    for s in m.workloads:
        cells = "".join(f'<td class="m-{_e(m.cells[(s, d)].state)}">{_e(m.cells[(s, d)].text)}</td>'
                        for d in m.workloads)
        rows.append(f"<tr><th>{_e(s)}</th>{cells}</tr>")
    return (f"<h2>Effective connectivity (mode {_e(m.mode.value)}; rows: sources, columns: destinations)</h2>"
            f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table>")
