// AlignScope graph explorer: the knowledge-base graph drawn as SVG with a small force layout.
// Data: assets/graph.json, {types, nodes: [[type, label, url]], links: [[source, target, type]]}.
// Deterministic (seeded layout), no library, no network beyond this site's own files.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var MAX_NODES = 400;  // beyond this the picture is a hairball and the layout slow: centre on a record instead
  var W = 1000, H = 700;

  function rng(seed) {  // mulberry32: same picture on every load
    return function () {
      seed |= 0; seed = (seed + 0x6D2B79F5) | 0;
      var t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  function layout(n, edges) {  // Fruchterman-Reingold with linear cooling
    var rand = rng(42), x = new Float64Array(n), y = new Float64Array(n);
    for (var i = 0; i < n; i++) { x[i] = rand() * W; y[i] = rand() * H; }
    var k = Math.sqrt((W * H) / Math.max(n, 1)) * 0.55, iters = 260, t = W / 8;
    var dx = new Float64Array(n), dy = new Float64Array(n);
    for (var it = 0; it < iters; it++) {
      dx.fill(0); dy.fill(0);
      for (var a = 0; a < n; a++) {
        for (var b = a + 1; b < n; b++) {
          var ex = x[a] - x[b], ey = y[a] - y[b], d2 = ex * ex + ey * ey + 0.01, f = (k * k) / d2;
          dx[a] += ex * f; dy[a] += ey * f; dx[b] -= ex * f; dy[b] -= ey * f;
        }
      }
      edges.forEach(function (e) {
        var ex = x[e[0]] - x[e[1]], ey = y[e[0]] - y[e[1]], d = Math.sqrt(ex * ex + ey * ey) + 0.01, f = d / k;
        dx[e[0]] -= ex * f; dy[e[0]] -= ey * f; dx[e[1]] += ex * f; dy[e[1]] += ey * f;
      });
      for (var c = 0; c < n; c++) {
        // gravity towards the centre keeps loose components (a taxonomy subtree, an isolated record) near the rest
        var gx = W / 2 - x[c], gy = H / 2 - y[c], gd = Math.sqrt(gx * gx + gy * gy) + 0.01;
        dx[c] += (gx / gd) * gd * gd / k * 0.05; dy[c] += (gy / gd) * gd * gd / k * 0.05;
        var len = Math.sqrt(dx[c] * dx[c] + dy[c] * dy[c]) + 0.01, step = Math.min(len, t);
        x[c] += (dx[c] / len) * step; y[c] += (dy[c] / len) * step;
      }
      t = Math.max(0.5, t * (1 - it / iters));
    }
    return { x: x, y: y };
  }

  function el(name, attrs) {
    var e = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    return e;
  }

  function start(box, data) {
    var form = box.querySelector("form"), status = box.querySelector(".as-graph-status");
    var svg = box.querySelector("svg"), root = box.getAttribute("data-root");
    var nodes = data.nodes, n = nodes.length, adj = [];
    for (var i = 0; i < n; i++) adj.push([]);
    data.links.forEach(function (l) { adj[l[0]].push(l[1]); adj[l[1]].push(l[0]); });
    var byName = {}, list = box.querySelector("datalist");
    nodes.forEach(function (node, i) {
      var name = node[1] + " (" + node[0] + ")";
      byName[name] = i;
      var opt = document.createElement("option");
      opt.value = name;
      list.appendChild(opt);
    });
    var focus = null;

    function enabledTypes() {
      var on = {};
      Array.prototype.forEach.call(form.querySelectorAll("input[name=type]"), function (c) { on[c.value] = c.checked; });
      return on;
    }

    function draw() {
      var on = enabledTypes(), pick = [];
      if (focus !== null) {
        pick = [focus].concat(adj[focus].filter(function (j, p, arr) { return on[nodes[j][0]] && arr.indexOf(j) === p; }));
      } else {
        for (var i = 0; i < n; i++) if (on[nodes[i][0]]) pick.push(i);
      }
      var total = pick.length;
      if (total > MAX_NODES) {
        pick.sort(function (a, b) { return adj[b].length - adj[a].length || a - b; });
        pick = pick.slice(0, MAX_NODES).sort(function (a, b) { return a - b; });
      }
      var local = {};
      pick.forEach(function (g, j) { local[g] = j; });
      var edges = [];
      data.links.forEach(function (l) {
        if (local[l[0]] !== undefined && local[l[1]] !== undefined) edges.push([local[l[0]], local[l[1]], l[2]]);
      });
      var pos = layout(pick.length, edges);
      while (svg.firstChild) svg.removeChild(svg.firstChild);
      var x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
      for (var q = 0; q < pick.length; q++) {
        x0 = Math.min(x0, pos.x[q]); x1 = Math.max(x1, pos.x[q]); y0 = Math.min(y0, pos.y[q]); y1 = Math.max(y1, pos.y[q]);
      }
      if (!pick.length) { x0 = y0 = 0; x1 = W; y1 = H; }
      // Fit the drawing with a margin (room for labels on the right), keeping the canvas's aspect ratio
      // and a minimum size, so a small neighbourhood is not blown up to fill the screen.
      var bw = Math.max(x1 - x0 + 180, 600), bh = Math.max(y1 - y0 + 80, 420);
      if (bw / bh > W / H) bh = bw * H / W; else bw = bh * W / H;
      var cx = (x0 + x1) / 2 + 50, cy = (y0 + y1) / 2;
      svg.setAttribute("viewBox", [cx - bw / 2, cy - bh / 2, bw, bh].map(function (v) { return v.toFixed(0); }).join(" "));
      var gEdges = el("g", { "class": "as-edges" }), gNodes = el("g", { "class": "as-nodes" });
      edges.forEach(function (e) {
        var line = el("line", { x1: pos.x[e[0]].toFixed(1), y1: pos.y[e[0]].toFixed(1), x2: pos.x[e[1]].toFixed(1), y2: pos.y[e[1]].toFixed(1), "class": "as-edge as-edge-" + e[2] });
        gEdges.appendChild(line);
      });
      var showLabels = pick.length <= 160;
      pick.forEach(function (g, j) {
        var node = nodes[g];
        var a = el("a", { href: root + node[2], "class": "as-node as-node-" + node[0] + (g === focus ? " as-focus" : ""), "data-type": node[0] });
        var title = el("title");
        title.textContent = node[1] + " (" + node[0] + ")";
        a.appendChild(title);
        a.appendChild(el("circle", { cx: pos.x[j].toFixed(1), cy: pos.y[j].toFixed(1), r: g === focus ? 9 : 5 + Math.min(4, Math.sqrt(adj[g].length) / 2) }));
        if (showLabels || g === focus) {
          var text = el("text", { x: (pos.x[j] + 8).toFixed(1), y: (pos.y[j] + 3).toFixed(1) });
          text.textContent = node[1].length > 28 ? node[1].slice(0, 27) + "…" : node[1];
          a.appendChild(text);
        }
        gNodes.appendChild(a);
      });
      svg.appendChild(gEdges);
      svg.appendChild(gNodes);
      var what = focus !== null ? "around " + nodes[focus][1] : "of the selected types";
      status.textContent = "Showing " + pick.length + " of " + total + " nodes " + what + " and " + edges.length + " links." +
        (total > pick.length ? " Only the best-connected are drawn: centre on a record to see the rest." : "") +
        " Click a node to open its page.";
    }

    form.addEventListener("change", function (ev) {
      if (ev.target.name === "focus") {
        // "change" also fires when the box loses focus (e.g. on a click into the graph): redrawing then
        // would replace the node under the pointer and swallow the click, so redraw only on a new focus.
        var hit = byName[ev.target.value], next = hit === undefined ? null : hit;
        if (next === focus) return;
        focus = next;
      }
      draw();
    });
    form.querySelector("input[name=focus]").addEventListener("input", function (ev) {
      var hit = byName[ev.target.value];
      if (hit !== undefined) { focus = hit; draw(); }
    });
    form.querySelector("button[name=reset]").addEventListener("click", function () {
      focus = null;
      form.querySelector("input[name=focus]").value = "";
      draw();
    });
    draw();
  }

  function init() {
    var box = document.getElementById("as-graph");
    if (!box) return;
    fetch(box.getAttribute("data-src"))
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (data) { start(box, data); })
      .catch(function (err) { box.querySelector(".as-graph-status").textContent = "Could not load the graph data (" + err.message + ")."; });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
