// The console's only script: parts of a page marked data-refresh="URL" are fetched again
// every data-every-ms milliseconds and swapped in (server-rendered, escaped HTML), so the
// overview stays current without a full reload. A part marked data-until-done stops once
// its content says the work is finished. A login URL whose fragment is #token=... (the demo
// prints one) fills the token in and logs in, the fragment never reaching a server or its logs.
// Everything else is plain forms and links.
"use strict";
(function () {
  function refresh(element) {
    var url = element.getAttribute("data-refresh");
    var every = Number(element.getAttribute("data-every-ms")) || 5000;
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (response.redirected || !response.ok) { return null; }
          return response.text();
        })
        .then(function (html) {
          if (html !== null) {
            element.innerHTML = html;
            element.setAttribute("data-refreshed-at", String(Date.now()));
          }
          if (element.hasAttribute("data-until-done") && /finished|no longer remembered|Stopped/.test(element.textContent)) {
            return;
          }
          window.setTimeout(tick, every);
        })
        .catch(function () { window.setTimeout(tick, every); });
    }
    window.setTimeout(tick, every);
  }
  document.querySelectorAll("[data-refresh]").forEach(refresh);
  var token = document.getElementById("token");
  if (token && window.location.hash.indexOf("#token=") === 0) {
    token.value = decodeURIComponent(window.location.hash.slice("#token=".length));
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
    var name = document.getElementById("name");
    if (!name || name.value) { token.form.submit(); }
  }
})();
