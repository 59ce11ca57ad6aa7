// The one way the page talks to the server: fetch with the admin token, JSON in and
// out, and problem+json errors turned into ApiError. The token lives in this tab's
// sessionStorage and travels only in the Authorization header, never in a URL.

const TOKEN_KEY = "june-orchestrator.admin-token";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

const unauthorizedListeners = new Set();

// Called with the ApiError whenever the server answers 401: the token is missing
// or wrong, and the page must ask for it again.
export function onUnauthorized(listener) {
  unauthorizedListeners.add(listener);
}

// The server's clock minus this browser's, in seconds, from the answers' Date header
// (whole seconds): ages of server times are told on the server's clock, so a
// browser whose clock is off does not show a fresh heartbeat as minutes old.
let skewS = 0;

function noteServerDate(response) {
  const header = response.headers.get("Date");
  const serverS = header ? Date.parse(header) / 1000 : NaN;
  if (Number.isNaN(serverS)) return;
  const offS = serverS + 0.5 - Date.now() / 1000; // the header drops the fraction
  skewS = Math.abs(offS) > 2 ? offS : 0; // within the header's precision: trust ours
}

// Now, on the server's clock, in epoch seconds.
export function serverNow() {
  return Date.now() / 1000 + skewS;
}

export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json, application/problem+json" };
  const secret = token();
  if (secret) headers.Authorization = `Bearer ${secret}`;
  const init = { method, headers, signal, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, { title: "Server unreachable", detail: String(error.message) });
  }
  noteServerDate(response);
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const problem =
      data && typeof data === "object"
        ? data
        : { title: response.statusText, status: response.status, detail: String(data) };
    const error = new ApiError(response.status, problem);
    if (response.status === 401) unauthorizedListeners.forEach((listener) => listener(error));
    throw error;
  }
  return data;
}

// A path segment from an id (ids are validated server-side, but never trusted here).
export function segment(value) {
  return encodeURIComponent(String(value));
}

// "status 409 conflict: agent 'a1' is busy" from an ApiError, for people.
export function describeError(error) {
  if (!(error instanceof ApiError)) return String(error && error.message ? error.message : error);
  const p = error.problem;
  const parts = [p.title || "Error"];
  if (p.detail) parts.push(p.detail);
  const code = p.code ? ` (${p.code})` : "";
  return `${error.status || ""} ${parts.join(": ")}${code}`.trim();
}
