// keygate settings page: talks only to the key router's JSON routes under
// the page's own prefix (body[data-api]). No framework, no build step.
"use strict";

(function () {
  const API = document.body.dataset.api;
  // Bearer mode: no session, the person pastes a key that may manage keys;
  // it is kept in this tab only (sessionStorage) and sent as Authorization.
  const BEARER = document.body.dataset.bearer === "1";
  const BEARER_KEY = "keygate.bearer:" + API;
  const $ = (id) => document.getElementById(id);
  const DAY = 86400000;

  const state = { keys: [], options: null, activityKey: null, cursor: null };

  // ---- HTTP ---------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body) {
    const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    const bearer = BEARER && sessionStorage.getItem(BEARER_KEY);
    if (bearer) init.headers.Authorization = "Bearer " + bearer;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(API + path, init);
    } catch (e) {
      throw new ApiError(0, "network", "The server cannot be reached. Check your connection and try again.");
    }
    if (res.status === 204) return null;
    let data = null;
    try {
      data = await res.json();
    } catch (e) {
      data = null;
    }
    if (!res.ok) {
      const code = errorCode(data);
      // The application wants the password again before this change
      // ("sudo mode"): go to its page for that, on this site only.
      if (code === "reauthentication_required" && typeof data.location === "string" && /^\/(?![\/\\])/.test(data.location)) {
        window.location.assign(data.location);
      }
      throw new ApiError(res.status, code, errorMessage(res, data));
    }
    return data;
  }

  function errorCode(data) {
    if (!data) return "unknown";
    if (typeof data.error === "string") return data.error;
    if (data.error && typeof data.error.code === "string") return data.error.code;
    return "unknown";
  }

  function errorMessage(res, data) {
    let m = data && (data.message || (data.error && data.error.message) || data.detail);
    if (typeof m !== "string" || !m) m = "The server answered " + res.status + " " + (res.statusText || "");
    if (res.status === 401) m += " — your session may have ended; sign in again.";
    if (res.status === 429) {
      const after = res.headers.get("Retry-After");
      if (after) m += " Try again in " + after + " s.";
    }
    return m;
  }

  // ---- Formatting ---------------------------------------------------------

  const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  const exact = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "long" });
  const dateOnly = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });

  function relative(date, now) {
    const diff = date.getTime() - now;
    const abs = Math.abs(diff);
    const units = [
      ["year", 365 * DAY], ["month", 30 * DAY], ["week", 7 * DAY], ["day", DAY],
      ["hour", 3600000], ["minute", 60000],
    ];
    for (const [unit, ms] of units) {
      if (abs >= ms) return rtf.format(Math.round(diff / ms), unit);
    }
    return abs < 45000 ? "just now" : rtf.format(Math.round(diff / 1000), "second");
  }

  /** A <time> with relative text and the exact time on hover. */
  function timeEl(iso, mode) {
    const t = document.createElement("time");
    const d = new Date(iso);
    t.dateTime = iso;
    t.title = exact.format(d);
    t.textContent = mode === "date" ? dateOnly.format(d) : relative(d, Date.now());
    return t;
  }

  function text(tag, value, cls) {
    const el = document.createElement(tag);
    el.textContent = value;
    if (cls) el.className = cls;
    return el;
  }

  /** active, expiring, grace, expired, rotated, revoked or disabled, with a label. */
  function status(key, now) {
    // The server says so only while the key is neither revoked nor expired.
    if (key.state === "disabled") return { cls: "disabled", label: "Disabled" };
    if (key.revoked_at) {
      const ends = Date.parse(key.revoked_at);
      if (ends > now) {
        return { cls: "grace", label: "Rotation grace, ends " + relative(new Date(ends), now) };
      }
      return key.replaced_by ? { cls: "rotated", label: "Rotated" } : { cls: "revoked", label: "Revoked" };
    }
    if (key.expires_at) {
      const exp = Date.parse(key.expires_at);
      if (exp <= now) return { cls: "expired", label: "Expired" };
      if (exp - now < 7 * DAY) return { cls: "expiring", label: "Expires soon" };
    }
    return { cls: "active", label: "Active" };
  }

  function setStatus(message) {
    $("status").textContent = message;
  }

  // ---- Key list -----------------------------------------------------------

  async function loadKeys() {
    const box = $("keys");
    box.setAttribute("aria-busy", "true");
    try {
      const data = await api("GET", "");
      state.keys = data.keys;
      showSignedIn(true);
      renderKeys();
    } catch (e) {
      if (BEARER && (e.status === 401 || e.status === 403)) {
        showSignedIn(false);
        box.replaceChildren(bearerForm(e));
      } else {
        box.replaceChildren(failed("Your keys could not be loaded: " + e.message, loadKeys));
      }
    } finally {
      box.setAttribute("aria-busy", "false");
    }
  }

  function failed(message, retry) {
    const div = document.createElement("div");
    div.className = "failed";
    div.setAttribute("role", "alert");
    div.append(text("p", message));
    if (retry) {
      const b = text("button", "Try again", "ghost");
      b.type = "button";
      b.addEventListener("click", retry);
      div.append(b);
    }
    return div;
  }

  function renderKeys() {
    const box = $("keys");
    if (state.keys.length === 0) {
      box.replaceChildren(text("p", "You have no API keys yet. Create one with “New key”.", "empty"));
      return;
    }
    const now = Date.now();
    const list = document.createElement("ul");
    list.className = "key-list";
    list.setAttribute("aria-label", "Your API keys");
    const tpl = $("key-template");
    for (const key of state.keys) {
      const li = tpl.content.firstElementChild.cloneNode(true);
      li.dataset.id = key.id;
      if (state.activityKey && state.activityKey.id === key.id) li.classList.add("selected");
      li.querySelector(".key-name").textContent = key.name;
      const st = status(key, now);
      const badge = li.querySelector(".badge");
      badge.textContent = st.label;
      badge.classList.add(st.cls);
      li.querySelector(".hint code").textContent = key.hint;
      li.querySelector(".hint code").title = "The token's prefix and last characters";
      const chips = li.querySelector(".chips");
      if (key.scopes.length === 0) chips.append(text("li", "no scopes", "none"));
      for (const s of key.scopes) chips.append(text("li", s));
      const created = li.querySelector(".created");
      created.append(timeEl(key.created_at));
      if (key.created_by) {
        // Minted through the API by another key: say which.
        created.append(document.createTextNode(" by key "), text("code", key.created_by));
      }
      const used = li.querySelector(".used");
      used.append(key.last_used_at ? timeEl(key.last_used_at) : document.createTextNode("Never"));
      const expires = li.querySelector(".expires");
      expires.append(key.expires_at ? timeEl(key.expires_at, "date") : document.createTextNode("Never"));
      if (key.external_id) {
        const ext = li.querySelector(".external");
        ext.hidden = false;
        ext.querySelector("code").textContent = key.external_id;
      }
      if (key.meta && Object.keys(key.meta).length > 0) {
        const meta = li.querySelector(".meta");
        meta.hidden = false;
        meta.querySelector("pre").textContent = JSON.stringify(key.meta, null, 2);
      }
      const ended = st.cls === "revoked" || st.cls === "expired" || st.cls === "rotated";
      for (const b of li.querySelectorAll("button[data-action]")) {
        const action = b.dataset.action;
        if (action === "toggle") b.textContent = st.cls === "disabled" ? "Enable" : "Disable";
        b.setAttribute("aria-label", b.textContent + " " + key.name);
        if (ended && action !== "activity") b.hidden = true;
        if ((action === "rotate" || action === "edit" || action === "toggle") && st.cls === "grace") b.hidden = true;
        if (action === "rotate" && st.cls === "disabled") b.hidden = true;
        b.addEventListener("click", () => onAction(action, key, b));
      }
      list.append(li);
    }
    box.replaceChildren(list);
  }

  function onAction(action, key, button) {
    if (action === "activity") openActivity(key);
    if (action === "rotate") confirmRotate(key, button);
    if (action === "revoke") confirmRevoke(key, button);
    if (action === "edit") openEdit(key);
    if (action === "toggle") toggle(key);
  }

  // ---- Dialogs ------------------------------------------------------------

  let lastFocus = null;

  function openDialog(dialog, focus) {
    lastFocus = document.activeElement;
    dialog.showModal();
    if (focus) focus.focus();
  }

  function closeDialog(dialog) {
    // The token goes at the same moment as its dialog, not a task later.
    if (dialog.id === "token-dialog") forgetToken();
    if (dialog.open) dialog.close();
  }

  /** Keep Tab inside an open dialog (showModal makes the rest inert; this
   *  also wraps around instead of leaving for the browser's chrome). */
  function trapFocus(dialog) {
    dialog.addEventListener("keydown", (ev) => {
      if (ev.key !== "Tab") return;
      const items = [...dialog.querySelectorAll("button, input, select, textarea, [href], [tabindex]:not([tabindex='-1'])")]
        .filter((el) => !el.disabled && !el.hidden && el.offsetParent !== null);
      if (items.length === 0) return;
      const first = items[0];
      const last = items[items.length - 1];
      if (ev.shiftKey && document.activeElement === first) {
        last.focus();
        ev.preventDefault();
      } else if (!ev.shiftKey && document.activeElement === last) {
        first.focus();
        ev.preventDefault();
      }
    });
    dialog.addEventListener("close", () => {
      // Back to where the person was, unless another dialog took over.
      if (document.querySelector("dialog[open]")) return;
      if (lastFocus && document.contains(lastFocus)) lastFocus.focus();
    });
    for (const b of dialog.querySelectorAll("[data-close]")) {
      b.addEventListener("click", () => closeDialog(dialog));
    }
  }

  // ---- New key ------------------------------------------------------------

  async function loadOptions() {
    if (state.options) return state.options;
    state.options = await api("GET", "/options");
    return state.options;
  }

  async function openCreate() {
    const form = $("create-form");
    form.reset();
    $("create-error").textContent = "";
    $("custom-date-field").hidden = true;
    const list = $("scope-list");
    list.replaceChildren(text("p", "Loading scopes…", "muted"));
    openDialog($("create-dialog"), $("key-name"));
    try {
      const options = await loadOptions();
      renderScopes(options);
    } catch (e) {
      list.replaceChildren(failed("The scopes could not be loaded: " + e.message));
    }
  }

  function renderScopes(options) {
    const list = $("scope-list");
    list.replaceChildren();
    if (options.scopes.length === 0) list.append(text("p", "This service has no scopes to grant.", "muted"));
    options.scopes.forEach((scope, i) => {
      const row = document.createElement("div");
      row.className = "scope" + (scope.grantable ? "" : " unavailable");
      const input = document.createElement("input");
      input.type = "checkbox";
      input.id = "scope-" + i;
      input.value = scope.name;
      input.name = "scope";
      input.disabled = !scope.grantable;
      const label = document.createElement("label");
      label.htmlFor = input.id;
      label.append(text("code", scope.name));
      row.append(input, label);
      const help = scope.description || (scope.grantable ? "" : "");
      const note = scope.grantable ? help : (help ? help + " " : "") + "(You may not grant this scope.)";
      if (note) {
        const p = text("p", note, "help");
        p.id = "scope-help-" + i;
        input.setAttribute("aria-describedby", p.id);
        row.append(p);
      }
      list.append(row);
    });
  }

  function expiryFromForm() {
    const choice = $("expiry").value;
    if (choice === "never") return null;
    if (choice === "custom") {
      const v = $("custom-date").value;
      if (!v) throw new Error("Choose the expiry date.");
      const d = new Date(v + "T23:59:59");
      if (isNaN(d.getTime()) || d.getTime() <= Date.now()) throw new Error("The expiry date must be in the future.");
      return d.toISOString();
    }
    return new Date(Date.now() + Number(choice) * DAY).toISOString();
  }

  async function submitCreate(ev) {
    ev.preventDefault();
    const error = $("create-error");
    error.textContent = "";
    const name = $("key-name").value.trim();
    if (!name) {
      error.textContent = "Give the key a name.";
      $("key-name").focus();
      return;
    }
    let expires_at;
    try {
      expires_at = expiryFromForm();
    } catch (e) {
      error.textContent = e.message;
      return;
    }
    const scopes = [...document.querySelectorAll("#scope-list input:checked")].map((i) => i.value);
    const submit = $("create-submit");
    submit.disabled = true;
    submit.textContent = "Creating…";
    try {
      const created = await api("POST", "", { name, scopes, expires_at });
      closeDialog($("create-dialog"));
      showToken(created, null);
      setStatus("Key “" + created.name + "” created.");
      await loadKeys();
    } catch (e) {
      error.textContent = e.message;
    } finally {
      submit.disabled = false;
      submit.textContent = "Create key";
    }
  }

  // ---- The token, shown once ----------------------------------------------

  function showToken(created, graceText) {
    $("token-title").textContent = graceText ? "Your replacement key" : "Your new key";
    $("token-value").textContent = created.token;
    $("token-grace").textContent = graceText || "";
    $("copy-status").textContent = "";
    openDialog($("token-dialog"), $("copy-token"));
  }

  async function copyToken() {
    const value = $("token-value").textContent;
    try {
      await navigator.clipboard.writeText(value);
      $("copy-status").textContent = "Copied.";
    } catch (e) {
      const range = document.createRange();
      range.selectNodeContents($("token-value"));
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      $("copy-status").textContent = "Selected: press Ctrl+C (⌘C) to copy.";
    }
  }

  function forgetToken() {
    // Gone from the page once the dialog closes.
    $("token-value").textContent = "";
    $("copy-status").textContent = "";
    const sel = window.getSelection();
    if (sel) sel.removeAllRanges();
  }

  // ---- Rotate and revoke --------------------------------------------------

  let confirmAction = null;

  function openConfirm(title, message, okLabel, action, withGrace) {
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = message;
    $("confirm-ok").textContent = okLabel;
    $("confirm-error").textContent = "";
    $("grace-field").hidden = !withGrace;
    confirmAction = action;
    openDialog($("confirm-dialog"), withGrace ? $("grace") : $("confirm-ok"));
  }

  function graceChoices(max) {
    const all = [
      [0, "No grace: it stops now"], [3600, "1 hour"], [86400, "1 day"], [7 * 86400, "7 days"],
    ];
    const select = $("grace");
    select.replaceChildren();
    for (const [secs, label] of all) {
      if (secs > max) continue;
      const o = document.createElement("option");
      o.value = String(secs);
      o.textContent = label;
      select.append(o);
    }
    if (select.options.length > 1) select.selectedIndex = 1;
  }

  async function confirmRotate(key) {
    try {
      const options = await loadOptions();
      graceChoices(options.max_grace_seconds);
    } catch (e) {
      graceChoices(0);
    }
    openConfirm(
      "Rotate “" + key.name + "”?",
      "A new key with the same name and scopes replaces it. The old key keeps working for the grace period you choose, so you can update what uses it.",
      "Rotate key",
      async () => {
        const grace = Number($("grace").value);
        const created = await api("POST", "/" + encodeURIComponent(key.id) + "/rotate", { grace_seconds: grace });
        const ends = created.previous_key_ends_at ? new Date(created.previous_key_ends_at) : null;
        const note = ends && grace > 0
          ? "The old key keeps working until " + exact.format(ends) + "."
          : "The old key no longer works.";
        setStatus("Key “" + key.name + "” rotated.");
        return () => showToken(created, note);
      },
      true
    );
  }

  function confirmRevoke(key) {
    openConfirm(
      "Revoke “" + key.name + "”?",
      "Anything using this key is refused from its next request. This cannot be undone.",
      "Revoke key",
      async () => {
        await api("DELETE", "/" + encodeURIComponent(key.id));
        setStatus("Key “" + key.name + "” revoked.");
        return null;
      },
      false
    );
  }

  // ---- Edit, disable and enable -------------------------------------------

  let editing = null;

  function openEdit(key) {
    editing = key;
    $("edit-title").textContent = "Edit “" + key.name + "”";
    $("edit-name").value = key.name;
    $("edit-error").textContent = "";
    const box = $("edit-scopes");
    box.replaceChildren();
    if (key.scopes.length === 0) box.append(text("p", "This key has no scopes.", "help"));
    for (const s of key.scopes) {
      const label = document.createElement("label");
      label.className = "scope";
      const input = document.createElement("input");
      input.type = "checkbox";
      input.value = s;
      input.checked = true;
      label.append(input, text("code", s));
      box.append(label);
    }
    openDialog($("edit-dialog"), $("edit-name"));
  }

  async function submitEdit(ev) {
    ev.preventDefault();
    const key = editing;
    const name = $("edit-name").value.trim();
    if (!name) {
      $("edit-error").textContent = "Give the key a name.";
      $("edit-name").focus();
      return;
    }
    const scopes = [...$("edit-scopes").querySelectorAll("input:checked")].map((i) => i.value);
    const body = {};
    if (name !== key.name) body.name = name;
    if (scopes.length !== key.scopes.length) body.scopes = scopes;
    const submit = $("edit-submit");
    submit.disabled = true;
    try {
      if (Object.keys(body).length > 0) {
        await api("PATCH", "/" + encodeURIComponent(key.id), body);
        setStatus("Key “" + name + "” saved.");
      }
      closeDialog($("edit-dialog"));
      await loadKeys();
    } catch (e) {
      $("edit-error").textContent = e.message;
    } finally {
      submit.disabled = false;
    }
  }

  async function toggle(key) {
    const enable = key.state === "disabled";
    const patch = async () => {
      await api("PATCH", "/" + encodeURIComponent(key.id), { enabled: enable });
      setStatus("Key “" + key.name + "” " + (enable ? "enabled." : "disabled."));
      return null;
    };
    if (!enable) {
      openConfirm(
        "Disable “" + key.name + "”?",
        "Anything using this key is refused from its next request, until you enable it again.",
        "Disable key",
        patch,
        false
      );
      return;
    }
    try {
      await patch();
      await loadKeys();
    } catch (e) {
      setStatus("The key could not be enabled: " + e.message);
    }
  }

  async function submitConfirm(ev) {
    ev.preventDefault();
    const ok = $("confirm-ok");
    ok.disabled = true;
    try {
      const then = await confirmAction();
      closeDialog($("confirm-dialog"));
      await loadKeys();
      if (then) then();
    } catch (e) {
      $("confirm-error").textContent = e.message;
    } finally {
      ok.disabled = false;
    }
  }

  // ---- Activity -----------------------------------------------------------

  function openActivity(key) {
    state.activityKey = key;
    state.cursor = null;
    $("activity").hidden = false;
    $("activity-heading").textContent = "Activity of “" + key.name + "”";
    for (const li of document.querySelectorAll(".key")) li.classList.toggle("selected", li.dataset.id === key.id);
    $("events").replaceChildren(text("p", "Loading activity…", "loading"));
    $("more").hidden = true;
    $("activity-heading").focus();
    loadChart();
    loadEvents(false);
  }

  function closeActivity() {
    const id = state.activityKey && state.activityKey.id;
    state.activityKey = null;
    $("activity").hidden = true;
    for (const li of document.querySelectorAll(".key")) li.classList.remove("selected");
    const back = id && document.querySelector('.key[data-id="' + CSS.escape(id) + '"] [data-action="activity"]');
    if (back) back.focus();
  }

  async function loadEvents(more) {
    const key = state.activityKey;
    if (!key) return;
    const box = $("events");
    const params = new URLSearchParams({ limit: "25" });
    if (more && state.cursor) params.set("before", String(state.cursor));
    $("more").disabled = true;
    try {
      const page = await api("GET", "/" + encodeURIComponent(key.id) + "/activity?" + params);
      if (state.activityKey !== key) return;
      state.cursor = page.next_cursor;
      if (!more) box.replaceChildren();
      if (!more && page.events.length === 0) {
        box.append(text("p", "No requests with this key yet.", "empty"));
      } else {
        let table = box.querySelector("table");
        if (!table) {
          table = eventsTable();
          box.append(table);
        }
        const body = table.tBodies[0];
        for (const e of page.events) body.append(eventRow(e));
      }
      $("more").hidden = !page.next_cursor;
    } catch (e) {
      box.replaceChildren(failed("The activity could not be loaded: " + e.message, () => loadEvents(false)));
    } finally {
      $("more").disabled = false;
    }
  }

  const COLUMNS = ["Time", "Outcome", "Method", "Path", "Status", "Client", "User agent", "Actor", "Subject"];

  function eventsTable() {
    const table = document.createElement("table");
    table.className = "events";
    table.append(text("caption", "Requests, newest first"));
    table.caption.className = "muted";
    const head = table.createTHead().insertRow();
    for (const c of COLUMNS) {
      const th = text("th", c);
      th.scope = "col";
      head.append(th);
    }
    table.createTBody();
    return table;
  }

  function eventRow(e) {
    const tr = document.createElement("tr");
    const cell = (i, content, cls) => {
      const td = document.createElement("td");
      td.dataset.label = COLUMNS[i];
      if (cls) td.className = cls;
      if (content instanceof Node) td.append(content);
      else td.textContent = content == null || content === "" ? "—" : String(content);
      tr.append(td);
    };
    cell(0, timeEl(e.at));
    const outcome = e.outcome === "success" ? "Allowed" : "Refused" + (e.reason ? " (" + e.reason.replace(/_/g, " ") + ")" : "");
    cell(1, outcome, "outcome-" + e.outcome);
    cell(2, e.method);
    cell(3, e.path);
    cell(4, e.status);
    cell(5, e.client_ip);
    cell(6, e.user_agent);
    cell(7, e.actor);
    cell(8, e.subject);
    return tr;
  }

  async function loadChart() {
    const key = state.activityKey;
    if (!key) return;
    const bucket = $("range").value;
    const days = bucket === "hour" ? 7 : 30;
    const since = new Date(Date.now() - days * DAY).toISOString();
    const box = $("chart");
    box.setAttribute("aria-busy", "true");
    try {
      const data = await api("GET", "/" + encodeURIComponent(key.id) + "/usage?" + new URLSearchParams({ bucket, since }));
      if (state.activityKey !== key) return;
      box.replaceChildren(drawChart(data.buckets, bucket));
    } catch (e) {
      box.replaceChildren(failed("The chart could not be loaded: " + e.message, loadChart));
    } finally {
      box.setAttribute("aria-busy", "false");
    }
  }

  const SVG = "http://www.w3.org/2000/svg";
  const SERIES = ["success", "refused", "rate_limited"];

  /** Stacked bars per bucket, drawn as inline SVG. */
  function drawChart(buckets, bucket) {
    const W = 720, H = 160, left = 34, bottom = 20, top = 8;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.id = "usage-chart";
    const total = buckets.reduce((n, b) => n + b.success + b.refused + b.rate_limited, 0);
    const max = Math.max(1, ...buckets.map((b) => b.success + b.refused + b.rate_limited));
    const title = document.createElementNS(SVG, "title");
    title.textContent = total + " requests in the last " + (bucket === "hour" ? "7 days, per hour" : "30 days, per day") +
      ": " + SERIES.map((s) => buckets.reduce((n, b) => n + b[s], 0) + " " + s.replace("_", " ")).join(", ");
    svg.append(title);
    svg.setAttribute("aria-label", title.textContent);
    const plotW = W - left, plotH = H - top - bottom;
    const step = plotW / Math.max(1, buckets.length);
    const axis = (x1, y1, x2, y2) => {
      const l = document.createElementNS(SVG, "line");
      l.setAttribute("x1", x1); l.setAttribute("y1", y1); l.setAttribute("x2", x2); l.setAttribute("y2", y2);
      l.setAttribute("class", "axis");
      svg.append(l);
    };
    axis(left, top + plotH, W, top + plotH);
    axis(left, top, left, top + plotH);
    const label = (x, y, value, anchor) => {
      const t = document.createElementNS(SVG, "text");
      t.setAttribute("x", x); t.setAttribute("y", y);
      t.setAttribute("text-anchor", anchor);
      t.textContent = value;
      svg.append(t);
    };
    label(left - 4, top + 10, String(max), "end");
    label(left - 4, top + plotH, "0", "end");
    buckets.forEach((b, i) => {
      let y = top + plotH;
      for (const s of SERIES) {
        if (!b[s]) continue;
        const h = (b[s] / max) * plotH;
        y -= h;
        const r = document.createElementNS(SVG, "rect");
        r.setAttribute("x", (left + i * step + step * 0.1).toFixed(2));
        r.setAttribute("width", Math.max(0.5, step * 0.8).toFixed(2));
        r.setAttribute("y", y.toFixed(2));
        r.setAttribute("height", h.toFixed(2));
        r.setAttribute("class", "bar " + s);
        const tip = document.createElementNS(SVG, "title");
        tip.textContent = exact.format(new Date(b.start)) + ": " + b[s] + " " + s.replace("_", " ");
        r.append(tip);
        svg.append(r);
      }
    });
    if (buckets.length) {
      label(left, H - 4, dateOnly.format(new Date(buckets[0].start)), "start");
      label(W, H - 4, dateOnly.format(new Date(buckets[buckets.length - 1].start)), "end");
    }
    const wrap = document.createElement("figure");
    wrap.append(svg);
    if (total === 0) wrap.append(text("figcaption", "No requests in this period.", "muted"));
    return wrap;
  }

  // ---- Who is signed in ---------------------------------------------------

  async function showOwner() {
    const who = $("signed-in-as");
    if (!who) return;
    try {
      const options = await loadOptions();
      if (options.owner) who.textContent = "Signed in as " + options.owner;
    } catch (e) {
      who.textContent = "";
    }
  }

  // ---- Bearer mode --------------------------------------------------------

  function bearerForm(error) {
    const form = document.createElement("form");
    form.className = "bearer";
    const had = sessionStorage.getItem(BEARER_KEY);
    form.append(text("p", had
      ? "That key cannot manage keys here: " + error.message
      : "Sign in with one of your API keys that may manage keys. It is kept in this browser tab only, until you close it or forget it."));
    const label = text("label", "API key");
    label.htmlFor = "bearer-token";
    const input = document.createElement("input");
    input.id = "bearer-token";
    input.type = "password";
    input.autocomplete = "off";
    input.required = true;
    const button = text("button", "Use this key", "primary");
    button.type = "submit";
    form.append(label, input, button);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = input.value.trim();
      if (!value) return;
      sessionStorage.setItem(BEARER_KEY, value);
      input.value = "";
      state.options = null;
      loadKeys();
      showOwner();
    });
    setTimeout(() => input.focus(), 0);
    return form;
  }

  /** Bearer mode: "New key" and "Forget key" only once a key is in use. */
  function showSignedIn(signed) {
    if (!BEARER) return;
    $("new-key").hidden = !signed;
    const forget = $("forget-bearer");
    if (forget) forget.hidden = !signed;
  }

  function forgetBearer() {
    sessionStorage.removeItem(BEARER_KEY);
    state.options = null;
    state.keys = [];
    const who = $("signed-in-as");
    if (who) who.textContent = "";
    loadKeys();
  }

  // ---- Wiring -------------------------------------------------------------

  function start() {
    for (const d of document.querySelectorAll("dialog")) trapFocus(d);
    $("new-key").addEventListener("click", openCreate);
    $("create-form").addEventListener("submit", submitCreate);
    $("expiry").addEventListener("change", () => {
      const custom = $("expiry").value === "custom";
      $("custom-date-field").hidden = !custom;
      if (custom) {
        const min = new Date(Date.now() + DAY);
        $("custom-date").min = min.toISOString().slice(0, 10);
      }
    });
    $("copy-token").addEventListener("click", copyToken);
    $("token-dialog").addEventListener("cancel", forgetToken);
    $("token-dialog").addEventListener("close", forgetToken);
    $("confirm-form").addEventListener("submit", submitConfirm);
    $("edit-form").addEventListener("submit", submitEdit);
    $("edit-dialog").addEventListener("close", () => { editing = null; });
    $("confirm-dialog").addEventListener("close", () => { confirmAction = null; });
    $("activity-close").addEventListener("click", closeActivity);
    $("range").addEventListener("change", loadChart);
    $("more").addEventListener("click", () => loadEvents(true));
    if (BEARER) {
      const nav = document.querySelector(".top nav");
      const forget = text("button", "Forget key", "ghost");
      forget.type = "button";
      forget.id = "forget-bearer";
      forget.addEventListener("click", forgetBearer);
      if (nav) nav.append(forget);
      showSignedIn(false);
    }
    loadKeys();
    showOwner();
  }

  start();
})();
