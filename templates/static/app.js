// Progressive enhancement only: every page works without this file.
(function () {
  "use strict";

  function status(el, text) {
    var out = el.closest("section, div").parentElement.querySelector("[data-copy-status]");
    if (out) { out.textContent = text; }
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      document.body.removeChild(area);
      if (ok) { resolve(); } else { reject(new Error("copy refused")); }
    });
  }

  document.querySelectorAll("[data-copy]").forEach(function (button) {
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) { return; }
    button.hidden = false;
    button.addEventListener("click", function () {
      copyText(source.textContent.trim()).then(function () {
        button.textContent = "Copied";
        status(button, "Copied to the clipboard.");
        setTimeout(function () { button.textContent = "Copy"; }, 2000);
      }, function () {
        status(button, "Copy failed: select the command and copy it by hand.");
      });
    });
  });

  document.querySelectorAll("form[data-star]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var button = form.querySelector("button");
      var field = form.querySelector("input[name=star]");
      var label = form.querySelector("[data-star-label]");
      var count = document.getElementById("star-count");
      var total = document.getElementById("star-total");
      button.disabled = true;
      fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { "Accept": "application/json" },
        credentials: "same-origin"
      }).then(function (resp) {
        if (!resp.ok) { throw new Error("status " + resp.status); }
        return resp.json();
      }).then(function (data) {
        field.value = data.starred ? "0" : "1";
        button.setAttribute("aria-pressed", data.starred ? "true" : "false");
        label.textContent = data.starred ? "Starred" : "Star";
        count.textContent = String(data.count);
        count.setAttribute("aria-label", data.count + " stars");
        if (total) { total.textContent = String(data.count); }
      }).catch(function () {
        form.submit();  // fall back to the plain form post, which shows any error page
      }).finally(function () {
        button.disabled = false;
      });
    });
  });
})();
