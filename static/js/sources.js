/* Website sources: live crawl progress over the workspace's WebSocket (source.* events), and confirmations.
   No build step, no framework; text is always inserted with textContent. */
(function () {
  "use strict";

  var root = document.querySelector("[data-sources-page]");
  if (!root) return;

  var STATUS_LABELS = { queued: "Queued", running: "Running", cancelling: "Cancelling", cancelled: "Cancelled",
                        stopped: "Stopped", completed: "Completed", failed: "Failed" };
  var COUNTERS = ["discovered", "fetched", "indexed", "unchanged", "failed", "skipped", "pending", "added", "changed", "removed"];
  var detailSource = root.getAttribute("data-source-id");
  var detailRun = root.getAttribute("data-run-id");

  function setText(el, text) { if (el) el.textContent = text; }

  function noteFor(event) {
    switch (event.status) {
      case "queued": return "Waiting for a worker.";
      case "running": return "Crawling: " + event.pending + " address" + (event.pending === 1 ? "" : "es") + " still to do.";
      case "cancelling": return "Stopping after the page in hand.";
      case "completed": return "Finished.";
      default: return event.stop_message || STATUS_LABELS[event.status] || event.status;
    }
  }

  function applyEvent(event) {
    if (!event || typeof event !== "object" || typeof event.type !== "string" || event.type.indexOf("source.") !== 0) return;
    if (detailSource) {
      if (String(event.source_id) !== detailSource) return;
      if (String(event.run_id) !== detailRun) { location.reload(); return; }  // a new run: show it
      COUNTERS.forEach(function (name) {
        setText(root.querySelector('[data-run-field="' + name + '"]'), String(event[name]));
      });
      setText(root.querySelector('[data-run-field="status"]'), STATUS_LABELS[event.status] || event.status);
      setText(root.querySelector('[data-run-field="note"]'), noteFor(event));
      if (event.type === "source.run_finished") setTimeout(function () { location.reload(); }, 300);  // the report
      return;
    }
    var row = root.querySelector('[data-source-id="' + event.source_id + '"]');
    if (!row) return;
    setText(row.querySelector('[data-run-field="status"]'), STATUS_LABELS[event.status] || event.status);
    setText(row.querySelector('[data-run-field="summary"]'), event.indexed + " indexed · " + event.unchanged +
      " unchanged · " + event.failed + " failed · " + event.skipped + " skipped");
  }

  // Events sent before the socket opened are not replayed: catch up once from the API when it opens.
  function catchUp() {
    if (!detailSource || !window.fetch) return;
    fetch("/api/v1/sources/" + detailSource + "/", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (source) {
        var run = source && source.last_run;
        if (!run) return;
        var shown = root.querySelector('[data-run-field="status"]');
        var ended = ["cancelled", "stopped", "completed", "failed"].indexOf(run.status) >= 0;
        var event = { type: ended ? "source.run_finished" : "source.progress", source_id: source.id, run_id: run.id };
        COUNTERS.concat(["status", "stop_message"]).forEach(function (name) { event[name] = run[name]; });
        if (ended && shown && shown.textContent === (STATUS_LABELS[run.status] || run.status)) return;
        applyEvent(event);
      })
      .catch(function () { /* the live events still come */ });
  }

  var liveState = root.querySelector("[data-live-state]");
  var retryDelay = 1000;
  var pingTimer = null;

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket;
    try { socket = new WebSocket(scheme + location.host + "/ws/workspace/events/"); } catch (e) { return; }
    socket.onopen = function () {
      retryDelay = 1000;
      setText(liveState, "Live updates on");
      if (liveState) liveState.classList.add("live-on");
      catchUp();
      pingTimer = setInterval(function () {
        if (socket.readyState === 1) socket.send(JSON.stringify({ type: "ping" }));
      }, 25000);
    };
    socket.onmessage = function (message) {
      try { applyEvent(JSON.parse(message.data)); } catch (e) { /* ignore a malformed frame */ }
    };
    socket.onclose = function (closing) {
      clearInterval(pingTimer);
      if (liveState) liveState.classList.remove("live-on");
      if (closing.code === 4403 || closing.code === 4404) { setText(liveState, "Live updates unavailable"); return; }
      setText(liveState, "Live updates reconnecting…");
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 30000);
    };
  }
  if ("WebSocket" in window) connect();

  root.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });
})();
