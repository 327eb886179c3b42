/* The review page's DOM side: the filters and the collapse state that decide what map.js draws,
 * pan and zoom of the drawn SVG, and the details panel of what is clicked.
 *
 * body[data-state] is "loading" from a change until its layout is drawn, then "ready"
 * (body[data-collapsed] lists the collapsed namespaces). Model text reaches the DOM as text
 * (textContent), never as markup; map.js escapes what it writes into the SVG.
 */
(function () {
  "use strict";

  var model = JSON.parse(document.getElementById("report-data").textContent);
  var body = document.body;
  var container = document.getElementById("map-container");
  var details = document.getElementById("details");
  var searchBox = document.getElementById("search");
  var elk = new ELK();
  var state = NetpolMap.defaultState(model);
  var nodeById = new Map(), edgeById = new Map();
  model.nodes.forEach(function (n) { nodeById.set(n.id, n); });
  model.edges.forEach(function (e) { edgeById.set(e.id, e); });
  var unchecked = new Set();
  var generation = 0, chain = Promise.resolve(), searchTimer = null;
  var view = {x: 0, y: 0, scale: 1, width: 0, height: 0};
  var selected = null;
  var MIN_FIRST_SCALE = 0.3;

  // -- what is shown ------------------------------------------------------------------------

  function matches(n, q) {
    return [n.id, n.label].concat(n.addresses || [], n.names || []).some(function (s) {
      return s.toLowerCase().indexOf(q) >= 0;
    });
  }

  /** state.hidden and state.hiddenEdges from the search (matching nodes, their edges and
   * neighbours) and the namespace checkboxes (an unchecked namespace's nodes). */
  function applyFilters() {
    var q = searchBox.value.trim().toLowerCase();
    var hidden = new Set(), hiddenEdges = new Set();
    if (q) {
      var matched = new Set(), shown = new Set();
      model.nodes.forEach(function (n) { if (matches(n, q)) { matched.add(n.id); shown.add(n.id); } });
      model.edges.forEach(function (e) {
        if (matched.has(e.source) || matched.has(e.target)) { shown.add(e.source); shown.add(e.target); }
        else hiddenEdges.add(e.id);
      });
      model.nodes.forEach(function (n) { if (!shown.has(n.id)) hidden.add(n.id); });
    }
    model.nodes.forEach(function (n) { if (n.namespace !== null && unchecked.has(n.namespace)) hidden.add(n.id); });
    state.hidden = hidden;
    state.hiddenEdges = hiddenEdges;
  }

  /** Lay out and draw the current state; the promise settles when the page is ready again. */
  function layout() {
    var mine = ++generation;
    body.setAttribute("data-state", "loading");
    chain = chain.then(function () {
      if (mine !== generation) return null;  // a later change is queued: draw that one only
      applyFilters();
      return NetpolMap.draw(model, state, elk).then(function (drawn) {
        if (mine !== generation) return;
        show(drawn.svg);
        body.setAttribute("data-collapsed", drawn.view.collapsed.join(" "));
        body.setAttribute("data-omitted-edges", String(drawn.view.omitted));
        body.setAttribute("data-state", "ready");
      });
    }).catch(function (err) {
      body.setAttribute("data-state", "error");
      console.error("netpol-learn report: the map could not be drawn: " + (err && err.message || err));
    });
    return chain;
  }

  // -- the SVG, pan and zoom ----------------------------------------------------------------

  function show(svgText) {
    container.innerHTML = svgText;
    var svg = container.querySelector("svg");
    view.width = Number(svg.getAttribute("width"));
    view.height = Number(svg.getAttribute("height"));
    svg.setAttribute("width", "100%");
    svg.setAttribute("height", "100%");
    svg.setAttribute("preserveAspectRatio", "xMinYMin meet");
    if (selected) {
      var again = findDrawn(selected);
      if (again) again.classList.add("selected");
    }
    fit(true);
  }

  function findDrawn(id) {
    var found = null;
    container.querySelectorAll(".node, .edge").forEach(function (el) {
      if (el.getAttribute("data-id") === id) found = el;
    });
    return found;
  }

  function applyView() {
    var svg = container.querySelector("svg");
    if (!svg) return;
    var w = container.clientWidth / view.scale, h = container.clientHeight / view.scale;
    svg.setAttribute("viewBox", [view.x, view.y, w, h].map(function (v) { return Math.round(v * 100) / 100; }).join(" "));
  }

  /** The whole map in sight, at most at its natural size; ``legible``: at least at
   * MIN_FIRST_SCALE, from the top left (a large map's whole is too small to read). */
  function fit(legible) {
    var cw = container.clientWidth || 1, ch = container.clientHeight || 1;
    view.scale = Math.min(1, cw / view.width, ch / view.height);
    if (legible === true) view.scale = Math.max(view.scale, MIN_FIRST_SCALE);
    view.x = 0;
    view.y = 0;
    applyView();
  }

  container.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    var rect = container.getBoundingClientRect();
    var mx = ev.clientX - rect.left, my = ev.clientY - rect.top;
    var px = view.x + mx / view.scale, py = view.y + my / view.scale;
    var scale = Math.max(0.02, Math.min(8, view.scale * Math.pow(1.0015, -ev.deltaY)));
    view.x = px - mx / scale;
    view.y = py - my / scale;
    view.scale = scale;
    applyView();
  }, {passive: false});

  var drag = null, dragged = false;
  container.addEventListener("pointerdown", function (ev) {
    if (ev.button !== 0) return;
    drag = {x: ev.clientX, y: ev.clientY, vx: view.x, vy: view.y, id: ev.pointerId};
    dragged = false;
  });
  container.addEventListener("pointermove", function (ev) {
    if (!drag) return;
    var dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (!dragged && Math.abs(dx) + Math.abs(dy) < 4) return;
    if (!dragged) { dragged = true; container.setPointerCapture(drag.id); container.classList.add("dragging"); }
    view.x = drag.vx - dx / view.scale;
    view.y = drag.vy - dy / view.scale;
    applyView();
  });
  function endDrag() { drag = null; container.classList.remove("dragging"); }
  container.addEventListener("pointerup", endDrag);
  container.addEventListener("pointercancel", endDrag);
  window.addEventListener("resize", applyView);

  // -- clicks on the map --------------------------------------------------------------------

  function setCollapsed(namespace, collapsed) {
    if (collapsed) state.collapsed.add(namespace); else state.collapsed.delete(namespace);
    return layout();
  }

  container.addEventListener("click", function (ev) {
    if (dragged) { dragged = false; return; }
    var toggle = ev.target.closest(".toggle");
    if (toggle) {
      var ns = toggle.getAttribute("data-namespace");
      setCollapsed(ns, !state.collapsed.has(ns));
      return;
    }
    var el = ev.target.closest(".edge, .node");
    if (!el) return;
    select(el);
    if (el.classList.contains("edge")) showEdge(el);
    else showNode(el);
  });

  container.addEventListener("dblclick", function (ev) {
    var el = ev.target.closest(".node.collapsed");
    if (el) setCollapsed(el.getAttribute("data-namespace"), false);
  });

  function select(el) {
    container.querySelectorAll(".selected").forEach(function (s) { s.classList.remove("selected"); });
    el.classList.add("selected");
    selected = el.getAttribute("data-id");
  }

  // -- the details panel --------------------------------------------------------------------

  function make(tag, text, cls) {
    var el = document.createElement(tag);
    if (text !== undefined && text !== null) el.textContent = String(text);
    if (cls) el.className = cls;
    return el;
  }

  function facts(pairs) {
    var dl = make("dl");
    pairs.forEach(function (p) {
      if (p[1] === null || p[1] === undefined || p[1] === "") return;
      dl.appendChild(make("dt", p[0]));
      dl.appendChild(make("dd", p[1]));
    });
    return dl;
  }

  function port(protocol, p) { return protocol + (p === null || p === undefined ? "" : "/" + p); }

  function edgeLink(e, text) {
    var b = make("button", text, "link");
    b.type = "button";
    b.addEventListener("click", function () { showModelEdge(e); });
    return b;
  }

  function clear(title, subtitle) {
    details.textContent = "";
    details.appendChild(make("h2", title));
    if (subtitle) details.appendChild(make("p", subtitle, "hint"));
  }

  function showNode(el) {
    var id = el.getAttribute("data-id");
    if (el.getAttribute("data-kind") === "namespace") return showNamespace(el.getAttribute("data-namespace"), el);
    var n = nodeById.get(id);
    clear(n.label, n.kind + (n.namespace !== null ? " in " + n.namespace : ""));
    details.appendChild(facts([
      ["id", n.id], ["pods", n.pods], ["addresses", (n.addresses || []).join(", ")],
      ["names", (n.names || []).join(", ")], ["note", n.note]
    ]));
    if (n.status) {
      var s = n.status;
      details.appendChild(make("h3", "status"));
      details.appendChild(facts([
        ["verdict", s.verdict + (s.partial ? " (partial)" : "")], ["window", (s.first_seen || "?") + " – " + (s.last_seen || "?")],
        ["last new edge", s.last_new_edge || "none"], ["connections", s.connections], ["edges", s.edges]
      ]));
    }
    var out = model.edges.filter(function (e) { return e.source === id; });
    var inn = model.edges.filter(function (e) { return e.target === id; });
    [["calls", out, "target"], ["called by", inn, "source"]].forEach(function (part) {
      if (!part[1].length) return;
      details.appendChild(make("h3", part[0] + " (" + part[1].length + ")"));
      var ul = make("ul");
      part[1].forEach(function (e) {
        var li = make("li", null, "verdict-" + e.verdict);
        li.appendChild(edgeLink(e, e[part[2]] + " " + port(e.protocol, e.port) + " \u00d7" + e.connections + " " + e.verdict));
        ul.appendChild(li);
      });
      details.appendChild(ul);
    });
    details.appendChild(make("h3", n.policies.length ? "policies" : "no policy"));
    n.policies.forEach(function (p) {
      details.appendChild(make("h3", p.namespace + "/" + p.name));
      details.appendChild(make("pre", p.yaml, "policy-yaml"));
    });
  }

  function showNamespace(ns, el) {
    var entry = model.namespaces.filter(function (e) { return e.name === ns; })[0];
    clear(ns, "namespace, collapsed");
    var members = (el.getAttribute("data-members") || "").split(" ").filter(Boolean);
    var inner = (el.getAttribute("data-inner-edges") || "").split(" ").filter(Boolean);
    details.appendChild(facts([
      ["workloads", entry ? entry.workloads : null], ["nodes shown", members.length], ["edges inside", inner.length],
      ["never seen", entry && entry.never_seen.length ? entry.never_seen.join(", ") : null]
    ]));
    var b = make("button", "expand " + ns);
    b.type = "button";
    b.addEventListener("click", function () { setCollapsed(ns, false); });
    details.appendChild(b);
  }

  function showEdge(el) {
    var ids = el.getAttribute("data-edges").split(" ");
    if (ids.length === 1 && el.getAttribute("data-id") === ids[0]) return showModelEdge(edgeById.get(ids[0]));
    clear(el.getAttribute("data-source") + " \u2192 " + el.getAttribute("data-target"),
          port(el.getAttribute("data-protocol"), el.getAttribute("data-port") || null) + ", " + ids.length +
          (ids.length === 1 ? " edge" : " edges") + ", " + el.getAttribute("data-connections") + " connections");
    var ul = make("ul");
    ids.forEach(function (id) {
      var e = edgeById.get(id);
      var li = make("li", null, "verdict-" + e.verdict);
      li.appendChild(edgeLink(e, e.source + " \u2192 " + e.target + " \u00d7" + e.connections + " " + e.verdict));
      ul.appendChild(li);
    });
    details.appendChild(ul);
  }

  function showModelEdge(e) {
    var ev = e.evidence;
    clear(e.source + " \u2192 " + e.target, port(e.protocol, e.port) + " \u00b7 " + e.verdict +
          (e.denied_by ? " (" + e.denied_by + ")" : "") + (e.diff ? " \u00b7 " + (e.diff === "added" ? "newly allowed" : "newly denied") : ""));
    details.appendChild(facts([
      ["edge", e.id], ["why", e.why], ["observed", e.observed ? "yes" : "no, only the diff knows it"],
      ["first seen", ev.first_seen], ["last seen", ev.last_seen], ["connections", ev.connections],
      ["flows", ev.flows], ["packets", ev.packets], ["bytes", ev.bytes],
      ["direction", ev.direction.map(function (d) { return d[0] + " " + d[1]; }).join(", ")],
      ["via", ev.via.join(", ")], ["evidence", ev.evidence],
      ["mid-stream", ev.mid_stream ? "yes" : null], ["inferred", ev.inferred ? "yes" : null]
    ]));
    details.appendChild(make("h3", "flow lines (" + (ev.lines.length + ev.more_lines) + ")"));
    var wrap = make("div", null, "table-wrap"), table = make("table", null, "flow-lines");
    var head = make("tr");
    ["src", "dst", "proto", "port", "conns", "first seen", "last seen", "direction", "evidence"].forEach(function (h) {
      head.appendChild(make("th", h));
    });
    table.appendChild(make("thead")).appendChild(head);
    var tbody = table.appendChild(make("tbody"));
    ev.lines.forEach(function (l) {
      var tr = make("tr");
      [l.src, l.dst, l.protocol, l.port === null ? "" : l.port, l.connections, l.first_seen, l.last_seen, l.direction,
       l.evidence].forEach(function (v) { tr.appendChild(make("td", v)); });
      tbody.appendChild(tr);
    });
    wrap.appendChild(table);
    details.appendChild(wrap);
    if (ev.more_lines) details.appendChild(make("p", "and " + ev.more_lines + " more flow lines", "hint"));
  }

  // -- the controls -------------------------------------------------------------------------

  searchBox.addEventListener("input", function () {
    body.setAttribute("data-state", "loading");
    clearTimeout(searchTimer);
    searchTimer = setTimeout(layout, 150);
  });
  document.querySelectorAll("input[name=namespace]").forEach(function (box) {
    box.addEventListener("change", function () {
      if (box.checked) unchecked.delete(box.value); else unchecked.add(box.value);
      layout();
    });
  });
  document.getElementById("collapse-all").addEventListener("click", function () {
    NetpolMap.namespaceNames(model).forEach(function (ns) { state.collapsed.add(ns); });
    layout();
  });
  document.getElementById("expand-all").addEventListener("click", function () {
    state.collapsed.clear();
    layout();
  });
  document.getElementById("fit").addEventListener("click", function () { fit(false); });

  window.netpolReport = {model: model, state: state, layout: layout};
  // The map's text is measured as DejaVu Sans Mono: draw once the embedded font is ready.
  document.fonts.load("12px 'DejaVu Sans Mono'").then(layout, layout);
})();
