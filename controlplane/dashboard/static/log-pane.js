// A log pane (<pre class="log">) the pages' streams write to: it stays at the bottom
// while the reader is there, and keeps at most maxLines lines when given.
window.PortsideLogPane = function (log, maxLines) {
  "use strict";
  function nearBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  }
  return {
    append: function (text, className) {
      var follow = nearBottom();
      var line = document.createElement("span");
      line.className = className ? "line " + className : "line";
      line.textContent = text + "\n";
      log.appendChild(line);
      while (maxLines && log.childNodes.length > maxLines) {
        log.removeChild(log.firstChild);
      }
      if (follow) {
        log.scrollTop = log.scrollHeight;
      }
    }
  };
};
