// "Settings → Account → API Access": regenerate my key.
// Signed in with a cookie session; talks to GET me and POST regenerate
// under the page's own path.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const BASE = "/settings/account/";

  async function call(method, path) {
    let res;
    try {
      res = await fetch(BASE + path, { method, headers: { Accept: "application/json" }, credentials: "same-origin" });
    } catch (e) {
      throw new Error("The server cannot be reached.");
    }
    const data = await res.json().catch(() => null);
    if (!res.ok) {
      const code = data && (typeof data.error === "string" ? data.error : data.error && data.error.code);
      // The password was entered too long ago: confirm it, on this site only.
      if (code === "reauthentication_required" && typeof data.location === "string" && /^\/(?![\/\\])/.test(data.location)) {
        window.location.assign(data.location);
      }
      if (res.status === 401) window.location.assign("/login");
      const m = data && (data.message || (data.error && data.error.message));
      const err = new Error(m || "The server answered " + res.status);
      err.status = res.status;
      throw err;
    }
    return data;
  }

  async function refresh() {
    try {
      const me = await call("GET", "me");
      $("signed-in-as").textContent = "Signed in as " + me.user;
      $("status").textContent = "";
    } catch (e) {
      $("status").textContent = e.message;
    }
  }

  function forgetToken() {
    $("token-value").textContent = "";
    $("copy-status").textContent = "";
  }

  function setup(dialog) {
    for (const b of dialog.querySelectorAll("[data-close]")) {
      b.addEventListener("click", () => {
        // The token goes with its dialog, in the same moment.
        if (dialog.id === "token-dialog") forgetToken();
        dialog.close();
      });
    }
  }

  function start() {
    setup($("confirm-dialog"));
    setup($("token-dialog"));
    $("regenerate").addEventListener("click", () => {
      $("confirm-error").textContent = "";
      $("confirm-dialog").showModal();
      $("confirm-ok").focus();
    });
    $("confirm-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        const created = await call("POST", "regenerate");
        $("confirm-dialog").close();
        $("token-value").textContent = created.token;
        $("copy-status").textContent = "";
        $("token-dialog").showModal();
        $("copy-token").focus();
        $("status").textContent = "Key regenerated: tokens signed with the old one are refused.";
      } catch (e) {
        $("confirm-error").textContent = e.message;
      }
    });
    $("copy-token").addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText($("token-value").textContent);
        $("copy-status").textContent = "Copied.";
      } catch (e) {
        $("copy-status").textContent = "Select it and press Ctrl+C (⌘C).";
      }
    });
    $("token-dialog").addEventListener("cancel", forgetToken);
    $("token-dialog").addEventListener("close", () => {
      forgetToken();
      $("regenerate").focus();
    });
    refresh();
  }

  start();
})();
