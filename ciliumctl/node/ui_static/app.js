// The live service map of `ciliumctl ui`. The server aggregates flows into nodes and edges and sends what
// changed a few times a second (Server-Sent Events); this page only draws. Every name and label comes from the
// flows (user-controlled strings): they reach the page as text only, through textContent and cytoscape's
// canvas labels, never as HTML.
(function () {
  'use strict';

  var COLORS = {forwarded: '#2e7d32', dropped: '#c62828', audit: '#ef8f00', other: '#78909c'};
  var KIND_COLORS = {workload: '#3f6fb5', reserved: '#7b8794', external: '#8e5ab5'};
  var MAX_EDGE_ROWS = 100;
  var LAYOUT_EVERY_MS = 1500;
  var LABEL_EVERY_MS = 2000;

  var state = {version: 0, nodes: {}, edges: {}, namespaces: {}, selected: null, stats: {}, status: {},
               lastLayout: 0, layoutTimer: null, tableDirty: false, rate: 0, lastFlows: 0, lastTime: 0,
               spent: {apply: 0, edges: 0, flows: 0},   // ms of script per part (benchmarks/bench_ui.py)
               laidOut: 0,                              // nodes at the last layout from scratch
               flowsLoaded: 0};

  function $(id) { return document.getElementById(id); }

  function td(text, cls) {
    var c = document.createElement('td');
    c.textContent = text === undefined || text === null ? '' : String(text);
    if (cls) { c.className = cls; }
    return c;
  }

  cytoscape.use(window.cytoscapeFcose);

  var cy = cytoscape({
    container: $('map'),
    elements: [],
    minZoom: 0.2,
    maxZoom: 2,
    style: [
      {selector: 'node', style: {
        'label': 'data(label)', 'font-size': 11, 'text-valign': 'bottom', 'text-margin-y': 3,
        'background-color': 'data(color)', 'width': 22, 'height': 22, 'text-wrap': 'ellipsis',
        'text-max-width': 160}},
      {selector: 'node.namespace', style: {
        'background-color': '#eef2f7', 'background-opacity': 0.6, 'border-color': '#9fb3c8', 'border-width': 1,
        'label': 'data(label)', 'text-valign': 'top', 'text-halign': 'center', 'font-size': 12,
        'font-weight': 'bold', 'color': '#486581', 'padding': 16, 'shape': 'round-rectangle'}},
      {selector: 'edge', style: {
        'curve-style': 'bezier', 'target-arrow-shape': 'triangle', 'line-color': 'data(color)',
        'target-arrow-color': 'data(color)', 'width': 'data(width)', 'label': 'data(label)', 'font-size': 9,
        'text-rotation': 'autorotate', 'color': '#323f4b'}},
      {selector: ':selected', style: {'overlay-color': '#f0b429', 'overlay-opacity': 0.35, 'overlay-padding': 4}},
      {selector: 'edge:selected', style: {'label': 'data(full)', 'font-size': 11, 'font-weight': 'bold'}},
      {selector: '.hidden', style: {'display': 'none'}}
    ],
    layout: {name: 'preset'}
  });
  window.serviceMap = {cy: cy, state: state};   // for the browser's console and the tests

  // ------------------------------------------------------------------ the map

  function total(e) { return e.counts.forwarded + e.counts.dropped + e.counts.audit + e.counts.other; }

  function count(n) { return n < 1000 ? String(n) : n < 1e6 ? (n / 1e3).toFixed(1) + 'k' : (n / 1e6).toFixed(1) + 'M'; }

  function edgeLabel(e) {
    var parts = [e.port ? e.protocol + '/' + e.port : e.protocol];
    if (e.counts.forwarded) { parts.push('\u2713' + count(e.counts.forwarded)); }
    if (e.counts.dropped) { parts.push('\u2717' + count(e.counts.dropped)); }
    if (e.counts.audit) { parts.push('audit ' + count(e.counts.audit)); }
    return parts.join(' ');
  }

  // width by order of magnitude: it changes rarely, since every change of an edge costs the canvas a redraw
  function edgeWidth(e) { return Math.min(1.5 + Math.floor(Math.log10(1 + total(e))), 6); }

  function edgeData(e) {
    return {id: e.id, source: e.source, target: e.target, label: e.port ? e.protocol + '/' + e.port : e.protocol,
            full: edgeLabel(e), verdict: e.verdict, color: COLORS[e.verdict] || COLORS.other, width: edgeWidth(e)};
  }

  // Any change of an edge makes the canvas draw the whole map again, and a changed label costs most (its text
  // measured again): on the map an edge's label is its port, which never changes; its counts are in the edge
  // table, and on the map for the selected edge only, refreshed every LABEL_EVERY_MS. A new colour or width
  // (an order of magnitude more flows) is drawn at once.
  function updateEdge(el, e) {
    var color = COLORS[e.verdict] || COLORS.other, width = edgeWidth(e);
    if (el.data('color') !== color) { el.data({color: color, verdict: e.verdict}); }
    if (el.data('width') !== width) { el.data('width', width); }
  }

  function refreshSelectedLabel() {
    var e = state.selected && state.edges[state.selected], el = e && cy.getElementById(e.id);
    if (el && el.data('full') !== edgeLabel(e)) { el.data('full', edgeLabel(e)); }
  }

  function ensureNamespace(ns) {
    var id = 'ns:' + ns;
    if (cy.getElementById(id).empty()) {
      cy.add({group: 'nodes', data: {id: id, label: ns, kind: 'namespace'}, classes: 'namespace'});
      state.namespaces[ns] = true;
      var opt = document.createElement('option');
      opt.value = ns;
      opt.textContent = ns;
      $('f-namespace').appendChild(opt);
    }
    return id;
  }

  function apply(delta) {
    var t0 = performance.now(), added = false;
    cy.batch(function () {
      delta.nodes.forEach(function (n) {
        state.nodes[n.id] = n;
        if (cy.getElementById(n.id).empty()) {
          var data = {id: n.id, label: n.label, kind: n.kind, color: KIND_COLORS[n.kind] || '#7b8794'};
          if (n.namespace) { data.parent = ensureNamespace(n.namespace); }
          var w = cy.width() || 800, h = cy.height() || 500;
          cy.add({group: 'nodes', data: data, position: {x: Math.random() * w, y: Math.random() * h}});
          added = true;
        }
      });
      delta.edges.forEach(function (e) {
        state.edges[e.id] = e;
        var el = cy.getElementById(e.id);
        if (el.empty()) {
          cy.add({group: 'edges', data: edgeData(e)});
          added = true;
        } else {
          updateEdge(el, e);
        }
      });
    });
    if (delta.edges.length || delta.nodes.length) {
      state.tableDirty = true;
      if (added) { applyFilters(); scheduleLayout(); }
      if (state.selected ? delta.edges.some(function (e) { return e.id === state.selected; })
                         : Date.now() - state.flowsLoaded >= 1000) {
        loadFlows();
      }
    }
    showStatus(delta.stats, delta.status);
    state.spent.apply += performance.now() - t0;
  }

  function scheduleLayout() {
    if (state.layoutTimer) { return; }
    var wait = Math.max(0, state.lastLayout + LAYOUT_EVERY_MS - Date.now());
    state.layoutTimer = setTimeout(function () {
      state.layoutTimer = null;
      state.lastLayout = Date.now();
      layout();
    }, wait);
  }

  function layout() {
    // from scratch while the map grows by a fifth or more (an incremental run cannot pull overlapping namespaces
    // apart), else from where the nodes are, so that a map one looks at does not jump
    var n = cy.nodes().length, fresh = n >= state.laidOut * 1.2;
    cy.elements(':visible').layout({name: 'fcose', animate: false, randomize: fresh, fit: true, padding: 30,
                                    nodeDimensionsIncludeLabels: true, nodeRepulsion: 6000, idealEdgeLength: 90,
                                    nodeSeparation: 60, packComponents: true}).run();
    if (fresh) { state.laidOut = n; }
  }

  // ------------------------------------------------------------------ filters (on the page: the map is small)

  function nodeMatches(n, text) {
    if (!text) { return true; }
    if (n.label.toLowerCase().indexOf(text) >= 0 || n.namespace.toLowerCase().indexOf(text) >= 0) { return true; }
    return n.labels.some(function (l) { return l.toLowerCase().indexOf(text) >= 0; });
  }

  function edgeVisible(e) {
    var ns = $('f-namespace').value;
    var text = $('f-search').value.trim().toLowerCase();
    var verdictOn = {forwarded: $('f-forwarded').checked, dropped: $('f-dropped').checked,
                     audit: $('f-audit').checked, other: $('f-forwarded').checked};
    if (!verdictOn[e.verdict]) { return false; }
    var s = state.nodes[e.source], t = state.nodes[e.target];
    if (!s || !t) { return false; }
    if (ns && s.namespace !== ns && t.namespace !== ns) { return false; }
    return nodeMatches(s, text) || nodeMatches(t, text);
  }

  function applyFilters() {
    var shown = {};
    cy.batch(function () {
      Object.keys(state.edges).forEach(function (id) {
        var e = state.edges[id], on = edgeVisible(e), el = cy.getElementById(id);
        el.toggleClass('hidden', !on);
        if (on) { shown[e.source] = true; shown[e.target] = true; }
      });
      Object.keys(state.nodes).forEach(function (id) {
        cy.getElementById(id).toggleClass('hidden', !shown[id]);
      });
      Object.keys(state.namespaces).forEach(function (ns) {
        var parent = cy.getElementById('ns:' + ns);
        parent.toggleClass('hidden', parent.children().not('.hidden').empty());
      });
    });
    state.tableDirty = true;
  }

  ['f-namespace', 'f-forwarded', 'f-dropped', 'f-audit'].forEach(function (id) {
    $(id).addEventListener('change', function () { applyFilters(); layout(); });
  });
  $('f-search').addEventListener('input', applyFilters);
  $('relayout').addEventListener('click', layout);

  // ------------------------------------------------------------------ the edge table

  function nodeName(n) { return n.namespace ? n.namespace + '/' + n.label : n.label; }

  function renderEdges() {
    if (!state.tableDirty) { return; }
    var t0 = performance.now();
    state.tableDirty = false;
    var edges = Object.keys(state.edges).map(function (id) { return state.edges[id]; }).filter(edgeVisible);
    edges.sort(function (a, b) { return total(b) - total(a); });
    $('edge-count').textContent = edges.length > MAX_EDGE_ROWS ?
      '(' + MAX_EDGE_ROWS + ' busiest of ' + edges.length + ')' : '(' + edges.length + ')';
    var body = document.createElement('tbody');
    edges.slice(0, MAX_EDGE_ROWS).forEach(function (e) {
      var tr = document.createElement('tr'), s = state.nodes[e.source], t = state.nodes[e.target];
      tr.className = 'row-' + e.verdict + (e.id === state.selected ? ' selected' : '');
      tr.appendChild(td(nodeName(s)));
      tr.appendChild(td(nodeName(t)));
      tr.appendChild(td(e.port ? e.protocol + '/' + e.port : e.protocol, 'nowrap'));
      tr.appendChild(td(e.counts.forwarded, 'n'));
      tr.appendChild(td(e.counts.dropped, 'n v-dropped'));
      tr.appendChild(td(e.counts.audit, 'n'));
      tr.addEventListener('click', function () { select(e.id); });
      body.appendChild(tr);
    });
    $('edges').replaceChild(body, $('edges').tBodies[0]);
    state.spent.edges += performance.now() - t0;
  }

  // ------------------------------------------------------------------ the flow table

  var flowsRequest = 0;

  function select(id) {
    state.selected = id;
    cy.elements().unselect();
    if (id) { refreshSelectedLabel(); cy.getElementById(id).select(); }
    var e = id && state.edges[id];
    if (e) {
      var s = state.nodes[e.source], t = state.nodes[e.target];
      $('flows-title').textContent = 'Flows ' + nodeName(s) + ' \u2192 ' + nodeName(t) + ' ' +
        (e.port ? e.protocol + '/' + e.port : e.protocol);
    } else {
      $('flows-title').textContent = 'Latest flows';
    }
    $('clear-edge').hidden = !id;
    state.tableDirty = true;
    loadFlows();
  }

  function loadFlows() {
    var n = ++flowsRequest;
    state.flowsLoaded = Date.now();
    var url = '/api/flows?filter=' + encodeURIComponent($('flow-filter').value);
    if (state.selected) { url += '&edge=' + encodeURIComponent(state.selected); }
    fetch(url).then(function (r) { return r.json(); }).then(function (data) {
      if (n !== flowsRequest) { return; }
      $('flow-error').textContent = data.error || '';
      renderFlows(data.error ? [] : data.flows);   // no rows that the filter in the box did not choose
    }).catch(function (err) { $('flow-error').textContent = String(err); });
  }

  function renderFlows(flows) {
    var t0 = performance.now(), body = document.createElement('tbody');
    flows.forEach(function (f) {
      var tr = document.createElement('tr');
      tr.className = 'row-' + f.verdict_class;
      var time = td(f.time.slice(11, 23), 'nowrap');   // the time of day (UTC); the whole stamp on hover
      time.title = f.time;
      tr.appendChild(time);
      [f.source, f.destination, f.type].forEach(function (v) { tr.appendChild(td(v)); });
      tr.appendChild(td(f.verdict, 'nowrap v-' + f.verdict_class));
      [f.drop_reason, f.policies, f.summary].forEach(function (v) { tr.appendChild(td(v)); });
      body.appendChild(tr);
    });
    $('flows').replaceChild(body, $('flows').tBodies[0]);
    state.spent.flows += performance.now() - t0;
  }

  cy.on('tap', 'edge', function (ev) { select(ev.target.id()); });
  cy.on('tap', function (ev) { if (ev.target === cy) { select(null); } });
  $('clear-edge').addEventListener('click', function () { select(null); });
  $('flow-filter').addEventListener('change', loadFlows);

  // ------------------------------------------------------------------ status and the stream

  function showStatus(stats, status) {
    if (stats) { state.stats = stats; }
    if (status) { state.status = status; }
    var now = Date.now();
    if (state.lastTime && now - state.lastTime >= 1000) {
      state.rate = Math.round((state.stats.flows - state.lastFlows) * 1000 / (now - state.lastTime));
      state.lastTime = now;
      state.lastFlows = state.stats.flows;
    } else if (!state.lastTime) {
      state.lastTime = now;
      state.lastFlows = state.stats.flows || 0;
    }
    var st = state.status.state || 'connecting', s = state.stats;
    var text = (state.status.server || '') + ': ' + st + ' \u00b7 ' + (s.flows || 0) + ' flows (' + state.rate +
      '/s) \u00b7 ' + (s.nodes || 0) + ' nodes \u00b7 ' + (s.edges || 0) + ' edges';
    if (s.lost) { text += ' \u00b7 ' + s.lost + ' lost'; }
    if (s.overflow) { text += ' \u00b7 ' + s.overflow + ' flows of edges beyond the limit'; }
    $('status').textContent = text;
    $('status').className = 'status' + (st === 'connected' ? '' : ' bad');
  }

  function connect() {
    var es = new EventSource('/api/events?since=' + state.version);
    es.addEventListener('delta', function (msg) {
      var delta = JSON.parse(msg.data);
      state.version = delta.version;
      apply(delta);
    });
    es.onerror = function () {
      $('status').textContent = 'the ciliumctl ui server is gone; reconnecting\u2026';
      $('status').className = 'status bad';
    };
  }

  // the tables at most every 500 ms, in an animation frame (the map redraws on its own)
  setInterval(function () { window.requestAnimationFrame(renderEdges); }, 500);
  setInterval(function () { window.requestAnimationFrame(refreshSelectedLabel); }, LABEL_EVERY_MS);
  setInterval(function () { if (!state.selected) { loadFlows(); } }, 2000);

  fetch('/api/map').then(function (r) { return r.json(); }).then(function (snapshot) {
    state.version = snapshot.version;
    apply(snapshot);
    layout();
    state.lastLayout = Date.now();
    loadFlows();
    connect();
  });
}());
