/* sd-prompt-pinning run report: renders the individuals table from the page's JSON rows.
   Every value from the run is inserted with textContent or as a DOM property, never as HTML. */
(function () {
  "use strict";

  function readJson(id) {
    var element = document.getElementById(id);
    if (!element) { return null; }
    try { return JSON.parse(element.textContent); } catch (e) { return null; }
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function fmt(value, digits) {
    if (value === null || value === undefined || typeof value !== "number" || !isFinite(value)) { return "\u2013"; }
    if (Number.isInteger(value)) { return String(value); }
    return Number(value.toPrecision(digits || 5)).toString();
  }

  function weightClass(delta) {
    var step = Math.max(-5, Math.min(5, Math.round(delta / 0.1)));
    if (!isFinite(step) || step === 0) { return "w0"; }
    return step > 0 ? "wp" + step : "wn" + (-step);
  }

  var meta = readJson("report-meta") || {};
  var rows = readJson("report-rows") || [];
  var bestKey = meta.best ? meta.best[0] + "/" + meta.best[1] : null;

  function weightText(w) {
    var list = Array.isArray(w) ? w : [w];
    return list.map(function (v) { return Number(v.toPrecision(3)).toString(); }).join(" / ");
  }

  /* One span per unit, coloured by its offset x (the change of its weight from the prompt). */
  function unitsNode(texts, row, start, className) {
    var box = el("div", "units " + (className || ""));
    for (var k = 0; k < texts.length; k++) {
      var x = row.x[start + k];
      var span = el("span", "unit " + weightClass(x), texts[k]);
      var w = row.w ? row.w[start + k] : null;
      span.title = (w !== null && w !== undefined ? "weight " + weightText(w) + ", " : "") +
        "offset " + (x >= 0 ? "+" : "") + x.toFixed(3);
      box.appendChild(span);
    }
    return box;
  }

  function promptCell(row) {
    var td = el("td", "prompt");
    var units = meta.units;
    var usable = units && row.x && units.pos.length + units.neg.length === row.x.length;
    if (usable) {
      td.appendChild(unitsNode(units.pos, row, 0, ""));
      if (units.neg.length) { td.appendChild(unitsNode(units.neg, row, units.pos.length, "neg")); }
    } else {
      td.appendChild(el("div", "plain", row.p));
      if (row.np) { td.appendChild(el("div", "plain neg", row.np)); }
    }
    if (row.s !== "ok" && row.e) { td.appendChild(el("div", "rowerror", row.e)); }
    return td;
  }

  function imageLink(href, src, className, alt) {
    var a = el("a");
    a.href = href;
    var img = el("img", className);
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = alt;
    img.src = src;
    a.appendChild(img);
    return a;
  }

  /* The guard's verdict: which reasons, on how many images; penalised or (guard off) only recorded. */
  function degenerateText(r) {
    return Object.keys(r.dg || {}).map(function (reason) { return reason + " " + r.dg[reason]; }).join(", ");
  }

  function degenerateBadge(r) {
    var badge = el("span", "tag tag-degenerate", "degenerate");
    badge.title = degenerateText(r) + " image(s): " + (r.dx ? "penalised, never the best" : "recorded only (guard off)");
    return badge;
  }

  function numCell(value, digits) { return el("td", "num", fmt(value, digits)); }

  /* A live run's newest individuals: their GIF and loss plot are drawn by a later report update. */
  function pendingNote() {
    var note = el("span", "pending", "pending");
    note.title = "drawn by a later report update (reload the page)";
    return note;
  }

  /* Columns: label, sort key (a function of the row), cell renderer. */
  var columns = [
    { label: "gen", key: function (r) { return r.g; }, cell: function (r) { return numCell(r.g); } },
    { label: "#", key: function (r) { return r.i; }, cell: function (r) { return numCell(r.i); } },
    {
      label: "status", key: function (r) { return r.s; },
      cell: function (r) {
        var td = el("td");
        td.appendChild(el("span", "tag tag-" + (r.s === "ok" ? "ok" : "failed"), r.s));
        if (r.g + "/" + r.i === bestKey) { td.appendChild(el("span", "tag tag-best", "best")); }
        if (r.g === 0 && r.i === 0) { td.appendChild(el("span", "tag tag-base", "baseline")); }
        if (meta.multi && !r.fe) { td.appendChild(el("span", "tag tag-projected", "projected")); }
        if (r.dn) { td.appendChild(degenerateBadge(r)); }
        if (r.rp) {
          var repeat = el("span", "tag tag-repeat", "repeat");
          repeat.title = "same prompts as " + r.rp[0] + "/" + r.rp[1] + ": its batch was reused, not generated again";
          td.appendChild(repeat);
        }
        return td;
      }
    },
    { label: "loss", key: function (r) { return r.l; }, cell: function (r) { return numCell(r.l); } }
  ];
  if (meta.multi) {
    /* With a size limit the optimizer's first fitness is the loss plus the closest-valid penalty. */
    columns.push(
      {
        label: "fitness", key: function (r) { return r.f && r.f.length ? r.f[0] : null; },
        cell: function (r) { return numCell(r.f && r.f.length ? r.f[0] : null); }
      },
      { label: "||x||", key: function (r) { return r.n; }, cell: function (r) { return numCell(r.n, 4); } }
    );
  }
  (meta.components || []).forEach(function (name) {
    columns.push({
      label: name.replace(/([._])/g, "$1\u200b"), /* lets long component names wrap after . and _ */
      headClass: "comp",
      key: function (r) { return r.c ? r.c[name] : null; },
      cell: function (r) { return numCell(r.c ? r.c[name] : null); }
    });
  });
  columns.push(
    { label: "prompt", key: function (r) { return r.p; }, cell: promptCell },
    {
      label: "batch", key: null,
      cell: function (r) {
        var td = el("td");
        if (r.gif) { td.appendChild(imageLink(r.dir + "/summary.gif", r.dir + "/summary.gif", "thumb", "batch GIF")); }
        else if (r.img) { td.appendChild(imageLink(r.dir + "/" + r.img, r.dir + "/" + r.img, "thumb", "first image")); }
        if (r.pd) { td.appendChild(pendingNote()); }
        return td;
      }
    },
    {
      label: "pair losses", key: null,
      cell: function (r) {
        var td = el("td");
        if (r.plot) { td.appendChild(imageLink(r.dir + "/loss_plot.png", r.dir + "/loss_plot.png", "lossthumb", "loss plot")); }
        else if (r.pd) { td.appendChild(pendingNote()); }
        return td;
      }
    },
    {
      label: "s/batch", key: function (r) { return r.t; },
      cell: function (r) { return numCell(r.t, 3); }
    },
    {
      label: "folder", key: null,
      cell: function (r) {
        var td = el("td", "folder");
        var a = el("a", null, "open");
        a.href = r.dir + "/";
        a.title = r.dir;
        td.appendChild(a);
        return td;
      }
    }
  );

  var state = { sortColumn: -1, sortDir: 1, page: 0, filtered: rows };
  var head = document.getElementById("individuals-head");
  var body = document.getElementById("individuals-body");
  var filterInput = document.getElementById("filter");
  var generationSelect = document.getElementById("filter-generation");
  var statusSelect = document.getElementById("filter-status");
  var pageSizeSelect = document.getElementById("page-size");
  var countLabel = document.getElementById("row-count");
  var prev = document.getElementById("prev");
  var next = document.getElementById("next");

  function compare(a, b) {
    var aMissing = a === null || a === undefined;
    var bMissing = b === null || b === undefined;
    if (aMissing || bMissing) { return aMissing === bMissing ? 0 : (aMissing ? 1 : -1); }
    if (typeof a === "number" && typeof b === "number") { return a - b; }
    return String(a).localeCompare(String(b));
  }

  function applyFilter() {
    var terms = (filterInput.value || "").toLowerCase().split(/\s+/).filter(Boolean);
    var generation = generationSelect.value;
    var status = statusSelect.value;
    state.filtered = rows.filter(function (r) {
      if (generation !== "" && String(r.g) !== generation) { return false; }
      if (status === "degenerate" || status === "clean") {
        if ((status === "degenerate") !== Boolean(r.dn)) { return false; }
      } else if (status !== "" && r.s !== status) { return false; }
      if (!terms.length) { return true; }
      var haystack = (r.p + "\n" + (r.np || "") + "\n" + r.s + "\ng" + r.g + "\n" + (r.e || "") +
        (r.dn ? "\ndegenerate " + degenerateText(r) : "")).toLowerCase();
      return terms.every(function (t) { return haystack.indexOf(t) !== -1; });
    });
    if (state.sortColumn >= 0) {
      var key = columns[state.sortColumn].key;
      var dir = state.sortDir;
      state.filtered = state.filtered
        .map(function (r, n) { return [r, n]; })
        .sort(function (x, y) { return compare(key(x[0]), key(y[0])) * dir || x[1] - y[1]; })
        .map(function (pair) { return pair[0]; });
    }
    state.page = 0;
    render();
  }

  function pageSize() {
    var size = parseInt(pageSizeSelect.value, 10);
    return size > 0 ? size : state.filtered.length || 1;
  }

  function render() {
    var size = pageSize();
    var pages = Math.max(1, Math.ceil(state.filtered.length / size));
    state.page = Math.min(state.page, pages - 1);
    var start = state.page * size;
    var shown = state.filtered.slice(start, start + size);
    var fragment = document.createDocumentFragment();
    shown.forEach(function (r) {
      var tr = el("tr");
      tr.dataset.generation = String(r.g);
      tr.dataset.index = String(r.i);
      if (r.s !== "ok") { tr.classList.add("failed"); }
      if (r.dn) { tr.classList.add("degenerate"); }
      if (r.g + "/" + r.i === bestKey) { tr.classList.add("is-best"); }
      columns.forEach(function (column) { tr.appendChild(column.cell(r)); });
      fragment.appendChild(tr);
    });
    body.textContent = "";
    body.appendChild(fragment);
    countLabel.textContent = state.filtered.length
      ? "rows " + (start + 1) + "\u2013" + (start + shown.length) + " of " + state.filtered.length +
        (state.filtered.length !== rows.length ? " (" + rows.length + " in all)" : "")
      : "no rows match";
    prev.disabled = state.page === 0;
    next.disabled = state.page >= pages - 1;
  }

  function buildHead() {
    columns.forEach(function (column, n) {
      var classes = [column.key ? "sortable" : "", column.headClass || ""].join(" ").trim();
      var th = el("th", classes || null, column.label);
      if (column.key) {
        th.title = "sort";
        th.addEventListener("click", function () {
          state.sortDir = state.sortColumn === n ? -state.sortDir : 1;
          state.sortColumn = n;
          Array.prototype.forEach.call(head.children, function (other) {
            other.classList.remove("sorted-asc", "sorted-desc");
          });
          th.classList.add(state.sortDir > 0 ? "sorted-asc" : "sorted-desc");
          applyFilter();
        });
      }
      head.appendChild(th);
    });
  }

  function setupCopy() {
    Array.prototype.forEach.call(document.querySelectorAll("button[data-copy]"), function (button) {
      button.addEventListener("click", function () {
        var source = document.getElementById(button.getAttribute("data-copy"));
        if (!source) { return; }
        var text = source.textContent;
        var done = function () {
          button.classList.add("copied");
          button.textContent = "Copied";
          setTimeout(function () { button.classList.remove("copied"); button.textContent = "Copy"; }, 1500);
        };
        var fallback = function () {
          var area = el("textarea");
          area.value = text;
          area.setAttribute("readonly", "");
          area.style.position = "fixed";
          area.style.opacity = "0";
          document.body.appendChild(area);
          area.select();
          try { document.execCommand("copy"); done(); } finally { document.body.removeChild(area); }
        };
        if (navigator.clipboard && navigator.clipboard.writeText) {
          navigator.clipboard.writeText(text).then(done, fallback);
        } else {
          fallback();
        }
      });
    });
  }

  function setupAutoRefresh() {
    var box = document.getElementById("auto-refresh");
    if (!box) { return; }
    var storageKey = "prompt-pinning-auto-refresh";
    try { box.checked = window.sessionStorage.getItem(storageKey) === "1"; } catch (e) { box.checked = false; }
    var timer = null;
    var arm = function () {
      if (timer) { clearTimeout(timer); timer = null; }
      if (box.checked) { timer = setTimeout(function () { window.location.reload(); }, 30000); }
    };
    box.addEventListener("change", function () {
      try { window.sessionStorage.setItem(storageKey, box.checked ? "1" : "0"); } catch (e) { /* storage unavailable */ }
      arm();
    });
    arm();
  }

  function init() {
    (meta.generations || []).forEach(function (g) {
      var option = el("option", null, String(g));
      option.value = String(g);
      generationSelect.appendChild(option);
    });
    buildHead();
    filterInput.addEventListener("input", applyFilter);
    generationSelect.addEventListener("change", applyFilter);
    statusSelect.addEventListener("change", applyFilter);
    pageSizeSelect.addEventListener("change", function () { state.page = 0; render(); });
    prev.addEventListener("click", function () { state.page -= 1; render(); });
    next.addEventListener("click", function () { state.page += 1; render(); });
    setupCopy();
    setupAutoRefresh();
    applyFilter();
    document.documentElement.classList.add("js-ready");
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
