// AlignScope: click a column header of a table with class "as-sortable" to sort its rows.
// Numbers sort numerically (a cell's data-sort attribute wins over its text), empty cells last.
// Shipped with the site: no library, no network.
(function () {
  "use strict";

  // Map every header cell to the first column it covers, honouring rowspan and colspan.
  function headerColumns(thead) {
    var taken = [], out = [];
    Array.prototype.forEach.call(thead.rows, function (row, r) {
      var col = 0;
      Array.prototype.forEach.call(row.cells, function (cell) {
        while (taken[r] && taken[r][col]) col++;
        for (var dr = 0; dr < cell.rowSpan; dr++) {
          for (var dc = 0; dc < cell.colSpan; dc++) {
            taken[r + dr] = taken[r + dr] || [];
            taken[r + dr][col + dc] = true;
          }
        }
        out.push({ cell: cell, col: col });
        col += cell.colSpan;
      });
    });
    return out;
  }

  function key(cell) {
    if (!cell) return { empty: true };
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent;
    var text = raw.trim();
    if (text === "") return { empty: true };
    var num = parseFloat(text.replace(/[%,\s]/g, ""));
    return isNaN(num) || !/^[-+]?[\d.,\s]+%?$/.test(text) ? { text: text.toLowerCase() } : { num: num };
  }

  function compare(a, b) {
    if (a.empty || b.empty) return (a.empty ? 1 : 0) - (b.empty ? 1 : 0);
    if (a.num !== undefined && b.num !== undefined) return a.num - b.num;
    if (a.num !== undefined) return -1;
    if (b.num !== undefined) return 1;
    return a.text < b.text ? -1 : a.text > b.text ? 1 : 0;
  }

  function sortBy(table, col, th) {
    var body = table.tBodies[0];
    var descending = th.getAttribute("aria-sort") === "ascending";
    Array.prototype.forEach.call(table.querySelectorAll("thead th[aria-sort]"), function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    var rows = Array.prototype.slice.call(body.rows);
    var pinned = rows.filter(function (r) { return r.classList.contains("as-total"); });
    rows = rows.filter(function (r) { return !r.classList.contains("as-total"); });
    var keyed = rows.map(function (row, i) { return { row: row, key: key(row.cells[col]), i: i }; });
    keyed.sort(function (x, y) {
      var c = compare(x.key, y.key);
      if (descending && !x.key.empty && !y.key.empty) c = -c;
      return c || x.i - y.i;  // stable
    });
    keyed.forEach(function (k) { body.appendChild(k.row); });
    pinned.forEach(function (r) { body.appendChild(r); });
  }

  function init() {
    Array.prototype.forEach.call(document.querySelectorAll("table.as-sortable"), function (table) {
      if (!table.tHead || !table.tBodies.length || table.dataset.sortable) return;
      table.dataset.sortable = "1";
      headerColumns(table.tHead).forEach(function (h) {
        if (h.cell.colSpan !== 1) return;
        h.cell.classList.add("as-sort-handle");
        h.cell.tabIndex = 0;
        h.cell.title = "Sort by this column";
        var go = function (ev) {
          if (ev.target.closest("a")) return;  // links in headers still navigate
          sortBy(table, h.col, h.cell);
        };
        h.cell.addEventListener("click", go);
        h.cell.addEventListener("keydown", function (ev) { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); go(ev); } });
      });
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
