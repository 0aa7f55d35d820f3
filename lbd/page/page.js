// lbd's status page: redraws the server-rendered page from /page/data every second. The page works
// without this script (a plain table, refreshed every 5 s); with it, it updates in place, draws the charts
// as they grow, and asks for confirmation inline before a drain or an enable. Written for lbd, no library.
"use strict";
(function () {
  var WINDOW = 900, W = 300, H = 100, PERIOD = 1000, DASH = "\u2014";
  var token = (document.querySelector('meta[name="lbd-token"]') || {}).content || "";
  var series = { t: [], rps: [], errors: [], p99: [], healthy: [] };
  var lastT = 0, eventsFrom = 0, confirming = null, timer = null, busy = false;
  var CHARTS = [["rps", 0, "/s"], ["errors", 0, "/s"], ["p99", 1, " ms"], ["healthy", 0, ""]];

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function clock(unix) {
    var d = new Date(unix * 1000);
    return pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds());
  }
  function duration(s) {
    if (s === null || s === undefined || s < 0) return DASH;
    s = Math.floor(s);
    if (s < 120) return s + " s";
    if (s < 7200) return Math.floor(s / 60) + " min";
    if (s < 172800) return Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor(s % 86400 / 3600) + " h";
  }
  function ms(v) { return v === null || v === undefined ? DASH : v.toFixed(1) + " ms"; }
  function percent(v) { return v === null || v === undefined ? DASH : (v * 100).toFixed(1) + "%"; }
  function setText(id, text) { var e = document.getElementById(id); if (e) e.textContent = text; }

  function summary(s, now) {
    setText("s-desired", String(s.desired));
    setText("s-healthy", s.healthy + " of " + s.total);
    setText("s-launching", String(s.launching));
    setText("s-draining", String(s.draining));
    setText("s-held", String(s.held));
    var held = document.getElementById("s-held");
    if (held && held.parentNode) held.parentNode.className = s.guard ? "warn" : "";
    var p = document.getElementById("s-provider");
    if (!p) return;
    p.textContent = "";
    p.appendChild(document.createTextNode("Provider "));
    p.appendChild(el("b", null, s.provider));
    var text = (s.managed ? "" : " (a fixed list)") + ". ";
    if (s.last_list_unix === null) text += "No successful list yet. ";
    else text += "Last successful list: " + duration(Math.max(0, now - s.last_list_unix)) + " ago, at " +
      clock(s.last_list_unix) + " UTC" + (s.list_ok ? "" : " (the last one failed)") + ". ";
    p.appendChild(document.createTextNode(text));
    if (s.failing) p.appendChild(el("span", "bad", "Failing for " + duration(s.failing_s) + ", " +
      s.failing_attempts + " attempts in a row: " + (s.error || "?")));
    else p.appendChild(document.createTextNode(s.error ? "Last error: " + s.error : "Last error: none."));
    if (s.all_failing) p.appendChild(el("span", "bad",
      " Every backend is failing: serving from the least bad, terminating nothing."));
  }

  function actionCell(td, row) {
    if (!row.action) return;
    if (confirming && confirming.address === row.address) {
      td.appendChild(document.createTextNode((confirming.action === "drain" ? "Drain" : "Enable") + " it? "));
      var yes = el("button", "act danger", confirming.action === "drain" ? "Yes, drain" : "Yes, enable");
      yes.setAttribute("data-confirm", row.address);
      var no = el("button", "act", "Cancel");
      no.setAttribute("data-cancel", row.address);
      td.appendChild(yes);
      td.appendChild(document.createTextNode(" "));
      td.appendChild(no);
      return;
    }
    var b = el("button", "act", row.action === "drain" ? "Drain" : "Enable");
    b.setAttribute("data-action", row.action);
    b.setAttribute("data-address", row.address);
    td.appendChild(b);
  }

  function table(rows) {
    var tbody = document.querySelector("#backends tbody");
    if (!tbody) return;
    var fresh = document.createElement("tbody");
    rows.forEach(function (r) {
      var tr = el("tr");
      tr.setAttribute("data-backend", r.address);
      tr.setAttribute("data-state", r.state_class);
      function cell(label, cls, text) {
        var td = el("td", cls, text);
        td.setAttribute("data-label", label);
        tr.appendChild(td);
        return td;
      }
      cell("Address", "addr", r.address || DASH);
      cell("State", null).appendChild(el("span", "state st-" + r.state_class, r.state));
      cell("Instance", null, r.instance_id || DASH);
      cell("Zone", null, r.zone || DASH);
      cell("Age", null, duration(r.age_s));
      var strip = el("span", "strip");
      for (var i = 0; i < r.checks.length; i++) {
        var c = r.checks.charAt(i);
        strip.appendChild(el("i", "ck-" + c, c === "o" ? "+" : c));
      }
      cell("Health checks", null).appendChild(strip);
      cell("In flight", "num", String(r.active));
      cell("Req/s", "num", r.rps.toFixed(1));
      cell("Errors", "num", percent(r.error_rate));
      cell("p50", "num", ms(r.p50_ms));
      cell("p99", "num", ms(r.p99_ms));
      var act = el("td", "action");
      actionCell(act, r);
      tr.appendChild(act);
      fresh.appendChild(tr);
    });
    tbody.parentNode.replaceChild(fresh, tbody);
  }

  function addSamples(s, now) {
    for (var i = 0; i < s.t.length; i++) {
      series.t.push(s.t[i]);
      CHARTS.forEach(function (c) { series[c[0]].push(s[c[0]][i]); });
      lastT = Math.max(lastT, s.t[i]);
    }
    while (series.t.length && series.t[0] + WINDOW < now) {
      series.t.shift();
      CHARTS.forEach(function (c) { series[c[0]].shift(); });
    }
  }

  // The same drawing as the server's (statuspage.c, page_chart): a path over the window, scaled to the
  // highest value (at least 1), a gap where a second has no value.
  function charts(now) {
    CHARTS.forEach(function (c) {
      var fig = document.getElementById("chart-" + c[0]);
      if (!fig) return;
      var v = series[c[0]], max = 1, last = null, d = "", pen = false;
      for (var i = 0; i < v.length; i++) {
        if (v[i] !== null && v[i] > max) max = v[i];
        last = v[i];
      }
      for (i = 0; i < v.length; i++) {
        if (v[i] === null || series.t[i] + WINDOW < now) { pen = false; continue; }
        var x = (series.t[i] + WINDOW - now) * W / WINDOW, y = H - v[i] / max * (H - 5);
        d += (pen ? " L" : (d ? " M" : "M")) + x.toFixed(1) + " " + y.toFixed(1);
        pen = true;
      }
      fig.querySelector("path").setAttribute("d", d);
      fig.querySelector(".now").textContent = last === null ? DASH : last.toFixed(c[1]) + c[2];
      fig.querySelector(".max").textContent = "max " + max.toFixed(c[1]);
    });
  }

  function timeline(events, total) {
    var ol = document.getElementById("timeline");
    if (!ol) return;
    if (eventsFrom === 0) ol.textContent = "";
    events.forEach(function (e) {
      var empty = ol.querySelector(".empty");
      if (empty) ol.removeChild(empty);
      var li = el("li");
      li.setAttribute("data-kind", e.kind);
      li.appendChild(el("time", null, clock(e.t)));
      li.appendChild(document.createTextNode(" "));
      li.appendChild(el("b", null, e.kind));
      li.appendChild(document.createTextNode(" " + e.text));
      ol.insertBefore(li, ol.firstChild);
    });
    while (ol.children.length > 256) ol.removeChild(ol.lastChild);
    if (!ol.children.length) ol.appendChild(el("li", "empty", "Nothing yet."));
    eventsFrom = total;
  }

  function render(data) {
    document.body.classList.remove("stale");
    setText("updated", "as of " + clock(data.now) + " UTC");
    summary(data.summary, data.now);
    table(data.rows);
    addSamples(data.series, data.now);
    charts(data.now);
    timeline(data.events, data.events_total);
  }

  function schedule(delay) {
    clearTimeout(timer);
    timer = setTimeout(refresh, delay);
  }

  function refresh() {
    if (busy) return;
    busy = true;
    var ctl = window.AbortController ? new AbortController() : null;
    var guard = setTimeout(function () { if (ctl) ctl.abort(); }, 5000);
    fetch("/page/data?since=" + lastT + "&events=" + eventsFrom, { cache: "no-store", signal: ctl && ctl.signal })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(render)
      .catch(function () {
        document.body.classList.add("stale");
        setText("updated", "lbd is not answering; showing what it said last");
      })
      .then(function () { clearTimeout(guard); busy = false; schedule(PERIOD); });
  }

  function act(address, action) {
    fetch("/page/backends/" + encodeURIComponent(address) + "/" + action, {
      method: "POST", headers: { "X-LBD-Token": token }, cache: "no-store"
    }).then(function (r) {
      if (!r.ok) return r.text().then(function (t) { window.alert(t); });
    }).catch(function (e) { window.alert("lbd did not answer: " + e); })
      .then(function () { confirming = null; schedule(0); });
  }

  document.addEventListener("click", function (ev) {
    var t = ev.target;
    if (!(t instanceof HTMLElement) || !t.closest("#backends")) return;
    if (t.hasAttribute("data-action") || (t.name === "action" && t.form)) {
      ev.preventDefault();
      var address = t.getAttribute("data-address") ||
        (t.form && t.form.querySelector('input[name="backend"]') || {}).value;
      confirming = { address: address, action: t.getAttribute("data-action") || t.value };
      schedule(0);
    } else if (t.hasAttribute("data-confirm")) {
      act(confirming.address, confirming.action);
    } else if (t.hasAttribute("data-cancel")) {
      confirming = null;
      schedule(0);
    }
  });

  // The server drew the first view; the history starts from a full copy.
  schedule(0);
})();
