/* CustomerCareGPT widget loader — <script src="https://<workspace host>/widget/v1/loader.js" data-embed="pk_…" async>
 * Dependency-free. Asks the workspace whether this page's origin may show the widget (the answer is readable by
 * allowed origins only: CORS per embed), then draws a launcher in a shadow root (the page's CSS can't reach
 * it) and, when opened, an iframe of the chat served from the workspace host. window.CustomerCare: open, close,
 * toggle, identify({user_id, user_hash, user_ts}), reset. Messages to and from the frame are checked both ways:
 * origin and source window. Docs: docs/widget.md
 */
(function (w, d) {
  "use strict";
  var script = d.currentScript || d.querySelector('script[data-embed][src*="/widget/v1/loader.js"]');
  if (!script || (w.CustomerCare && w.CustomerCare.version)) return;
  var key = script.getAttribute("data-embed") || "";
  var base = new URL(script.src, location.href).origin;
  var COLOR = /^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$/;
  var ICONS = {
    chat: "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H8l-4 4V6a2 2 0 0 1 2-2z",
    help: "M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm1 15h-2v-2h2v2zm2.1-7.8-.9.9c-.7.7-1.2 1.3-1.2 2.9h-2v-.5c0-1.1.5-2.1 1.2-2.8l1.2-1.3A2 2 0 1 0 10 8H8a4 4 0 1 1 7.1 2.2z",
    message: "M3 5h18v14H3V5zm2 2v.5l7 4.5 7-4.5V7H5zm0 2.9V17h14V9.9l-7 4.5-7-4.5z"
  };
  var CLOSE = "M6.4 5 5 6.4 10.6 12 5 17.6 6.4 19 12 13.4 17.6 19 19 17.6 13.4 12 19 6.4 17.6 5 12 10.6z";
  var pending = [];            // frame messages queued until the frame says it is ready
  var identity = null, frame = null, panel = null, button = null, cfg = null, isOpen = false, ready = false;
  var listeners = {};

  function emit(name, detail) {
    (listeners[name] || []).slice().forEach(function (fn) { try { fn(detail); } catch (e) { /* the page's bug */ } });
  }

  function post(message) {
    if (ready && frame && frame.contentWindow) frame.contentWindow.postMessage(message, base);
    else pending.push(message);
  }

  function svg(path) {
    var ns = "http://www.w3.org/2000/svg", s = d.createElementNS(ns, "svg"), p = d.createElementNS(ns, "path");
    s.setAttribute("viewBox", "0 0 24 24");
    s.setAttribute("aria-hidden", "true");
    s.setAttribute("focusable", "false");
    p.setAttribute("d", path);
    s.appendChild(p);
    return s;
  }

  function setIcon() {
    while (button.firstChild) button.removeChild(button.firstChild);
    button.appendChild(svg(isOpen ? CLOSE : (ICONS[cfg.launcher_icon] || ICONS.chat)));
    button.setAttribute("aria-label", isOpen ? cfg.labels.close : cfg.labels.open);
    button.setAttribute("aria-expanded", String(isOpen));
  }

  function ensureFrame() {
    if (frame) return;
    frame = d.createElement("iframe");
    frame.title = cfg.labels.title;
    frame.id = "ccw-frame";
    // No top navigation, no downloads: the chat can never take over the page that shows it.
    frame.setAttribute("sandbox", "allow-scripts allow-same-origin allow-forms allow-popups allow-popups-to-escape-sandbox");
    frame.setAttribute("referrerpolicy", "origin");
    frame.src = base + "/widget/v1/frame/" + encodeURIComponent(key) + "/?o=" + encodeURIComponent(location.origin) +
      "&lang=" + encodeURIComponent(cfg.language);
    panel.appendChild(frame);
  }

  function open() {
    if (!cfg) { pending.push({ type: "ccw:open" }); return; }
    ensureFrame();
    isOpen = true;
    panel.hidden = false;
    setIcon();
    frame.focus();
    post({ type: "ccw:open" });
    emit("open");
  }

  function close(focusLauncher) {
    if (!cfg || !isOpen) return;
    isOpen = false;
    panel.hidden = true;
    setIcon();
    if (focusLauncher) button.focus();
    emit("close");
  }

  function onMessage(event) {
    // Only our frame, from our origin, is listened to.
    if (!frame || event.source !== frame.contentWindow || event.origin !== base) return;
    var data = event.data;
    if (!data || typeof data.type !== "string") return;
    if (data.type === "ccw:ready") {
      ready = true;
      frame.contentWindow.postMessage({ type: "ccw:init", identity: identity, open: isOpen }, base);
      var queued = pending.filter(function (m) { return m.type !== "ccw:open" && m.type !== "ccw:identify"; });
      pending = [];
      queued.forEach(post);
      emit("ready");
    } else if (data.type === "ccw:close") {
      close(true);
    }
  }

  var host = d.createElement("customercare-widget");
  function mount(config) {
    cfg = config;
    var primary = COLOR.test(cfg.colors && cfg.colors.primary) ? cfg.colors.primary : "#2563eb";
    var onPrimary = COLOR.test(cfg.colors && cfg.colors.on_primary) ? cfg.colors.on_primary : "#ffffff";
    var left = cfg.position === "bottom-left";
    // Inline !important beats the page's own !important rules on the host element; the rest is inside the shadow.
    host.style.cssText = "all:initial!important;position:fixed!important;z-index:2147483000!important;" +
      "bottom:0!important;" + (left ? "left" : "right") + ":0!important;display:block!important;";
    var root = host.attachShadow({ mode: "open" });
    var style = d.createElement("style");
    style.textContent =
      ":host{all:initial}*{box-sizing:border-box}" +
      "button{all:initial;position:fixed;bottom:20px;" + (left ? "left" : "right") + ":20px;width:56px;height:56px;" +
      "border-radius:50%;cursor:pointer;display:flex;align-items:center;justify-content:center;" +
      "box-shadow:0 4px 14px rgba(0,0,0,.25);background:var(--p);color:var(--o)}" +
      "button:focus-visible{outline:3px solid var(--p);outline-offset:3px}" +
      "svg{width:28px;height:28px;fill:currentColor}" +
      "div{position:fixed;bottom:88px;" + (left ? "left" : "right") + ":20px;width:380px;height:600px;" +
      "max-height:calc(100vh - 108px);border-radius:12px;overflow:hidden;box-shadow:0 8px 30px rgba(0,0,0,.3);background:#fff}" +
      "div[hidden]{display:none}iframe{border:0;width:100%;height:100%;display:block}" +
      "@media (max-width:480px){div{inset:0;width:100%;height:100%;max-height:none;border-radius:0}" +
      "div:not([hidden])+button,div:not([hidden])~button{display:none}}" +
      "@media (prefers-reduced-motion:no-preference){button{transition:transform .15s}button:hover{transform:scale(1.05)}}";
    root.appendChild(style);
    host.style.setProperty("--p", primary);
    host.style.setProperty("--o", onPrimary);
    panel = d.createElement("div");
    panel.hidden = true;
    panel.setAttribute("role", "dialog");
    panel.setAttribute("aria-label", cfg.labels.title);
    button = d.createElement("button");
    button.type = "button";
    button.setAttribute("aria-controls", "ccw-panel");
    panel.id = "ccw-panel";
    button.addEventListener("click", function () { isOpen ? close(false) : open(); });
    root.appendChild(panel);
    root.appendChild(button);
    setIcon();
    (d.body || d.documentElement).appendChild(host);
    w.addEventListener("message", onMessage);
    var wantsOpen = cfg.auto_open || pending.some(function (m) { return m.type === "ccw:open"; });
    pending = pending.filter(function (m) { return m.type !== "ccw:open"; });
    if (wantsOpen) open();
    host.setAttribute("data-state", "ready");
    if (w.performance && performance.mark) performance.mark("ccw:launcher");
    emit("mounted");
  }

  var api = {
    version: 1,
    open: open,
    close: function () { close(false); },
    toggle: function () { isOpen ? close(false) : open(); },
    identify: function (who) {
      if (!who || typeof who.user_id !== "string" || typeof who.user_hash !== "string") return;
      identity = { user_id: who.user_id, user_hash: who.user_hash };
      if (typeof who.user_ts === "number" || typeof who.user_ts === "string") identity.user_ts = String(who.user_ts);
      if (ready) post({ type: "ccw:identify", identity: identity });
    },
    reset: function () { identity = null; post({ type: "ccw:reset" }); },
    on: function (name, fn) { (listeners[name] = listeners[name] || []).push(fn); }
  };
  var stub = w.CustomerCare;
  w.CustomerCare = api;
  // Calls made before the loader arrived: window.CustomerCare = {q: [["identify", {...}], ["open"]]}.
  if (stub && stub.q && stub.q.forEach) stub.q.forEach(function (c) { if (api[c[0]]) api[c[0]].apply(null, c.slice(1)); });

  fetch(base + "/widget/v1/config/" + encodeURIComponent(key) + "/?lang=" + encodeURIComponent(navigator.language || ""),
        { mode: "cors", credentials: "omit" })
    .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
    .then(mount)
    .catch(function () {
      // Not allowed on this page (or the widget is off): draw nothing.
      if (w.console) console.warn("CustomerCare: the chat widget is not available on this page.");
      emit("unavailable");
    });
})(window, document);
