/* Knowledge pages: live ingestion progress over the workspace's WebSocket, and drag-and-drop uploads of many
   files (XHR to the API with the session and CSRF token, a few at a time, each with its own progress bar).
   No build step, no framework; text is always inserted with textContent. */
(function () {
  "use strict";

  var root = document.querySelector("[data-knowledge-page]");
  if (!root) return;

  var STATUS_LABELS = { queued: "Queued", processing: "Processing", retrying: "Retrying", indexed: "Indexed", failed: "Failed" };
  var STAGE_LABELS = { upload: "Upload", fetch: "Fetch", parse: "Parse", chunk: "Chunk", embed: "Embed", index: "Index", done: "Done" };
  var UPLOAD_CONCURRENCY = 3;

  function csrfToken() {
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    if (input) return input.value;
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function noteFor(event) {
    switch (event.status) {
      case "indexed": return "Indexed: " + event.chunk_count + " chunks.";
      case "failed": return event.error_message || "Processing failed.";
      case "retrying":
        var when = event.next_retry_at ? new Date(event.next_retry_at) : null;
        return (event.error_message || "A temporary problem.") + (when ? " Trying again at " + when.toLocaleTimeString() + "." : "");
      case "processing": return (STAGE_LABELS[event.stage] || event.stage) + ": " + event.stage_progress + "%.";
      default: return "Waiting for a worker.";
    }
  }

  function field(row, name) { return row.querySelector('[data-field="' + name + '"]'); }

  function setText(el, text) { if (el) el.textContent = text; }

  function rowFor(id) { return root.querySelector('[data-document-id="' + id + '"]'); }

  function newRow(event) {
    var tbody = root.querySelector("[data-document-rows]");
    if (!tbody || !root.hasAttribute("data-api")) return null;
    var empty = tbody.querySelector("[data-empty]");
    if (empty) empty.remove();
    var tr = document.createElement("tr");
    tr.setAttribute("data-document-id", event.document_id);
    var cells = [];
    for (var i = 0; i < 5; i++) { cells.push(document.createElement("td")); tr.appendChild(cells[i]); }
    var link = document.createElement("a");
    link.href = (root.getAttribute("data-detail-base") || "/knowledge/") + event.document_id + "/";
    link.setAttribute("data-field", "title");
    cells[0].appendChild(link);
    var chip = document.createElement("span");
    chip.setAttribute("data-field", "status");
    cells[1].appendChild(chip);
    var bar = document.createElement("progress");
    bar.max = 100; bar.setAttribute("data-field", "progress");
    var note = document.createElement("div");
    note.className = "small note"; note.setAttribute("data-field", "note");
    cells[2].className = "progress-cell";
    cells[2].appendChild(bar); cells[2].appendChild(note);
    cells[3].setAttribute("data-field", "chunks");
    cells[4].className = "small muted"; cells[4].textContent = "just now";
    tbody.insertBefore(tr, tbody.firstChild);
    return tr;
  }

  function applyEvent(event) {
    if (!event || typeof event !== "object" || !event.type) return;
    if (event.type === "document.deleted") {
      var gone = rowFor(event.document_id);
      if (gone && !root.hasAttribute("data-document-detail")) gone.remove();
      return;
    }
    if (event.type !== "document.progress" && event.type !== "document.created") return;
    var row = rowFor(event.document_id) || (event.type === "document.created" ? newRow(event) : null);
    if (!row) return;
    row.setAttribute("data-status", event.status);
    var title = field(row, "title");
    if (title && event.title) title.textContent = event.title;
    var detailTitle = root.querySelector('h1[data-field="title"]');
    if (detailTitle && root.getAttribute("data-document-detail") == String(event.document_id) && event.title) {
      detailTitle.textContent = event.title;
    }
    var chip = field(row, "status");
    if (chip) { chip.className = "chip chip-" + event.status; chip.textContent = STATUS_LABELS[event.status] || event.status; }
    var bar = field(row, "progress");
    if (bar) { bar.value = event.progress; bar.textContent = event.progress + "%"; }
    var note = field(row, "note");
    if (note) { note.textContent = noteFor(event); note.classList.toggle("note-error", event.status === "failed"); }
    setText(field(row, "chunks"), String(event.chunk_count));
  }

  // --- live updates ----------------------------------------------------------------------------------------
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

  // --- confirmations -----------------------------------------------------------------------------------------
  root.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  // --- uploads -----------------------------------------------------------------------------------------------
  var zone = root.querySelector("[data-dropzone]");
  var input = root.querySelector("[data-file-input]");
  var list = root.querySelector("[data-upload-list]");
  var apiUrl = root.getAttribute("data-api");
  if (!zone || !list || !apiUrl) return;

  var queue = [];
  var active = 0;

  function uploadItem(file) {
    var li = document.createElement("li");
    var name = document.createElement("span");
    name.className = "upload-name"; name.textContent = file.name;
    var bar = document.createElement("progress");
    bar.max = 100; bar.value = 0;
    var state = document.createElement("span");
    state.className = "small upload-state"; state.textContent = "waiting";
    li.appendChild(name); li.appendChild(bar); li.appendChild(state);
    list.appendChild(li);
    return { li: li, bar: bar, state: state };
  }

  function errorText(xhr) {
    try {
      var body = JSON.parse(xhr.responseText);
      if (body && body.error) return body.error.message;
    } catch (e) { /* not JSON */ }
    return "Upload failed (HTTP " + xhr.status + ").";
  }

  function pump() {
    while (active < UPLOAD_CONCURRENCY && queue.length) {
      active += 1;
      send(queue.shift());
    }
  }

  function send(job) {
    var xhr = new XMLHttpRequest();
    var data = new FormData();
    data.append("file", job.file, job.file.name);
    xhr.open("POST", apiUrl);
    xhr.setRequestHeader("X-CSRFToken", csrfToken());
    xhr.setRequestHeader("Accept", "application/json");
    job.ui.state.textContent = "uploading";
    xhr.upload.onprogress = function (event) {
      if (event.lengthComputable) job.ui.bar.value = Math.round((100 * event.loaded) / event.total);
    };
    xhr.onload = function () {
      active -= 1;
      if (xhr.status === 201) {
        job.ui.bar.value = 100;
        job.ui.state.textContent = "uploaded — processing";
        job.ui.li.classList.add("upload-ok");
        try {
          var doc = JSON.parse(xhr.responseText);
          applyEvent({ type: "document.created", document_id: doc.id, title: doc.title, status: doc.status,
                       stage: doc.stage, stage_progress: doc.stage_progress, progress: doc.progress,
                       chunk_count: doc.chunk_count, error_message: doc.error_message });
        } catch (e) { /* the live event will add it */ }
      } else {
        job.ui.state.textContent = errorText(xhr);
        job.ui.li.classList.add("upload-error");
      }
      pump();
    };
    xhr.onerror = function () {
      active -= 1;
      job.ui.state.textContent = "Network error: the upload did not reach the server.";
      job.ui.li.classList.add("upload-error");
      pump();
    };
    xhr.send(data);
  }

  function enqueue(files) {
    for (var i = 0; i < files.length; i++) {
      queue.push({ file: files[i], ui: uploadItem(files[i]) });
    }
    pump();
  }

  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("dropzone-over"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.remove("dropzone-over"); });
  });
  zone.addEventListener("drop", function (event) {
    if (event.dataTransfer && event.dataTransfer.files) enqueue(event.dataTransfer.files);
  });
  if (input) input.addEventListener("change", function () { enqueue(input.files); input.value = ""; });
})();
