// Live pages without a build step: every element with data-live-url is re-rendered by the
// server every few seconds (an HTML fragment) and swapped in. Pages work without this file.
(function () {
  "use strict";
  var INTERVAL_MS = 2500;
  var shown = new WeakMap();

  function openDetailKeys(root) {
    return Array.prototype.map.call(root.querySelectorAll("details[open][data-key]"),
      function (node) { return node.getAttribute("data-key"); });
  }

  function reopen(root, keys) {
    keys.forEach(function (key) {
      var node = root.querySelector('details[data-key="' + key + '"]');
      if (node) { node.open = true; }
    });
  }

  function refresh(element) {
    return fetch(element.getAttribute("data-live-url"), {
      credentials: "same-origin",
      cache: "no-store",
      headers: { "Accept": "text/html" }
    }).then(function (response) {
      if (response.status === 401 || response.status === 403) {
        window.location.reload();  // logged out: the full page shows the login form
        return null;
      }
      return response.ok ? response.text() : null;
    }).then(function (html) {
      if (html === null || shown.get(element) === html) { return; }
      var keys = openDetailKeys(element);
      element.innerHTML = html;
      shown.set(element, html);
      reopen(element, keys);
    });
  }

  function tick() {
    if (document.hidden) { return; }
    var status = document.querySelector("[data-live-status]");
    var elements = document.querySelectorAll("[data-live-url]");
    Promise.all(Array.prototype.map.call(elements, refresh)).then(function () {
      if (status) { status.hidden = false; status.classList.remove("stale"); }
    }, function () {
      if (status) { status.classList.add("stale"); }  // server unreachable: try again
    });
  }

  // Irreversible buttons ask first (without JavaScript they simply submit).
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) { event.preventDefault(); }
  });

  if (document.querySelector("[data-live-url]")) {
    setInterval(tick, INTERVAL_MS);
  }
}());
