// The login page's dynamic parts; signing in itself is a plain form that needs no script.
// * After a wrong token the server sends the browser back here with `?failed=1`: say so.
// * The page the browser was on (its hash route) is kept for the dashboard to return to
//   once signed in (the server's redirects drop it).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  if (new URLSearchParams(location.search).get("failed") === "1") {
    document.getElementById("login-failed").hidden = false;
  }
  if (location.hash.startsWith("#/") && location.hash.length > 2) {
    try {
      sessionStorage.setItem("ardiq.return", location.hash);
    } catch {
      // storage refused (private mode): the dashboard opens on its overview instead
    }
  }
});
