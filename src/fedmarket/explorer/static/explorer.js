// fedmarket explorer: draws the metric chart (uPlot) and, on a live page, swaps in a fresh
// copy of the task's body whenever the server's event stream says the chain moved.
"use strict";

function drawCharts(root) {
  if (typeof uPlot === "undefined") return;
  root.querySelectorAll("script.chart-data").forEach(function (node) {
    var target = document.getElementById(node.dataset.target);
    if (!target) return;
    var d = JSON.parse(node.textContent);
    target.innerHTML = "";
    var hasBaseline = d.baseline.some(function (v) { return v !== null; });
    var series = [{ label: "epoch" },
      { label: d.metric + " (encrypted, validation)", stroke: "#0969da", width: 2, points: { show: true, size: 7 } }];
    var data = [d.epochs, d.values];
    if (hasBaseline) {
      series.push({ label: "plaintext, same algorithm", stroke: "#8c959f", dash: [6, 4], width: 1.5 });
      data.push(d.baseline);
    }
    var width = Math.max(320, Math.min(900, target.clientWidth || 800));
    new uPlot({
      width: width, height: 240, series: series,
      scales: { x: { time: false } },
      axes: [{ label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100] }, { label: d.metric, size: 60 }],
    }, data, target);
    target.dataset.points = String(d.epochs.length);
  });
}

function startLive() {
  var body = document.body;
  var eventsUrl = body.dataset.liveEvents, bodyUrl = body.dataset.liveBody;
  if (!eventsUrl) return;
  var status = document.getElementById("live-status");
  var updates = 0, ended = false;
  function shown() { var f = document.getElementById("fingerprint"); return f ? f.dataset.fp : ""; }
  function say(text, on) { if (status) { status.textContent = text; status.classList.toggle("on", !!on); } }
  var source = new EventSource(eventsUrl);
  source.onopen = function () { say("live", true); };
  source.onmessage = function (e) {
    if (JSON.parse(e.data).fingerprint === shown()) return;  // the page already shows this state
    fetch(bodyUrl, { cache: "no-store" }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.text();
    }).then(function (html) {
      var holder = document.getElementById("task-body");
      holder.innerHTML = html;
      drawCharts(holder);
      updates += 1;
      if (status) status.dataset.updates = String(updates);
      say(ended ? "task " + ended + " · no more updates"
                : "live · updated " + new Date().toLocaleTimeString(), !ended);
    }).catch(function (e) { say("live · update failed: " + e.message, false); });
  };
  source.addEventListener("done", function (e) {
    source.close();
    ended = JSON.parse(e.data);
    say("task " + ended + " · no more updates", false);
  });
  source.addEventListener("trouble", function (e) { say("chain not answering: " + JSON.parse(e.data), false); });
  source.onerror = function () { say("live · reconnecting…", false); };
}

document.addEventListener("DOMContentLoaded", function () { drawCharts(document); startLive(); });
