"use strict";
// The gateway key form offers only the chosen organisation's projects (the server checks it too).
(function () {
  const org = document.getElementById("id_org");
  const project = document.getElementById("id_project");
  if (!org || !project) {
    return;
  }
  function showOrgProjects() {
    for (const option of project.options) {
      if (!option.dataset.org) {
        continue; // the empty choice: an org-wide key
      }
      const ofOrg = org.value !== "" && option.dataset.org === org.value;
      option.hidden = !ofOrg;
      option.disabled = !ofOrg;
      if (!ofOrg && option.selected) {
        project.value = "";
      }
    }
  }
  showOrgProjects();
  org.addEventListener("change", showOrgProjects);
  // The org field is an autocomplete, whose select2 announces changes through jQuery only.
  if (window.django && window.django.jQuery) {
    window.django.jQuery(org).on("change", showOrgProjects);
  }
})();
