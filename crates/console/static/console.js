// ATS Proxy Manager console: session beacon (every 30 s, sooner if the idle timeout is short), CSRF header for htmx, and keeping what the user
// typed when the session ends (saved in sessionStorage, filled back in after the next login).
(function () {
  "use strict";
  var BEACON_MS = 30000;
  var DRAFT_PREFIX = "apm-draft:";
  var ended = false;

  function csrf() {
    var m = document.querySelector('meta[name="apm-csrf"]');
    return m ? m.content : "";
  }

  function draftKey(path) { return DRAFT_PREFIX + path; }

  // Saves the fields of every form marked data-draft on this page.
  function saveDrafts() {
    var forms = document.querySelectorAll("form[data-draft]");
    if (!forms.length) return;
    var saved = {};
    forms.forEach(function (form) {
      var fields = [];
      new FormData(form).forEach(function (value, name) {
        if (name !== "_csrf" && typeof value === "string") fields.push([name, value]);
      });
      saved[form.getAttribute("data-draft")] = fields;
    });
    try { sessionStorage.setItem(draftKey(location.pathname), JSON.stringify(saved)); } catch (e) { /* storage full or disabled */ }
  }

  function restoreDrafts() {
    var key = draftKey(location.pathname);
    var raw = null;
    try { raw = sessionStorage.getItem(key); } catch (e) { return; }
    if (!raw) return;
    sessionStorage.removeItem(key);
    var saved;
    try { saved = JSON.parse(raw); } catch (e) { return; }
    var restored = 0;
    Object.keys(saved).forEach(function (draft) {
      var form = document.querySelector('form[data-draft="' + draft + '"]');
      if (!form) return;
      fill(form, saved[draft]);
    });
    // Fields kept by the server from a form sent after the session had ended.
    (saved["*"] || []).forEach(function (pair) {
      document.querySelectorAll("form[data-draft]").forEach(function (form) { fill(form, [pair]); });
    });
    function fill(form, pairs) {
      pairs.forEach(function (pair) {
        var el = form.elements.namedItem(pair[0]);
        if (!el || el.type === "password" || el.type === "hidden") return;
        if (el instanceof RadioNodeList) return;
        if (el.type === "checkbox") { el.checked = el.value === pair[1]; } else if (el.value !== pair[1]) { el.value = pair[1]; restored++; }
      });
    }
    if (restored) {
      var note = document.createElement("div");
      note.className = "restored-note";
      note.id = "restored-note";
      note.setAttribute("role", "status");
      note.textContent = "Restored what you had typed before your session ended. Review it and submit again.";
      var main = document.getElementById("main");
      if (main) main.insertBefore(note, main.firstChild);
    }
  }

  function sessionEnded() {
    if (ended) return;
    ended = true;
    saveDrafts();
    var next = location.pathname + location.search;
    var url = "/login?expired=1&next=" + encodeURIComponent(next);
    var box = document.getElementById("session-ended");
    var link = document.getElementById("session-ended-login");
    if (link) link.href = url;
    if (box) { box.hidden = false; if (link) link.focus(); }
    setTimeout(function () { location.assign(url); }, 4000);
  }

  var timer = null;
  // Every 30 s, or more often when the server's idle timeout is shorter (a third of it), so an
  // open page never loses its session; the server says how long the session has left.
  function schedule(ms) {
    if (timer) clearTimeout(timer);
    timer = setTimeout(beacon, ms);
  }

  function beacon() {
    if (ended) return Promise.resolve();
    return fetch("/api/v1/auth/beacon", {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-Requested-With": "apm-console" }
    }).then(function (r) {
      if (r.status === 401) { sessionEnded(); return; }
      if (!r.ok) { schedule(BEACON_MS); return; }
      return r.json().then(function (b) {
        var left = Date.parse(b.idle_expires_at) - Date.parse(b.server_time);
        schedule(isFinite(left) ? Math.max(1000, Math.min(BEACON_MS, left / 3)) : BEACON_MS);
      });
    }).catch(function () { schedule(BEACON_MS); /* network blip: retry later */ });
  }
  // Exposed for tests and for the devtools console.
  window.apmBeacon = beacon;

  document.addEventListener("htmx:configRequest", function (e) {
    e.detail.headers["X-CSRF-Token"] = csrf();
  });
  document.addEventListener("htmx:responseError", function (e) {
    if (e.detail.xhr && e.detail.xhr.status === 401) sessionEnded();
  });
  document.addEventListener("htmx:afterSwap", function () {
    var view = document.getElementById("log-view");
    if (view && view.querySelector(".logline")) {
      var empty = document.getElementById("log-empty");
      if (empty) empty.remove();
      var poll = document.getElementById("log-poll");
      var state = document.getElementById("capture-state");
      if (poll && state && poll.dataset.capture) state.textContent = poll.dataset.capture;
    }
  });

  document.addEventListener("click", function (e) {
    var back = e.target.closest && e.target.closest("[data-back]");
    if (back && history.length > 1) { e.preventDefault(); history.back(); }
  });

  document.addEventListener("DOMContentLoaded", function () {
    var kept = document.getElementById("apm-draft");
    if (kept) {
      try {
        sessionStorage.setItem(draftKey(kept.dataset.path), JSON.stringify({ "*": JSON.parse(kept.dataset.fields) }));
      } catch (e) { /* storage disabled: nothing to keep */ }
    }
    if (document.body.dataset.session !== "on") return;
    restoreDrafts();
    // A first beacon soon after load learns the idle timeout; then the schedule adapts.
    schedule(1000);
    var summary = document.getElementById("error-summary");
    if (summary && !document.querySelector("[autofocus]")) summary.focus();
  });
})();
