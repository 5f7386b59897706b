"use strict";
// gymfleet dashboard: polls /dashboard/data every 2 s. Every value from the fleet is shown with textContent
// (never innerHTML): instance names come from registrations and must not become markup.
(function () {
  var TOKEN_KEY = "gymfleet.token";
  var samples = [];
  var HISTORY_LEN = 90;

  function readToken() {
    var match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash || "");
    if (match) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
      // Drop the token from the address bar (and from anything that copies the URL).
      window.history.replaceState(null, "", window.location.pathname);
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function el(id) { return document.getElementById(id); }

  function setText(id, text) { el(id).textContent = text; }

  function fmt(value, digits) {
    if (value === null || value === undefined) { return "-"; }
    return Number(value).toFixed(digits === undefined ? 1 : digits);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) { return "-"; }
    var s = Math.floor(seconds);
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    if (d) { return d + "d " + h + "h"; }
    if (h) { return h + "h " + m + "m"; }
    if (m) { return m + "m " + (s % 60) + "s"; }
    return (s % 60) + "s";
  }

  function cell(row, text, className) {
    var td = document.createElement("td");
    td.textContent = text;
    if (className) { td.className = className; }
    row.appendChild(td);
    return td;
  }

  function renderTable(instances) {
    var body = el("fleet-body");
    while (body.firstChild) { body.removeChild(body.firstChild); }
    if (!instances.length) {
      var empty = document.createElement("tr");
      cell(empty, "no servers registered", "empty").colSpan = 10;
      body.appendChild(empty);
      return;
    }
    instances.forEach(function (inst) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-name", inst.process_name || "");
      cell(tr, inst.process_name || "-", "name");
      cell(tr, (inst.server_type || "-") + " / " + (inst.name || "-"), "wrap");
      cell(tr, inst.node || "-");
      cell(tr, inst.url || "-");
      var status = cell(tr, "");
      var pill = document.createElement("span");
      pill.className = "pill " + (inst.status === "healthy" ? "healthy" : "unhealthy");
      pill.textContent = inst.status || "?";
      status.appendChild(pill);
      cell(tr, duration(inst.uptime_seconds));
      cell(tr, inst.last_heartbeat_age_seconds === undefined ? "-" : fmt(inst.last_heartbeat_age_seconds) + " s ago");
      var rates = inst.rates || {};
      cell(tr, fmt(rates.requests_per_s), "num");
      cell(tr, fmt(rates.errors_per_s), "num");
      cell(tr, fmt(rates.rollouts_per_s), "num");
      body.appendChild(tr);
    });
  }

  function renderSpark() {
    var canvas = el("spark");
    var ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (samples.length < 2) { return; }
    var max = Math.max.apply(null, samples.concat([1]));
    ctx.strokeStyle = "#58a6ff";
    ctx.lineWidth = 2;
    ctx.beginPath();
    var offset = HISTORY_LEN - samples.length;  // the newest sample sits at the right edge
    samples.forEach(function (v, i) {
      var x = (offset + i) * (canvas.width - 4) / (HISTORY_LEN - 1) + 2;
      var y = canvas.height - 4 - (v / max) * (canvas.height - 8);
      if (i === 0) { ctx.moveTo(x, y); } else { ctx.lineTo(x, y); }
    });
    ctx.stroke();
  }

  function renderRay(ray) {
    if (!ray) { setText("ray", "not configured (ray_head_node_address is not set)"); return; }
    var text = ray.address + ": " + (ray.reachable ? "reachable" : "NOT reachable");
    if (ray.error) { text += " (" + ray.error + ")"; }
    setText("ray", text);
  }

  function render(data) {
    var t = data.totals;
    setText("t-instances", String(t.instances));
    setText("t-health", t.healthy + " healthy, " + (t.instances - t.healthy) + " unhealthy");
    setText("t-rps", fmt(t.requests_per_s));
    setText("t-errors", fmt(t.errors_per_s));
    setText("t-error-rate", "5xx / s (" + fmt(100 * t.error_rate, 2) + "% of requests)");
    setText("t-rollouts", fmt(t.rollouts_per_s));
    setText("t-rollouts-failed", "finished / s, " + fmt(t.rollouts_failed_per_s) + " failed / s");
    renderTable(data.instances);
    renderRay(data.ray);
    samples.push(t.requests_per_s || 0);
    if (samples.length > HISTORY_LEN) { samples.shift(); }
    renderSpark();
    setText("updated", new Date(data.generated_at * 1000).toLocaleTimeString());
  }

  function setState(text, ok) {
    var state = el("state");
    state.textContent = text;
    state.className = "state " + (ok ? "ok" : "bad");
  }

  function refresh() {
    var headers = { "Accept": "application/json" };
    var token = readToken();
    if (token) { headers["Authorization"] = "Bearer " + token; }
    fetch("/dashboard/data", { headers: headers, cache: "no-store" }).then(function (resp) {
      if (resp.status === 401) {
        el("auth").hidden = false;
        setState("token required", false);
        return null;
      }
      if (!resp.ok) { throw new Error("HTTP " + resp.status); }
      el("auth").hidden = true;
      return resp.json();
    }).then(function (data) {
      if (data) { render(data); setState("live", true); }
    }).catch(function (err) {
      setState("head unreachable: " + err.message, false);
    });
  }

  el("token-save").addEventListener("click", function () {
    sessionStorage.setItem(TOKEN_KEY, el("token").value);
    el("token").value = "";
    refresh();
  });
  refresh();
  setInterval(refresh, 2000);
}());
