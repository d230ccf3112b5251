(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !live.dataset.refresh) { return; }
  var every = parseInt(live.dataset.refresh, 10) * 1000;
  var toggle = document.getElementById("live-toggle");
  var stamp = document.getElementById("live-stamp");
  var box = document.getElementById("live-box");
  var busy = false;

  function editing() {
    var a = document.activeElement;
    if (a && a !== document.body && /^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(a.tagName)) { return true; }
    return Array.prototype.some.call(live.querySelectorAll("input[type=password]"), function (i) { return i.value; });
  }

  function swap(doc, id) {
    var fresh = doc.getElementById(id), old = document.getElementById(id);
    if (fresh && old) { old.replaceWith(document.importNode(fresh, true)); }
  }

  function tick() {
    if (busy || document.hidden || (toggle && !toggle.checked) || editing()) { return; }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(function (text) {
        // the fetched page's own <style> carries another nonce: drop it before parsing
        var doc = new DOMParser().parseFromString(text.replace(/<style[\s\S]*?<\/style>/, ""), "text/html");
        var fresh = doc.getElementById("live");
        if (fresh) { live.replaceChildren.apply(live, Array.prototype.map.call(fresh.childNodes, function (n) { return document.importNode(n, true); })); }
        swap(doc, "nav-failed");
        if (stamp) { stamp.textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC"; }
        if (box) { box.classList.remove("stale"); }
      })
      .catch(function () {
        if (stamp) { stamp.textContent = "node not answering"; }
        if (box) { box.classList.add("stale"); }
      })
      .then(function () { busy = false; });
  }
  window.setInterval(tick, every);
})();
