// The consumer portal: one application's endpoints, messages and attempts, for the customer
// who receives its webhooks. The link (`app-portal-access`) carries the application and an
// app-scoped token in the fragment; the token is kept in this tab's sessionStorage and the
// fragment is replaced at once, so it is neither in the history nor sent anywhere. The API
// decides what the token may see and do (its application, its capabilities); the page asks it
// (`/api/v1/auth/token`) only to leave out the controls the token could not use.

import { Api, bars, h, notice, page, pretty, segment, show, table, when } from "./dom.js";

const main = document.getElementById("main");
const session = readSession();
const api = new Api({ token: session.token });
const app = session.app;
const base = `/api/v1/app/${segment(app || "")}`;

function readSession() {
  const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
  if (fragment.get("token")) {
    sessionStorage.setItem("kait.portal", JSON.stringify({ app: fragment.get("app"), token: fragment.get("token") }));
    history.replaceState(null, "", `${location.pathname}#/endpoints`);
  }
  try {
    return JSON.parse(sessionStorage.getItem("kait.portal")) || {};
  } catch {
    return {};
  }
}

/** The token's capabilities, asked once; `null` (unknown) shows every control. */
const granted = session.token
  ? api.get("/api/v1/auth/token").then((told) => new Set(told.capabilities)).catch(() => null)
  : Promise.resolve(null);
let capabilities = null;

/** Whether the token may use a control that needs `capability` (Svix's names). */
function can(capability) {
  return capabilities === null || capabilities.has(capability);
}

const statusText = { 0: "succeeded", 1: "pending", 2: "failed", 3: "sending", 4: "canceled" };

