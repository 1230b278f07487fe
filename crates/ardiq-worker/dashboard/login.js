// The login page's one dynamic part: after a wrong token the server sends the browser
// back here with `?failed=1`, and the page says so. Signing in itself is a plain form.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  if (new URLSearchParams(location.search).get("failed") === "1") {
    document.getElementById("login-failed").hidden = false;
  }
});
