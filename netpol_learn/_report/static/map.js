/* The connectivity map of a report model: which nodes and edges a state shows, their ELK graph,
 * and the SVG drawn from ELK's layout.
 *
 * No DOM, no fetch, no timers: the same code runs in the page and in V8 through mini-racer
 * (netpol_learn/_report/_image.py), so the static image is the page's default view. Text is set
 * in DejaVu Sans Mono, whose every glyph is 1233/2048 em wide: label sizes are computed, not measured.
 *
 *   model + state --graph()--> view (what is drawn) + ELK graph --ELK layered--> positions
 *                 --render()--> SVG string (its classes and data attributes: docs/report.md)
 *
 * A state is {collapsed: Set of namespaces, hidden: Set of node ids, hiddenEdges: Set of edge ids}.
 * A collapsed namespace is one node, "ns:NAME"; the edges of its nodes are aggregated per
 * (source, target, protocol, port), and those inside it are not drawn (the node counts them).
 * A view of more than MAX_EDGES edges draws that many, and says how many it left out.
 */
var NetpolMap = (function () {
  "use strict";

  var FONT_FAMILY = "'DejaVu Sans Mono', monospace";
  var EM = 1233 / 2048;  // advance of every glyph of DejaVu Sans Mono, in em (0.602)
  var NODE_FONT = 12, EDGE_FONT = 11, TITLE_FONT = 13, LEGEND_FONT = 11;
  var NODE_HEIGHT = 28, NODE_PAD = 12, POINT = 9;  // POINT: the pointed ends of DNS nodes
  var LABEL_PAD = 3, LABEL_HEIGHT = 15;
  var TOGGLE = 14;
  var GROUP_TOP = 34, GROUP_PAD = 14;
  // More workload nodes than this: every namespace starts collapsed.
  var COLLAPSE_ABOVE = 200;
  // At most this many edges are drawn: beyond a few thousand ELK takes minutes and the browser
  // runs out of memory, and no one reads such a map. Those of the least interest are left out
  // (allowed before the other verdicts, unmarked before the diff's, then the fewest connections)
  // and the map says how many; a search or the namespace filter brings them back.
  var MAX_EDGES = 2000;

  var VERDICTS = ["allowed", "denied", "attempt", "unresolved", "not-written", "not-evaluated"];
  // The verdict an aggregated edge shows: the first of these its edges have.
  var SEVERITY = ["denied", "unresolved", "attempt", "not-written", "not-evaluated", "allowed"];
  var STROKE = {
    allowed: "#2e7d32", denied: "#c62828", attempt: "#8d8d8d", unresolved: "#ef6c00",
    "not-written": "#7b1fa2", "not-evaluated": "#546e7a"
  };
  var NEUTRAL = "#455a64";  // allowed in generated mode: every edge is a rule written
  var DASH = {attempt: "6 4", unresolved: "8 3", "not-written": "2 3", "not-evaluated": "1 4"};
  var TAG = {attempt: " attempt", "not-written": " not written", "not-evaluated": " not evaluated",
             unresolved: " unresolved"};
  var HALO = {added: "#a5d6a7", removed: "#ef9a9a"};
  var KINDS = [
    ["workload", "workload"], ["dns", "cluster DNS"], ["node-local-dns", "node-local DNS"],
    ["external", "outside"], ["node", "node"], ["apiserver", "API server"],
    ["unresolved", "unresolved"], ["namespace", "namespace (collapsed)"]
  ];
  var SHAPE = {
    workload: {fill: "#ffffff", stroke: "#37474f"},
    dns: {fill: "#e3f2fd", stroke: "#1565c0"},
    "node-local-dns": {fill: "#e3f2fd", stroke: "#1565c0", dash: "4 3"},
    external: {fill: "#eef2f7", stroke: "#5c6bc0"},
    node: {fill: "#f3f3f3", stroke: "#424242"},
    apiserver: {fill: "#fff8e1", stroke: "#8d6e00"},
    unresolved: {fill: "#fff3e0", stroke: "#ef6c00", dash: "5 3"},
    namespace: {fill: "#eceff1", stroke: "#546e7a"}
  };

  function chars(text) { return Array.from(text).length; }
  function textWidth(text, size) { return chars(text) * EM * size; }
  function num(v) { return String(Math.round(v * 10) / 10); }
  function esc(s) {
    return String(s).replace(/&/g, "&amp;").replace(/[<]/g, "&lt;").replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
  }
  function attrs(pairs) {
    var out = "";
    for (var i = 0; i < pairs.length; i++) out += " " + pairs[i][0] + "=\"" + esc(pairs[i][1]) + "\"";
    return out;
  }

  function workloadCount(model) {
    return model.nodes.filter(function (n) { return n.kind === "workload"; }).length;
  }

  /** The page's first state, and the static image's: every namespace collapsed when the model
   * has more than COLLAPSE_ABOVE workload nodes, nothing hidden. */
  function defaultState(model) {
    var collapsed = new Set();
    if (workloadCount(model) > COLLAPSE_ABOVE) namespaceNames(model).forEach(function (ns) { collapsed.add(ns); });
    return {collapsed: collapsed, hidden: new Set(), hiddenEdges: new Set()};
  }

  /** Every namespace of the model, as the model lists them, then those only nodes name (sorted). */
  function namespaceNames(model) {
    var seen = new Set(), out = [];
    model.namespaces.forEach(function (ns) { if (!seen.has(ns.name)) { seen.add(ns.name); out.push(ns.name); } });
    var extra = [];
    model.nodes.forEach(function (n) {
      if (n.namespace !== null && !seen.has(n.namespace)) { seen.add(n.namespace); extra.push(n.namespace); }
    });
    return out.concat(extra.sort());
  }

  function collapsedLabel(model, ns) {
    var entry = model.namespaces.filter(function (e) { return e.name === ns; })[0];
    var count = entry ? entry.workloads : model.nodes.filter(function (n) {
      return n.namespace === ns && n.kind === "workload";
    }).length;
    return ns + " (" + count + (count === 1 ? " workload)" : " workloads)");
  }

  function endpoint(port) { return port === null || port === undefined ? "" : "/" + port; }

  /** The text of a drawn edge: its diff mark, protocol/port, connections and what sets it apart. */
  function edgeLabel(members, protocol, port) {
    var diffs = diffOf(members);
    var mark = (diffs.indexOf("added") >= 0 ? "+" : "") + (diffs.indexOf("removed") >= 0 ? "\u2212" : "");
    var connections = members.reduce(function (s, e) { return s + e.connections; }, 0);
    var text = (mark ? mark + " " : "") + protocol + endpoint(port) +
      (connections > 0 ? " \u00d7" + connections : " not seen");
    if (members.length === 1) {
      var e = members[0];
      if (e.verdict === "denied") text += " denied" + (e.denied_by ? " (" + e.denied_by + ")" : "");
      else if (TAG[e.verdict]) text += TAG[e.verdict];
      return text;
    }
    var denied = members.filter(function (m) { return m.verdict === "denied"; }).length;
    return text + " \u00b7 " + members.length + " edges" + (denied ? ", " + denied + " denied" : "");
  }

  function verdictOf(members) {
    for (var i = 0; i < SEVERITY.length; i++) {
      for (var j = 0; j < members.length; j++) if (members[j].verdict === SEVERITY[i]) return SEVERITY[i];
    }
    return members[0].verdict;
  }

  function diffOf(members) {
    var out = [];
    ["added", "removed"].forEach(function (d) {
      if (members.some(function (m) { return m.diff === d; })) out.push(d);
    });
    return out;
  }

  /** How much a reviewer needs to see a drawn edge: a mark of the diff, then any verdict but allowed. */
  function interest(d) {
    return (d.diff.length ? 2 : 0) + (d.verdict === "allowed" ? 0 : 1);
  }

  function nodeWidth(kind, label) {
    var w = textWidth(label, NODE_FONT) + 2 * NODE_PAD;
    if (kind === "dns" || kind === "node-local-dns" || kind === "apiserver") w += 2 * POINT;
    if (kind === "external") w += NODE_HEIGHT / 2;
    if (kind === "node") w += 6;
    if (kind === "namespace") w += TOGGLE + 8;
    return Math.ceil(w);
  }

  /** What ``state`` shows of ``model``: groups (expanded namespaces), nodes (model nodes and
   * collapsed namespaces), edges (model edges, or aggregations), and the ELK graph of them. */
  function graph(model, state) {
    var collapsed = state.collapsed, hidden = state.hidden, hiddenEdges = state.hiddenEdges || new Set();
    var byId = new Map();
    model.nodes.forEach(function (n) { byId.set(n.id, n); });
    var drawnNode = new Map();   // id -> {id, kind, label, namespace, model node or null, width}
    var groups = new Map();      // namespace -> [node ids]
    var top = [];
    var represent = new Map();   // model node id -> the drawn node's id
    namespaceNames(model).forEach(function (ns) { groups.set(ns, []); });
    model.nodes.forEach(function (n) {
      if (hidden.has(n.id)) return;
      if (n.namespace !== null && collapsed.has(n.namespace)) {
        var id = "ns:" + n.namespace;
        represent.set(n.id, id);
        if (!drawnNode.has(id)) {
          var label = collapsedLabel(model, n.namespace);
          drawnNode.set(id, {id: id, kind: "namespace", label: label, namespace: n.namespace, node: null,
                             members: [], inner: [], width: nodeWidth("namespace", label)});
          top.push(id);
        }
        drawnNode.get(id).members.push(n.id);
        return;
      }
      represent.set(n.id, n.id);
      var text = n.pods ? n.label + " \u00b7 " + n.pods + (n.pods === 1 ? " pod" : " pods") : n.label;
      drawnNode.set(n.id, {id: n.id, kind: n.kind, label: text, namespace: n.namespace, node: n,
                           width: nodeWidth(n.kind, text)});
      if (n.namespace === null) top.push(n.id); else groups.get(n.namespace).push(n.id);
    });

    var edges = [], aggregated = new Map();
    model.edges.forEach(function (e) {
      if (hiddenEdges.has(e.id)) return;
      var s = represent.get(e.source), t = represent.get(e.target);
      if (s === undefined || t === undefined) return;
      if (s === e.source && t === e.target) {
        edges.push({id: e.id, source: s, target: t, protocol: e.protocol, port: e.port, members: [e]});
        return;
      }
      if (s === t) { drawnNode.get(s).inner.push(e.id); return; }
      var key = s + ">" + t + ":" + e.protocol + endpoint(e.port);
      if (!aggregated.has(key)) {
        var agg = {id: "agg:" + key, source: s, target: t, protocol: e.protocol, port: e.port, members: []};
        aggregated.set(key, agg);
        edges.push(agg);
      }
      aggregated.get(key).members.push(e);
    });
    edges.forEach(function (d) {
      d.verdict = verdictOf(d.members);
      d.diff = diffOf(d.members);
      d.connections = d.members.reduce(function (s, e) { return s + e.connections; }, 0);
      d.label = edgeLabel(d.members, d.protocol, d.port);
    });

    var omitted = 0;
    if (edges.length > MAX_EDGES) {
      var ranked = edges.slice().sort(function (a, b) {
        return interest(b) - interest(a) || b.connections - a.connections;
      });  // Array.prototype.sort is stable: ties keep the model's order
      var keep = new Set(ranked.slice(0, MAX_EDGES));
      omitted = edges.length - MAX_EDGES;
      edges = edges.filter(function (d) { return keep.has(d); });
    }

    var groupList = [];
    groups.forEach(function (ids, ns) { if (ids.length) groupList.push({namespace: ns, nodes: ids}); });
    var view = {model: model, nodes: drawnNode, top: top, groups: groupList, edges: edges,
                collapsed: Array.from(collapsed).sort(), omitted: omitted};
    view.elk = elkGraph(view);
    return view;
  }

  function elkNode(d) {
    return {id: d.id, width: d.width, height: NODE_HEIGHT};
  }

  function elkGraph(view) {
    var children = view.groups.map(function (g) {
      var minWidth = Math.ceil(textWidth(g.namespace, TITLE_FONT) + 3 * GROUP_PAD + TOGGLE);
      return {
        id: "group:" + g.namespace,
        layoutOptions: {
          "elk.padding": "[top=" + GROUP_TOP + ",left=" + GROUP_PAD + ",bottom=" + GROUP_PAD + ",right=" + GROUP_PAD + "]",
          "elk.nodeSize.constraints": "[MINIMUM_SIZE]",
          "elk.nodeSize.minimum": "(" + minWidth + ", " + (GROUP_TOP + GROUP_PAD + NODE_HEIGHT) + ")"
        },
        children: g.nodes.map(function (id) { return elkNode(view.nodes.get(id)); })
      };
    });
    view.top.forEach(function (id) { children.push(elkNode(view.nodes.get(id))); });
    return {
      id: "root",
      layoutOptions: {
        "elk.algorithm": "layered",
        "elk.direction": "RIGHT",
        "elk.hierarchyHandling": "INCLUDE_CHILDREN",
        "elk.randomSeed": "1",
        "elk.json.shapeCoords": "ROOT",
        "elk.json.edgeCoords": "ROOT",
        "elk.edgeRouting": "ORTHOGONAL",
        "elk.edgeLabels.placement": "CENTER",
        "elk.padding": "[top=16,left=16,bottom=16,right=16]",
        "elk.spacing.nodeNode": "24",
        "elk.spacing.edgeNode": "14",
        "elk.spacing.edgeEdge": "10",
        "elk.spacing.edgeLabel": "3",
        "elk.spacing.labelLabel": "6",
        "elk.spacing.componentComponent": "32",
        "elk.layered.spacing.nodeNodeBetweenLayers": "56",
        "elk.layered.spacing.edgeNodeBetweenLayers": "18",
        "elk.layered.spacing.edgeEdgeBetweenLayers": "12"
      },
      children: children,
      edges: view.edges.map(function (d) {
        return {id: d.id, sources: [d.source], targets: [d.target],
                labels: [{text: d.label, width: Math.ceil(textWidth(d.label, EDGE_FONT) + 2 * LABEL_PAD),
                          height: LABEL_HEIGHT}]};
      })
    };
  }

  /** Positions by id of ELK's result (shapeCoords ROOT: all in the root's frame). */
  function positions(laid) {
    var out = new Map();
    (function walk(n) {
      (n.children || []).forEach(function (c) { out.set(c.id, c); walk(c); });
    })(laid);
    return out;
  }

  function shape(kind, x, y, w, h) {
    var s = SHAPE[kind] || SHAPE.workload;
    var style = " fill=\"" + s.fill + "\" stroke=\"" + s.stroke + "\" stroke-width=\"1.5\"" +
      (s.dash ? " stroke-dasharray=\"" + s.dash + "\"" : "");
    var r = x + w, b = y + h, m = y + h / 2;
    if (kind === "dns" || kind === "node-local-dns") {
      return "<path class=\"shape\" d=\"M" + num(x) + " " + num(m) + "L" + num(x + POINT) + " " + num(y) + "H" +
        num(r - POINT) + "L" + num(r) + " " + num(m) + "L" + num(r - POINT) + " " + num(b) + "H" + num(x + POINT) +
        "Z\"" + style + "/>";
    }
    if (kind === "apiserver") {
      var c = 7;
      return "<path class=\"shape\" d=\"M" + num(x + c) + " " + num(y) + "H" + num(r - c) + "L" + num(r) + " " +
        num(y + c) + "V" + num(b - c) + "L" + num(r - c) + " " + num(b) + "H" + num(x + c) + "L" + num(x) + " " +
        num(b - c) + "V" + num(y + c) + "Z\"" + style + "/>";
    }
    if (kind === "namespace") {
      return "<rect x=\"" + num(x + 3) + "\" y=\"" + num(y - 3) + "\" width=\"" + num(w) + "\" height=\"" + num(h) +
        "\" rx=\"3\" fill=\"" + s.fill + "\" stroke=\"" + s.stroke + "\" stroke-width=\"1\"/>" +
        "<rect class=\"shape\" x=\"" + num(x) + "\" y=\"" + num(y) + "\" width=\"" + num(w) + "\" height=\"" +
        num(h) + "\" rx=\"3\"" + style + "/>";
    }
    var rx = kind === "external" ? h / 2 : kind === "unresolved" ? 6 : 3;
    var out = "<rect class=\"shape\" x=\"" + num(x) + "\" y=\"" + num(y) + "\" width=\"" + num(w) + "\" height=\"" +
      num(h) + "\" rx=\"" + num(rx) + "\"" + style + "/>";
    if (kind === "node") {
      out += "<rect x=\"" + num(x) + "\" y=\"" + num(y) + "\" width=\"6\" height=\"" + num(h) + "\" fill=\"" +
        s.stroke + "\"/>";
    }
    return out;
  }

  function toggle(x, y, namespace, expand) {
    var c = TOGGLE / 2, cx = x + c, cy = y + c;
    return "<g class=\"toggle\"" + attrs([["data-namespace", namespace]]) + "><title>" +
      (expand ? "expand " : "collapse ") + esc(namespace) + "</title><rect x=\"" + num(x) + "\" y=\"" + num(y) +
      "\" width=\"" + TOGGLE + "\" height=\"" + TOGGLE + "\" rx=\"2\" fill=\"#ffffff\" stroke=\"#546e7a\"/>" +
      "<path d=\"M" + num(cx - 4) + " " + num(cy) + "H" + num(cx + 4) +
      (expand ? "M" + num(cx) + " " + num(cy - 4) + "V" + num(cy + 4) : "") +
      "\" stroke=\"#37474f\" stroke-width=\"1.5\"/></g>";
  }

  function nodeTitle(d) {
    if (d.kind === "namespace") {
      return d.label + "; " + d.inner.length + (d.inner.length === 1 ? " edge" : " edges") + " inside";
    }
    var n = d.node, parts = [n.id];
    if (n.pods !== null && n.pods !== undefined) parts.push(n.pods + (n.pods === 1 ? " pod" : " pods"));
    if (n.addresses && n.addresses.length) parts.push(n.addresses.join(" "));
    if (n.names && n.names.length) parts.push(n.names.join(" "));
    if (n.note) parts.push(n.note);
    return parts.join("; ");
  }

  function renderNode(d, p) {
    var n = d.node;
    var data = [["class", d.kind === "namespace" ? "node collapsed" : "node"], ["data-id", d.id],
                ["data-kind", d.kind], ["data-namespace", d.namespace === null ? "" : d.namespace]];
    if (d.kind === "namespace") {
      data.push(["data-members", d.members.join(" ")], ["data-inner-edges", d.inner.join(" ")]);
    } else {
      data.push(["data-addresses", (n.addresses || []).join(" ")], ["data-names", (n.names || []).join(" ")]);
    }
    var textWidthPx = textWidth(d.label, NODE_FONT);
    var cx = p.x + p.width / 2;
    if (d.kind === "namespace") cx = p.x + (p.width - TOGGLE - 8) / 2;
    var out = "<g" + attrs(data) + "><title>" + esc(nodeTitle(d)) + "</title>" + shape(d.kind, p.x, p.y, p.width, p.height) +
      "<text class=\"node-label\" x=\"" + num(cx - textWidthPx / 2) + "\" y=\"" + num(p.y + p.height / 2 + NODE_FONT * 0.36) +
      "\" font-size=\"" + NODE_FONT + "\" fill=\"#212121\">" + esc(d.label) + "</text>";
    if (d.kind === "namespace") out += toggle(p.x + p.width - NODE_PAD / 2 - TOGGLE, p.y + (p.height - TOGGLE) / 2, d.namespace, true);
    return out + "</g>";
  }

  function edgePath(e) {
    var d = "";
    (e.sections || []).forEach(function (s) {
      d += "M" + num(s.startPoint.x) + " " + num(s.startPoint.y);
      (s.bendPoints || []).forEach(function (b) { d += "L" + num(b.x) + " " + num(b.y); });
      d += "L" + num(s.endPoint.x) + " " + num(s.endPoint.y);
    });
    return d;
  }

  function stroke(verdict, mode) {
    return verdict === "allowed" && mode === "generated" ? NEUTRAL : STROKE[verdict] || NEUTRAL;
  }

  function renderEdge(d, e, mode) {
    var data = [["class", "edge"], ["data-id", d.id], ["data-source", d.source], ["data-target", d.target],
                ["data-protocol", d.protocol], ["data-port", d.port === null ? "" : String(d.port)],
                ["data-connections", String(d.connections)], ["data-verdict", d.verdict],
                ["data-diff", d.diff.join(" ")], ["data-edges", d.members.map(function (m) { return m.id; }).join(" ")]];
    var path = edgePath(e), colour = stroke(d.verdict, mode);
    var out = "<g" + attrs(data) + ">";
    if (d.diff.length) {
      out += "<path class=\"halo\" d=\"" + path + "\" fill=\"none\" stroke=\"" + HALO[d.diff[0]] +
        "\" stroke-width=\"8\" stroke-linejoin=\"round\"/>";
    }
    out += "<path d=\"" + path + "\" fill=\"none\" stroke=\"" + colour + "\" stroke-width=\"" +
      (d.diff.length ? "2.5" : "1.5") + "\"" + (DASH[d.verdict] ? " stroke-dasharray=\"" + DASH[d.verdict] + "\"" : "") +
      " marker-end=\"url(#arrow-" + d.verdict + ")\"/>";
    // A wide transparent path: an edge is easy to click.
    out += "<path class=\"hit\" d=\"" + path + "\" fill=\"none\" stroke=\"#000000\" stroke-opacity=\"0\" stroke-width=\"10\"/>";
    var label = (e.labels || [])[0];
    if (label) {
      out += "<rect class=\"edge-label-bg\" x=\"" + num(label.x) + "\" y=\"" + num(label.y) + "\" width=\"" +
        num(label.width) + "\" height=\"" + num(label.height) + "\" fill=\"#ffffff\" fill-opacity=\"0.9\"/>" +
        "<text class=\"edge-label\" x=\"" + num(label.x + LABEL_PAD) + "\" y=\"" + num(label.y + label.height - 4) +
        "\" font-size=\"" + EDGE_FONT + "\" fill=\"" + colour + "\">" + esc(d.label) + "</text>";
    }
    return out + "</g>";
  }

  function renderGroup(g, p) {
    return "<g class=\"group\"" + attrs([["data-namespace", g.namespace]]) + "><rect x=\"" + num(p.x) + "\" y=\"" +
      num(p.y) + "\" width=\"" + num(p.width) + "\" height=\"" + num(p.height) +
      "\" rx=\"6\" fill=\"#f7f9fa\" stroke=\"#90a4ae\" stroke-width=\"1\"/><text class=\"group-title\" x=\"" +
      num(p.x + GROUP_PAD) + "\" y=\"" + num(p.y + 22) + "\" font-size=\"" + TITLE_FONT + "\" fill=\"#37474f\">" +
      esc(g.namespace) + "</text>" +
      toggle(p.x + GROUP_PAD + textWidth(g.namespace, TITLE_FONT) + GROUP_PAD, p.y + 11, g.namespace, false) + "</g>";
  }

  /** The legend under the map: the verdicts (with the diff's marks in diff mode) and the kinds of
   * node, in rows no wider than ``width``. */
  function legend(y, width, mode, omitted) {
    var items = VERDICTS.map(function (v) {
      return {text: v === "allowed" && mode === "generated" ? "observed (rule written)" : v.replace("-", " "), edge: v};
    });
    if (mode === "diff") {
      items.push({text: "+ newly allowed", edge: "allowed", diff: "added"});
      items.push({text: "\u2212 newly denied", edge: "denied", diff: "removed"});
    }
    KINDS.forEach(function (k) { items.push({text: k[1], kind: k[0]}); });
    var x = 16, row = y, out = "<g class=\"legend\">", sample = 34, gap = 18;
    items.forEach(function (it) {
      var w = sample + 6 + textWidth(it.text, LEGEND_FONT);
      if (x > 16 && x + w > width - 16) { x = 16; row += 26; }
      if (it.edge) {
        var colour = stroke(it.edge, mode), line = "M" + num(x) + " " + num(row + 9) + "H" + num(x + sample - 4);
        if (it.diff) out += "<path d=\"" + line + "\" stroke=\"" + HALO[it.diff] + "\" stroke-width=\"8\"/>";
        out += "<path d=\"" + line + "\" stroke=\"" + colour + "\" stroke-width=\"" + (it.diff ? "2.5" : "1.5") + "\"" +
          (DASH[it.edge] ? " stroke-dasharray=\"" + DASH[it.edge] + "\"" : "") + " marker-end=\"url(#arrow-" + it.edge + ")\"/>";
      } else {
        out += shape(it.kind, x + 4, row + 2, sample - 8, 14);
      }
      out += "<text class=\"legend-label\" x=\"" + num(x + sample + 6) + "\" y=\"" + num(row + 13) + "\" font-size=\"" +
        LEGEND_FONT + "\" fill=\"#37474f\">" + esc(it.text) + "</text>";
      x += w + gap;
    });
    if (omitted) {
      row += 26;
      out += "<text class=\"omitted\" x=\"16\" y=\"" + num(row + 13) + "\" font-size=\"" + LEGEND_FONT +
        "\" fill=\"#b71c1c\">" + esc(omitted + (omitted === 1 ? " edge" : " edges") + " not drawn (at most " +
        MAX_EDGES + " are): search or filter the namespaces to see them") + "</text>";
    }
    return {svg: out + "</g>", bottom: row + 26};
  }

  function markers(mode) {
    return VERDICTS.map(function (v) {
      return "<marker id=\"arrow-" + v + "\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"9\" " +
        "markerHeight=\"9\" markerUnits=\"userSpaceOnUse\" orient=\"auto\"><path d=\"M0 1L10 5L0 9Z\" fill=\"" +
        stroke(v, mode) + "\"/></marker>";
    }).join("");
  }

  /** The SVG document of a view laid out by ELK (``laid``: ELK's result for ``view.elk``). */
  function render(view, laid) {
    var mode = view.model.mode, at = positions(laid);
    var width = Math.max(Math.ceil(laid.width), 640);
    var key = legend(Math.ceil(laid.height) + 8, width, mode, view.omitted);
    var height = Math.ceil(key.bottom + 8);
    var body = view.groups.map(function (g) { return renderGroup(g, at.get("group:" + g.namespace)); }).join("");
    var edgeAt = new Map();
    (laid.edges || []).forEach(function (e) { edgeAt.set(e.id, e); });
    body += "<g class=\"edges\">" + view.edges.map(function (d) { return renderEdge(d, edgeAt.get(d.id), mode); }).join("") + "</g>";
    var nodes = "";
    view.nodes.forEach(function (d) { nodes += renderNode(d, at.get(d.id)); });
    body += "<g class=\"nodes\">" + nodes + "</g>";
    if (!view.nodes.size) {
      body += "<text class=\"empty\" x=\"24\" y=\"40\" font-size=\"" + NODE_FONT + "\" fill=\"#616161\">nothing to show</text>";
    }
    return "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"map\" width=\"" + width + "\" height=\"" + height +
      "\" viewBox=\"0 0 " + width + " " + height + "\" font-family=\"" + esc(FONT_FAMILY) + "\"" +
      attrs([["data-collapsed", view.collapsed.join(" ")]].concat(
        view.omitted ? [["data-omitted-edges", String(view.omitted)]] : [])) + "><defs>" + markers(mode) + "</defs>" +
      "<rect class=\"background\" x=\"0\" y=\"0\" width=\"" + width + "\" height=\"" + height + "\" fill=\"#ffffff\"/>" +
      body + key.svg + "</svg>";
  }

  /** Lay out and draw ``model`` in ``state`` with an ELK instance: a promise of {svg, view}. */
  function draw(model, state, elk) {
    var view = graph(model, state);
    return elk.layout(view.elk).then(function (laid) { return {svg: render(view, laid), view: view}; });
  }

  return {
    COLLAPSE_ABOVE: COLLAPSE_ABOVE,
    MAX_EDGES: MAX_EDGES,
    defaultState: defaultState,
    namespaceNames: namespaceNames,
    graph: graph,
    render: render,
    draw: draw,
    edgeLabel: edgeLabel,
    textWidth: textWidth
  };
})();
