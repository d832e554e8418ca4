/* The chat frame of the CustomerCareGPT widget (served from the workspace host inside the business's page).
 *
 * Speaks the conversation protocol (docs/websocket-protocol.md) over /widget/v1/ws/<conversation>/ with a visitor
 * token, and the widget's HTTP calls (docs/widget.md) with the same token.
 *
 * Safety: every text that comes from a customer, an answer, a document or the settings is put into the page as text
 * nodes (textContent / createTextNode). Answers and source snippets are Markdown, rendered by the renderer the
 * dashboard shares (static/js/markdown.js): only p, br, strong, em, code, pre, ul, ol, li, sup and a (http, https and
 * mailto links only), made with createElement — never innerHTML.
 * The page talks only to its parent, and only to the origin the server admitted (and the browser enforced with
 * frame-ancestors); it listens only to messages from that window and that origin.
 *
 * Reliability: after a reconnect the socket resumes from the last seq this page has shown; events are shown once
 * (seq and message ids), messages typed while offline are sent again with the same client id (the server stores
 * each client id once), so an answer cut by a network loss completes with no missing or doubled text.
 */
(function () {
  "use strict";

  var cfg = JSON.parse(document.getElementById("ccw-config").textContent);
  var S = cfg.strings;
  var parentOrigin = cfg.host_origin;
  var $ = function (id) { return document.getElementById(id); };
  var els = {
    log: $("ccw-log"), typing: $("ccw-typing"), notice: $("ccw-notice"), announce: $("ccw-announce"),
    form: $("ccw-form"), input: $("ccw-input"), send: $("ccw-send"), human: $("ccw-human"), close: $("ccw-close"),
    listButton: $("ccw-list-button"), newButton: $("ccw-new"), listView: $("ccw-list-view"), list: $("ccw-list"),
    back: $("ccw-back"), chatView: $("ccw-chat-view"), emailRow: $("ccw-email-row"), email: $("ccw-email"),
    status: $("ccw-status")
  };

  // --- storage: the frame's own (partitioned per embedding site by the browser) ------------------------------
  var memory = {};
  var prefix = "ccw:" + cfg.key + ":";
  var store = {
    get: function (k) { try { return window.localStorage.getItem(prefix + k); } catch (e) { return memory[k] || null; } },
    set: function (k, v) {
      try { if (v === null) window.localStorage.removeItem(prefix + k); else window.localStorage.setItem(prefix + k, v); }
      catch (e) { if (v === null) delete memory[k]; else memory[k] = v; }
    }
  };

  // --- state -------------------------------------------------------------------------------------------------
  var token = null, tokenAt = 0, verified = false, identity = null, started = false, unavailable = false;
  var conversation = null;        // {id, status, title}
  var conversations = [];
  var socket = null, socketLive = false, lastSeq = 0, retryDelay = 1000, retryTimer = null, pingTimer = null;
  var forbiddenCloses = 0, limits = { max_message_chars: 4000, ping_interval: 25 };
  var unsent = [];                // {client_id, text}: not acknowledged yet; sent again after a reconnect
  var answers = {};               // reply_to -> {li, body, text, sources}
  var answering = false;
  var typingSentAt = 0, agentTypingTimer = null, rateTimer = null, generation = 0;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function t(name, values) {
    var text = S[name] || name;
    for (var k in values || {}) text = text.split("{" + k + "}").join(String(values[k]));
    return text;
  }

  function newId() {
    if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID();
    return "c" + Date.now().toString(36) + Math.random().toString(36).slice(2, 12);
  }

  function announce(text) {
    els.announce.textContent = "";
    window.setTimeout(function () { els.announce.textContent = text; }, 50);
  }

  function notice(text, kind) {
    if (!text) { els.notice.hidden = true; els.notice.textContent = ""; return; }
    els.notice.textContent = text;
    els.notice.setAttribute("data-kind", kind || "info");
    els.notice.hidden = false;
  }

  function setStatus(state) { els.status.setAttribute("data-state", state); document.body.setAttribute("data-state", state); }

  function scrollDown() { els.log.scrollTop = els.log.scrollHeight; }

  var markedInteractive = false;
  function setInteractive(on) {
    els.input.disabled = !on;
    els.send.disabled = !on;
    if (on && !markedInteractive && window.performance && performance.mark) {
      markedInteractive = true;
      performance.mark("ccw:interactive");  // page-load-to-interactive (bench/widget.py)
    }
  }

  // --- the parent page (the loader) --------------------------------------------------------------------------
  function toParent(message) {
    if (window.parent !== window) window.parent.postMessage(message, parentOrigin);
  }

  function identityValid(who) {
    return who && typeof who.user_id === "string" && typeof who.user_hash === "string" &&
      who.user_id.length > 0 && who.user_id.length <= 200 && /^[0-9a-fA-F]{64}$/.test(who.user_hash) &&
      (who.user_ts === undefined || /^[0-9]{1,12}$/.test(who.user_ts)) ? who : null;
  }

  window.addEventListener("message", function (event) {
    if (event.source !== window.parent || event.origin !== parentOrigin) return;
    var m = event.data;
    if (!m || typeof m.type !== "string") return;
    if (m.type === "ccw:init") {
      identity = identityValid(m.identity);
      if (!started) start();
      if (m.open) focusInput();
    } else if (m.type === "ccw:open") {
      focusInput();
    } else if (m.type === "ccw:identify") {
      identity = identityValid(m.identity);
      restart();
    } else if (m.type === "ccw:reset") {
      identity = null;
      store.set("visitor", null);
      store.set("conversation", null);
      restart();
    }
  });

  function focusInput() { if (!els.input.disabled) els.input.focus(); }

  document.addEventListener("keydown", function (key) {
    if (key.key === "Escape") toParent({ type: "ccw:close" });
  });
  els.close.addEventListener("click", function () { toParent({ type: "ccw:close" }); });

  // --- HTTP --------------------------------------------------------------------------------------------------
  function api(method, path, body, withToken) {
    var headers = { "Accept": "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (withToken) headers["Authorization"] = "Bearer " + token;
    return fetch(path, { method: method, headers: headers, credentials: "omit", cache: "no-store",
                         body: body === undefined ? undefined : JSON.stringify(body) })
      .then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (data) {
          if (response.ok) return data;
          var error = (data && data.error) || {};
          var failure = new Error(error.message || ("HTTP " + response.status));
          failure.status = response.status;
          failure.code = error.code || "http_" + response.status;
          failure.fields = (error.details && error.details.fields) || null;
          failure.retryAfter = parseInt(response.headers.get("Retry-After") || (error.details && error.details.retry_after) || "0", 10);
          throw failure;
        });
      });
  }

  function session(force) {
    if (!force && token && Date.now() - tokenAt < (cfg.token_ttl - 60) * 1000) return Promise.resolve(token);
    var body = { host_origin: parentOrigin, visitor: store.get("visitor") };
    if (identity) {
      body.user_id = identity.user_id; body.user_hash = identity.user_hash;
      if (identity.user_ts !== undefined) body.user_ts = identity.user_ts;
    }
    return api("POST", cfg.paths.session, body, false).then(function (data) {
      token = data.token;
      tokenAt = Date.now();
      verified = !!data.verified;
      store.set("visitor", data.visitor);
      return token;
    }, function (error) {
      if (identity && (error.code === "identity_invalid" || error.code === "identity_not_configured")) {
        if (window.console) console.warn("CustomerCare: identify() was refused (" + error.code + "); continuing anonymously.");
        identity = null;
        return session(true);
      }
      throw error;
    });
  }

  function authed(method, path, body) {
    return session(false).then(function () {
      return api(method, path, body, true).catch(function (error) {
        if (error.status === 401) return session(true).then(function () { return api(method, path, body, true); });
        throw error;
      });
    });
  }

  function failed(error) {
    if (error && error.status === 429) {
      rateLimited(error.retryAfter || 5);
    } else if (error && (error.status === 403 || error.status === 404)) {
      unavailable = true;
      setInteractive(false);
      notice(t("unavailable"), "error");
      setStatus("unavailable");
    } else {
      notice(t("error"), "error");
    }
  }

  function rateLimited(seconds) {
    var left = Math.max(1, seconds | 0);
    clearInterval(rateTimer);
    notice(t("rate_limited", { seconds: left }), "warning");
    rateTimer = setInterval(function () {
      left -= 1;
      if (left <= 0) { clearInterval(rateTimer); notice(""); return; }
      notice(t("rate_limited", { seconds: left }), "warning");
    }, 1000);
  }

  // --- start, conversations ----------------------------------------------------------------------------------
  function start() {
    started = true;
    var mine = ++generation;
    session(true).then(function () {
      if (mine !== generation) return;
      return loadConversations(mine);
    }).catch(failed);
  }

  function restart() {
    disconnect();
    token = null;
    conversation = null;
    clearLog();
    start();
  }

  function loadConversations(mine) {
    return authed("GET", cfg.paths.conversations).then(function (data) {
      if (mine !== generation) return;
      conversations = data.conversations || [];
      els.listButton.hidden = conversations.length < 1;
      var wanted = store.get("conversation");
      var pick = null;
      conversations.forEach(function (c) { if (c.id === wanted) pick = c; });
      if (!pick && conversations.length && conversations[0].status !== "closed") pick = conversations[0];
      if (pick) {
        return openConversation(pick).catch(function (error) {
          if (error.status !== 404) throw error;
          store.set("conversation", null);
          showEmpty();
        });
      }
      showEmpty();
    });
  }

  function showEmpty() {
    conversation = null;
    leadGiven = false;
    leadEmail = "";
    clearLog();
    els.newButton.hidden = true;
    els.emailRow.hidden = !cfg.behaviour.collect_email;
    els.human.hidden = !cfg.behaviour.offer_human;
    setStatus("ready");
    if (leadForm.when === "before_chat") {  // the form first; the chat starts with its answers
      els.emailRow.hidden = true;
      els.human.hidden = true;
      setInteractive(false);
      showLeadForm("before_chat");
      return;
    }
    setInteractive(true);
    showStarters(false);
  }

  // --- starter questions: chips before the first message and after a decline; a click asks the question ------
  var starterQuestions = (cfg.starter_questions || []).slice(0, 6);
  var followupsAsked = 0;
  function hideStarters() {
    followupsAsked++;  // a follow-up list still on its way is no longer wanted
    ["ccw-starters", "ccw-followups"].forEach(function (id) {
      var old = document.getElementById(id);
      if (old) old.parentNode.removeChild(old);
    });
  }
  function chipGroup(questions, label) {
    var group = el("div", "ccw-chips");
    group.setAttribute("role", "group");
    group.setAttribute("aria-label", label);
    questions.forEach(function (question) {
      var chip = el("button", "ccw-chip", question);
      chip.type = "button";
      chip.addEventListener("click", function () {
        if (els.input.disabled) return;
        els.input.value = question;
        submit();
      });
      group.appendChild(chip);
    });
    return group;
  }
  // Follow-ups: after an answer, up to 3 questions from the same pool that the knowledge base answers, picked by
  // the server (embeds.followups) and asked for only once the answer is complete, so it never waits for them.
  function showFollowups() {
    if (!cfg.behaviour.show_followups || !conversation || !starterQuestions.length) return;
    var ticket = ++followupsAsked;
    authed("GET", cfg.paths.conversations + encodeURIComponent(conversation.id) + "/followups/").then(function (data) {
      var questions = (data && data.followups) || [];
      if (ticket !== followupsAsked || answering || !questions.length) return;
      hideStarters();
      var box = el("li", "ccw-starters ccw-followups");
      box.id = "ccw-followups";
      box.appendChild(el("p", "ccw-starters-title", t("followups")));
      box.appendChild(chipGroup(questions.slice(0, 3), t("followups_label")));
      els.log.appendChild(box);
      scrollDown();
    }, function () { /* follow-ups are a nicety: the chat goes on without them */ });
  }
  function showStarters(afterDecline) {
    hideStarters();
    if (!starterQuestions.length) return;
    var box = el("li", "ccw-starters");
    box.id = "ccw-starters";
    box.setAttribute("data-after-decline", afterDecline ? "true" : "false");
    if (afterDecline) box.appendChild(el("p", "ccw-starters-title", t("starters")));
    box.appendChild(chipGroup(starterQuestions, t("starters_label")));
    els.log.appendChild(box);
    scrollDown();
  }

  // --- the lead form: before the chat, or when the visitor asks for a person (docs/widget.md) ----------------
  var leadForm = cfg.lead_form || { when: "off", fields: {} };
  var leadGiven = false, leadEmail = "";  // of the current conversation
  var LEAD_INPUTS = [["name", "text", "name"], ["email", "email", "email"], ["phone", "tel", "tel"],
                     ["custom", "text", "off"]];
  function hideLeadForm() {
    var old = document.getElementById("ccw-lead");
    if (old) old.parentNode.parentNode.removeChild(old.parentNode);
  }
  function leadFieldError(form, name, message) {
    var input = form.querySelector('[name="' + name + '"]');
    var hint = form.querySelector('[data-error-for="' + name + '"]');
    if (!input || !hint) return false;
    input.setAttribute("aria-invalid", message ? "true" : "false");
    hint.textContent = message || "";
    hint.hidden = !message;
    return !!message;
  }
  function showLeadForm(stage, then) {
    hideLeadForm();
    var form = el("form", "ccw-lead");
    form.id = "ccw-lead";
    form.noValidate = true;
    form.setAttribute("data-stage", stage);
    var intro = el("p", "ccw-lead-intro", t(stage === "handoff" ? "lead_intro_handoff" : "lead_intro"));
    intro.id = "ccw-lead-intro";
    form.setAttribute("aria-labelledby", intro.id);
    form.appendChild(intro);
    LEAD_INPUTS.forEach(function (spec) {
      var name = spec[0], state = (leadForm.fields || {})[name] || "off";
      if (state === "off") return;
      var label = el("label", "ccw-lead-field");
      var text = name === "custom" ? leadForm.custom_label : t("lead_" + name);
      label.appendChild(el("span", null, text + (state === "optional" ? " " + t("lead_optional") : "")));
      var input = el("input");
      input.type = spec[1];
      input.name = name;
      input.autocomplete = spec[2];
      input.maxLength = name === "custom" ? 500 : name === "email" ? 254 : name === "phone" ? 40 : 200;
      input.required = state === "required";
      var hint = el("small", "ccw-lead-error");
      hint.id = "ccw-lead-error-" + name;
      hint.setAttribute("data-error-for", name);
      hint.hidden = true;
      input.setAttribute("aria-describedby", hint.id);
      label.appendChild(input);
      label.appendChild(hint);
      form.appendChild(label);
    });
    var button = el("button", "ccw-send-lead", t(stage === "handoff" ? "lead_send" : "lead_start"));
    button.type = "submit";
    form.appendChild(button);
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var values = {}, firstBad = null;
      form.querySelectorAll("input").forEach(function (input) {
        var value = input.value.trim(), message = "";
        if (input.required && !value) message = t("lead_required");
        else if (value && input.type === "email" && !input.checkValidity()) message = t("lead_email_invalid");
        if (leadFieldError(form, input.name, message) && !firstBad) firstBad = input;
        if (value) values[input.name] = value;
      });
      if (firstBad) { firstBad.focus(); return; }
      button.disabled = true;
      var saved = conversation
        ? authed("PUT", cfg.paths.conversations + encodeURIComponent(conversation.id) + "/lead/", { lead: values })
        : createConversation({ lead: values });
      saved.then(function () {
        leadGiven = true;
        leadEmail = values.email || "";
        hideLeadForm();
        // In the transcript, not the notice bar: the socket's welcome clears notices as it connects.
        var thanks = el("li", "ccw-msg ccw-system ccw-lead-saved");
        thanks.appendChild(el("div", "ccw-bubble", t("lead_saved")));
        els.log.appendChild(thanks);
        announce(t("lead_saved"));
        setInteractive(true);
        if (stage === "before_chat") {
          els.human.hidden = !cfg.behaviour.offer_human;
          showStarters(false);
          focusInput();
        }
        if (then) then();
      }, function (error) {
        button.disabled = false;
        if (error.code === "lead_invalid" && error.fields) {
          var first = null;
          Object.keys(error.fields).forEach(function (name) {
            var message = (error.fields[name] || [])[0] || t("lead_required");
            if (leadFieldError(form, name, message) && !first) first = form.querySelector('[name="' + name + '"]');
          });
          if (first) { first.focus(); return; }
        }
        failed(error);
      });
    });
    var item = el("li", "ccw-lead-item");
    item.appendChild(form);
    els.log.appendChild(item);
    var firstInput = form.querySelector("input");
    if (firstInput) firstInput.focus();
    scrollDown();
  }

  function clearLog() {
    var greeting = els.log.querySelector(".ccw-greeting");
    while (els.log.lastChild && els.log.lastChild !== greeting) els.log.removeChild(els.log.lastChild);
    answers = {};
    lastSeq = 0;
    unsent = [];
    answering = false;
    els.typing.textContent = "";
  }

  function openConversation(c) {
    disconnect();
    clearLog();
    conversation = c;
    leadGiven = false;
    leadEmail = "";
    store.set("conversation", c.id);
    els.newButton.hidden = false;
    els.emailRow.hidden = true;
    var mine = generation;
    return authed("GET", cfg.paths.conversations + encodeURIComponent(c.id) + "/messages/").then(function (data) {
      if (mine !== generation || conversation !== c) return;
      (data.messages || []).forEach(function (m) {
        showMessage(m, true);
        if (typeof m.seq === "number" && m.seq > lastSeq) lastSeq = m.seq;
      });
      setInteractive(data.conversation.status !== "closed");
      showConversationStatus(data.conversation.status);
      scrollDown();
      connect();
    });
  }

  function showList() {
    els.list.textContent = "";
    if (!conversations.length) els.list.appendChild(el("li", "ccw-empty", t("no_conversations")));
    conversations.forEach(function (c) {
      var li = el("li");
      var b = el("button", "ccw-list-item");
      b.type = "button";
      b.appendChild(el("span", "ccw-list-title", c.title || t("untitled")));
      if (c.updated_at) b.appendChild(el("span", "ccw-list-date", new Date(c.updated_at).toLocaleString(cfg.language)));
      b.addEventListener("click", function () { hideList(); openConversation(c).catch(failed); });
      li.appendChild(b);
      els.list.appendChild(li);
    });
    els.chatView.hidden = true;
    els.form.hidden = true;
    els.listView.hidden = false;
    els.back.focus();
  }

  function hideList() {
    els.listView.hidden = true;
    els.chatView.hidden = false;
    els.form.hidden = false;
  }

  els.listButton.addEventListener("click", function () {
    authed("GET", cfg.paths.conversations).then(function (data) { conversations = data.conversations || []; showList(); })
      .catch(failed);
  });
  els.back.addEventListener("click", function () { hideList(); focusInput(); });
  els.newButton.addEventListener("click", function () {
    disconnect();
    store.set("conversation", null);
    showEmpty();
    focusInput();
  });

  // --- rendering: safe Markdown (static/js/markdown.js, shared with the dashboard) ---------------------------
  function renderMarkdown(container, text, citations) {
    window.CCGMarkdown.render(container, text, { citations: citations, sourcesLabel: t("sources") });
  }

  // --- rendering: messages -----------------------------------------------------------------------------------
  var ROLE_LABEL = { customer: "you", assistant: "assistant", agent: "agent", system: "system" };

  function messageItem(role) {
    var li = el("li", "ccw-msg ccw-" + role);
    li.appendChild(el("span", "sr-only", t(ROLE_LABEL[role] || "assistant") + ": "));
    var body = el("div", "ccw-bubble");
    li.appendChild(body);
    return li;
  }

  function byAttr(name, value) {
    var items = els.log.querySelectorAll("[" + name + "]");
    for (var i = 0; i < items.length; i++) if (items[i].getAttribute(name) === String(value)) return items[i];
    return null;
  }

  function showMessage(m, fromHistory) {
    if (!m || !m.role) return null;
    var li = byAttr("data-message-id", m.id) || (m.client_id ? byAttr("data-client-id", m.client_id) : null);
    if (!li && m.role !== "customer" && m.reply_to && answers[m.reply_to]) li = answers[m.reply_to].li;
    if (!li) {
      li = messageItem(m.role);
      els.log.appendChild(li);
    }
    li.setAttribute("data-message-id", String(m.id));
    li.classList.remove("ccw-pending", "ccw-failed", "ccw-streaming");
    if (m.client_id) li.setAttribute("data-client-id", m.client_id);
    var body = li.querySelector(".ccw-bubble");
    if (m.role === "customer" || m.role === "system") body.textContent = m.content;
    else renderMarkdown(body, m.content, m.citations);
    if (m.role === "agent" && m.author_name && !li.querySelector(".ccw-author")) {
      li.insertBefore(el("span", "ccw-author", m.author_name), body);
    }
    if (m.role === "assistant" || m.role === "agent") {
      renderSources(li, m.citations);
      renderFeedback(li, m);
      if (m.answered === false && cfg.behaviour.offer_human && conversation && conversation.status === "bot") {
        els.human.hidden = false;
      }
      if (m.role === "assistant" && m.answered === false && !fromHistory) showStarters(true);
      if (!fromHistory) announce(t(m.role === "agent" ? "agent" : "assistant") + ": " + body.textContent);
    }
    return li;
  }

  function sourceHref(value) {  // only absolute http(s) addresses become links (never javascript:, data:, ...)
    if (typeof value !== "string" || !value) return null;
    try {
      var url = new URL(value);
      return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
    } catch (e) {
      return null;
    }
  }

  var SOURCES_SHOWN = 5;

  function sourceItem(c) {
    var item = el("li", "ccw-source" + (c.quoted === false ? " ccw-source-related" : " ccw-source-quoted"));
    var href = sourceHref(c.url);
    if (href) {  // a page: a real link, its own tab, no window.opener for the page it opens
      var link = el("a", "ccw-source-title ccw-source-link", c.title || href);
      link.href = href;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      link.appendChild(el("span", "sr-only", " (" + t("opens_new_tab") + ")"));
      item.appendChild(link);
    } else {
      item.appendChild(el("span", "ccw-source-title", c.title || t("untitled")));
    }
    var where = (c.section ? " — " + c.section : "") + (c.page ? " (p. " + c.page + ")" : "");
    if (where) item.appendChild(document.createTextNode(where));
    if (c.snippet) item.appendChild(window.CCGMarkdown.renderSnippet(el("div", "ccw-snippet"), c.snippet));
    return item;
  }

  // Up to five sources, as the server ordered them: the ones the answer quotes first, numbered as its [n] marks
  // (an older message without `quoted` counts as quoted), then the ones that support it, under "Related".
  function renderSources(li, citations) {
    var old = li.querySelector(".ccw-sources");
    if (old) old.remove();
    if (!cfg.behaviour.show_sources || !citations || !citations.length) return;
    var shown = citations.slice(0, SOURCES_SHOWN);
    var quoted = shown.filter(function (c) { return c.quoted !== false; });
    var related = shown.filter(function (c) { return c.quoted === false; });
    if (!quoted.length) { quoted = related; related = []; }  // nothing quoted by number: a plain list of sources
    var box = el("div", "ccw-sources");
    box.appendChild(el("p", "ccw-sources-title", t("sources")));
    var ol = el("ol");
    quoted.forEach(function (c) { ol.appendChild(sourceItem(c)); });
    box.appendChild(ol);
    if (related.length) {
      box.appendChild(el("p", "ccw-sources-title ccw-sources-related-title", t("related_sources")));
      var ul = el("ul", "ccw-sources-related");
      related.forEach(function (c) { ul.appendChild(sourceItem(c)); });
      box.appendChild(ul);
    }
    li.appendChild(box);
  }

  var THUMB_UP = "M2 21h4V9H2v12zm20-11a2 2 0 0 0-2-2h-6.3l1-4.6v-.3c0-.4-.2-.8-.4-1.1L13.2 1 6.6 7.6C6.2 8 6 8.5 6 9v10a2 2 0 0 0 2 2h9c.8 0 1.5-.5 1.8-1.2l3-7.1.2-.7v-2z";
  var THUMB_DOWN = "M22 3h-4v12h4V3zM2 14a2 2 0 0 0 2 2h6.3l-1 4.6v.3c0 .4.2.8.4 1.1l1.1 1 6.6-6.6c.4-.4.6-.9.6-1.4V5a2 2 0 0 0-2-2H7c-.8 0-1.5.5-1.8 1.2l-3 7.1-.2.7v2z";

  function icon(path) {  // a fixed path of ours, drawn with createElementNS like every other node
    var ns = "http://www.w3.org/2000/svg", svg = document.createElementNS(ns, "svg"), p = document.createElementNS(ns, "path");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    p.setAttribute("d", path);
    svg.appendChild(p);
    return svg;
  }

  function renderFeedback(li, m) {
    var old = li.querySelector(".ccw-feedback");
    if (old) old.remove();
    if (!m.id) return;
    var box = el("div", "ccw-feedback");
    [[1, THUMB_UP, "helpful"], [-1, THUMB_DOWN, "not_helpful"]].forEach(function (spec) {
      var b = el("button", "ccw-rate");
      b.appendChild(icon(spec[1]));
      b.type = "button";
      b.setAttribute("aria-label", t(spec[2]));
      b.setAttribute("data-value", String(spec[0]));
      b.setAttribute("aria-pressed", m.feedback === spec[0] ? "true" : "false");
      b.addEventListener("click", function () {
        var current = parseInt(li.getAttribute("data-feedback") || "0", 10);
        var value = current === spec[0] ? 0 : spec[0];
        if (send({ type: "feedback", message_id: m.id, value: value })) {
          setFeedback(m.id, value);
          if (value) announce(t("thanks_feedback"));
        }
      });
      box.appendChild(b);
    });
    li.setAttribute("data-feedback", String(m.feedback || 0));
    li.appendChild(box);
  }

  function setFeedback(messageId, value) {
    var li = byAttr("data-message-id", messageId);
    if (!li) return;
    li.setAttribute("data-feedback", String(value));
    li.querySelectorAll(".ccw-rate").forEach(function (b) {
      b.setAttribute("aria-pressed", String(parseInt(b.getAttribute("data-value"), 10) === value));
    });
  }

  var pendingRender = {};
  function answerFor(replyTo) {
    var entry = answers[replyTo];
    if (!entry) {
      var li = messageItem("assistant");
      li.classList.add("ccw-streaming");
      li.setAttribute("aria-busy", "true");
      els.log.appendChild(li);
      entry = answers[replyTo] = { li: li, body: li.querySelector(".ccw-bubble"), text: "", sources: null };
    }
    return entry;
  }

  function renderSoon(replyTo) {
    if (pendingRender[replyTo]) return;
    pendingRender[replyTo] = true;
    window.requestAnimationFrame(function () {
      delete pendingRender[replyTo];
      var entry = answers[replyTo];
      if (entry) { renderMarkdown(entry.body, entry.text, entry.sources); scrollDown(); }
    });
  }

  function showConversationStatus(status, next) {
    if (!conversation || !status) return;
    conversation.status = status;
    els.human.hidden = !(cfg.behaviour.offer_human && status === "bot");
    if (status === "waiting") {
      // What happens next (docs/handoff.md): someone joins, or nobody is there now and an email gets a reply.
      notice(t(next && next.ask_email ? "human_nobody" : "human_requested"), "handoff");
      if (next && next.ask_email && !leadEmail) showContactForm();  // the lead form has their address already
    } else if (status === "closed") { notice(t("closed"), "info"); setInteractive(false); }
    else if (els.notice.getAttribute("data-kind") === "handoff") notice("");
  }

  function showContactForm() {
    if (document.getElementById("ccw-contact")) return;
    var form = el("form", "ccw-contact");
    form.id = "ccw-contact";
    var label = el("label", null, t("email_label"));
    var input = el("input");
    input.type = "email";
    input.required = true;
    input.autocomplete = "email";
    label.appendChild(input);
    var button = el("button", "ccw-link", t("email_send"));
    button.type = "submit";
    form.appendChild(label);
    form.appendChild(button);
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      if (input.value && send({ type: "contact", email: input.value.trim() })) button.disabled = true;
    });
    els.log.appendChild(form);
    scrollDown();
  }

  // --- events ------------------------------------------------------------------------------------------------
  var handlers = {
    welcome: function (e) {
      if (e.limits) {
        limits = e.limits;
        if (limits.max_message_chars) els.input.maxLength = limits.max_message_chars;
      }
      if (e.conversation) showConversationStatus(e.conversation.status);
      send({ type: "resume", last_seq: Math.min(lastSeq, e.last_seq || 0) });
    },
    resumed: function () {
      socketLive = true;
      retryDelay = 1000;
      forbiddenCloses = 0;
      var kind = els.notice.getAttribute("data-kind");
      if (!els.notice.hidden && kind !== "warning" && kind !== "handoff") notice("");
      setStatus("live");
      setInteractive(!(conversation && conversation.status === "closed"));
      clearInterval(pingTimer);
      pingTimer = setInterval(function () { send({ type: "ping" }); }, (limits.ping_interval || 25) * 1000);
      if (!answering) flushUnsent();
    },
    ack: function (e) {
      unsent = unsent.filter(function (m) { return m.client_id !== e.client_id; });
      var li = e.client_id ? byAttr("data-client-id", e.client_id) : null;
      if (li) {
        li.classList.remove("ccw-pending");
        if (e.message_id) li.setAttribute("data-message-id", String(e.message_id));
      }
      if (conversation && conversation.status !== "bot") flushUnsent();  // no bot answer to wait for
    },
    message: function (e) { showMessage(e.message, false); scrollDown(); },
    agent_started: function (e) {
      answering = true;
      els.typing.textContent = t("typing");
      answerFor(e.reply_to);
    },
    agent_thinking: function () { els.typing.textContent = t("typing"); },
    tool_executing: function () { els.typing.textContent = t("searching"); },
    tool_completed: function (e) {
      var entry = answerFor(e.reply_to);
      entry.sources = e.sources || null;
      els.typing.textContent = t("typing");
    },
    token: function (e) {
      var entry = answerFor(e.reply_to);
      entry.text += e.text;
      renderSoon(e.reply_to);
    },
    reset: function (e) {
      var entry = answerFor(e.reply_to);
      entry.text = "";
      renderSoon(e.reply_to);
    },
    agent_completed: function (e) {
      var entry = answers[e.reply_to];
      var li = showMessage(e.message, false);  // takes over the streamed bubble
      delete answers[e.reply_to];
      if (entry && li !== entry.li) entry.li.remove();
      if (li) li.removeAttribute("aria-busy");
      answering = false;
      els.typing.textContent = "";
      flushUnsent();
      if (e.message && e.message.role === "assistant" && e.message.answered === true && !answering) showFollowups();
    },
    error: function (e) {
      if (typeof e.seq === "number") {  // the conversation's: an answer failed or timed out
        var entry = e.reply_to ? answers[e.reply_to] : null;
        if (entry) {
          delete answers[e.reply_to];
          entry.li.classList.remove("ccw-streaming");
          entry.li.classList.add("ccw-failed");
          entry.li.removeAttribute("aria-busy");
          entry.body.textContent = t("answer_failed");
        }
        answering = false;
        els.typing.textContent = "";
        flushUnsent();
        return;
      }
      if (e.code === "rate_limited") {
        rateLimited(e.retry_after || (e.details && e.details.retry_after) || 5);
        if (e.client_id) retryLater(e.client_id, (e.retry_after || 5) * 1000);
        return;
      }
      if (e.code === "answer_in_progress") {
        if (e.client_id) retryLater(e.client_id, 1000);
        return;
      }
      if (e.client_id) {
        unsent = unsent.filter(function (m) { return m.client_id !== e.client_id; });
        var li = byAttr("data-client-id", e.client_id);
        if (li) {
          li.classList.remove("ccw-pending");
          li.classList.add("ccw-failed");
          li.appendChild(el("p", "ccw-error", e.code === "message_too_long"
            ? t("too_long", { max: limits.max_message_chars }) : t("error")));
        }
      }
    },
    status: function (e) { showConversationStatus(e.status, e.next); },
    agent_joined: function (e) {
      showMessage(e.message, false);
      if (e.message) announce(e.message.content);
    },
    agent_left: function (e) { showMessage(e.message, false); els.typing.textContent = ""; },
    contact_saved: function (e) {
      var form = document.getElementById("ccw-contact");
      if (form) form.remove();
      notice(t("email_saved", { email: e.email }), "handoff");
    },
    feedback: function (e) { setFeedback(e.message_id, e.value); },
    typing: function (e) {
      if (e.role !== "agent") return;
      els.typing.textContent = e.state ? t("agent_typing") : "";
      clearTimeout(agentTypingTimer);
      if (e.state) agentTypingTimer = setTimeout(function () { els.typing.textContent = ""; }, 6000);
    },
    pong: function () {}
  };

  function retryLater(clientId, ms) {
    setTimeout(function () {
      unsent.forEach(function (m) {
        if (m.client_id === clientId && socketLive && !answering) send({ type: "message", client_id: m.client_id, text: m.text });
      });
    }, ms);
  }

  function flushUnsent() {
    if (!socketLive || answering || !unsent.length) return;
    // One at a time: the bot answers one question at a time; the next goes after this one's answer.
    var next = unsent[0];
    send({ type: "message", client_id: next.client_id, text: next.text });
  }

  // --- the socket --------------------------------------------------------------------------------------------
  function send(frame) {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  function disconnect() {
    clearTimeout(retryTimer);
    clearInterval(pingTimer);
    socketLive = false;
    if (socket) {
      var old = socket;
      socket = null;
      old.onclose = null;
      old.onmessage = null;
      try { old.close(1000); } catch (e) { /* already closed */ }
    }
  }

  function connect() {
    if (!conversation || unavailable) return;
    clearTimeout(retryTimer);
    if (!navigator.onLine) { notice(t("offline"), "offline"); setStatus("offline"); return; }
    var target = conversation;
    session(false).then(function (tok) {
      if (conversation !== target || unavailable) return;
      var scheme = location.protocol === "https:" ? "wss://" : "ws://";
      var ws = new WebSocket(scheme + location.host + cfg.paths.socket + encodeURIComponent(target.id) + "/?token=" +
                             encodeURIComponent(tok));
      socket = ws;
      var refusal = null;
      ws.onmessage = function (message) {
        var event;
        try { event = JSON.parse(message.data); } catch (err) { return; }
        if (!event || typeof event.type !== "string") return;
        if (typeof event.seq === "number") {
          if (event.seq <= lastSeq) return;  // shown already: never twice
          lastSeq = event.seq;
        }
        if (event.type === "error" && !socketLive) refusal = event;
        var handler = handlers[event.type];
        if (handler) handler(event);
        scrollDown();
      };
      ws.onclose = function (close) {
        if (socket !== ws) return;
        socket = null;
        socketLive = false;
        clearInterval(pingTimer);
        if (close.code === 4404) {  // the conversation is gone (or not ours)
          store.set("conversation", null);
          showEmpty();
          return;
        }
        if (close.code === 4403) {
          forbiddenCloses += 1;
          token = null;  // expired, or the widget's key, origins or state changed: ask again
          if (forbiddenCloses > 2) { failed({ status: 403 }); return; }
        }
        if (close.code === 4429 || (refusal && refusal.code === "rate_limited")) {
          var wait = (refusal && refusal.retry_after) || 5;
          rateLimited(wait);
          retryTimer = setTimeout(connect, wait * 1000);
          return;
        }
        if (!navigator.onLine) { notice(t("offline"), "offline"); setStatus("offline"); return; }
        notice(t("reconnecting"), "info");
        setStatus("reconnecting");
        retryTimer = setTimeout(connect, retryDelay);
        retryDelay = Math.min(retryDelay * 2, 15000);
      };
    }).catch(function (error) {
      if (error && (error.status === 403 || error.status === 404 || error.status === 429)) { failed(error); return; }
      notice(navigator.onLine ? t("reconnecting") : t("offline"), navigator.onLine ? "info" : "offline");
      setStatus(navigator.onLine ? "reconnecting" : "offline");
      retryTimer = setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 15000);
    });
  }

  window.addEventListener("offline", function () {
    notice(t("offline"), "offline");
    setStatus("offline");
    if (socket) {  // don't wait for a dead connection to time out: resume cleanly when back
      var old = socket;
      socket = null;
      socketLive = false;
      clearInterval(pingTimer);
      old.onclose = null;
      try { old.close(1000); } catch (e) { /* gone */ }
    }
  });
  window.addEventListener("online", function () {
    notice(t("reconnecting"), "info");
    retryDelay = 1000;
    if (conversation && !socket) connect();
  });

  // --- the composer ------------------------------------------------------------------------------------------
  function createConversation(extra) {
    var body = extra || {};
    if (cfg.behaviour.collect_email && els.email.value.trim()) body.email = els.email.value.trim();
    return authed("POST", cfg.paths.conversations, body).then(function (data) {
      conversation = data.conversation;
      conversations.unshift(conversation);
      store.set("conversation", conversation.id);
      els.emailRow.hidden = true;
      els.newButton.hidden = false;
      els.listButton.hidden = false;
      connect();
      return conversation;
    });
  }

  function submit() {
    var text = els.input.value.trim();
    if (!text || els.input.disabled) return;
    if (text.length > (limits.max_message_chars || 4000)) {
      notice(t("too_long", { max: limits.max_message_chars }), "warning");
      return;
    }
    hideStarters();
    var clientId = newId();
    var li = messageItem("customer");
    li.classList.add("ccw-pending");
    li.setAttribute("data-client-id", clientId);
    li.querySelector(".ccw-bubble").textContent = text;
    els.log.appendChild(li);
    scrollDown();
    unsent.push({ client_id: clientId, text: text });
    els.input.value = "";
    send({ type: "typing", state: false });
    if (!conversation) {
      createConversation().catch(function (error) {
        li.classList.add("ccw-failed");
        failed(error);
      });
    } else {
      flushUnsent();
    }
  }

  els.form.addEventListener("submit", function (event) { event.preventDefault(); submit(); });
  els.input.addEventListener("keydown", function (key) {
    if (key.key === "Enter" && !key.shiftKey && !key.isComposing) { key.preventDefault(); submit(); }
  });
  els.input.addEventListener("input", function () {
    var now = Date.now();
    if (socketLive && now - typingSentAt > 2500) { typingSentAt = now; send({ type: "typing", state: true }); }
  });
  els.human.addEventListener("click", function () {
    var ask = function () { send({ type: "request_human" }); };
    if (leadForm.when === "handoff" && !leadGiven && !document.getElementById("ccw-lead")) {
      // Ask how to reach them first; the request for a person follows once the form is saved.
      showLeadForm("handoff", function () {
        var wait = setInterval(function () { if (socketLive) { clearInterval(wait); ask(); } }, 200);
      });
      return;
    }
    if (conversation && socketLive) ask();
    else if (!conversation) {
      createConversation().then(function () {
        var wait = setInterval(function () { if (socketLive) { clearInterval(wait); ask(); } }, 200);
      }).catch(failed);
    }
  });

  // --- go ----------------------------------------------------------------------------------------------------
  if (window.parent === window ||
      (location.ancestorOrigins && location.ancestorOrigins.length &&
       location.ancestorOrigins[0] !== parentOrigin && location.ancestorOrigins[0] !== "null")) {
    // Opened on its own, or (a second opinion on frame-ancestors) inside a page of another origin.
    notice(t("unavailable"), "error");
    setStatus("unavailable");
    return;
  }
  toParent({ type: "ccw:ready" });
  // A page whose loader never says hello (or an old one) still gets an anonymous chat.
  setTimeout(function () { if (!started) start(); }, 4000);
})();
