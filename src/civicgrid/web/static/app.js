/* Small glue for htmx: errors (4xx) are swapped into the nearest error area instead of being
   dropped, and an ended session sends the browser to the login page. */
(function () {
  "use strict";
  document.addEventListener("htmx:beforeSwap", function (evt) {
    var xhr = evt.detail.xhr;
    if (xhr.status === 401) {
      window.location.href = "/login?next=" + encodeURIComponent(window.location.pathname);
      evt.detail.shouldSwap = false;
      return;
    }
    if (xhr.status >= 400) {
      var elt = evt.detail.requestConfig ? evt.detail.requestConfig.elt : evt.detail.elt;
      var scope = elt && elt.closest ? elt.closest("[data-errors-scope]") : null;
      var target = (scope && scope.querySelector(".errors")) || document.getElementById("errors");
      if (target) {
        evt.detail.shouldSwap = true;
        evt.detail.isError = false;
        evt.detail.target = target;
        evt.detail.swapOverride = "innerHTML";
      }
    }
  });
  // A successful request clears the error area of the form that sent it.
  document.addEventListener("htmx:afterRequest", function (evt) {
    if (evt.detail.successful && evt.detail.elt && evt.detail.elt.closest) {
      var scope = evt.detail.elt.closest("[data-errors-scope]");
      var target = scope && scope.querySelector(".errors");
      if (target && target !== evt.detail.target) target.innerHTML = "";
    }
  });
})();
