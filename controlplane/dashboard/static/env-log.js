// Follows an environment's runtime output through the dashboard's same-origin event
// stream (the API's stream of GET /v1/environments/{id}/logs), keeping the pane bounded.
(function () {
  "use strict";
  var log = document.getElementById("log");
  if (!log || !log.dataset.stream || !window.EventSource) {
    return;
  }
  var pane = window.PortsideLogPane(log, 2000);
  var state = document.getElementById("log-state");
  var source = new EventSource(log.dataset.stream);

  function append(entry) {
    var text = (entry.service ? "[" + entry.service + "] " : "") + entry.line;
    pane.append(text, entry.stream === "stderr" ? "stderr" : "");
  }

  log.scrollTop = log.scrollHeight;
  source.onopen = function () {
    if (state) { state.textContent = "following live…"; }
  };
  source.onmessage = function (event) {
    append(JSON.parse(event.data));
  };
  source.onerror = function () {
    // EventSource reconnects by itself, resuming after the last event id it saw.
    if (state) { state.textContent = "reconnecting…"; }
  };
  source.addEventListener("end", function () {
    source.close();
    if (state) { state.textContent = "the environment is gone"; }
  });
})();
