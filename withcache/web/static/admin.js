// withcache operator UI: copy buttons, and keeping htmx polls from spoiling the operator's work.
(function () {
  "use strict";

  // A poll swaps its section out; skip it while the operator is selecting text inside.
  document.addEventListener("htmx:beforeRequest", function (evt) {
    var elt = evt.detail.elt;
    if (!elt.hasAttribute || !elt.hasAttribute("data-poll")) return;
    var sel = document.getSelection();
    if (sel && !sel.isCollapsed && sel.rangeCount > 0 &&
        elt.contains(sel.getRangeAt(0).commonAncestorContainer)) {
      evt.preventDefault();
    }
  });

  // A 400 carries the form back with its inline error: swap it in like a success.
  document.addEventListener("htmx:beforeSwap", function (evt) {
    if (evt.detail.xhr.status === 400) {
      evt.detail.shouldSwap = true;
      evt.detail.isError = false;
    }
  });

  function copied(button) {
    var label = button.textContent;
    button.textContent = "Copied";
    setTimeout(function () { button.textContent = label; }, 1200);
  }

  function fallbackCopy(text, button) {
    var area = document.createElement("textarea");
    area.value = text;
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); copied(button); } finally { area.remove(); }
  }

  // Delegated, so buttons in freshly swapped fragments work too.
  document.addEventListener("click", function (evt) {
    var button = evt.target.closest && evt.target.closest("button[data-copy]");
    if (!button) return;
    var text = button.getAttribute("data-copy");
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { copied(button); },
        function () { fallbackCopy(text, button); });
    } else {
      fallbackCopy(text, button);
    }
  });
})();
