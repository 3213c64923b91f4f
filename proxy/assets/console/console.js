// The console's own script (served from the gateway; the page's CSP runs
// nothing else). It turns the server's event stream into an htmx refresh
// of the live parts of a page, and keeps expiry countdowns current.
(function () {
  "use strict";

  function pad(n) {
    return (n < 10 ? "0" : "") + n;
  }

  function countdown(seconds) {
    if (seconds >= 3600) {
      return Math.floor(seconds / 3600) + "h " + pad(Math.floor((seconds % 3600) / 60)) + "m";
    }
    return Math.floor(seconds / 60) + "m " + pad(seconds % 60) + "s";
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-expires]").forEach(function (el) {
      var left = Math.max(0, Math.floor((Number(el.getAttribute("data-expires")) - now) / 1000));
      el.textContent = "expires in " + countdown(left);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    // The server names each change by its ledger sequence number; the
    // browser resumes from the last one it saw when it reconnects.
    if (window.EventSource && document.getElementById("inbox")) {
      var source = new EventSource("/console/events");
      source.addEventListener("changed", function () {
        document.body.dispatchEvent(new CustomEvent("gatehouse:changed"));
      });
    }
    tick();
    setInterval(tick, 1000);
  });
})();
