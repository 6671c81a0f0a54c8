// "Settings → Account → API Access": regenerate my key.
// Talks to GET /api/me and POST /v1/me/token/regenerate with the user's JWT.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const KEY = "syncello.token";

  async function call(method, path) {
    const token = sessionStorage.getItem(KEY);
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    let res;
    try {
      res = await fetch(path, { method, headers, credentials: "omit" });
    } catch (e) {
      throw new Error("The server cannot be reached.");
    }
    const data = await res.json().catch(() => null);
    if (!res.ok) {
      const m = data && data.error && data.error.message;
      const err = new Error(m || "The server answered " + res.status);
      err.status = res.status;
      throw err;
    }
    return data;
  }

  async function refresh() {
    const signed = !!sessionStorage.getItem(KEY);
    $("use-form").hidden = signed;
    $("account").hidden = !signed;
    $("forget").hidden = !signed;
    $("signed-in-as").textContent = "";
    if (!signed) return;
    try {
      const me = await call("GET", "/api/me");
      $("signed-in-as").textContent = "Signed in as " + me.user;
      $("status").textContent = "";
    } catch (e) {
      sessionStorage.removeItem(KEY);
      $("status").textContent = "That token was refused: " + e.message;
      refresh();
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
    $("use-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = $("current-token").value.trim();
      if (!value) return;
      sessionStorage.setItem(KEY, value);
      $("current-token").value = "";
      refresh();
    });
    $("forget").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      refresh();
    });
    $("regenerate").addEventListener("click", () => {
      $("confirm-error").textContent = "";
      $("confirm-dialog").showModal();
      $("confirm-ok").focus();
    });
    $("confirm-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        const created = await call("POST", "/v1/me/token/regenerate");
        // The old token no longer works: the page uses the new one.
        sessionStorage.setItem(KEY, created.token);
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
