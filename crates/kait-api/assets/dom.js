// Shared by the portal and the dashboard: building the page, calling the API, small charts.
//
// Everything that comes from the API is put into the page as text (textContent, attribute
// values through setAttribute): never as markup. A payload holding <script> or an onerror=
// attribute is shown as those characters. The pages' Content-Security-Policy forbids inline
// and foreign scripts besides.

/** An element with attributes (on* names become listeners) and children (strings are text). */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "dataset") {
      Object.assign(element.dataset, value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces everything inside `element`. */
export function show(element, ...children) {
  element.replaceChildren();
  append(element, children);
}

/** A JSON value as indented text, for <pre>. */
export function pretty(value) {
  try {
    return JSON.stringify(typeof value === "string" ? JSON.parse(value) : value, null, 2);
  } catch {
    return String(value);
  }
}

export function when(timestamp) {
  if (!timestamp) return "";
  const date = new Date(timestamp);
  return isNaN(date) ? String(timestamp) : date.toLocaleString();
}

/** An API client: a bearer token (portal) or the session cookie plus CSRF header (dashboard). */
export class Api {
  constructor({ token = null, csrf = null } = {}) {
    this.token = token;
    this.csrf = csrf;
  }

  async call(method, path, body) {
    const headers = { Accept: "application/json" };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (this.csrf && method !== "GET") headers["X-Kait-Csrf"] = this.csrf;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = text;
      }
    }
    if (!response.ok) {
      const error = new Error(describe(response.status, data));
      error.status = response.status;
      throw error;
    }
    return data;
  }

  get(path) { return this.call("GET", path); }
  post(path, body) { return this.call("POST", path, body === undefined ? {} : body); }
  put(path, body) { return this.call("PUT", path, body); }
  patch(path, body) { return this.call("PATCH", path, body); }
  delete(path) { return this.call("DELETE", path); }
}

/** The server's {code, detail} as one sentence. */
export function describe(status, data) {
  if (data && typeof data === "object") {
    const detail = Array.isArray(data.detail)
      ? data.detail.map((problem) => `${(problem.loc || []).slice(1).join(".")}: ${problem.msg}`).join("; ")
      : data.detail;
    return `${status} ${data.code || ""}: ${detail || ""}`.trim();
  }
  return `${status}: ${data || "request failed"}`;
}

/** A notice at the top of `root` (kind: "error" or "ok"), replaced by the next one. */
export function notice(root, kind, text) {
  let bar = root.querySelector(".notice");
  if (!bar) {
    bar = h("div", { class: "notice", role: "status" });
    root.prepend(bar);
  }
  bar.className = `notice ${kind}`;
  bar.textContent = text;
}

/** A bar chart of `values` (0..1 each, or null for no data) as SVG, labelled for people. */
export function bars(values, { label = "", height = 60, width = 300 } = {}) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const step = width / Math.max(values.length, 1);
  values.forEach((value, index) => {
    const rect = document.createElementNS(ns, "rect");
    const filled = value === null ? 0.02 : Math.max(0.02, value);
    rect.setAttribute("x", String(index * step + 1));
    rect.setAttribute("width", String(Math.max(step - 2, 1)));
    rect.setAttribute("y", String(height - filled * height));
    rect.setAttribute("height", String(filled * height));
    rect.setAttribute("class", value === null ? "empty" : value >= 0.95 ? "good" : value >= 0.5 ? "fair" : "bad");
    svg.append(rect);
  });
  return svg;
}

/** Follows an iterator-paged listing one page at a time: returns {items, next()}. */
export async function page(api, path, iterator) {
  const separator = path.includes("?") ? "&" : "?";
  const data = await api.get(`${path}${separator}limit=50${iterator ? `&iterator=${encodeURIComponent(iterator)}` : ""}`);
  return { items: data.data || [], iterator: data.done ? null : data.iterator };
}

/** A table: `columns` is [[heading, row => cell]]; a cell may be a node or text. */
export function table(columns, rows, { empty = "Nothing yet." } = {}) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, columns.map(([heading]) => h("th", {}, heading)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map(([, cell]) => h("td", {}, cell(row)))))),
  );
}

export const segment = encodeURIComponent;
