// The operator dashboard: every application's health, traffic from the server's own
// counters, a live tail, sources, pipes, devices, plugins and their audit log. Signed in with
// the admin token, exchanged once (POST /ui/session) for an HttpOnly, SameSite=Strict session
// cookie; changes carry the session's CSRF token in X-Kait-Csrf. Everything else is the API.

import { Api, bars, describe, h, notice, page, pretty, segment, show, table, when } from "./dom.js";

const main = document.getElementById("main");
const api = new Api({ csrf: sessionStorage.getItem("kait.csrf") });
let tail = null; // the open EventSource of the live view, closed when leaving it
let traffic = null; // the timer of the traffic view

async function session() {
  if (api.csrf) return true;
  const response = await fetch("/ui/session", { credentials: "same-origin" });
  if (!response.ok) return false;
  api.csrf = (await response.json()).csrf;
  sessionStorage.setItem("kait.csrf", api.csrf);
  return true;
}

function signInView(message) {
  document.getElementById("nav").hidden = true;
  document.getElementById("sign-out").hidden = true;
  const token = h("input", { type: "password", id: "admin-token", autocomplete: "current-password", required: true });
  const form = h("form", { id: "sign-in" }, h("label", {}, "Admin token", token), h("div", { class: "actions" }, h("button", { type: "submit" }, "Sign in")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const response = await fetch("/ui/session", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: token.value }),
      credentials: "same-origin",
    });
    if (!response.ok) {
      notice(main, "error", describe(response.status, await response.json().catch(() => null)));
      return;
    }
    api.csrf = (await response.json()).csrf;
    sessionStorage.setItem("kait.csrf", api.csrf);
    location.hash = "#/apps";
    route();
  });
  show(main, h("h2", {}, "Sign in"), h("p", {}, "The admin token is in the data directory (admin-token) of a server started on its defaults."), form);
  if (message) notice(main, "error", message);
}

