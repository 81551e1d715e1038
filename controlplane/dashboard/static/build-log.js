// Follows a running build's log through the dashboard's same-origin event stream and
// reloads the page once the build has ended, to show its final steps and outcome.
(function () {
  "use strict";
  var log = document.getElementById("log");
  if (!log || !log.dataset.stream || !window.EventSource) {
    return;
  }
  var state = document.getElementById("log-state");
  var badge = document.getElementById("build-status");
  var pane = window.PortsideLogPane(log);
  var source = new EventSource(log.dataset.stream);

  source.onopen = function () {
    if (state) { state.textContent = "following live…"; }
  };
  source.onmessage = function (event) {
    pane.append(JSON.parse(event.data));
  };
  source.onerror = function () {
    // EventSource reconnects by itself, resuming after the last event id it saw.
    if (state) { state.textContent = "reconnecting…"; }
  };
  source.addEventListener("end", function (event) {
    source.close();
    var status = (JSON.parse(event.data || "{}") || {}).status;
    if (badge && status) {
      badge.textContent = status;
      badge.dataset.status = status;
      badge.className = "badge badge-" + status;
    }
    if (state) { state.textContent = "ended"; }
    window.setTimeout(function () { window.location.reload(); }, 800);
  });
})();
