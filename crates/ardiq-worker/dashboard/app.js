// The ArdiQ dashboard: a static page that reads the JSON API under `api/` (relative, so it
// works under a reverse proxy's prefix) and polls it every 2 s while the tab is visible.
//
// Safety rule: everything shown comes from Redis (task names, errors, ids, worker names)
// and is untrusted. The page builds its DOM with createElement and textContent only;
// nothing is ever assigned to innerHTML, and links are only ever built here from
// encodeURIComponent'd parts of our own hash routes.
"use strict";

(() => {
  const POLL_MS = 2000;
  const PAGE_SIZE = 20;
  const CHART_MINUTES = 30; // the chart's window at most
  const CHART_MIN_MINUTES = 10; // and at least
  const SVG_NS = "http://www.w3.org/2000/svg";

  // ---------------------------------------------------------------------------------------
  // DOM helpers

  /** Build an element. `props` keys: class, text, title, href (hash routes only), id,
   * type, value, for, hidden, disabled, attrs (plain attributes), on (event listeners). */
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (value === undefined || value === null || value === false) continue;
        switch (key) {
          case "class":
            el.className = value;
            break;
          case "text":
            el.textContent = String(value);
            break;
          case "href":
            if (!String(value).startsWith("#")) throw new Error("only hash links are built");
            el.setAttribute("href", value);
            break;
          case "on":
            for (const [event, fn] of Object.entries(value)) el.addEventListener(event, fn);
            break;
          case "attrs":
            for (const [name, v] of Object.entries(value)) {
              if (/^on/i.test(name) || name === "style") throw new Error(`refused attribute ${name}`);
              if (v !== undefined && v !== null && v !== false) el.setAttribute(name, String(v));
            }
            break;
          case "for":
            el.htmlFor = value;
            break;
          default:
            el[key] = value;
        }
      }
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function svg(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [name, v] of Object.entries(attrs || {})) {
      if (/^on/i.test(name) || name === "style") throw new Error(`refused attribute ${name}`);
      el.setAttribute(name, String(v));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function clear(el) {
    el.replaceChildren();
    return el;
  }

  /** Replace `el`'s content with `build()` unless `key` (the data it shows) is unchanged:
   * a refresh that changed nothing keeps the DOM as it was (focus, selection, and the
   * elements a screen reader or a test holds stay valid). */
  function fill(el, key, build) {
    const text = JSON.stringify(key);
    if (el.dataset.key === text) return;
    el.dataset.key = text;
    el.replaceChildren(...[build()].flat(Infinity).filter((c) => c));
  }

  // ---------------------------------------------------------------------------------------
  // Formatting

  // The server's clock minus ours, from the last response that told the server time:
  // ages are computed on the server's clock (workers stamp heartbeats with Redis time).
  let clockSkew = 0;
  const serverNow = () => Date.now() + clockSkew;

  function noteServerTime(ms) {
    if (typeof ms === "number" && ms > 0) clockSkew = ms - Date.now();
  }

  const num = new Intl.NumberFormat();
  const fmtNum = (n) => (typeof n === "number" ? num.format(n) : "–");

  function fmtDuration(ms) {
    if (typeof ms !== "number" || !isFinite(ms)) return "–";
    const neg = ms < 0;
    ms = Math.abs(ms);
    let out;
    if (ms < 1000) out = `${Math.round(ms)} ms`;
    else if (ms < 60_000) out = `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
    else if (ms < 3_600_000) out = `${Math.floor(ms / 60_000)} min ${Math.floor((ms % 60_000) / 1000)} s`;
    else if (ms < 86_400_000) out = `${Math.floor(ms / 3_600_000)} h ${Math.floor((ms % 3_600_000) / 60_000)} min`;
    else out = `${Math.floor(ms / 86_400_000)} d ${Math.floor((ms % 86_400_000) / 3_600_000)} h`;
    return neg ? `-${out}` : out;
  }

  function fmtTime(ms) {
    if (typeof ms !== "number" || ms <= 0) return "–";
    const d = new Date(ms);
    const today = new Date(serverNow()).toDateString() === d.toDateString();
    return today
      ? d.toLocaleTimeString([], { hour12: false })
      : d.toLocaleString([], { hour12: false });
  }

  /** "12 s ago" / "in 3 s", relative to the server's clock, coarse enough to stay put. */
  function fmtRelative(ms) {
    if (typeof ms !== "number" || ms <= 0) return "–";
    const delta = ms - serverNow();
    if (Math.abs(delta) < 1000) return "just now";
    return delta < 0 ? `${fmtDuration(-delta - (-delta % 1000))} ago` : `in ${fmtDuration(delta - (delta % 1000))}`;
  }

  /** A <time> showing a time, with the other form (absolute / relative) as its tooltip. */
  function timeEl(ms, relative) {
    if (typeof ms !== "number" || ms <= 0) return h("span", { class: "muted", text: "–" });
    const iso = new Date(ms).toISOString();
    return h("time", {
      attrs: { datetime: iso },
      title: relative ? new Date(ms).toLocaleString() : fmtRelative(ms),
      text: relative ? fmtRelative(ms) : fmtTime(ms),
    });
  }

  /** The first of `names` that `o` has (records come with short or spelled-out names). */
  const pick = (o, ...names) => names.map((n) => o[n]).find((v) => v !== undefined && v !== null);

  const times = (n, verb) => (n === 1 ? `${verb} once` : `${verb} ${fmtNum(n)} times`);

  const firstLine = (s) => (typeof s === "string" ? s.split("\n", 1)[0] : "");

  /** Errors can be long tracebacks: the first line shows, the rest is one click away. */
  function errorEl(text) {
    if (!text) return h("span", { class: "muted", text: "–" });
    const line = firstLine(text);
    if (line === text && text.length <= 160) return h("span", { class: "error-text", text });
    return h(
      "details",
      { class: "error-details" },
      h("summary", { class: "error-text", text: line.length > 160 ? `${line.slice(0, 160)}…` : line }),
      h("pre", { class: "error-full", text }),
    );
  }

  const STATUS_LABELS = {
    queued: "queued",
    running: "running",
    scheduled: "scheduled",
    complete: "complete",
    dead: "dead",
    not_found: "not found",
    ok: "finished",
    fail: "failed",
    retry: "retried",
    expired: "expired",
    abort: "aborted",
    aborted: "aborted",
    lost: "lost",
  };

  function badge(kind, label) {
    const k = String(kind || "unknown");
    return h("span", { class: `badge badge-${k.replace(/[^a-z_]/g, "")}`, text: label || STATUS_LABELS[k] || k });
  }

  // ---------------------------------------------------------------------------------------
  // Routes: #/ (overview), #/queue/<q> (queue), #/queue/<q>/job/<id> (job)

  const enc = encodeURIComponent;
  const routes = {
    overview: () => "#/",
    queue: (q) => `#/queue/${enc(q)}`,
    job: (q, id) => `#/queue/${enc(q)}/job/${enc(id)}`,
  };

  function parseRoute() {
    const raw = location.hash.replace(/^#\/?/, "");
    let parts;
    try {
      parts = raw === "" ? [] : raw.split("/").map(decodeURIComponent);
    } catch {
      parts = null;
    }
    if (parts && parts.length === 0) return { name: "overview" };
    if (parts && parts[0] === "queue" && parts.length === 2 && parts[1]) return { name: "queue", queue: parts[1] };
    if (parts && parts[0] === "queue" && parts.length === 4 && parts[2] === "job" && parts[1] && parts[3]) {
      return { name: "job", queue: parts[1], id: parts[3] };
    }
    return { name: "missing" };
  }

  // ---------------------------------------------------------------------------------------
  // The API

  class AuthRequired extends Error {}
  class ApiError extends Error {
    constructor(status, message, body = null) {
      super(message);
      this.status = status;
      this.body = body; // the JSON answer, when there was one
    }
  }

  const qpath = (q) => `queues/${enc(q)}`;

  async function api(path, options = {}) {
    const headers = { Accept: "application/json" };
    const init = { method: options.method || "GET", headers, credentials: "same-origin", cache: "no-store" };
    if (init.method !== "GET") {
      // Actions carry this header: a cross-site form or image cannot set it.
      headers["X-Ardiq-Action"] = "1";
      if (options.json !== undefined) {
        headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(options.json);
      }
    }
    let res;
    try {
      res = await fetch(`api/${path}`, init);
    } catch {
      throw new ApiError(0, "cannot reach the dashboard server");
    }
    if (res.status === 401) throw new AuthRequired("authentication required");
    let body = null;
    const type = res.headers.get("Content-Type") || "";
    if (type.includes("json")) {
      try {
        body = await res.json();
      } catch {
        body = null;
      }
    }
    if (!res.ok) {
      const message = body && typeof body.error === "string" ? body.error : `${res.status} ${res.statusText}`;
      throw new ApiError(res.status, message, body);
    }
    if (body && typeof body.server_ms === "number") noteServerTime(body.server_ms);
    else if (body && typeof body.now_ms === "number") noteServerTime(body.now_ms);
    return body;
  }

  // ---------------------------------------------------------------------------------------
  // Page state

  const state = {
    config: null, // api/config
    readOnly: true, // until api/config says otherwise: never show an action by mistake
    view: null, // { refresh(), dispose?() }
    generation: 0, // bumped on every navigation; stale responses are dropped
    timer: null,
    inFlight: false,
  };

  const $ = (id) => document.getElementById(id);

  let statusTimer = null;
  function say(message, kind = "info", sticky = false) {
    const el = $("status");
    clear(el);
    delete el.dataset.refresh;
    el.className = `status status-${kind}`;
    if (message) el.append(h("span", { text: message }));
    clearTimeout(statusTimer);
    if (message && !sticky) statusTimer = setTimeout(() => say(""), 6000);
  }

  function setTitle(...parts) {
    document.title = [...parts, "ArdiQ dashboard"].filter(Boolean).join(" · ");
  }

  // ---------------------------------------------------------------------------------------
  // Polling: every POLL_MS while the tab is visible; a hidden tab polls nothing.

  function schedule(delay = POLL_MS) {
    clearTimeout(state.timer);
    state.timer = null;
    if (document.hidden) return; // visibilitychange restarts it
    state.timer = setTimeout(tick, delay);
  }

  async function tick() {
    state.timer = null;
    if (document.hidden || !state.view) return;
    if (state.inFlight) return schedule();
    const generation = state.generation;
    state.inFlight = true;
    try {
      await state.view.refresh(generation);
      if (generation === state.generation) {
        $("updated").textContent = `updated ${new Date().toLocaleTimeString([], { hour12: false })}`;
        if ($("status").dataset.refresh) say(""); // the trouble is over
      }
    } catch (err) {
      if (generation === state.generation) handleError(err, true);
    } finally {
      state.inFlight = false;
    }
    if (generation === state.generation && !(state.view && state.view.isLogin)) schedule();
  }

  function refreshNow() {
    clearTimeout(state.timer);
    state.timer = null;
    if (state.inFlight) {
      schedule(100);
      return;
    }
    tick();
  }

  /** Shows what went wrong. `refreshing`: a poll failed, and the message goes away with
   * the next poll that works (an action's failure stays until the next message). */
  function handleError(err, refreshing = false) {
    if (err instanceof AuthRequired) {
      showLogin();
      return;
    }
    if (err instanceof ApiError && err.status === 0) {
      say("Cannot reach the dashboard server; retrying…", "offline", true);
    } else {
      say(err.message || String(err), "error", true);
    }
    if (refreshing || err.status === 0) $("status").dataset.refresh = "1";
  }

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      clearTimeout(state.timer);
      state.timer = null;
    } else if (state.view && !state.view.isLogin) {
      refreshNow();
    }
  });

  // ---------------------------------------------------------------------------------------
  // Navigation

  async function loadConfig() {
    const config = await api("config");
    state.config = config || {};
    state.readOnly = Boolean(state.config.read_only);
    $("mode").textContent = state.readOnly ? "Read-only: actions are turned off" : "";
    $("mode").className = state.readOnly ? "mode-ro" : "";
    $("version").textContent = [state.config.version ? `ArdiQ ${state.config.version}` : "", state.config.redis || ""].filter(Boolean).join(" · ");
    renderSignOut();
    renderQueueNav(Array.isArray(state.config.queues) ? state.config.queues : []);
    return state.config;
  }

  /** The queue names the dashboard serves, for the header's links and the job search. */
  function renderQueueNav(names) {
    const list = $("queue-links");
    fill(list, names, () =>
      names.map((q) => h("li", null, h("a", { href: routes.queue(q), text: q, class: "queue-link" }))),
    );
    const select = $("job-search-queue");
    fill(select, names, () => names.map((q) => h("option", { value: q, text: q })));
    $("job-search").hidden = names.length === 0;
    markCurrentNav();
  }

  function markCurrentNav() {
    const route = parseRoute();
    for (const a of $("queue-links").querySelectorAll("a")) {
      const current = route.queue !== undefined && a.textContent === route.queue;
      if (current) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    if (route.queue !== undefined) {
      const select = $("job-search-queue");
      if ([...select.options].some((o) => o.value === route.queue)) select.value = route.queue;
    }
  }

  async function navigate() {
    state.generation += 1;
    if (state.view && state.view.dispose) state.view.dispose();
    state.view = null;
    clearTimeout(state.timer);
    const main = $("main");
    try {
      if (state.config === null) await loadConfig();
    } catch (err) {
      handleError(err);
      if (err instanceof ApiError) {
        clear(main).append(h("p", { class: "muted", text: "The dashboard server did not answer." }));
        schedule(); // a later tick retries through navigate()
        state.view = { refresh: () => navigate().then(() => undefined) };
      }
      return;
    }
    document.body.classList.remove("logged-out");
    const route = parseRoute();
    markCurrentNav();
    let view;
    if (route.name === "overview") view = overviewView(main);
    else if (route.name === "queue") view = queueView(main, route.queue);
    else if (route.name === "job") view = jobView(main, route.queue, route.id);
    else view = missingView(main);
    state.view = view;
    refreshNow();
  }

  window.addEventListener("hashchange", () => {
    navigate();
    $("main").focus({ preventScroll: true });
    window.scrollTo(0, 0);
  });

  $("job-search").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("job-search-id").value.trim();
    const q = $("job-search-queue").value;
    if (!id || !q) return;
    location.hash = routes.job(q, id);
    $("job-search-id").value = "";
  });

  // ---------------------------------------------------------------------------------------
  // Shared pieces

  function section(title, ...children) {
    const id = `sec-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
    return h(
      "section",
      { class: "card", attrs: { "aria-labelledby": id } },
      h("h2", { id, text: title }),
      ...children,
    );
  }

  /** A table: `columns` is [[header, className?]], rows are arrays of cells (Node or text).
   * On a narrow screen each row becomes a block of labelled lines, unless `compact`. */
  function table(caption, columns, rows, emptyText, compact = false) {
    if (rows.length === 0) return h("p", { class: "empty muted", text: emptyText });
    return h(
      "div",
      { class: "table-wrap", attrs: { role: "region", "aria-label": caption, tabindex: 0 } },
      h(
        "table",
        { class: compact ? "compact" : null },
        h("caption", { class: "visually-hidden", text: caption }),
        h("thead", null, h("tr", null, columns.map(([label, cls]) => h("th", { class: cls, text: label, attrs: { scope: "col" } })))),
        h(
          "tbody",
          null,
          // data-label: narrow screens show each row as a block of "label value" lines.
          rows.map((cells) => h("tr", null, cells.map((cell, i) =>
            h("td", { class: columns[i][1], attrs: { "data-label": columns[i][0] } }, cell)))),
        ),
      ),
    );
  }

  /** Paging state of one list. The API pages some lists by offset and others by cursor
   * (`next` of a page is where the following one starts): both keep the cursors seen so
   * far, so "newer" goes back exactly one page. */
  function newPage() {
    return { cursors: [null], index: 0 };
  }

  function pageCursor(page) {
    return page.cursors[page.index];
  }

  /** Newer / older buttons and where this page sits. `next` is the cursor of the following
   * page (null on the last); `total`, when the API tells it, is the length of the list. */
  function pager(label, page, next, total, shownCount, onChange) {
    if (page.index === 0 && next === null) return null;
    const first = page.index * PAGE_SIZE;
    let info = `page ${page.index + 1}`;
    if (shownCount > 0) {
      info = `${fmtNum(first + 1)}–${fmtNum(first + shownCount)}`;
      if (typeof total === "number") info += ` of ${fmtNum(total)}`;
    }
    return h(
      "nav",
      { class: "pager", attrs: { "aria-label": `${label} pages` } },
      h("button", {
        type: "button",
        class: "secondary",
        text: "← Newer",
        disabled: page.index === 0,
        on: {
          click: () => {
            page.index -= 1;
            onChange();
          },
        },
      }),
      h("span", { class: "pager-info", text: info }),
      h("button", {
        type: "button",
        class: "secondary",
        text: "Older →",
        disabled: next === null,
        on: {
          click: () => {
            page.cursors.length = page.index + 1;
            page.cursors.push(next);
            page.index += 1;
            onChange();
          },
        },
      }),
    );
  }

  /** The `next` of an offset-paged answer: the following offset, or null at the end. */
  function nextOffset(page, total) {
    const offset = pageCursor(page) || 0;
    return offset + PAGE_SIZE < total ? offset + PAGE_SIZE : null;
  }

  /** A button running a POST action; the page refreshes when it is done. */
  function actionButton(label, accessibleLabel, run, cls = "secondary") {
    if (state.readOnly) return null;
    const button = h("button", { type: "button", class: cls, text: label, attrs: { "aria-label": accessibleLabel } });
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const message = await run();
        if (message) say(message, "ok");
      } catch (err) {
        handleError(err);
      } finally {
        button.disabled = false;
        refreshNow();
      }
    });
    return button;
  }

  const post = (path, json) => api(path, { method: "POST", json });

  function taskLink(queue, id, text) {
    return h("a", { href: routes.job(queue, id), text: text || id, class: "task-link" });
  }

  /** Count a lane's rows up into a queue's totals. */
  function totals(queue) {
    const t = { waiting: 0, pending: 0, running: 0 };
    for (const lane of queue.lanes || []) {
      t.waiting += lane.waiting || 0;
      t.pending += lane.pending || 0;
      t.running += lane.running || 0;
    }
    return t;
  }

  /** Pause or resume a queue (lane null) or one lane; null when read-only. */
  function pauseButton(queue, lane, paused) {
    const what = lane === null ? `queue ${queue}` : `lane ${lane}`;
    const verb = paused ? "resume" : "pause";
    const label = `${paused ? "Resume" : "Pause"}${lane === null ? " queue" : ""}`;
    const query = lane === null ? "" : `?lane=${enc(lane)}`;
    const button = actionButton(label, `${label} ${what}`, async () => {
      await post(`${qpath(queue)}/${verb}${query}`);
      return `${paused ? "Resumed" : "Paused"} ${what}`;
    }, "secondary small");
    if (button) button.setAttribute("data-action", verb);
    return button;
  }

  /** The queue's paused state and its Pause/Resume action. */
  function pauseBar(queue) {
    return h("div", { class: "pause-bar" },
      queue.paused ? h("span", { class: "paused", text: "Queue paused: workers take no task from it. ", attrs: { "data-col": "queue-paused" } }) : null,
      pauseButton(queue.queue, null, Boolean(queue.paused)));
  }

  function countTiles(queue) {
    const t = totals(queue);
    const tile = (label, value, cls) =>
      h("div", { class: `tile ${cls || ""}`, attrs: { "data-count": label } },
        h("span", { class: "tile-value", text: fmtNum(value) }),
        h("span", { class: "tile-label", text: label }));
    return h(
      "div",
      { class: "tiles" },
      tile("waiting", t.waiting),
      tile("pending", t.pending),
      tile("running", t.running),
      tile("scheduled", queue.scheduled),
      tile("dead", queue.dead, queue.dead > 0 ? "tile-bad" : ""),
    );
  }

  function lanesTable(queue) {
    // data-lane / data-col name each count for scripts and tests reading the page.
    const cell = (lane, col, text) => h("span", { text, attrs: { "data-lane": lane.lane, "data-col": col } });
    return table(
      `Lanes of ${queue.queue}`,
      [["Lane"], ["Waiting", "n"], ["Pending", "n"], ["Running", "n"], ["Oldest waiting", "n"]],
      (queue.lanes || []).map((lane) => [
        h("span", { class: "mono" }, lane.lane, lane.group === false ? h("span", { class: "muted", text: " (not served yet)" }) : null,
          lane.paused ? h("span", { class: "paused", text: " paused", attrs: { "data-lane": lane.lane, "data-col": "paused" } }) : null,
          queue.paused ? null : pauseButton(queue.queue, lane.lane, lane.paused)),
        cell(lane, "waiting", fmtNum(lane.waiting)),
        cell(lane, "pending", fmtNum(lane.pending)),
        cell(lane, "running", fmtNum(lane.running)),
        cell(lane, "oldest", typeof lane.oldest_waiting_ms === "number" ? fmtDuration(lane.oldest_waiting_ms) : "–"),
      ]),
      "No lanes yet.",
      true, // a few short numbers: stays a table on a narrow screen
    );
  }

  // ---------------------------------------------------------------------------------------
  // The throughput chart: tasks per minute over the last CHART_MINUTES minutes, by kind.

  const SERIES = [
    ["ok", "finished"],
    ["fail", "failed"],
    ["retry", "retried"],
    ["expired", "expired"],
    ["abort", "aborted"],
    ["lost", "lost"],
  ];

  /** api/queues/{q}/stats (`minutes_ms`: each minute's start, oldest first; `kinds`: one
   * count per minute for each kind) → the minutes and one series per kind we draw. */
  function normalizeStats(stats) {
    const all = (stats && Array.isArray(stats.minutes_ms) && stats.minutes_ms) || [];
    const rows = {};
    for (const [kind] of SERIES) {
      const row = stats && stats.kinds && Array.isArray(stats.kinds[kind]) ? stats.kinds[kind] : [];
      rows[kind] = all.map((_, i) => (typeof row[i] === "number" ? row[i] : 0));
    }
    // A young queue's chart starts at its first busy minute (showing at least
    // CHART_MIN_MINUTES), not with a long flat line.
    let first = all.findIndex((_, i) => SERIES.some(([kind]) => rows[kind][i] > 0));
    if (first < 0) first = 0;
    const start = Math.max(0, Math.min(first, all.length - CHART_MIN_MINUTES));
    const series = {};
    for (const [kind] of SERIES) series[kind] = rows[kind].slice(start);
    return { minutes: all.slice(start), series };
  }

  /** Draws at the width `box` has (text keeps its size at any width); the caller redraws
   * when that width changes (see chartKey). */
  function chart(title, stats, box) {
    const { minutes, series } = normalizeStats(stats);
    if (minutes.length < 2) return h("p", { class: "muted", text: "No throughput figures." });
    const shown = SERIES.filter(([kind]) => kind === "ok" || kind === "fail" || series[kind].some((v) => v > 0));
    const max = Math.max(1, ...shown.flatMap(([kind]) => series[kind]));
    const niceMax = niceCeil(max);
    const W = Math.max(240, Math.round((box && box.clientWidth) || 640)), H = W < 500 ? 140 : 180, L = 40, R = 8, T = 10, B = 24;
    const x = (i) => L + ((W - L - R) * i) / (minutes.length - 1);
    const y = (v) => T + (H - T - B) * (1 - v / niceMax);
    const totalsText = shown.map(([kind, label]) => `${fmtNum(series[kind].reduce((a, b) => a + b, 0))} ${label}`).join(", ");
    const summary = `${title}: tasks per minute over the last ${minutes.length} minutes (${totalsText})`;
    const grid = [0, 0.5, 1].map((f) => {
      const v = niceMax * f;
      return svg("g", { class: "grid" },
        svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v) }),
        svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, fmtNum(Math.round(v))));
    });
    const mid = Math.floor((minutes.length - 1) / 2);
    const xLabels = [[0, `-${minutes.length - 1} min`], [mid, `-${minutes.length - 1 - mid} min`], [minutes.length - 1, "now"]]
      .map(([i, text]) => svg("text", { class: "axis", x: x(i), y: H - 6, "text-anchor": i === 0 ? "start" : i === minutes.length - 1 ? "end" : "middle" }, text));
    const lines = shown.map(([kind]) => {
      const pts = series[kind].map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
      return svg("polyline", { class: `line line-${kind}`, points: pts, fill: "none" });
    });
    const figure = h("figure", { class: "chart" });
    const drawing = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": summary, class: "chart-svg" },
      svg("title", {}, summary), grid, xLabels, lines);
    figure.append(drawing);
    figure.append(h("figcaption", null,
      h("ul", { class: "legend" }, shown.map(([kind, label]) =>
        h("li", null, h("span", { class: `swatch swatch-${kind}`, attrs: { "aria-hidden": "true" } }), `${label} `,
          h("span", { class: "muted", text: `(${fmtNum(series[kind][series[kind].length - 1])} this minute)` })))),
      h("span", { class: "muted small", text: "tasks per minute" })));
    return figure;
  }

  const chartKey = (box, stats) => [stats && stats.minutes_ms, stats && stats.kinds, Math.round(box.clientWidth / 40)];

  // A resized window redraws the charts at their new width on the next refresh.
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => state.view && !state.view.isLogin && refreshNow(), 250);
  });

  /** The chart's top: the first round number at or above `v` (so the line fills it). */
  function niceCeil(v) {
    if (v <= 10) return Math.max(2, Math.ceil(v / 2) * 2); // even: the middle line is whole
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 1.2, 1.6, 2, 3, 4, 5, 6, 8, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  // ---------------------------------------------------------------------------------------
  // Overview: every queue with its lanes, counts and throughput chart.

  function overviewView(main) {
    setTitle("Overview");
    const list = h("div", { class: "queues" });
    clear(main).append(h("h1", { text: "Queues" }), list);
    const cards = new Map(); // queue name -> { root, counts, lanes, chart }

    async function refresh(generation) {
      const data = await api("queues");
      const queues = (data && data.queues) || [];
      const stats = await Promise.all(queues.map((q) => api(`${qpath(q.queue)}/stats?minutes=${CHART_MINUTES}`).catch((err) => {
        if (err instanceof AuthRequired) throw err;
        return null;
      })));
      if (generation !== state.generation) return;
      renderQueueNav(queues.map((q) => q.queue));
      if (queues.length === 0) {
        fill(list, "none", () => h("p", { class: "empty muted", text: "No queues yet: start a worker or enqueue a task." }));
        cards.clear();
        return;
      }
      if (list.dataset.key) {
        delete list.dataset.key;
        clear(list);
      }
      const seen = new Set();
      queues.forEach((queue, i) => {
        seen.add(queue.queue);
        let card = cards.get(queue.queue);
        if (!card) {
          card = {
            workers: h("p", { class: "muted small workers-line" }),
            counts: h("div"),
            lanes: h("div"),
            chart: h("div"),
          };
          card.root = h("section", { class: "card queue-card", attrs: { "data-queue": queue.queue, "aria-label": `Queue ${queue.queue}` } },
            h("h2", null, h("a", { href: routes.queue(queue.queue), text: queue.queue })),
            card.counts, card.workers, card.lanes, card.chart);
          cards.set(queue.queue, card);
        }
        list.append(card.root); // keeps the API's order
        const { server_ms: _ignored, ...shape } = queue;
        fill(card.counts, [shape.lanes, shape.scheduled, shape.dead], () => countTiles(queue));
        fill(card.lanes, [shape.lanes, shape.paused, state.readOnly], () => lanesTable(queue));
        const alive = (queue.workers || []).filter((w) => w.alive).length;
        const gone = (queue.workers || []).length - alive;
        fill(card.workers, [alive, gone], () =>
          `${fmtNum(alive)} ${alive === 1 ? "worker" : "workers"} alive` + (gone ? `, ${fmtNum(gone)} gone silent` : ""));
        fill(card.chart, chartKey(card.chart, stats[i]), () => chart(`Queue ${queue.queue}`, stats[i], card.chart));
      });
      for (const [name, card] of cards) {
        if (!seen.has(name)) {
          card.root.remove();
          cards.delete(name);
        }
      }
    }
    return { refresh };
  }

  // ---------------------------------------------------------------------------------------
  // Queue page

  // The history filter's choices: the API's `kind` values for each.
  const HISTORY_FILTERS = [
    ["all", "All", ""],
    ["ok", "Finished", "ok"],
    ["failed", "Failed", "fail,expired,abort,lost"],
  ];

  function queueView(main, queue) {
    setTitle(queue);
    const pages = { workers: newPage(), history: newPage(), scheduled: newPage(), dead: newPage() };
    let historyFilter = "all";

    const counts = h("div");
    const pausing = h("div");
    const lanes = h("div");
    const chartBox = h("div");
    const workers = h("div");
    const history = h("div");
    const scheduled = h("div");
    const dead = h("div");
    const crons = h("div");

    const filterGroup = h("div", { class: "filters", attrs: { role: "group", "aria-label": "Show" } },
      HISTORY_FILTERS.map(([value, label]) =>
        h("button", {
          type: "button",
          class: "filter",
          text: label,
          attrs: { "aria-pressed": value === historyFilter ? "true" : "false", "data-filter": value },
          on: {
            click: (event) => {
              historyFilter = value;
              pages.history = newPage();
              for (const b of filterGroup.querySelectorAll("button")) b.setAttribute("aria-pressed", b === event.currentTarget ? "true" : "false");
              refreshNow();
            },
          },
        })));

    const purgeBox = state.readOnly ? null : purgeControls(queue);

    clear(main).append(
      h("nav", { class: "crumbs", attrs: { "aria-label": "Breadcrumb" } }, h("a", { href: routes.overview(), text: "Queues" }), " / ", h("span", { text: queue })),
      h("h1", null, "Queue ", h("span", { class: "mono", text: queue })),
      section("Lanes", counts, pausing, lanes, chartBox),
      section("Workers", workers),
      section("Recent tasks", filterGroup, history),
      section("Scheduled and retries", scheduled),
      section("Dead letters", dead),
      section("Crons", crons),
      purgeBox ? section("Purge", purgeBox) : null,
    );

    const q = qpath(queue);
    async function refresh(generation) {
      const limit = `limit=${PAGE_SIZE}`;
      const cursor = (name, param) => {
        const c = pageCursor(pages[name]);
        return c === null ? "" : `&${param}=${enc(c)}`;
      };
      const kinds = HISTORY_FILTERS.find(([v]) => v === historyFilter)[2];
      const [queues, stats, w, hist, sched, dl, cr] = await Promise.all([
        api("queues"),
        api(`${q}/stats?minutes=${CHART_MINUTES}`),
        api(`${q}/workers?${limit}${cursor("workers", "offset")}`),
        api(`${q}/history?${limit}${cursor("history", "before")}${kinds ? `&kind=${kinds}` : ""}`),
        api(`${q}/scheduled?${limit}${cursor("scheduled", "after")}`),
        api(`${q}/dead?${limit}${cursor("dead", "offset")}`),
        api(`${q}/crons`),
      ]);
      if (generation !== state.generation) return;
      const all = (queues && queues.queues) || [];
      renderQueueNav(all.map((x) => x.queue));
      const info = all.find((x) => x.queue === queue) || { queue, lanes: [], scheduled: 0, dead: 0 };
      const coarse = Math.floor(serverNow() / 5000); // relative times move on every 5 s
      fill(counts, [info.lanes, info.scheduled, info.dead], () => countTiles(info));
      fill(pausing, [info.paused, state.readOnly], () => pauseBar(info));
      fill(lanes, [info.lanes, info.paused, state.readOnly], () => lanesTable(info));
      fill(chartBox, chartKey(chartBox, stats), () => chart(`Queue ${queue}`, stats, chartBox));
      fill(workers, [w && w.workers, w && w.total, pages.workers], () => workersTable(queue, w, pages.workers));
      fill(history, [hist, pages.history, historyFilter], () => historyTable(queue, hist, pages.history));
      fill(scheduled, [sched, pages.scheduled, state.readOnly, coarse], () => scheduledTable(queue, sched, pages.scheduled));
      fill(dead, [dl, pages.dead, state.readOnly], () => deadTable(queue, dl, pages.dead));
      fill(crons, [cr && cr.crons, coarse, state.readOnly], () => cronsTable(queue, cr));
    }
    return { refresh };
  }

  function workersTable(queue, data, page) {
    const list = (data && data.workers) || [];
    const total = data && typeof data.total === "number" ? data.total : list.length;
    return [
      table(
        `Workers of ${queue}`,
        [["Worker"], ["State"], ["Last heartbeat"], ["Holds", "n"], ["Running"]],
        list.map((w) => [
          h("span", { class: "mono", text: w.id }),
          badge(w.alive ? "alive" : "gone", w.alive ? "alive" : "gone"),
          h("span", {
            title: fmtTime(w.last_heartbeat_ms),
            text: typeof w.age_ms === "number" ? `${fmtDuration(Math.max(0, w.age_ms - (w.age_ms % 1000)))} ago` : "–",
          }),
          fmtNum(w.pending),
          heldList(queue, w.held || [], Boolean(w.held_truncated), w.pending),
        ]),
        "No worker has a heartbeat on this queue.",
      ),
      pager("Workers", page, nextOffset(page, total), total, list.length, refreshNow),
    ];
  }

  /** What a worker holds (its pending entries): running, or prefetched and about to run. */
  function heldList(queue, held, truncated, pending) {
    if (held.length === 0) return h("span", { class: "muted", text: pending > 0 ? "–" : "idle" });
    return h("ul", { class: "running-list" },
      held.map((t) =>
        h("li", null,
          t.id ? taskLink(queue, t.id, t.name || t.id) : h("span", { class: "mono", text: t.name || t.entry }),
          " ",
          h("span", {
            class: "muted",
            text: [t.lane, typeof t.idle_ms === "number" ? `for ${fmtDuration(t.idle_ms)}` : null,
              t.deliveries > 1 ? `delivery ${t.deliveries}` : null].filter(Boolean).join(", "),
          }))),
      truncated ? h("li", { class: "muted", text: `and ${fmtNum(pending - held.length)} more` }) : null);
  }

  function historyTable(queue, data, page) {
    const entries = (data && data.entries) || [];
    const next = data && typeof data.next === "string" ? data.next : null;
    return [
      table(
        `Recent tasks of ${queue}`,
        [["Finished"], ["Task"], ["Lane"], ["Outcome"], ["Tries", "n"], ["Ran for", "n"], ["Worker"], ["Error"]],
        entries.map((e) => [
          timeEl(e.finished_ms),
          taskLink(queue, e.id, e.name),
          e.lane || "–",
          badge(e.kind),
          fmtNum(e.tries),
          e.started_ms > 0 ? fmtDuration(e.finished_ms - e.started_ms) : "–",
          h("span", { class: "mono small", text: e.worker || "–" }),
          errorEl(e.error),
        ]),
        page.index > 0 ? "No older tasks." : "Nothing finished recently (or the workers keep no history).",
      ),
      pager("Recent tasks", page, next, null, entries.length, refreshNow),
    ];
  }

  function scheduledTable(queue, data, page) {
    const tasks = (data && data.tasks) || [];
    const total = data && typeof data.total === "number" ? data.total : null;
    const next = data && typeof data.next === "string" ? data.next : null;
    const columns = [["Due"], ["Task"], ["Lane"], ["Kind"], ["Attempts made", "n"]];
    if (!state.readOnly) columns.push(["Action", "actions"]);
    return [
      table(
        `Scheduled tasks of ${queue}`,
        columns,
        tasks.map((t) => {
          const row = [
            timeEl(t.due_ms, true),
            taskLink(queue, t.id, t.name || t.id),
            t.lane || "–",
            t.retry ? badge("retry", "retry") : badge("scheduled", "scheduled"),
            fmtNum(t.tries),
          ];
          if (!state.readOnly) {
            row.push(actionButton("Run now", `Run ${t.name || t.id} (${t.id}) now`, async () => {
              await post(`${qpath(queue)}/scheduled/${enc(t.id)}/run`);
              return `Queued ${t.name || t.id} to run now`;
            }));
          }
          return row;
        }),
        "No task is waiting for a time.",
      ),
      pager("Scheduled", page, next, total, tasks.length, refreshNow),
    ];
  }

  function deadTable(queue, data, page) {
    const letters = (data && data.dead_letters) || [];
    const total = data && typeof data.total === "number" ? data.total : letters.length;
    const columns = [["Failed"], ["Task"], ["Lane"], ["Tries", "n"], ["Error"]];
    if (!state.readOnly) columns.push(["Actions", "actions"]);
    return [
      table(
        `Dead letters of ${queue}`,
        columns,
        letters.map((d) => {
          const row = [timeEl(d.failed_ms), taskLink(queue, d.id, d.name || d.id), d.lane || "–", fmtNum(d.tries), errorEl(d.error)];
          if (!state.readOnly) {
            row.push(h("span", { class: "buttons" },
              actionButton("Replay", `Replay ${d.name} (${d.id})`, async () => {
                await post(`${qpath(queue)}/dead/${enc(d.id)}/replay`);
                return `Replayed ${d.name || d.id}`;
              }),
              actionButton("Delete", `Delete the dead letter ${d.name} (${d.id})`, async () => {
                if (!window.confirm(`Delete the dead letter ${d.id} (${d.name})? This cannot be undone.`)) return null;
                await post(`${qpath(queue)}/dead/${enc(d.id)}/delete`);
                return `Deleted ${d.name || d.id}`;
              }, "danger")));
          }
          return row;
        }),
        "No dead letters.",
      ),
      pager("Dead letters", page, nextOffset(page, total), total, letters.length, refreshNow),
    ];
  }

  function cronsTable(queue, data) {
    const list = (data && data.crons) || [];
    const fromApp = data && data.source === "app";
    const columns = [["Cron"], ["Task"], ["Lane"], ["State"], ["Last fired"], ["Next run"]];
    if (!state.readOnly) columns.push(["Actions", "actions"]);
    return [
      table(
        "Crons",
        columns,
        list.map((c) => {
          const next = Array.isArray(c.next_runs_ms) ? c.next_runs_ms : [];
          const row = [
            h("span", { class: "mono", text: c.name }),
            c.task ? h("span", { class: "mono", text: c.task }) : "–",
            c.lane || "–",
            c.paused ? h("span", { title: `Paused since ${fmtTime(c.paused_ms)}`, text: "Paused" }) : "Active",
            timeEl(c.last_fired_ms, true),
            next.length ? h("span", { title: next.map(fmtTime).join(", "), text: (c.paused ? "(skipped) " : "") + fmtRelative(next[0]) }) : h("span", { class: "muted", text: fromApp ? "never" : "unknown" }),
          ];
          if (!state.readOnly) {
            const path = `${qpath(queue)}/crons/${enc(c.name)}`;
            row.push(h("span", { class: "buttons" },
              c.paused
                ? actionButton("Resume", `Resume the cron ${c.name}`, async () => {
                  await post(`${path}/resume`);
                  return `Resumed ${c.name}: it fires from its next run`;
                })
                : actionButton("Pause", `Pause the cron ${c.name}`, async () => {
                  await post(`${path}/pause`);
                  return `Paused ${c.name} on every worker`;
                }),
              fromApp ? actionButton("Trigger", `Run the cron ${c.name} now`, async () => {
                const r = await post(`${path}/trigger`);
                return `Queued ${c.name} to run now (${r && r.id})`;
              }) : null));
          }
          return row;
        }),
        "No cron on this queue.",
      ),
      fromApp ? null : h("p", { class: "muted small", text: "Crons that fired, as Redis remembers them; start the dashboard with --app to see their next runs." }),
    ];
  }

  function purgeControls(queue) {
    const inputId = `purge-confirm-${Math.random().toString(36).slice(2)}`;
    const forceId = `${inputId}-force`;
    const input = h("input", { id: inputId, type: "text", autocomplete: "off", spellcheck: false });
    const force = h("input", { id: forceId, type: "checkbox" });
    const button = h("button", { type: "submit", class: "danger", text: "Purge queue", disabled: true });
    input.addEventListener("input", () => {
      button.disabled = input.value !== queue;
    });
    const form = h("form", { class: "purge" },
      h("p", null, "Drops every queued and scheduled task of this queue (each is finalized as aborted, \"purged\"). ",
        "Tasks that live workers hold are left unless forced."),
      h("div", { class: "field" }, h("label", { for: inputId }, "Type the queue name ", h("strong", { class: "mono", text: queue }), " to confirm"), input),
      h("div", { class: "field inline" }, force, h("label", { for: forceId, text: "Also drop tasks that live workers hold" })),
      button);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (input.value !== queue) return;
      button.disabled = true;
      try {
        const res = await post(`${qpath(queue)}/purge${force.checked ? "?force=1" : ""}`);
        const dropped = res ? (res.queued || 0) + (res.scheduled || 0) + (res.delivered || 0) : null;
        const skipped = res && res.skipped ? `; ${fmtNum(res.skipped)} held by live workers left` : "";
        say(dropped === null ? `Purged ${queue}` : `Purged ${fmtNum(dropped)} tasks from ${queue}${skipped}`, "ok");
        input.value = "";
        force.checked = false;
      } catch (err) {
        handleError(err);
      } finally {
        button.disabled = input.value !== queue;
        refreshNow();
      }
    });
    return form;
  }

  // ---------------------------------------------------------------------------------------
  // Job page

  function jobView(main, queue, id) {
    setTitle(id, queue);
    const head = h("div");
    const progressBox = h("div");
    const details = h("div");
    const attempts = h("div");
    const actions = h("div", { class: "buttons" });
    const argsBox = h("div", { class: "args" });
    let args = null; // the decoded arguments once asked for

    const argsButton = h("button", { type: "button", class: "secondary", text: "Show arguments" });
    argsButton.addEventListener("click", async () => {
      if (args !== null) {
        args = null;
        argsButton.textContent = "Show arguments";
        argsButton.setAttribute("aria-expanded", "false");
        clear(argsBox);
        return;
      }
      argsButton.disabled = true;
      try {
        const job = await api(`${qpath(queue)}/jobs/${enc(id)}?args=1`);
        args = (job && job.args) || {};
        argsButton.textContent = "Hide arguments";
        argsButton.setAttribute("aria-expanded", "true");
        renderArgs(argsBox, job);
      } catch (err) {
        handleError(err);
      } finally {
        argsButton.disabled = false;
      }
    });
    argsButton.setAttribute("aria-expanded", "false");
    argsButton.setAttribute("aria-controls", "job-args");
    argsBox.id = "job-args";

    clear(main).append(
      h("nav", { class: "crumbs", attrs: { "aria-label": "Breadcrumb" } },
        h("a", { href: routes.overview(), text: "Queues" }), " / ",
        h("a", { href: routes.queue(queue), text: queue }), " / ",
        h("span", { class: "mono", text: id })),
      head,
      section("Progress", progressBox),
      section("Details", details, actions),
      section("Attempts", attempts),
      section("Arguments", h("p", { class: "muted", text: "Decoded by the server from the task's payload; shown only when asked for." }), argsButton, argsBox),
    );

    async function refresh(generation) {
      let job;
      try {
        job = await api(`${qpath(queue)}/jobs/${enc(id)}`);
      } catch (err) {
        // 404 with a job document: no such task (a 404 without one: no such queue).
        if (err instanceof ApiError && err.body && err.body.status === "not_found") job = err.body;
        else throw err;
      }
      if (generation !== state.generation) return;
      setTitle(job.name || id, queue);
      fill(head, [job.name, job.status], () =>
        h("h1", null, job.name ? h("span", { class: "mono", text: job.name }) : (job.status === "not_found" ? "No such task" : "(no name)"), " ", badge(job.status)));
      fill(progressBox, job.progress || null, () => progressEl(job.progress));
      fill(details, [job, Math.floor(serverNow() / 5000)], () => jobDetails(queue, job));
      fill(attempts, job.attempts || [], () => attemptsTable(job.attempts || []));
      fill(actions, [job.status, state.readOnly], () => jobActions(queue, job));
    }
    return { refresh };
  }

  function progressEl(progress) {
    if (!progress) return h("p", { class: "muted", text: "The task reported no progress." });
    if (typeof progress === "string") return h("p", { class: "error-text", text: `Unreadable progress record: ${progress}` });
    const value = pick(progress, "v", "value");
    const message = pick(progress, "m", "message");
    const parts = [];
    if (typeof value === "number") {
      const pct = Math.max(0, Math.min(100, value));
      parts.push(h("div", { class: "progress-row" },
        h("progress", { max: 100, value: pct, attrs: { "aria-label": "Progress" } }),
        h("span", { class: "progress-value", text: `${Number(pct.toFixed(1))} %` })));
    } else if (value !== undefined && value !== null) {
      parts.push(h("pre", { class: "json", text: JSON.stringify(value, null, 2) }));
    }
    if (message) parts.push(h("p", { class: "progress-message", text: message }));
    const at = pick(progress, "at", "at_ms");
    const attempt = pick(progress, "t", "tries");
    if (typeof at === "number") parts.push(h("p", { class: "muted small" }, "reported ", timeEl(at, true), attempt ? ` by attempt ${attempt}` : ""));
    return parts;
  }

  function jobDetails(queue, job) {
    const r = job.result || null;
    const d = job.dead_letter || null;
    const rows = [
      ["Id", h("span", { class: "mono", text: job.id })],
      ["Queue", h("a", { href: routes.queue(queue), text: queue })],
      ["Status", badge(job.status)],
    ];
    if (job.name) rows.push(["Task", h("span", { class: "mono", text: job.name })]);
    if (job.lane) rows.push(["Lane", job.lane]);
    const tries = r ? r.tries : job.tries;
    if (typeof tries === "number") rows.push(["Attempts made", fmtNum(tries)]);
    const enq = r ? r.enqueued_ms : job.enqueued_ms;
    if (typeof enq === "number") rows.push(["Enqueued", timeEl(enq)]);
    if (typeof job.scheduled_ms === "number") rows.push(["Due", timeEl(job.scheduled_ms, true)]);
    if (job.holder) {
      rows.push(["Held by", h("span", null, h("span", { class: "mono", text: job.holder.worker }),
        h("span", { class: "muted", text: ` (${times(job.holder.deliveries, "delivered")}, idle ${fmtDuration(job.holder.idle_ms)})` }))]);
    }
    if (job.abort_requested) rows.push(["Abort", "requested"]);
    if (r) {
      rows.push(["Outcome", badge(r.aborted ? "aborted" : r.ok ? "ok" : "fail")]);
      if (r.started_ms > 0) {
        rows.push(["Started", timeEl(r.started_ms)]);
        rows.push(["Waited", fmtDuration(r.started_ms - r.enqueued_ms)]);
      }
      rows.push(["Finished", timeEl(r.finished_ms)]);
      if (r.started_ms > 0) rows.push(["Ran for", fmtDuration(r.finished_ms - r.started_ms)]);
      if (r.error) rows.push(["Error", errorEl(r.error)]);
    }
    if (job.result_error) rows.push(["Result", errorEl(`unreadable: ${job.result_error}`)]);
    if (d) {
      rows.push(["Failed", timeEl(d.failed_ms)]);
      if (!r || r.error !== d.error) rows.push(["Dead-letter error", errorEl(d.error)]);
    }
    if (job.status === "not_found") {
      rows.push(["", h("span", { class: "muted", text: "No live task, result or dead letter has this id (results expire after the result TTL)." })]);
    }
    return h("dl", { class: "details" }, rows.map(([k, v]) => [h("dt", { text: k }), h("dd", null, v)]));
  }

  /** One failed attempt, in the record's short names (PROTOCOL.md, History: `n`, `k`,
   * `w`, `st`, `fin`, `err`) or spelled out. */
  function attemptsTable(list) {
    return table(
      "Failed attempts",
      [["#", "n"], ["Outcome"], ["Worker"], ["Started"], ["Finished"], ["Ran for", "n"], ["Error"]],
      list.map((a) => {
        if (typeof a !== "object" || a === null) {
          // An attempt record the server could not read: it says why.
          return ["–", badge("unknown", "unreadable"), "–", "–", "–", "–", errorEl(String(a))];
        }
        const st = pick(a, "st", "started_ms");
        const fin = pick(a, "fin", "finished_ms");
        return [
          fmtNum(pick(a, "n", "tries", "attempt")),
          badge(pick(a, "k", "kind")),
          h("span", { class: "mono small", text: pick(a, "w", "worker") || "–" }),
          timeEl(st),
          timeEl(fin),
          st > 0 && fin > 0 ? fmtDuration(fin - st) : "–",
          errorEl(pick(a, "err", "error")),
        ];
      }),
      "No failed attempt recorded.",
    );
  }

  function jobActions(queue, job) {
    if (state.readOnly) return [];
    const out = [];
    if (job.status === "scheduled") {
      out.push(actionButton("Run now", `Run ${job.id} now`, async () => {
        await post(`${qpath(queue)}/scheduled/${enc(job.id)}/run`);
        return "Queued to run now";
      }, "primary"));
    }
    if (job.status === "dead") {
      out.push(actionButton("Replay", `Replay ${job.id}`, async () => {
        await post(`${qpath(queue)}/dead/${enc(job.id)}/replay`);
        return "Replayed";
      }, "primary"));
      out.push(actionButton("Delete dead letter", `Delete dead letter ${job.id}`, async () => {
        if (!window.confirm(`Delete the dead letter ${job.id}? This cannot be undone.`)) return null;
        await post(`${qpath(queue)}/dead/${enc(job.id)}/delete`);
        return "Dead letter deleted";
      }, "danger"));
    }
    return out;
  }

  /** `args` of api/queues/{q}/jobs/{id}?args=1: decoded msgpack, or why it cannot be. */
  function renderArgs(box, job) {
    clear(box);
    const a = job && job.args;
    if (!a) {
      box.append(h("p", { class: "muted", text: job && job.status === "not_found" ? "No such task." : "The server sent no arguments." }));
      return;
    }
    if (a.format !== "msgpack") {
      box.append(h("p", { class: "muted", text: a.note || `The payload is in a form the dashboard does not decode (${a.format}).` }));
      return;
    }
    box.append(
      h("h3", { text: "Positional" }),
      h("pre", { class: "json", text: JSON.stringify(a.args ?? [], null, 2) }),
      h("h3", { text: "Keyword" }),
      h("pre", { class: "json", text: JSON.stringify(a.kwargs ?? {}, null, 2) }),
    );
    if (a.headers && Object.keys(a.headers).length > 0) {
      box.append(h("h3", { text: "Headers" }), h("pre", { class: "json", text: JSON.stringify(a.headers, null, 2) }));
    }
  }

  function missingView(main) {
    setTitle("Not found");
    clear(main).append(h("h1", { text: "No such page" }), h("p", null, h("a", { href: routes.overview(), text: "Back to the queues" })));
    return { refresh: async () => {} };
  }

  // ---------------------------------------------------------------------------------------
  // Login: the server's own page (`login`, a plain form that needs no script). The API
  // answering 401 (no session yet, or the token changed) sends the browser there.

  function showLogin() {
    if (state.view && state.view.isLogin) return;
    state.generation += 1;
    clearTimeout(state.timer);
    state.view = { isLogin: true, refresh: async () => {} };
    location.assign(`login${location.hash}`);
  }

  /** With a token set, a way out: `POST logout` ends the session (a plain form). */
  function renderSignOut() {
    const box = $("sign-out");
    clear(box);
    if (!state.config || !state.config.auth) return;
    box.append(h("form", { method: "post", action: "logout", class: "sign-out" },
      h("button", { type: "submit", class: "secondary", text: "Sign out" })));
  }

  /** Back to where the browser was before the login page (login.js kept its route). */
  function returnAfterLogin() {
    try {
      const back = sessionStorage.getItem("ardiq.return");
      sessionStorage.removeItem("ardiq.return");
      if (back && back.startsWith("#/") && (location.hash === "" || location.hash === "#/")) {
        history.replaceState(null, "", back);
      }
    } catch {
      // no storage: stay on the overview
    }
  }

  returnAfterLogin();
  navigate();
})();