async function route() {
  if (!session.token) {
    show(main, h("h2", {}, "This link has no access token"), h("p", {}, "Ask for a new portal link."));
    return;
  }
  capabilities = await granted;
  document.body.dataset.capabilities = capabilities ? [...capabilities].join(" ") : "unknown";
  const [view, id, extra] = location.hash.replace(/^#\/?/, "").split("/");
  document.querySelectorAll("#nav a").forEach((link) => link.classList.toggle("current", link.dataset.view === (view || "endpoints").replace(/^(endpoint|message)$/, "$1s")));
  try {
    if (view === "endpoint" && id === "new") await endpointForm(null);
    else if (view === "endpoint" && extra === "edit") await endpointForm(id);
    else if (view === "endpoint" && id) await endpointView(id);
    else if (view === "messages") await messagesView();
    else if (view === "message" && id) await messageView(id);
    else if (view === "event-types") await eventTypesView();
    else await endpointsView();
  } catch (error) {
    if (error.status === 401) {
      show(main, h("h2", {}, "This portal session has ended"), h("p", {}, "Ask for a new portal link."));
    } else {
      notice(main, "error", error.message);
    }
  }
}

async function endpointsView() {
  const [application, listed] = await Promise.all([api.get(base), api.get(`${base}/endpoint?limit=250`)]);
  document.getElementById("title").textContent = `${application.name}: webhooks`;
  show(
    main,
    h("h2", {}, "Endpoints"),
    can("ManageEndpoint") && h("div", { class: "actions" }, h("a", { class: "button", href: "#/endpoint/new", id: "add-endpoint" }, "Add endpoint")),
    table(
      [
        ["URL", (endpoint) => h("a", { href: `#/endpoint/${endpoint.id}` }, endpoint.url || "(polling)")],
        ["Description", (endpoint) => endpoint.description],
        ["Event types", (endpoint) => (endpoint.filterTypes || ["all"]).map((name) => h("span", { class: "tag" }, name))],
        ["State", (endpoint) => (endpoint.disabled ? "paused" : "active")],
      ],
      listed.data,
      { empty: "No endpoints yet: add one to receive webhooks." },
    ),
  );
}

function lines(text) {
  return text.split(/[\n,]/).map((part) => part.trim()).filter(Boolean);
}

async function endpointForm(id) {
  if (!can("ManageEndpoint")) {
    show(main, h("h2", {}, "Not allowed"), h("p", {}, "This portal link may not change endpoints."));
    return;
  }
  const [endpoint, headers, types] = await Promise.all([
    id ? api.get(`${base}/endpoint/${segment(id)}`) : null,
    id ? api.get(`${base}/endpoint/${segment(id)}/headers`).catch(() => ({ headers: {} })) : { headers: {} },
    api.get("/api/v1/event-type?limit=250").catch(() => ({ data: [] })),
  ]);
  const field = (label, input) => h("label", {}, label, input);
  const url = h("input", { name: "url", type: "url", required: true, value: endpoint?.url || "", placeholder: "https://example.com/webhooks" });
  const description = h("input", { name: "description", value: endpoint?.description || "" });
  const filter = h("select", { name: "eventTypes", multiple: true, size: Math.min(8, Math.max(3, types.data.length)) },
    types.data.map((type) => h("option", { value: type.name, selected: (endpoint?.filterTypes || []).includes(type.name) }, type.name)));
  const channels = h("input", { name: "channels", value: (endpoint?.channels || []).join(", "), placeholder: "comma separated" });
  const rate = h("input", { name: "rateLimit", type: "number", min: 1, value: endpoint?.rateLimit ?? "" });
  const format = h("select", { name: "format" }, ["json", "xml"].map((name) => h("option", { value: name, selected: (endpoint?.format || "json") === name }, name.toUpperCase())));
  const headerText = h("textarea", { name: "headers", placeholder: "X-Name: value, one per line" },
    Object.entries(headers.headers || {}).map(([name, value]) => `${name}: ${value}`).join("\n"));
  const form = h("form", { id: "endpoint-form" },
    field("URL", url), field("Description", description),
    field("Event types (none selected: all)", filter), field("Channels", channels),
    field("Rate limit (per second)", rate), field("Format", format), field("Custom headers", headerText),
    h("div", { class: "actions" }, h("button", { type: "submit" }, id ? "Save" : "Create"), h("a", { href: id ? `#/endpoint/${id}` : "#/endpoints" }, "Cancel")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const selected = [...filter.selectedOptions].map((option) => option.value);
    const customHeaders = Object.fromEntries(lines(headerText.value.replace(/,/g, "\n")).map((line) => {
      const at = line.indexOf(":");
      return [line.slice(0, at).trim(), line.slice(at + 1).trim()];
    }));
    const body = {
      url: url.value.trim(),
      description: description.value,
      filterTypes: selected.length ? selected : null,
      channels: lines(channels.value).length ? lines(channels.value) : null,
      rateLimit: rate.value ? Number(rate.value) : null,
      format: format.value,
    };
    try {
      const saved = id
        ? await api.patch(`${base}/endpoint/${segment(id)}`, body)
        : await api.post(`${base}/endpoint`, body);
      await api.put(`${base}/endpoint/${segment(saved.id)}/headers`, { headers: customHeaders });
      location.hash = `#/endpoint/${saved.id}`;
    } catch (error) {
      notice(main, "error", error.message);
    }
  });
  show(main, h("h2", {}, id ? "Edit endpoint" : "Add endpoint"), form);
}

/** Success ratio of the last attempts, oldest first, in buckets of `size`. */
function successBuckets(attempts, size = 5) {
  const ordered = [...attempts].reverse();
  const buckets = [];
  for (let index = 0; index < ordered.length; index += size) {
    const slice = ordered.slice(index, index + size);
    buckets.push(slice.filter((attempt) => attempt.status === 0).length / slice.length);
  }
  while (buckets.length < 10) buckets.unshift(null);
  return buckets.slice(-10);
}

async function endpointView(id) {
  const path = `${base}/endpoint/${segment(id)}`;
  // No `/stats` here: it counts the endpoint's whole log (a third of a second at a million
  // deliveries); the page's figures come from the last 50 attempts (BENCHMARKS.md, pages).
  const [endpoint, attempts, types, transformation] = await Promise.all([
    api.get(path),
    api.get(`${base}/attempt/endpoint/${segment(id)}?limit=50`),
    api.get("/api/v1/event-type?limit=250").catch(() => ({ data: [] })),
    api.get(`${path}/transformation`).catch(() => null),
  ]);
  const secretBox = h("span", { class: "secret", id: "secret" }, "••••••••");
  const reveal = h("button", { class: "secondary", type: "button", id: "reveal-secret" }, "Reveal secret");
  reveal.addEventListener("click", async () => {
    try {
      secretBox.textContent = (await api.get(`${path}/secret`)).key;
    } catch (error) {
      notice(main, "error", error.message);
    }
  });
  const rotate = h("button", { class: "secondary", type: "button", id: "rotate-secret" }, "Rotate secret");
  rotate.addEventListener("click", async () => {
    if (!confirm("Rotate the signing secret? The old one keeps signing for 24 hours.")) return;
    try {
      await api.post(`${path}/secret/rotate`, {});
      secretBox.textContent = (await api.get(`${path}/secret`)).key;
      notice(main, "ok", "Secret rotated: the previous one keeps signing for 24 hours.");
    } catch (error) {
      notice(main, "error", error.message);
    }
  });
  const pause = h("button", { class: "secondary", type: "button", id: "pause" }, endpoint.disabled ? "Resume" : "Pause");
  pause.addEventListener("click", async () => {
    await act(() => api.patch(path, { disabled: !endpoint.disabled }), endpoint.disabled ? "Resumed." : "Paused.");
    route();
  });
  const remove = h("button", { class: "danger", type: "button", id: "delete" }, "Delete");
  remove.addEventListener("click", async () => {
    if (!confirm("Delete this endpoint? Its pending deliveries go with it.")) return;
    if (await act(() => api.delete(path))) location.hash = "#/endpoints";
  });
  const exampleType = h("select", { id: "example-type" }, types.data.map((type) => h("option", { value: type.name }, type.name)));
  const sendExample = h("button", { type: "button", id: "send-example" }, "Send example");
  sendExample.addEventListener("click", async () => {
    const sent = await act(() => api.post(`${path}/send-example`, { eventType: exampleType.value }), "Example sent.");
    if (sent) location.hash = `#/message/${sent.id}`;
  });
  const since = h("input", { type: "datetime-local", id: "recover-since" });
  const recover = h("button", { class: "secondary", type: "button", id: "recover" }, "Recover failed since");
  recover.addEventListener("click", async () => {
    if (!since.value) return notice(main, "error", "Choose a time to recover from.");
    const task = await act(() => api.post(`${path}/recover`, { since: new Date(since.value).toISOString() }));
    if (task) notice(main, "ok", `${task.count} failed deliveries will be sent again.`);
  });
  const code = h("textarea", { id: "transformation-code", readonly: !can("ManageTransformations") }, transformation?.code || "function handler(webhook) {\n  return webhook;\n}");
  const enabled = h("input", { type: "checkbox", id: "transformation-enabled", checked: Boolean(transformation?.enabled), disabled: !can("ManageTransformations") });
  const testPayload = h("textarea", { id: "transformation-payload" }, '{"example": true}');
  const testOutput = h("pre", { id: "transformation-output" }, "");
  const saveCode = h("button", { type: "button", id: "save-transformation" }, "Save transformation");
  saveCode.addEventListener("click", () => act(() => api.patch(`${path}/transformation`, { code: code.value, enabled: enabled.checked }), "Transformation saved."));
  const testCode = h("button", { class: "secondary", type: "button", id: "test-transformation" }, "Test");
  testCode.addEventListener("click", async () => {
    let payload;
    try {
      payload = JSON.parse(testPayload.value);
    } catch {
      return notice(main, "error", "The test payload is not JSON.");
    }
    const result = await act(() => api.post(`${path}/transformation/test`, { code: code.value, payload, eventType: exampleType.value || "test.event" }));
    if (result) testOutput.textContent = pretty(result);
  });
  const recent = attempts.data.length;
  const recentOk = attempts.data.filter((attempt) => attempt.status === 0).length;
  show(
    main,
    h("h2", {}, endpoint.url || "(polling endpoint)"),
    h("p", {}, endpoint.description),
    can("ManageEndpoint") && h("div", { class: "actions" }, h("a", { class: "button", href: `#/endpoint/${id}/edit`, id: "edit" }, "Edit"), pause, remove),
    h("div", { class: "grid" },
      h("div", { class: "card" }, h("div", { class: "figure", id: "success-rate" }, recent ? `${Math.round((100 * recentOk) / recent)}%` : "–"), h("div", { class: "caption" }, `of the last ${recent} attempts succeeded`)),
      h("div", { class: "card" }, h("div", { class: "figure" }, String(recent - recentOk)), h("div", { class: "caption" }, "of them failed")),
      h("div", { class: "card" }, bars(successBuckets(attempts.data), { label: "success rate of the last attempts" }), h("div", { class: "caption" }, "success rate, last attempts"))),
    can("ViewEndpointSecret") && [
      h("h3", {}, "Signing secret"),
      h("p", {}, secretBox),
      h("div", { class: "actions" }, reveal, can("ManageEndpointSecret") && rotate),
    ],
    can("CreateAttempts") && [
      h("h3", {}, "Send an example"),
      h("div", { class: "actions" }, exampleType, sendExample),
      h("h3", {}, "Recover"),
      h("div", { class: "actions" }, since, recover),
    ],
    h("h3", {}, "Transformation"),
    h("label", {}, h("span", {}, enabled, " enabled")),
    code,
    can("ManageTransformations") && [
      h("label", {}, "Test payload", testPayload),
      h("div", { class: "actions" }, saveCode, testCode),
      testOutput,
    ],
    h("h3", {}, "Recent attempts"),
    attemptsTable(attempts.data),
  );
}

async function act(call, success) {
  try {
    const result = await call();
    if (success) notice(main, "ok", success);
    return result ?? true;
  } catch (error) {
    notice(main, "error", error.message);
    return null;
  }
}

function attemptsTable(attempts) {
  return table(
    [
      ["When", (attempt) => when(attempt.timestamp)],
      ["Message", (attempt) => h("a", { href: `#/message/${attempt.msgId}` }, attempt.msgId)],
      ["Status", (attempt) => h("span", { class: `status-${attempt.status}` }, `${statusText[attempt.status] || attempt.status} (${attempt.responseStatusCode})`)],
      ["Duration", (attempt) => `${attempt.responseDurationMs} ms`],
    ],
    attempts,
    { empty: "No attempts yet." },
  );
}

async function messagesView(iterator) {
  const listed = await page(api, `${base}/msg`, iterator);
  const more = listed.iterator ? h("button", { class: "secondary", type: "button" }, "Older") : null;
  more?.addEventListener("click", () => messagesView(listed.iterator));
  show(
    main,
    h("h2", {}, "Messages"),
    table(
      [
        ["When", (message) => when(message.timestamp)],
        ["Event type", (message) => message.eventType],
        ["Id", (message) => h("a", { href: `#/message/${message.id}` }, message.id)],
      ],
      listed.items,
      { empty: "No messages yet." },
    ),
    more,
  );
}

async function messageView(id) {
  const [message, attempts, destinations] = await Promise.all([
    api.get(`${base}/msg/${segment(id)}`),
    api.get(`${base}/attempt/msg/${segment(id)}?limit=50`),
    api.get(`${base}/msg/${segment(id)}/endpoint?limit=50`).catch(() => ({ data: [] })),
  ]);
  const attemptDetail = h("div", { id: "attempt-detail" });
  const rows = attempts.data.map((attempt) => ({ ...attempt }));
  show(
    main,
    h("h2", {}, message.eventType),
    h("p", {}, `${message.id} · ${when(message.timestamp)}`),
    h("h3", {}, "Payload"),
    h("pre", { id: "payload" }, pretty(message.payload)),
    h("h3", {}, "Endpoints"),
    table(
      [
        ["Endpoint", (state) => h("a", { href: `#/endpoint/${state.id}` }, state.url || state.id)],
        ["Status", (state) => h("span", { class: `status-${state.status}` }, statusText[state.status] || String(state.status))],
        ["", (state) => {
          if (!can("CreateAttempts")) return null;
          const resend = h("button", { class: "secondary", type: "button", dataset: { endpoint: state.id } }, "Resend");
          resend.addEventListener("click", () => act(() => api.post(`${base}/msg/${segment(id)}/endpoint/${segment(state.id)}/resend`), "Sent again."));
          return resend;
        }],
      ],
      destinations.data,
      { empty: "This message went to no endpoint." },
    ),
    h("h3", {}, "Attempts"),
    table(
      [
        ["When", (attempt) => when(attempt.timestamp)],
        ["Status", (attempt) => h("span", { class: `status-${attempt.status}` }, `${statusText[attempt.status] || attempt.status} (${attempt.responseStatusCode})`)],
        ["Duration", (attempt) => `${attempt.responseDurationMs} ms`],
        ["", (attempt) => {
          const open = h("button", { class: "secondary", type: "button", dataset: { attempt: attempt.id } }, "Details");
          open.addEventListener("click", async () => {
            // The request as sent; none for an attempt that finished without one.
            const sent = await api.get(`${base}/msg/${segment(id)}/attempt/${segment(attempt.id)}/request`).catch(() => null);
            show(attemptDetail,
              h("h3", {}, `Attempt ${attempt.id}`),
              h("p", {}, `${sent?.method || "—"} ${attempt.url || "(not sent)"} → ${attempt.responseStatusCode} in ${attempt.responseDurationMs} ms`),
              sent && [
                h("h3", {}, "Request headers"),
                h("pre", { id: "request-headers" }, sent.headers.map((header) => `${header.name}: ${header.value}`).join("\n")),
                h("h3", {}, "Request body"),
                h("pre", { id: "request-body" }, sent.body),
              ],
              h("h3", {}, "Response body"),
              h("pre", { class: "response" }, attempt.response));
          });
          return open;
        }],
      ],
      rows,
      { empty: "No attempts yet." },
    ),
    attemptDetail,
  );
}

async function eventTypesView() {
  const listed = await api.get("/api/v1/event-type?limit=250&with_content=true");
  show(
    main,
    h("h2", {}, "Event types"),
    listed.data.length
      ? listed.data.map((type) => h("section", { class: "card" },
        h("h3", {}, type.name),
        h("p", {}, type.description),
        type.schemas ? h("pre", {}, pretty(type.schemas)) : h("p", { class: "empty" }, "No schema.")))
      : h("p", { class: "empty" }, "No event types yet."),
  );
}

document.getElementById("logout").addEventListener("click", async () => {
  try {
    await api.post("/api/v1/auth/logout");
  } catch {
    // Ended already: forgetting it here is all that is left to do.
  }
  sessionStorage.removeItem("kait.portal");
  show(main, h("h2", {}, "Signed out"), h("p", {}, "Open a new portal link to come back."));
});

window.addEventListener("hashchange", route);
route();
