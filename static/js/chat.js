/* The dashboard's conversation view: streams a conversation over /ws/chat/<id>/ (docs/websocket-protocol.md).
 *
 * Every piece of text that comes from a customer, a document or an answer is put into the page with textContent or
 * createTextNode — never innerHTML — so markup in a question or a source is shown as the characters it is. Answers
 * (the assistant's and agents') and source snippets are Markdown, rendered by static/js/markdown.js, the renderer
 * the widget uses: the same answer looks the same here, in the inbox and in the widget.
 * Reconnects with backoff and resumes from the last seq it saw; messages typed while offline are sent again with the
 * same client id (the server stores each client id once).
 */
(function () {
  "use strict";

  var root = document.querySelector("[data-chat]");
  if (!root) return;

  var log = root.querySelector("[data-chat-log]");
  var stateLine = root.querySelector("[data-chat-state]");
  var statusChip = root.querySelector("[data-chat-status]");
  var banner = root.querySelector("[data-chat-banner]");
  var typingLine = root.querySelector("[data-chat-typing]");
  var form = root.querySelector("[data-chat-form]");
  var input = form ? form.querySelector("textarea") : null;
  var humanButton = root.querySelector("[data-request-human]");
  var knowledgeUrl = root.getAttribute("data-knowledge-url") || "/knowledge/";
  // Staff who manage knowledge get "Write the right answer" under each assistant reply (curated answers).
  var curateUrl = root.getAttribute("data-curate-url") || "";
  var STATUS_LABELS = { bot: "Bot", waiting: "Waiting for agent", agent: "Agent", closed: "Closed" };
  var ROLE_LABELS = { customer: "Customer", assistant: "Assistant", agent: "Agent", system: "System", note: "Internal note" };

  var socket = null;
  var lastSeq = parseInt(root.getAttribute("data-last-seq") || "0", 10) || 0;
  var retryDelay = 1000;
  var pingTimer = null;
  var pingInterval = 25000;
  var gaveUp = false;
  var unsent = [];            // {client_id, text} not yet acknowledged, sent again after a reconnect
  var answers = {};           // reply_to -> {li, text node, started: ms}
  var sentAt = {};            // client_id -> performance.now() when sent
  var typingSentAt = 0;
  var typingTimer = null;
  var Markdown = window.CCGMarkdown;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function setState(text, state) {
    stateLine.textContent = text;
    stateLine.setAttribute("data-state", state);
  }

  function scrollDown() {
    var last = log.lastElementChild;
    if (last && last.scrollIntoView) last.scrollIntoView({ block: "nearest" });
  }

  function newClientId() {
    if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID();
    return "c" + Date.now().toString(36) + Math.random().toString(36).slice(2, 10);
  }

  // --- rendering ---------------------------------------------------------------------------------------------
  function messageItem(role, id) {
    var li = el("li", "msg msg-" + role);
    if (id) li.setAttribute("data-message-id", String(id));
    li.appendChild(el("div", "msg-who", ROLE_LABELS[role] || role));
    var text = el("div", "msg-text" + (isAnswer(role) ? " md" : ""));
    text.setAttribute("data-field", "text");
    li.appendChild(text);
    return li;
  }

  function isAnswer(role) { return role === "assistant" || role === "agent"; }

  function showText(li, role, content, citations) {
    var node = li.querySelector("[data-field=text]");
    if (isAnswer(role)) {
      node.classList.add("md");
      Markdown.render(node, content, { citations: citations, sourcesLabel: "Sources" });
    } else {
      node.textContent = content;
    }
  }

  // Server-rendered messages: their answers and snippets become Markdown exactly as streamed ones do.
  function citationsOf(li) {
    var items = li.querySelectorAll(".msg-sources > li");
    var out = [];
    for (var i = 0; i < items.length; i++) out.push({ title: items[i].getAttribute("data-title") || "" });
    return out;
  }

  function findMessage(id) {
    return id ? log.querySelector('[data-message-id="' + String(parseInt(id, 10)) + '"]') : null;
  }

  function findByClientId(clientId) {
    var items = log.querySelectorAll("[data-client-id]");
    for (var i = 0; i < items.length; i++) {
      if (items[i].getAttribute("data-client-id") === clientId) return items[i];
    }
    return null;
  }

  function renderSources(li, sources) {
    var old = li.querySelector(".msg-sources");
    if (old) old.remove();
    if (!sources || !sources.length) return;
    var ol = el("ol", "msg-sources");
    ol.setAttribute("aria-label", "Sources");
    sources.forEach(function (c) {
      var item = el("li", "msg-source " + (c.quoted === false ? "msg-source-related" : "msg-source-quoted"));
      var title = c.title || c.filename || "Untitled";
      if (c.document_id) {  // the passage in the knowledge base when the citation names it, else the document
        var a = el("a", null, title);
        var passage = typeof c.dashboard_url === "string" && c.dashboard_url.indexOf(knowledgeUrl) === 0;
        a.href = passage ? c.dashboard_url : knowledgeUrl + encodeURIComponent(String(c.document_id)) + "/";
        if (passage) a.title = "The passage in the knowledge base";
        item.appendChild(a);
      } else {
        item.appendChild(document.createTextNode(title));
      }
      var where = (c.section ? " — " + c.section : "") + (c.page ? " (page " + c.page + ")" : "");
      if (where) item.appendChild(document.createTextNode(where));
      if (typeof c.quoted === "boolean") {
        item.appendChild(document.createTextNode(" "));
        item.appendChild(el("span", "msg-source-tag", c.quoted ? "quoted" : "related"));
      }
      if (typeof c.url === "string" && /^https?:\/\//.test(c.url)) {
        item.appendChild(document.createTextNode(" · "));
        var page = el("a", null, "web page");
        page.href = c.url;
        page.target = "_blank";
        page.rel = "noopener noreferrer nofollow";
        item.appendChild(page);
      }
      item.setAttribute("data-title", c.title || "");
      if (c.snippet) item.appendChild(Markdown.renderSnippet(el("div", "msg-snippet"), c.snippet));
      ol.appendChild(item);
    });
    li.appendChild(ol);
  }

  function renderMeta(li, m, clientFirstTokenMs) {
    var old = li.querySelector(".msg-meta");
    if (old) old.remove();
    var meta = el("p", "msg-meta");
    var parts = [];
    if (m.answered === false) parts.push("not answered from the knowledge base");
    if (clientFirstTokenMs !== undefined && clientFirstTokenMs !== null) parts.push("first token " + Math.round(clientFirstTokenMs) + " ms (here)");
    if (m.latency_first_token_ms !== null && m.latency_first_token_ms !== undefined) parts.push("first token " + m.latency_first_token_ms + " ms (server)");
    if (m.latency_total_ms !== null && m.latency_total_ms !== undefined) parts.push("total " + m.latency_total_ms + " ms");
    if (m.timings_ms && m.timings_ms.retrieval) parts.push("retrieval " + m.timings_ms.retrieval + " ms");
    if (m.provider) parts.push(m.provider + (m.model ? " / " + m.model : ""));
    parts.push((m.tokens_in || 0) + " → " + (m.tokens_out || 0) + " tokens");
    if (m.cost) parts.push("$" + Number(m.cost).toFixed(6));
    if (typeof m.confidence === "number") parts.push("confidence " + m.confidence.toFixed(2));
    parts.forEach(function (text) { meta.appendChild(el("span", null, text)); });
    if (curateUrl && m.role === "assistant") {
      var question = findMessage(m.reply_to);
      var questionText = question ? (question.querySelector("[data-field=text]") || question).textContent : "";
      var fix = el("a", "msg-curate", "Write the right answer");
      fix.href = curateUrl + "?question=" + encodeURIComponent(questionText.trim()) + "&message=" +
        encodeURIComponent(String(m.id)) + "&next=" + encodeURIComponent(window.location.pathname);
      fix.setAttribute("data-testid", "write-right-answer");
      meta.appendChild(fix);
    }
    if (root.getAttribute("data-can-post") === "1" && (m.role === "assistant" || m.role === "agent")) {
      var box = el("span", "msg-feedback");
      [[1, "Helpful"], [-1, "Not helpful"]].forEach(function (spec) {
        var b = el("button", null, spec[1]);
        b.type = "button";
        b.setAttribute("data-value", String(spec[0]));
        b.setAttribute("aria-pressed", m.feedback === spec[0] ? "true" : "false");
        box.appendChild(b);
        box.appendChild(document.createTextNode(" "));
      });
      meta.appendChild(box);
    }
    li.appendChild(meta);
  }

  function setFeedback(messageId, value) {
    var li = findMessage(messageId);
    if (!li) return;
    li.querySelectorAll(".msg-feedback button").forEach(function (b) {
      b.setAttribute("aria-pressed", String(parseInt(b.getAttribute("data-value"), 10) === value));
    });
  }

  // Rating buttons, on streamed and server-rendered answers alike: pressing the pressed one takes the rating back.
  log.addEventListener("click", function (click) {
    var button = click.target.closest ? click.target.closest(".msg-feedback button") : null;
    if (!button) return;
    var li = button.closest("[data-message-id]");
    if (!li) return;
    var value = parseInt(button.getAttribute("data-value"), 10);
    if (button.getAttribute("aria-pressed") === "true") value = 0;
    send({ type: "feedback", message_id: parseInt(li.getAttribute("data-message-id"), 10), value: value });
  });

  function showMessage(m) {
    var li = findMessage(m.id) || (m.client_id ? findByClientId(m.client_id) : null);
    if (!li) {
      li = messageItem(m.role, m.id);
      log.appendChild(li);
    }
    li.setAttribute("data-message-id", String(m.id));
    li.classList.remove("msg-pending", "msg-failed");
    if (m.client_id) li.setAttribute("data-client-id", m.client_id);
    showText(li, m.role, m.content, m.citations);
    var error = li.querySelector(".msg-error");
    if (error) error.remove();
    return li;
  }

  function answerFor(replyTo) {
    var entry = answers[replyTo];
    if (!entry) {
      var li = messageItem("assistant");
      li.classList.add("msg-pending");
      var activity = el("p", "msg-activity", "");
      li.insertBefore(activity, li.querySelector("[data-field=text]"));
      log.appendChild(li);
      entry = answers[replyTo] = { li: li, text: li.querySelector("[data-field=text]"), activity: activity, firstToken: null,
                                   raw: "", sources: null, pending: false };
    }
    return entry;
  }

  function renderSoon(entry) {  // at most once a frame, however fast the tokens come
    if (entry.pending) return;
    entry.pending = true;
    window.requestAnimationFrame(function () {
      entry.pending = false;
      Markdown.render(entry.text, entry.raw, { citations: entry.sources, sourcesLabel: "Sources" });
    });
  }

  function questionSentAt(replyTo) {
    var question = findMessage(replyTo);
    var clientId = question ? question.getAttribute("data-client-id") : null;
    return clientId ? sentAt[clientId] : undefined;
  }

  // --- events ------------------------------------------------------------------------------------------------
  var handlers = {
    welcome: function (e) {
      if (e.limits && e.limits.ping_interval) pingInterval = e.limits.ping_interval * 1000;
      showStatus(e.conversation && e.conversation.status);
      // Resume from what this page has seen; the server replays the rest, in order, once.
      send({ type: "resume", last_seq: Math.min(lastSeq, e.last_seq) });
    },
    resumed: function () {
      setState("Live", "live");
      retryDelay = 1000;
      unsent.slice().forEach(function (m) { send({ type: "message", client_id: m.client_id, text: m.text }); });
    },
    ack: function (e) {
      unsent = unsent.filter(function (m) { return m.client_id !== e.client_id; });
      var li = e.client_id ? findByClientId(e.client_id) : null;
      if (li) {
        li.classList.remove("msg-pending");
        if (e.message_id) li.setAttribute("data-message-id", String(e.message_id));
      }
    },
    message: function (e) { showMessage(e.message); },
    agent_started: function (e) {
      var entry = answerFor(e.reply_to);
      entry.activity.textContent = "Starting…";
      typingLine.textContent = "The assistant is typing…";
    },
    agent_thinking: function (e) { answerFor(e.reply_to).activity.textContent = "Thinking…"; },
    tool_executing: function (e) {
      answerFor(e.reply_to).activity.textContent = "Searching the knowledge base" + (e.query ? " for “" + e.query + "”" : "") + "…";
    },
    tool_completed: function (e) {
      var entry = answerFor(e.reply_to);
      var n = (e.sources || []).length;
      entry.sources = e.sources || null;
      entry.activity.textContent = n ? "Found " + n + " source" + (n === 1 ? "" : "s") + "." : "Nothing relevant found.";
    },
    token: function (e) {
      var entry = answerFor(e.reply_to);
      if (entry.firstToken === null) {
        var started = questionSentAt(e.reply_to);
        entry.firstToken = started !== undefined ? performance.now() - started : undefined;
      }
      entry.raw += e.text;
      renderSoon(entry);
    },
    reset: function (e) { var entry = answerFor(e.reply_to); entry.raw = ""; renderSoon(entry); },
    agent_completed: function (e) {
      var entry = answers[e.reply_to];
      var li = showMessage(e.message);
      if (entry && entry.li !== li) {
        entry.li.replaceWith(li);
      }
      if (entry) {
        var activity = li.querySelector(".msg-activity");
        if (activity) activity.remove();
      }
      renderSources(li, e.message.citations);
      renderMeta(li, e.message, entry ? entry.firstToken : undefined);
      delete answers[e.reply_to];
      typingLine.textContent = "";
    },
    error: function (e) {
      if (e.seq !== undefined) {  // the conversation's error: an answer failed
        var entry = e.reply_to ? answers[e.reply_to] : null;
        if (!entry) {
          for (var key in answers) { entry = answers[key]; delete answers[key]; }
        } else {
          delete answers[e.reply_to];
        }
        if (entry) {
          entry.li.classList.remove("msg-pending");
          entry.li.classList.add("msg-failed");
          entry.activity.textContent = "";
          entry.li.appendChild(el("p", "msg-error", e.message || e.code));
        }
        typingLine.textContent = "";
        return;
      }
      if (e.client_id) {
        var li = findByClientId(e.client_id);
        unsent = unsent.filter(function (m) { return m.client_id !== e.client_id; });
        if (li) {
          li.classList.remove("msg-pending");
          li.classList.add("msg-failed");
          li.appendChild(el("p", "msg-error", e.message || e.code));
        }
      }
      var extra = e.retry_after ? " (try again in " + e.retry_after + " s)" : "";
      setState((e.message || e.code) + extra, "error");
    },
    status: function (e) { showStatus(e.status); },
    agent_joined: function (e) { showMessage(e.message); },  // a person joined or left (docs/handoff.md)
    agent_left: function (e) { showMessage(e.message); },
    feedback: function (e) { setFeedback(e.message_id, e.value); },
    typing: function (e) {
      typingLine.textContent = e.state ? (ROLE_LABELS[e.role] || e.role) + " is typing…" : "";
      clearTimeout(typingTimer);
      if (e.state) typingTimer = setTimeout(function () { typingLine.textContent = ""; }, 6000);
    },
    pong: function () {},
  };

  function showStatus(status) {
    if (!status) return;
    statusChip.textContent = STATUS_LABELS[status] || status;
    if (status === "waiting") {
      banner.textContent = "Waiting for a person to join.";
      banner.hidden = false;
    } else {
      banner.hidden = true;
    }
    if (humanButton) humanButton.disabled = status !== "bot";
  }

  // --- the socket --------------------------------------------------------------------------------------------
  function send(frame) {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    setState("Connecting…", "connecting");
    socket = new WebSocket(scheme + location.host + root.getAttribute("data-socket-path"));
    socket.onmessage = function (message) {
      var event;
      try { event = JSON.parse(message.data); } catch (err) { return; }
      if (typeof event.seq === "number") {
        if (event.seq <= lastSeq) return;  // never shown twice
        lastSeq = event.seq;
      }
      var handler = handlers[event.type];
      if (handler) handler(event);
      scrollDown();
    };
    socket.onopen = function () {
      clearInterval(pingTimer);
      pingTimer = setInterval(function () { send({ type: "ping" }); }, pingInterval);
    };
    socket.onclose = function (close) {
      clearInterval(pingTimer);
      if (close.code === 4403 || close.code === 4404) {
        gaveUp = true;
        setState(close.code === 4403 ? "You are not allowed to see this conversation." : "This conversation does not exist.", "error");
        return;
      }
      setState("Offline — reconnecting…", "error");
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 15000);
    };
  }

  // --- the form ----------------------------------------------------------------------------------------------
  if (form) {
    form.addEventListener("submit", function (submit) {
      submit.preventDefault();
      var text = input.value.trim();
      if (!text) return;
      var clientId = newClientId();
      var li = messageItem("customer");
      li.classList.add("msg-pending");
      li.setAttribute("data-client-id", clientId);
      li.querySelector("[data-field=text]").textContent = text;
      log.appendChild(li);
      scrollDown();
      unsent.push({ client_id: clientId, text: text });
      sentAt[clientId] = performance.now();
      send({ type: "message", client_id: clientId, text: text });
      send({ type: "typing", state: false });
      input.value = "";
      input.focus();
    });
    input.addEventListener("keydown", function (key) {
      if (key.key === "Enter" && !key.shiftKey) {
        key.preventDefault();
        form.requestSubmit ? form.requestSubmit() : form.dispatchEvent(new Event("submit"));
      }
    });
    input.addEventListener("input", function () {
      var now = Date.now();
      if (now - typingSentAt > 2500) {
        typingSentAt = now;
        send({ type: "typing", state: true });
      }
    });
  }
  if (humanButton) {
    humanButton.addEventListener("click", function () { send({ type: "request_human" }); });
  }
  Markdown.renderMarked(log, function (node) {
    var li = node.closest("li.msg");
    return { citations: li && node.getAttribute("data-field") === "text" ? citationsOf(li) : null, sourcesLabel: "Sources" };
  });
  log.querySelectorAll("[data-message-id]").forEach(function (li) {
    var seq = parseInt(li.getAttribute("data-seq") || "0", 10);
    if (seq > lastSeq) lastSeq = seq;
  });

  connect();
})();
