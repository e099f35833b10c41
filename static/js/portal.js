// Small progressive enhancements; every page works without them.
(function () {
  "use strict";

  // Copy buttons: <button data-copy="element-id">.
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button[data-copy]") : null;
    if (!button) { return; }
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) { return; }
    var text = source.tagName === "UL"
      ? Array.prototype.map.call(source.querySelectorAll("li"), function (li) { return li.textContent.trim(); }).join("\n")
      : source.textContent.trim();
    var label = button.textContent;
    navigator.clipboard.writeText(text).then(function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 2000);
    });
  });

  // Forms that create something are sent once: the button is disabled after the first click.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.hasAttribute || !form.hasAttribute("data-once")) { return; }
    if (form.getAttribute("data-sent")) { event.preventDefault(); return; }
    form.setAttribute("data-sent", "1");
    Array.prototype.forEach.call(form.querySelectorAll("button[type=submit]"), function (button) {
      setTimeout(function () { button.disabled = true; }, 0);
    });
  });

  // Bulk registration progress: poll until the job stops running, then reload the page.
  var panel = document.querySelector("[data-progress-url]");
  if (panel && window.fetch) {
    var bar = document.getElementById("bulk-progress");
    var poll = function () {
      fetch(panel.getAttribute("data-progress-url"), { credentials: "same-origin" })
        .then(function (response) { return response.json(); })
        .then(function (state) {
          bar.value = state.done;
          panel.querySelector("[data-done]").textContent = state.done;
          panel.querySelector("[data-failed]").textContent = state.failed;
          if (state.status !== "running" || state.interrupted) { window.location.reload(); }
          else { setTimeout(poll, 1500); }
        })
        .catch(function () { setTimeout(poll, 5000); });
    };
    if (!panel.querySelector("form")) { setTimeout(poll, 1000); }
  }
})();
