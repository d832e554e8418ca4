/* The dashboard's widget page: a live preview that follows the form as it is typed in, and "copy the snippet".
 * Values typed into the form are put into the preview as text (textContent) or as validated CSS colours and https
 * image URLs only, exactly as the real widget does. */
(function () {
  "use strict";
  var COLOR = /^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$/;
  var form = document.querySelector("[data-widget-form]");
  var preview = document.querySelector("[data-widget-preview]");
  var stringsNode = document.getElementById("widget-preview-strings");
  var strings = stringsNode ? JSON.parse(stringsNode.textContent) : {};

  function field(name) { return form ? form.querySelector('[name="' + name + '"]') : null; }
  function value(name) { var f = field(name); return f ? f.value : ""; }

  function onColor(hex) {  // black or white text, as the server picks it (WCAG luminance)
    var h = hex.slice(1);
    if (h.length === 3) h = h[0] + h[0] + h[1] + h[1] + h[2] + h[2];
    var c = [0, 2, 4].map(function (i) {
      var v = parseInt(h.slice(i, i + 2), 16) / 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2] > 0.179 ? "#111111" : "#ffffff";
  }

  function update() {
    if (!form || !preview) return;
    var language = value("language");
    var defaults = strings[language] || strings[(navigator.language || "en").slice(0, 2)] || strings.en || {};
    [["color_primary", "--wp-primary"], ["color_background", "--wp-bg"], ["color_text", "--wp-text"]].forEach(function (pair) {
      var v = value(pair[0]);
      if (COLOR.test(v)) preview.style.setProperty(pair[1], v);
    });
    if (COLOR.test(value("color_primary"))) preview.style.setProperty("--wp-on-primary", onColor(value("color_primary")));
    preview.querySelector('[data-preview="title"]').textContent = value("title") || defaults.title || "";
    preview.querySelector('[data-preview="greeting"]').textContent = value("greeting") || defaults.greeting || "";
    preview.querySelector('[data-preview="placeholder"]').textContent = value("placeholder") || defaults.placeholder || "";
    preview.setAttribute("data-position", value("position") === "bottom-left" ? "bottom-left" : "bottom-right");
    var icon = value("launcher_icon");
    preview.querySelector(".wp-launcher").setAttribute("data-icon", /^(chat|help|message)$/.test(icon) ? icon : "chat");
    var avatar = preview.querySelector(".wp-avatar");
    var url = value("avatar_url").trim();
    if (/^https:\/\/[^\s"'<>`\\]+$/.test(url)) { avatar.src = url; avatar.hidden = false; }
    else { avatar.removeAttribute("src"); avatar.hidden = true; }
  }

  if (form) {
    form.addEventListener("input", update);
    form.addEventListener("change", update);
    update();
  }

  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.querySelector(button.getAttribute("data-copy"));
      var status = button.parentNode.querySelector(".copy-status");
      var text = source ? source.textContent : "";
      var done = function () { if (status) status.textContent = "Copied."; };
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(text).then(done, function () { select(source); });
      } else {
        select(source);
      }
    });
  });

  function select(node) {
    var range = document.createRange();
    range.selectNodeContents(node);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  document.querySelectorAll("[data-confirm]").forEach(function (button) {
    button.addEventListener("click", function (event) {
      if (!window.confirm(button.getAttribute("data-confirm"))) event.preventDefault();
    });
  });
})();
