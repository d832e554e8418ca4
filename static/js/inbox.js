/* The agents' live inbox (docs/handoff.md).
 *
 * Lists come from GET /api/v1/conversations/inbox/ and are refreshed when /ws/inbox/ says something changed (no page
 * reload); the title shows "(N) …" while N customers wait, with a short sound when a new one starts waiting.
 * The conversation pane streams the conversation over /ws/chat/<id>/?as=agent (the same seq stream the widget reads:
 * it resumes from the last seq it has), sends the agent's replies and typing over it, and calls the REST actions
 * (join, notes, hand back, assign, close, read). Text from customers is only ever set with textContent; answers (the
 * assistant's and agents') are Markdown rendered by static/js/markdown.js, the widget's own renderer.
 */
(function () {
  "use strict";

  var root = document.querySelector("[data-inbox]");
  if (!root) return;
  var config = JSON.parse(document.getElementById("inbox-config").textContent);
  var API = "/api/v1/conversations/";
  var STATUS_LABELS = { bot: "Bot", waiting: "Waiting for agent", agent: "Agent", closed: "Closed" };
  var ROLE_LABELS = { customer: "Customer", assistant: "Assistant", agent: "Agent", system: "", note: "Internal note" };
  var baseTitle = document.title;

  var stateLine = document.querySelector("[data-inbox-state]");
  var list = root.querySelector("[data-inbox-list]");
  var empty = root.querySelector("[data-inbox-empty]");
  var filters = root.querySelector("[data-inbox-filters]");
  var pane = root.querySelector("[data-pane]");
  var paneLog = pane.querySelector("[data-pane-log]");
  var paneTyping = pane.querySelector("[data-pane-typing]");
  var paneError = pane.querySelector("[data-pane-error]");
  var replyForm = pane.querySelector("[data-reply-form]");
  var noteForm = pane.querySelector("[data-note-form]");

  var tab = "waiting";
  var waitingCount = null;
  var current = null;      // the open conversation (summary-like: id, status, assigned_agent ...)
  var chat = null;         // its socket
  var lastSeq = 0;
  var typingSentAt = 0;
  var customerTypingTimer = null;
  var refreshTimer = null;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function csrf() {
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function api(method, path, body) {
    var init = { method: method, credentials: "same-origin", headers: { "Accept": "application/json" } };
    if (method !== "GET") {
      init.headers["Content-Type"] = "application/json";
      init.headers["X-CSRFToken"] = csrf();
      init.body = JSON.stringify(body || {});
    }
    return fetch(path, init).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) {
          var error = (data && data.error) || {};
          var failure = new Error(error.message || ("HTTP " + response.status));
          failure.code = error.code;
          failure.details = error.details || {};
          failure.status = response.status;
          throw failure;
        }
        return data;
      });
    });
  }

  function showError(error) {
    paneError.hidden = !error;
    paneError.textContent = error ? (error.message || String(error)) : "";
  }

  // --- lists -------------------------------------------------------------------------------------------------
  function query() {
    var params = new URLSearchParams();
    params.set("tab", tab);
    var data = new FormData(filters);
    ["q", "channel", "reason"].forEach(function (name) { if (data.get(name)) params.set(name, data.get(name)); });
    if (data.get("unread")) params.set("unread", "true");
    return API + "inbox/?" + params.toString();
  }

  var listRequest = 0;
  function refresh() {
    clearTimeout(refreshTimer);
    refreshTimer = null;
    var mine = ++listRequest;  // only the latest request's answer is shown: an older one may be another tab's
    return api("GET", query()).then(function (data) {
      if (mine === listRequest) renderList(data);
    }, function () { /* the next event or reconnect refreshes */ });
  }

  function refreshSoon() {
    if (!refreshTimer) refreshTimer = setTimeout(refresh, 150);
  }

  function renderList(data) {
    list.textContent = "";
    (data.results || []).forEach(function (c) {
      var li = el("li");
      var b = el("button");
      b.type = "button";
      b.setAttribute("data-conversation-id", c.id);
      b.setAttribute("data-status", c.status);
      if (current && current.id === c.id) b.setAttribute("aria-current", "true");
      b.appendChild(el("span", "inbox-item-title", c.title || c.visitor_name || "Untitled conversation"));
      var meta = STATUS_LABELS[c.status] || c.status;
      if (c.handoff_reason) meta += " · " + c.handoff_reason;
      if (c.assigned_agent) meta += " · " + c.assigned_agent.name;
      b.appendChild(el("span", "inbox-item-meta", meta));
      if (c.last_message) b.appendChild(el("span", "inbox-item-meta", c.last_message.content));
      var badge = el("span", "badge", c.unread);
      badge.setAttribute("data-unread", "");
      badge.setAttribute("aria-label", c.unread + " unread");
      badge.hidden = !c.unread;
      b.appendChild(badge);
      b.addEventListener("click", function () { openConversation(c.id); });
      li.appendChild(b);
      list.appendChild(li);
    });
    empty.hidden = list.children.length > 0;
    var counts = data.counts || {};
    Object.keys(counts).forEach(function (name) {
      var badge = root.querySelector('[data-count="' + name + '"]');
      if (!badge) return;
      var n = name === "closed" ? counts[name].count : (counts[name].unread || counts[name].count);
      badge.textContent = String(counts[name].count);
      badge.setAttribute("data-unread", String(counts[name].unread || 0));
      badge.hidden = name === "closed" || !n;
    });
    var waiting = counts.waiting ? counts.waiting.count : 0;
    if (waitingCount !== null && waiting > waitingCount) chime();
    waitingCount = waiting;
    document.title = waiting ? "(" + waiting + ") " + baseTitle : baseTitle;
  }

  function chime() {
    try {
      var Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) return;
      var ctx = new Ctx();
      var osc = ctx.createOscillator();
      var gain = ctx.createGain();
      osc.frequency.value = 880;
      gain.gain.value = 0.05;
      osc.connect(gain); gain.connect(ctx.destination);
      osc.start(); osc.stop(ctx.currentTime + 0.15);
    } catch (e) { /* sound is a courtesy */ }
  }

  root.querySelectorAll("[data-tab]").forEach(function (button) {
    button.addEventListener("click", function () {
      tab = button.getAttribute("data-tab");
      root.querySelectorAll("[data-tab]").forEach(function (b) { b.setAttribute("aria-selected", String(b === button)); });
      refresh();
    });
  });
  filters.addEventListener("input", refreshSoon);
  filters.addEventListener("change", refreshSoon);
  filters.addEventListener("submit", function (e) { e.preventDefault(); refresh(); });

  // --- the inbox socket --------------------------------------------------------------------------------------
  var inboxSocket = null, inboxRetry = 1000, inboxPing = null;

  function connectInbox() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + location.host + "/ws/inbox/");
    inboxSocket = ws;
    ws.onmessage = function (message) {
      var event;
      try { event = JSON.parse(message.data); } catch (e) { return; }
      if (event.type === "welcome") {
        stateLine.textContent = "Live";
        stateLine.setAttribute("data-state", "live");
        inboxRetry = 1000;
        refresh();
        clearInterval(inboxPing);
        inboxPing = setInterval(function () { if (ws.readyState === 1) ws.send(JSON.stringify({ type: "ping" })); }, 20000);
        return;
      }
      if (event.type !== "conversation") return;
      refreshSoon();
      if (current && event.conversation && event.conversation.id === current.id) {
        if (event.event === "note" && event.note) showMessage(event.note);
        updatePane(event.conversation);
      }
    };
    ws.onclose = function (close) {
      clearInterval(inboxPing);
      if (inboxSocket !== ws) return;
      stateLine.textContent = close.code === 4403 ? "You can't use the inbox." : "Reconnecting…";
      stateLine.setAttribute("data-state", "reconnecting");
      if (close.code === 4403) return;
      setTimeout(connectInbox, inboxRetry);
      inboxRetry = Math.min(inboxRetry * 2, 15000);
    };
  }

  // --- the conversation pane ---------------------------------------------------------------------------------
  function findMessage(id) {
    return id ? paneLog.querySelector('[data-message-id="' + String(parseInt(id, 10)) + '"]') : null;
  }

  function showMessage(m) {
    if (!m || !m.role || findMessage(m.id)) return;
    var li = el("li", "msg msg-" + m.role);
    li.setAttribute("data-message-id", String(m.id));
    if (m.seq) li.setAttribute("data-seq", String(m.seq));
    var who = ROLE_LABELS[m.role];
    if ((m.role === "agent" || m.role === "note") && m.author_name) who += " · " + m.author_name;
    if (who) li.appendChild(el("div", "msg-who", who));
    var text = el("div", "msg-text");
    text.setAttribute("data-field", "text");
    if (m.role === "assistant" || m.role === "agent") {
      text.classList.add("md");
      window.CCGMarkdown.render(text, m.content, { citations: m.citations, sourcesLabel: "Sources" });
    } else {
      text.textContent = m.content;
    }
    li.appendChild(text);
    paneLog.appendChild(li);
    if (li.scrollIntoView) li.scrollIntoView({ block: "nearest" });
  }

  function updatePane(c) {
    if (!current || !c) return;
    if (c.status) current.status = c.status;
    if (c.assigned_agent !== undefined) current.assigned_agent = c.assigned_agent;
    var mine = current.status === "agent" && current.assigned_agent && current.assigned_agent.id === config.me.id;
    pane.querySelector("[data-pane-status]").textContent = STATUS_LABELS[current.status] || current.status;
    pane.querySelector("[data-pane-holder]").textContent = current.assigned_agent ? "Held by " + current.assigned_agent.name : "";
    pane.querySelector("[data-pane-visitor]").textContent = c.visitor_email ? "· " + c.visitor_email : "";
    pane.querySelector('[data-action="join"]').hidden = mine || current.status === "closed";
    pane.querySelector('[data-action="hand-back"]').hidden = current.status === "bot" || current.status === "closed";
    pane.querySelector('[data-action="close"]').hidden = current.status === "closed";
    replyForm.hidden = !mine;
  }

  function openConversation(id) {
    showError(null);
    closeChat();
    paneLog.textContent = "";
    paneTyping.textContent = "";
    pane.hidden = false;
    list.querySelectorAll("[data-conversation-id]").forEach(function (b) {
      if (b.getAttribute("data-conversation-id") === id) b.setAttribute("aria-current", "true");
      else b.removeAttribute("aria-current");
    });
    return api("GET", API + id + "/").then(function (detail) {
      current = { id: id, status: detail.status, assigned_agent: null };
      pane.querySelector("[data-pane-title]").textContent = detail.title || "Untitled conversation";
      showLead(detail.lead);
      (detail.messages || []).forEach(showMessage);
      lastSeq = detail.last_seq || 0;
      (detail.messages || []).forEach(function (m) { if (m.seq && m.seq > lastSeq) lastSeq = m.seq; });
      connectChat(id);
      api("POST", API + id + "/read/").then(function (c) {
        current.assigned_agent = c.assigned_agent_id ? agentById(c.assigned_agent_id) : null;
        updatePane({ status: c.status, visitor_email: c.visitor_email, assigned_agent: current.assigned_agent });
        refreshSoon();
      }, showError);
    }, showError);
  }

  // What the visitor entered in the widget's lead form (as text, never markup).
  function showLead(lead) {
    var box = pane.querySelector("[data-pane-lead]");
    box.textContent = "";
    var rows = lead ? [["Name", lead.name], ["Email", lead.email], ["Phone", lead.phone],
                       [lead.custom_label || "Other", lead.custom_value]] : [];
    rows.forEach(function (row) {
      if (!row[1]) return;
      var dt = el("dt", null, row[0]);
      var dd = el("dd", null, row[1]);
      dd.setAttribute("data-lead-field", row[0].toLowerCase());
      box.appendChild(dt);
      box.appendChild(dd);
    });
    box.hidden = !box.children.length;
  }

  function agentById(id) {
    for (var i = 0; i < config.agents.length; i++) if (config.agents[i].id === id) return config.agents[i];
    return { id: id, name: "another agent" };
  }

  function closeChat() {
    if (chat) {
      var old = chat;
      chat = null;
      old.onclose = null;
      try { old.close(1000); } catch (e) { /* closed */ }
    }
  }

  function connectChat(id) {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + location.host + "/ws/chat/" + encodeURIComponent(id) + "/?as=agent");
    chat = ws;
    var ping = null;
    ws.onmessage = function (message) {
      var e;
      try { e = JSON.parse(message.data); } catch (err) { return; }
      if (!current || current.id !== id) return;
      if (typeof e.seq === "number") {
        if (e.seq <= lastSeq) return;
        lastSeq = e.seq;
      }
      switch (e.type) {
        case "welcome":
          ws.send(JSON.stringify({ type: "resume", last_seq: Math.min(lastSeq, e.last_seq || 0) }));
          ping = setInterval(function () { if (ws.readyState === 1) ws.send(JSON.stringify({ type: "ping" })); }, 20000);
          break;
        case "message":
          showMessage(e.message);
          if (e.message && e.message.role === "customer") paneTyping.textContent = "";
          break;
        case "agent_started":
          paneTyping.textContent = "The assistant is answering…";
          break;
        case "agent_completed":
          paneTyping.textContent = "";
          showMessage(e.message);
          break;
        case "agent_joined":
        case "agent_left":
          showMessage(e.message);
          break;
        case "status":
          updatePane({ status: e.status });
          refreshSoon();
          break;
        case "typing":
          if (e.role === "customer") {
            paneTyping.textContent = e.state ? "The customer is typing…" : "";
            clearTimeout(customerTypingTimer);
            if (e.state) customerTypingTimer = setTimeout(function () { paneTyping.textContent = ""; }, 6000);
          }
          break;
        case "error":
          if (typeof e.seq !== "number") showError(e);
          break;
      }
    };
    ws.onclose = function () {
      clearInterval(ping);
      if (chat !== ws) return;
      chat = null;
      setTimeout(function () { if (current && current.id === id && !chat) connectChat(id); }, 1500);
    };
  }

  function action(name, body) {
    if (!current) return Promise.resolve();
    showError(null);
    return api("POST", API + current.id + "/" + name + "/", body).then(function (c) {
      current.assigned_agent = c.assigned_agent_id ? agentById(c.assigned_agent_id) : null;
      updatePane({ status: c.status, visitor_email: c.visitor_email, assigned_agent: current.assigned_agent });
      refreshSoon();
    }, function (error) {
      if (error.code === "conversation_taken" && error.details && error.details.agent) {
        current.status = "agent";
        current.assigned_agent = error.details.agent;
        updatePane({});
      }
      showError(error);
    });
  }

  pane.querySelector('[data-action="join"]').addEventListener("click", function () { action("join"); });
  pane.querySelector('[data-action="hand-back"]').addEventListener("click", function () { action("hand-back"); });
  pane.querySelector('[data-action="assign"]').addEventListener("click", function () {
    action("assign", { agent_id: parseInt(pane.querySelector("[data-assign-to]").value, 10) });
  });
  pane.querySelector('[data-action="close"]').addEventListener("click", function () {
    action("close", { send_transcript: pane.querySelector("[data-transcript]").checked });
  });

  function newClientId() {
    if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID();
    return "a" + Date.now().toString(36) + Math.random().toString(36).slice(2, 10);
  }

  var replyInput = replyForm.querySelector("textarea");
  replyInput.addEventListener("input", function () {
    var now = Date.now();
    if (chat && chat.readyState === 1 && now - typingSentAt > 2000) {
      typingSentAt = now;
      chat.send(JSON.stringify({ type: "typing", state: true }));
    }
  });
  replyInput.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); replyForm.requestSubmit(); }
  });
  replyForm.addEventListener("submit", function (e) {
    e.preventDefault();
    var text = replyInput.value.trim();
    if (!text || !current) return;
    showError(null);
    api("POST", API + current.id + "/agent-messages/", { text: text, client_id: newClientId() }).then(function (m) {
      replyInput.value = "";
      typingSentAt = 0;
      if (chat && chat.readyState === 1) chat.send(JSON.stringify({ type: "typing", state: false }));
      showMessage(m);
    }, showError);
  });

  noteForm.addEventListener("submit", function (e) {
    e.preventDefault();
    var input = noteForm.querySelector("textarea");
    var text = input.value.trim();
    if (!text || !current) return;
    api("POST", API + current.id + "/notes/", { text: text }).then(function (note) {
      input.value = "";
      showMessage(note);
    }, showError);
  });

  connectInbox();
  refresh();
  var wanted = new URLSearchParams(location.search).get("c");  // "Handle in the inbox" from a transcript
  if (wanted && /^[0-9a-f-]{36}$/i.test(wanted)) openConversation(wanted);
})();
