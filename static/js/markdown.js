/* The one Markdown renderer of every place an answer is shown: the widget's frame (static/widget/frame.js) and the
 * dashboard's Try it, transcripts and inbox (static/js/chat.js, static/js/inbox.js). docs/widget.md describes it.
 *
 *   CCGMarkdown.render(container, text, {citations: [...], sourcesLabel: "Sources"})
 *   CCGMarkdown.renderSnippet(container, text)   // a source's snippet: the same blocks, no citation marks
 *
 * Safety: the text is never parsed as HTML. Every node is made with createElement / createTextNode — never
 * innerHTML — and only p, br, strong, em, code, pre, ul, ol, li, sup and a (http, https and mailto links, absolute
 * ones only) are ever made. Markup in an answer or a snippet (`<img onerror>`, `<script>`) is shown as the characters
 * it is; a `javascript:` link stays its label.
 *
 * Both the widget and the dashboard load this same file, so the same answer becomes the same DOM in both
 * (tests/embeds/test_markdown_browser.py compares them).
 */
(function (global) {
  "use strict";

  var INLINE = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|(\*[^*\s\n][^*\n]*\*)|(\[[^\]\n]+\]\(([^)\s]+)\))|(\[(\d{1,2})\])/;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function safeHref(value) {
    try {
      var url = new URL(value, "https://invalid.invalid/");
      if (url.origin === "https://invalid.invalid") return null;  // relative: not ours to resolve
      return url.protocol === "https:" || url.protocol === "http:" || url.protocol === "mailto:" ? url.href : null;
    } catch (e) { return null; }
  }

  function inline(parent, text, options) {
    var citations = options.citations;
    while (text) {
      var m = INLINE.exec(text);
      if (!m) { parent.appendChild(document.createTextNode(text)); return; }
      if (m.index) parent.appendChild(document.createTextNode(text.slice(0, m.index)));
      if (m[1]) {
        parent.appendChild(el("code", null, m[1].slice(1, -1)));
      } else if (m[2]) {
        parent.appendChild(el("strong", null, m[2].slice(2, -2)));
      } else if (m[3]) {
        parent.appendChild(el("em", null, m[3].slice(1, -1)));
      } else if (m[4]) {
        var label = m[4].slice(1, m[4].indexOf("]("));
        var href = safeHref(m[5]);
        if (href) {
          var a = el("a", null, label);
          a.href = href;
          a.target = "_blank";
          a.rel = "noopener noreferrer nofollow";
          parent.appendChild(a);
        } else {
          parent.appendChild(document.createTextNode(label));
        }
      } else if (m[6]) {
        var n = parseInt(m[7], 10);
        if (citations && n >= 1 && n <= citations.length) {
          var sup = el("sup", "md-cite", "[" + n + "]");
          var source = citations[n - 1] || {};
          sup.title = String(source.title || "");
          sup.setAttribute("aria-label", (options.sourcesLabel || "Sources") + " " + n);
          parent.appendChild(sup);
        } else {
          parent.appendChild(document.createTextNode(m[6]));
        }
      }
      text = text.slice(m.index + m[0].length);
    }
  }

  function render(container, text, options) {
    options = options || {};
    container.textContent = "";
    var lines = String(text || "").replace(/\r\n?/g, "\n").split("\n");
    var paragraph = null, list = null, listKind = null;
    function endBlocks() { paragraph = null; list = null; listKind = null; }
    for (var i = 0; i < lines.length; i++) {
      var line = lines[i];
      if (/^\s*```/.test(line)) {
        endBlocks();
        var code = [];
        for (i += 1; i < lines.length && !/^\s*```/.test(lines[i]); i++) code.push(lines[i]);
        var pre = el("pre");
        pre.appendChild(el("code", null, code.join("\n")));
        container.appendChild(pre);
        continue;
      }
      if (!line.trim()) { endBlocks(); continue; }
      var heading = /^\s{0,3}#{1,6}\s+(.*)$/.exec(line);
      var bullet = /^\s*[-*+]\s+(.*)$/.exec(line);
      var numbered = /^\s*\d{1,3}[.)]\s+(.*)$/.exec(line);
      if (heading) {
        endBlocks();
        var hp = el("p", "md-heading");
        var strong = el("strong");
        inline(strong, heading[1], options);
        hp.appendChild(strong);
        container.appendChild(hp);
      } else if (bullet || numbered) {
        var kind = bullet ? "ul" : "ol";
        if (!list || listKind !== kind) {
          paragraph = null;
          list = el(kind);
          listKind = kind;
          container.appendChild(list);
        }
        var li = el("li");
        inline(li, (bullet || numbered)[1], options);
        list.appendChild(li);
      } else {
        list = null;
        if (!paragraph) {
          paragraph = el("p");
          container.appendChild(paragraph);
        } else {
          paragraph.appendChild(el("br"));
        }
        inline(paragraph, line, options);
      }
    }
    return container;
  }

  function renderSnippet(container, text) {
    return render(container, text, {});
  }

  /* Server-rendered messages carry their text (autoescaped by the template) in an element marked data-markdown;
   * this replaces it with the rendering, so a page's first paint and what streams in later look alike. */
  function renderMarked(root, options) {
    var nodes = (root || document).querySelectorAll("[data-markdown]");
    for (var i = 0; i < nodes.length; i++) {
      var node = nodes[i];
      var kind = node.getAttribute("data-markdown");
      var text = node.textContent;
      if (kind === "snippet") renderSnippet(node, text);
      else render(node, text, options ? options(node) : {});
      node.removeAttribute("data-markdown");
      node.setAttribute("data-rendered", "markdown");
    }
  }

  global.CCGMarkdown = { render: render, renderSnippet: renderSnippet, renderMarked: renderMarked, safeHref: safeHref };
})(window);
