// jobq console: keeps a page's live part fresh (the job while it runs, the first page of jobs)
// by reading it again from the server; nothing else, and nothing from outside.
(function () {
  "use strict";
  var source = document.body.getAttribute("data-live");
  var target = document.getElementById("live");
  if (!source || !target) { return; }
  var toggle = document.getElementById("live-toggle");
  var every = 2000, busy = false, timer = null;
  function busyTyping() {
    var el = document.activeElement;
    return el && target.contains(el) && /INPUT|TEXTAREA|SELECT/.test(el.tagName);
  }
  function tick() {
    if (busy || (toggle && !toggle.checked) || document.hidden || busyTyping()) { return; }
    busy = true;
    fetch(source, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.redirected || !r.ok) { clearInterval(timer); return null; }
        if (r.headers.get("X-Jobq-Ended") === "1") {
          clearInterval(timer);
          setTimeout(function () { window.location.reload(); }, 50);
        }
        return r.text();
      })
      .then(function (html) { if (html !== null && html !== undefined) { target.innerHTML = html; } })
      .catch(function () { /* the next tick tries again */ })
      .then(function () { busy = false; });
  }
  timer = setInterval(tick, every);
})();
