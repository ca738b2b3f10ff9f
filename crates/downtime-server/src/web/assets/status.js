// downtime status page: progressive enhancement only. The page is complete without this
// script; with it, the page follows changes live (server-sent events) and each uptime bar
// is one Tab stop whose days are walked with the arrow keys.
// Fragments come rendered and escaped by the server; plain text is set with textContent.
(function () {
  "use strict";

  // One Tab stop per bar list (roving tabindex): arrows, Home and End move between days.
  function rove(list) {
    var bars = list.querySelectorAll(".bar");
    if (!bars.length) return;
    for (var i = 0; i < bars.length; i++) bars[i].tabIndex = -1;
    bars[bars.length - 1].tabIndex = 0;
  }
  function visible(bar) {
    return bar.offsetParent !== null;
  }
  document.addEventListener("keydown", function (e) {
    var bar = e.target;
    if (!bar.classList || !bar.classList.contains("bar")) return;
    var all = Array.prototype.filter.call(bar.parentNode.querySelectorAll(".bar"), visible);
    var at = all.indexOf(bar);
    var to = -1;
    if (e.key === "ArrowLeft" || e.key === "ArrowUp") to = Math.max(0, at - 1);
    else if (e.key === "ArrowRight" || e.key === "ArrowDown") to = Math.min(all.length - 1, at + 1);
    else if (e.key === "Home") to = 0;
    else if (e.key === "End") to = all.length - 1;
    if (to < 0 || to === at) return;
    e.preventDefault();
    bar.tabIndex = -1;
    all[to].tabIndex = 0;
    all[to].focus();
  });
  function roveAll(root) {
    var lists = root.querySelectorAll(".bars");
    for (var i = 0; i < lists.length; i++) rove(lists[i]);
  }

  function byId(id) {
    return document.getElementById(id);
  }

  function apply(u) {
    // The stream starts with the monitor's last update, which may predate this page.
    var mine = Number(document.body.getAttribute("data-updated-ms") || 0);
    if (u.updated_ms < mine) return;
    document.body.setAttribute("data-updated-ms", String(u.updated_ms));
    var banner = byId("live-banner");
    if (banner && banner.innerHTML !== u.banner_html) banner.innerHTML = u.banner_html;
    var incidents = byId("live-incidents");
    if (incidents && incidents.innerHTML !== u.incidents_html) incidents.innerHTML = u.incidents_html;
    var box = byId("live-components");
    var list = box && box.querySelector(".components");
    if (box && (!list || list.getAttribute("data-key") !== u.components_key)) {
      // Components came or went: take the new list (with its uptime bars).
      box.innerHTML = u.components_html;
      roveAll(box);
    } else if (list) {
      // Same components: patch states in place so keyboard focus stays where it is.
      var rows = list.querySelectorAll(".component");
      for (var i = 0; i < rows.length && i < u.components.length; i++) {
        var row = rows[i];
        var c = u.components[i];
        if (row.getAttribute("data-component-id") !== c.id) continue;
        row.setAttribute("data-state", c.state);
        var badge = row.querySelector('[data-role="state"]');
        if (badge) {
          badge.className = "badge s-" + c.state;
          badge.textContent = c.label;
        }
        var reason = row.querySelector('[data-role="reason"]');
        if (reason) reason.textContent = c.reason;
        var bars = row.querySelectorAll(".bar");
        var today = bars[bars.length - 1];
        if (today) {
          // Today's bar shows the live state on top of what was recorded.
          var base = today.getAttribute("data-base") || today.className;
          today.className = c.state === "operational" ? base : "bar b-" + c.state;
        }
      }
    }
    document.title = u.overall_label + document.title.replace(/^[^·]*/, " ");
    var updated = byId("updated");
    if (updated) {
      updated.textContent = u.updated;
      updated.setAttribute("datetime", u.updated_iso);
    }
    document.body.setAttribute("data-updated", u.updated_iso);
    document.body.setAttribute("data-seq", String(u.seq));
  }

  function connect() {
    if (!window.EventSource) return;
    var note = byId("live-note");
    var source = new EventSource("/status/events");
    source.addEventListener("open", function () {
      document.body.setAttribute("data-live", "on");
      if (note) note.textContent = " · live";
    });
    source.addEventListener("error", function () {
      // The browser reconnects by itself; say so meanwhile.
      document.body.setAttribute("data-live", "off");
      if (note) note.textContent = " · reconnecting…";
    });
    source.addEventListener("status", function (e) {
      try {
        apply(JSON.parse(e.data));
      } catch (err) {
        if (window.console) console.error("status update", err);
      }
    });
  }

  function start() {
    roveAll(document);
    connect();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
