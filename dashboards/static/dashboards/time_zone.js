// The header's time zone picker: a zone picked is saved at once. On a first visit (no zone saved
// yet) the browser's own is saved and the page shown again in it.
(function () {
  "use strict";
  var form = document.querySelector("form.time-zone");
  if (!form) return;
  form.elements.time_zone.addEventListener("change", function () {
    form.submit();
  });
  if (form.dataset.saved !== "false") return;
  var zone;
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  } catch (error) {
    return;
  }
  // Asked once per browser session: a zone the server does not know is not sent again and again.
  if (!zone || sessionStorage.getItem("tollgate-time-zone-sent") === zone) return;
  sessionStorage.setItem("tollgate-time-zone-sent", zone);
  var body = new FormData(form);
  body.set("time_zone", zone);
  body.set("detected", "on");
  fetch(form.action, { method: "POST", body: body, credentials: "same-origin" }).then(function (response) {
    if (response.status === 204 && form.elements.time_zone.value !== zone) window.location.reload();
  });
})();
