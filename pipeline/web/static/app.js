// The review app's only script: live progress by short polling, keyboard review (j/k/a/r/x/e), forms sent with
// fetch (the CSRF token comes from the page's <meta>), and gallery refreshes from the server-rendered fragment.
// No framework and no build step. Everything user-written reaches the page as server-escaped HTML or via
// textContent, never through string-built markup.
(function () {
  "use strict";
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  var POLL_MS = 2000;

  function getJSON(url) {
    return fetch(url, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : null; });
  }

  function setText(root, field, text) {
    var el = root.querySelector('[data-field="' + field + '"]');
    if (el && el.textContent !== text) { el.textContent = text; }
  }

  function countsText(counts) {
    return Object.keys(counts).filter(function (k) { return counts[k]; })
      .map(function (k) { return k + " " + counts[k]; }).join(", ");
  }

  function dollars(s) {  // display only: cents, as the server renders them; the exact string goes to title
    var v = Number(s);
    return isFinite(v) ? "$" + v.toLocaleString("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 2}) : "$" + s;
  }

  function reviewText(r) {
    return "approved " + r.approved + ", rejected " + r.rejected + ", unreviewed " + r.unreviewed;
  }

  function progress(root, done, total) {
    var bar = root.querySelector('[data-field="progress"]');
    if (bar) { bar.max = total || 1; bar.value = done; }
    setText(root, "done", done + "/" + total);
  }

  function setState(root, state) {
    var el = root.querySelector('[data-field="state"]');
    if (el && el.textContent !== state) { el.textContent = state; el.className = "badge state-" + state; }
  }

  // -- jobs page ------------------------------------------------------------------------------------
  function liveJobs() {
    var rows = Array.prototype.slice.call(document.querySelectorAll("tr[data-job-id]"));
    if (!rows.length) { return; }
    var ids = rows.map(function (r) { return r.getAttribute("data-job-id"); }).join(",");
    function tick() {
      getJSON("/api/jobs?ids=" + encodeURIComponent(ids)).then(function (data) {
        if (!data) { return; }
        data.jobs.forEach(function (j) {
          var row = document.querySelector('tr[data-job-id="' + j.job_id + '"]');
          if (!row) { return; }
          setState(row, j.state);
          progress(row, j.done, j.total);
          setText(row, "counts", countsText(j.counts));
          setText(row, "cost", dollars(j.cost_usd));
          setText(row, "saved", dollars(j.saved_usd));
          setText(row, "review", reviewText(j.review));
        });
      }).catch(function () {}).then(function () { setTimeout(tick, POLL_MS); });
    }
    setTimeout(tick, POLL_MS);
  }

  // -- job page -------------------------------------------------------------------------------------
  var gallery = document.getElementById("gallery");
  var current = -1;
  var lastSeen = null;

  function cards() { return Array.prototype.slice.call(document.querySelectorAll("#gallery article.card")); }

  function focusCard(i) {
    var all = cards();
    if (!all.length) { current = -1; return; }
    current = Math.max(0, Math.min(i, all.length - 1));
    all.forEach(function (c, n) { c.classList.toggle("current", n === current); });
    all[current].focus({preventScroll: true});
    all[current].scrollIntoView({block: "nearest"});
  }

  function status(text) {
    var el = document.getElementById("status");
    if (el) { el.textContent = text; }
  }

  function refreshGallery() {
    if (!gallery) { return Promise.resolve(); }
    var key = current >= 0 && cards()[current] ? cards()[current].getAttribute("data-item") : null;
    return fetch(gallery.getAttribute("data-fragment"), {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        gallery.innerHTML = html;  // server-rendered, escaped by the template engine
        var all = cards();
        var at = all.findIndex(function (c) { return c.getAttribute("data-item") === key; });
        if (current >= 0) { focusCard(at >= 0 ? at : current); }
      });
  }

  function send(form, extra) {
    var body = new FormData(form);
    Object.keys(extra || {}).forEach(function (k) { body.set(k, extra[k]); });
    return fetch(form.getAttribute("action"), {
      method: "POST", body: body, credentials: "same-origin",
      headers: {"Accept": "application/json", "X-CSRF-Token": csrf}
    }).then(function (r) { return r.json().catch(function () { return {ok: false, error: "HTTP " + r.status}; }); })
      .then(function (res) {
        status(res.ok ? (res.message || "done") : ("error: " + res.error));
        return refreshGallery().then(function () { return res; });
      });
  }

  function reviewCurrent(action) {
    var card = cards()[current];
    if (!card) { return; }
    var form = card.querySelector("form.review-form");
    send(form, {action: action});
  }

  function onKey(ev) {
    var t = ev.target;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)) {
      if (ev.key === "Escape") { t.blur(); if (current >= 0) { focusCard(current); } }
      return;
    }
    var all = cards();
    if (!all.length) { return; }
    if (ev.key === "j") { focusCard(current + 1); }
    else if (ev.key === "k") { focusCard(current < 0 ? 0 : current - 1); }
    else if (ev.key === "a" && current >= 0) { reviewCurrent("approve"); }
    else if (ev.key === "r" && current >= 0) { reviewCurrent("reject"); }
    else if (ev.key === "x" && current >= 0) {
      var box = all[current].querySelector('input[type="checkbox"]');
      if (box) { box.checked = !box.checked; }
    } else if (ev.key === "e" && current >= 0) {
      var edit = all[current].querySelector("details.edit");
      if (edit) { edit.open = true; edit.querySelector("textarea").focus(); }
    } else { return; }
    ev.preventDefault();
  }

  function onSubmit(ev) {
    var form = ev.target;
    if (!(form instanceof HTMLFormElement) || form.method.toLowerCase() !== "post" || form.classList.contains("logout")) {
      return;
    }
    ev.preventDefault();
    var extra = {};
    if (ev.submitter && ev.submitter.name) { extra[ev.submitter.name] = ev.submitter.value; }
    var card = form.closest("article.card");
    if (card) { current = cards().indexOf(card); }
    send(form, extra).then(function () {
      if (form.id === "bulk") { form.reset(); }
    });
  }

  function liveJob() {
    var summary = document.getElementById("summary");
    if (!summary) { return; }
    function tick() {
      getJSON(summary.getAttribute("data-api")).then(function (j) {
        if (!j) { return; }
        var total = 0, done = 0;
        Object.keys(j.counts).forEach(function (k) {
          total += j.counts[k];
          if (["succeeded", "cached", "failed", "blocked", "cancelled"].indexOf(k) >= 0) { done += j.counts[k]; }
        });
        setState(summary, j.state);
        progress(summary, done, total);
        setText(summary, "counts", countsText(j.counts));
        setText(summary, "cost", dollars(j.cost_usd));
        setText(summary, "list", dollars(j.list_cost_usd));
        setText(summary, "saved", dollars(j.saved_usd));
        setText(summary, "review", reviewText(j.review));
        var seen = JSON.stringify([j.counts, j.review, j.cost_usd]);
        var busy = document.activeElement && gallery && gallery.contains(document.activeElement) &&
          /^(INPUT|TEXTAREA)$/.test(document.activeElement.tagName);
        if (lastSeen !== null && seen !== lastSeen && !busy) { refreshGallery(); }
        if (!busy) { lastSeen = seen; }
      }).catch(function () {}).then(function () { setTimeout(tick, POLL_MS); });
    }
    setTimeout(tick, POLL_MS);
  }

  // -- providers page -------------------------------------------------------------------------------
  function liveProviders() {
    var box = document.getElementById("providers");
    if (!box) { return; }
    function tick() {
      fetch(box.getAttribute("data-fragment"), {credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) { box.innerHTML = html; } })
        .catch(function () {}).then(function () { setTimeout(tick, 5000); });
    }
    setTimeout(tick, 5000);
  }

  var page = document.body.getAttribute("data-page");
  if (page === "jobs") { liveJobs(); }
  if (page === "providers") { liveProviders(); }
  if (page === "job") {
    document.addEventListener("keydown", onKey);
    document.addEventListener("submit", onSubmit);
    document.addEventListener("click", function (ev) {
      if (ev.target && ev.target.classList && ev.target.classList.contains("select-all")) {
        cards().forEach(function (c) { var b = c.querySelector('input[type="checkbox"]'); if (b) { b.checked = true; } });
      }
      var card = ev.target && ev.target.closest && ev.target.closest("article.card");
      if (card) { var i = cards().indexOf(card); if (i !== current) { current = i; cards().forEach(function (c, n) { c.classList.toggle("current", n === current); }); } }
    });
    liveJob();
  }
}());