async function route() {
  tail?.close();
  tail = null;
  clearInterval(traffic);
  if (!(await session())) return signInView();
  document.getElementById("nav").hidden = false;
  document.getElementById("sign-out").hidden = false;
  const [view, id, sub] = location.hash.replace(/^#\/?/, "").split("/");
  document.querySelectorAll("#nav a").forEach((link) => link.classList.toggle("current", link.dataset.view === (view === "app" ? "apps" : view || "apps")));
  try {
    if (view === "app" && id) await appView(id);
    else if (view === "traffic") await trafficView();
    else if (view === "sources" && id) await sourceView(id);
    else if (view === "sources") await sourcesView();
    else if (view === "pipes" && id) await pipeView(id);
    else if (view === "pipes") await pipesView();
    else if (view === "devices") await devicesView(id);
    else if (view === "plugins" && id && sub === "audit") await auditView(id);
    else if (view === "plugins") await pluginsView();
    else await appsView();
  } catch (error) {
    if (error.status === 401) {
      sessionStorage.removeItem("kait.csrf");
      api.csrf = null;
      return signInView("Your session has ended: sign in again.");
    }
    notice(main, "error", error.message);
  }
}

async function appsView(iterator) {
  const listed = await page(api, "/api/v1/app", iterator);
  // Health per application from its endpoints (one page of them each).
  const health = await Promise.all(listed.items.map(async (app) => {
    const endpoints = (await api.get(`/api/v1/app/${segment(app.id)}/endpoint?limit=250`)).data;
    return { endpoints: endpoints.length, disabled: endpoints.filter((endpoint) => endpoint.disabled).length };
  }));
  const more = listed.iterator ? h("button", { class: "secondary", type: "button" }, "More") : null;
  more?.addEventListener("click", () => appsView(listed.iterator));
  show(
    main,
    h("h2", {}, "Applications"),
    table(
      [
        ["Name", (app) => h("a", { href: `#/app/${app.id}` }, app.name)],
        ["Uid", (app) => app.uid || ""],
        ["Endpoints", (app) => String(health[listed.items.indexOf(app)].endpoints)],
        ["Disabled", (app) => {
          const count = health[listed.items.indexOf(app)].disabled;
          return h("span", { class: count ? "status-2" : "" }, String(count));
        }],
        ["Created", (app) => when(app.createdAt)],
      ],
      listed.items,
      { empty: "No applications yet." },
    ),
    more,
  );
}

async function appView(id) {
  const base = `/api/v1/app/${segment(id)}`;
  const [app, endpoints] = await Promise.all([api.get(base), api.get(`${base}/endpoint?limit=250`)]);
  // Health from each endpoint's last 50 attempts (keyset reads); the full counts and the
  // circuit state (`/stats`, which counts the whole log) only when asked for.
  const recent = await Promise.all(endpoints.data.map((endpoint) => api.get(`${base}/attempt/endpoint/${segment(endpoint.id)}?limit=50`).then((page) => page.data).catch(() => [])));
  const lines = h("div", { class: "tail", id: "tail" });
  const portal = h("button", { class: "secondary", type: "button", id: "portal-link" }, "Portal link");
  const link = h("p", { class: "secret", id: "portal-url" });
  portal.addEventListener("click", async () => {
    try {
      link.textContent = (await api.post(`/api/v1/auth/app-portal-access/${segment(id)}`, {})).url;
    } catch (error) {
      notice(main, "error", error.message);
    }
  });
  show(
    main,
    h("h2", {}, app.name),
    h("p", {}, `${app.id}${app.uid ? ` · ${app.uid}` : ""}`),
    h("div", { class: "actions" }, portal),
    link,
    h("h3", {}, "Endpoints"),
    table(
      [
        ["URL", (endpoint) => endpoint.url || "(polling)"],
        ["State", (endpoint) => h("span", { class: endpoint.disabled ? "status-2" : "status-0" }, endpoint.disabled ? "disabled" : "enabled")],
        ["Recent success", (endpoint) => {
          const attempts = recent[endpoints.data.indexOf(endpoint)];
          const ok = attempts.filter((attempt) => attempt.status === 0).length;
          return attempts.length ? `${Math.round((100 * ok) / attempts.length)}% of ${attempts.length}` : "–";
        }],
        ["Counts and circuit", (endpoint) => {
          const cell = h("span", {});
          const load = h("button", { class: "secondary", type: "button", dataset: { stats: endpoint.id } }, "Show");
          load.addEventListener("click", async () => {
            try {
              const counts = await api.get(`${base}/endpoint/${segment(endpoint.id)}/stats`);
              show(cell, `${counts.success} ok, ${counts.fail} failed, ${counts.pending + counts.sending} waiting · circuit ${counts.circuitState}`);
            } catch (error) {
              notice(main, "error", error.message);
            }
          });
          cell.append(load);
          return cell;
        }],
      ],
      endpoints.data,
      { empty: "No endpoints." },
    ),
    h("h3", {}, "Live"),
    h("p", { class: "empty" }, "Messages appear here as they are accepted."),
    lines,
  );
  tail = new EventSource(`${base}/stream`);
  tail.onmessage = (event) => addLine(lines, event);
}

function addLine(lines, event) {
  let message;
  try {
    message = JSON.parse(event.data);
  } catch {
    return;
  }
  lines.prepend(h("div", {}, `${when(message.timestamp)}  ${message.eventType}  ${message.id}  ${JSON.stringify(message.payload)}`));
  while (lines.childElementCount > 200) lines.lastElementChild.remove();
}

/** Prometheus text → {name{labels}: value}. */
function parseMetrics(text) {
  const values = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    values.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return values;
}

function sum(values, prefix) {
  let total = 0;
  for (const [key, value] of values) if (key === prefix || key.startsWith(`${prefix}{`)) total += value;
  return total;
}

/** The smallest bucket bound holding 99 % of what the window added. */
function p99(before, after, name) {
  const buckets = [];
  for (const [key, value] of after) {
    const match = key.match(new RegExp(`^${name}_bucket\\{.*le="([^"]+)".*\\}$`));
    if (match) buckets.push([match[1] === "+Inf" ? Infinity : Number(match[1]), value - (before.get(key) || 0)]);
  }
  buckets.sort((a, b) => a[0] - b[0]);
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (!total) return null;
  return buckets.find(([, count]) => count >= 0.99 * total)?.[0] ?? null;
}

async function trafficView() {
  const accepted = [];
  const delivered = [];
  const latency = [];
  const figures = h("div", { class: "grid", id: "traffic" });
  show(main, h("h2", {}, "Traffic"), h("p", { class: "empty" }, "From the server's /metrics, every two seconds."), figures);
  let before = null;
  let beforeAt = 0;
  const tick = async () => {
    let text;
    try {
      const response = await fetch("/metrics", { credentials: "same-origin" });
      if (!response.ok) throw new Error(`metrics: ${response.status}`);
      text = await response.text();
    } catch (error) {
      notice(main, "error", error.message);
      return;
    }
    const now = Date.now();
    const after = parseMetrics(text);
    if (before) {
      const seconds = (now - beforeAt) / 1000;
      accepted.push((sum(after, "kait_messages_accepted_total") - sum(before, "kait_messages_accepted_total")) / seconds);
      delivered.push((sum(after, "kait_deliveries_total") - sum(before, "kait_deliveries_total")) / seconds);
      latency.push(p99(before, after, "kait_delivery_latency_seconds"));
      for (const series of [accepted, delivered, latency]) if (series.length > 30) series.shift();
      // Thirty slots of two seconds, the newest on the right.
      const scale = (series) => {
        const top = Math.max(...series.filter((value) => value !== null), 0);
        const scaled = series.map((value) => (value === null || !top ? null : value / top));
        return [...Array(30 - scaled.length).fill(null), ...scaled];
      };
      const last = (series) => series[series.length - 1];
      show(figures,
        h("div", { class: "card" }, h("div", { class: "figure", id: "accepted-rate" }, `${last(accepted).toFixed(1)}/s`), h("div", { class: "caption" }, "messages accepted"), bars(scale(accepted), { label: "messages accepted per second" })),
        h("div", { class: "card" }, h("div", { class: "figure" }, `${last(delivered).toFixed(1)}/s`), h("div", { class: "caption" }, "attempts finished"), bars(scale(delivered), { label: "attempts per second" })),
        h("div", { class: "card" }, h("div", { class: "figure" }, last(latency) === null ? "–" : `≤ ${last(latency) * 1000} ms`), h("div", { class: "caption" }, "p99 delivery latency"), bars(scale(latency), { label: "p99 latency" })),
        h("div", { class: "card" }, h("div", { class: "figure" }, String(sum(after, "kait_queue_depth"))), h("div", { class: "caption" }, "deliveries queued")));
    }
    before = after;
    beforeAt = now;
  };
  await tick();
  traffic = setInterval(tick, 2000);
}

async function sourcesView() {
  const listed = await api.get("/ingest/api/v1/source?limit=250");
  show(main, h("h2", {}, "Sources"), table(
    [
      ["Name", (source) => h("a", { href: `#/sources/${source.id}` }, source.name)],
      ["Type", (source) => source.type],
      ["Receiving URL", (source) => h("span", { class: "secret" }, source.ingestUrl)],
    ],
    listed.data,
    { empty: "No sources yet." },
  ));
}

async function sourceView(id) {
  const [source, received] = await Promise.all([
    api.get(`/ingest/api/v1/source/${segment(id)}`),
    api.get(`/ingest/api/v1/source/${segment(id)}/received?limit=50`),
  ]);
  show(main, h("h2", {}, source.name), h("p", {}, `${source.type} · ${source.id}`), h("h3", {}, "Received requests"), table(
    [
      ["When", (entry) => when(entry.receivedAt || entry.timestamp)],
      ["Outcome", (entry) => entry.outcome || entry.status || ""],
      ["Message", (entry) => entry.msgId || ""],
      ["Detail", (entry) => entry.reason || entry.detail || ""],
    ],
    received.data,
    { empty: "Nothing received yet." },
  ));
}

async function pipesView() {
  const listed = await api.get("/api/v1/pipe?limit=250");
  show(main, h("h2", {}, "Pipes"), table(
    [
      ["Name", (pipe) => h("a", { href: `#/pipes/${pipe.id}` }, pipe.name)],
      ["Application", (pipe) => pipe.appId],
      ["State", (pipe) => (pipe.enabled ? "enabled" : "paused")],
      ["Actions", (pipe) => String(pipe.actions.length)],
    ],
    listed.data,
    { empty: "No pipes yet." },
  ));
}

async function pipeView(id) {
  const [pipe, runs] = await Promise.all([api.get(`/api/v1/pipe/${segment(id)}`), api.get(`/api/v1/pipe/${segment(id)}/run?limit=50`)]);
  show(main, h("h2", {}, pipe.name), h("pre", {}, pretty(pipe)), h("h3", {}, "Runs"), table(
    [
      ["When", (run) => when(run.createdAt || run.timestamp)],
      ["Step", (run) => run.step || ""],
      ["Outcome", (run) => run.outcome || run.status || ""],
      ["Detail", (run) => run.detail || ""],
    ],
    runs.data,
    { empty: "No runs yet." },
  ));
}

async function devicesView(appId) {
  const apps = await api.get("/api/v1/app?limit=250");
  const chosen = appId || apps.data[0]?.id;
  const picker = h("select", { id: "device-app" }, apps.data.map((app) => h("option", { value: app.id, selected: app.id === chosen }, app.name)));
  picker.addEventListener("change", () => { location.hash = `#/devices/${picker.value}`; });
  const devices = chosen ? await api.get(`/api/v1/app/${segment(chosen)}/device?limit=250`) : { data: [] };
  show(main, h("h2", {}, "Devices"), h("label", {}, "Application", picker), table(
    [
      ["Device", (device) => device.id || device.device],
      ["Presence", (device) => h("span", { class: device.online ? "status-0" : "status-2" }, device.online ? "online" : "offline")],
      ["Last seen", (device) => when(device.lastSeenAt || device.lastSeen)],
    ],
    devices.data,
    { empty: "No devices seen in this application." },
  ));
}

async function pluginsView() {
  const plugins = await api.get("/api/v1/plugin?limit=250");
  show(main, h("h2", {}, "Plugins"), table(
    [
      ["Name", (plugin) => plugin.name],
      ["Id", (plugin) => plugin.id],
      ["Scopes asked", (plugin) => (plugin.scopes || []).map((scope) => h("span", { class: "tag" }, scope))],
      ["Audit", (plugin) => h("a", { href: `#/plugins/${plugin.id}/audit` }, "audit log")],
    ],
    plugins.data,
    { empty: "No plugins registered." },
  ));
}

async function auditView(id) {
  const audit = await api.get(`/api/v1/plugin/${segment(id)}/audit?limit=100`);
  show(main, h("h2", {}, "Audit log"), table(
    [
      ["When", (entry) => when(entry.at || entry.timestamp)],
      ["Kind", (entry) => entry.kind],
      ["Subject", (entry) => entry.subject],
      ["Decision", (entry) => h("span", { class: entry.decision === "refused" ? "status-2" : "status-0" }, entry.decision)],
      ["Detail", (entry) => entry.detail],
    ],
    audit.data,
    { empty: "Nothing audited yet." },
  ));
}

document.getElementById("sign-out").addEventListener("click", async () => {
  await fetch("/ui/session", { method: "DELETE", headers: { "X-Kait-Csrf": api.csrf || "" }, credentials: "same-origin" });
  sessionStorage.removeItem("kait.csrf");
  api.csrf = null;
  signInView();
});

window.addEventListener("hashchange", route);
route();
