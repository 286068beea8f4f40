// tracelight: progressive enhancement only; every page works without this script.
// - times: shown in the viewer's time zone, UTC kept in the hover title;
// - live tail on the log page (server-sent events), rows built from text nodes only;
// - expand / collapse all rows of a waterfall.
(function () {
  "use strict";

  function pad(n, w) {
    return String(n).padStart(w || 2, "0");
  }

  function localText(d) {
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + pad(d.getHours()) + ":" +
      pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + "." + pad(d.getMilliseconds(), 3);
  }

  function localize(el) {
    var d = new Date(el.getAttribute("datetime"));
    if (isNaN(d.getTime())) return;
    el.title = el.textContent;
    el.textContent = localText(d);
  }

  document.querySelectorAll("time[datetime]").forEach(localize);

  // Chart ticks: `HH:MM` or `MM-DD HH:MM`, in UTC from the server.
  document.querySelectorAll("text[data-ms]").forEach(function (el) {
    var d = new Date(Number(el.getAttribute("data-ms")));
    if (isNaN(d.getTime())) return;
    var hm = pad(d.getHours()) + ":" + pad(d.getMinutes());
    el.textContent = el.textContent.length > 5 ? pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + hm : hm;
  });

  var zone = document.getElementById("zone");
  if (zone && window.Intl) {
    zone.textContent = "times in " + Intl.DateTimeFormat().resolvedOptions().timeZone + " (UTC on hover)";
  }

  // Waterfall: expand or collapse every row.
  document.querySelectorAll("button[data-expand]").forEach(function (b) {
    b.hidden = false;
    b.addEventListener("click", function () {
      var open = b.getAttribute("data-expand") === "all";
      document.querySelectorAll("details.span, details.more").forEach(function (d) {
        d.open = open;
      });
    });
  });

  // Live tail.
  var toggle = document.getElementById("tail-toggle");
  var rows = document.querySelector("#log-rows tbody");
  if (!toggle || !rows || !window.EventSource) return;
  var status = document.getElementById("tail-status");
  var source = null;
  var MAX_ROWS = 2000;

  function cell(text, cls) {
    var td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text;
    return td;
  }

  function add(r) {
    var key = String(r.key);
    var exists = Array.prototype.some.call(rows.children, function (tr) {
      return tr.getAttribute("data-key") === key;
    });
    if (exists) return;
    var tr = document.createElement("tr");
    tr.setAttribute("data-key", key);
    tr.className = "tailed";
    var t = document.createElement("time");
    t.setAttribute("datetime", String(r.time));
    t.textContent = String(r.text);
    localize(t);
    var td = document.createElement("td");
    td.appendChild(t);
    tr.appendChild(td);
    tr.appendChild(cell(String(r.severity), "sev " + String(r.band).replace(/[^a-z]/g, "")));
    tr.appendChild(cell(String(r.service)));
    tr.appendChild(cell(String(r.body), "body"));
    var link = document.createElement("td");
    if (/^[0-9a-f]{32}$/.test(r.trace_id)) {
      var a = document.createElement("a");
      a.className = "trace-link";
      a.href = "/traces/" + r.trace_id;
      a.textContent = r.trace_id;
      link.appendChild(a);
    }
    tr.appendChild(link);
    rows.insertBefore(tr, rows.firstChild);
    while (rows.children.length > MAX_ROWS) rows.removeChild(rows.lastChild);
  }

  function stop() {
    if (source) source.close();
    source = null;
    toggle.textContent = "Live tail";
    status.textContent = "";
  }

  function start() {
    source = new EventSource(toggle.getAttribute("data-src"));
    toggle.textContent = "Stop tail";
    status.textContent = "waiting for new records…";
    source.addEventListener("log", function (e) {
      add(JSON.parse(e.data));
      status.textContent = "live: new records appear at the top";
    });
    source.addEventListener("notice", function (e) {
      status.textContent = e.data;
    });
    source.onerror = function () {
      status.textContent = "connection lost; reconnecting…";
    };
  }

  toggle.hidden = false;
  toggle.addEventListener("click", function () {
    if (source) stop();
    else start();
  });
})();
