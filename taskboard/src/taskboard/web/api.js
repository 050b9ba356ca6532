// The taskboard API as the page calls it: the bearer token of this tab, JSON in and out,
// problem+json errors raised as ApiError with the server's detail.

const TOKEN_KEY = "taskboard.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** An answer that was not 2xx: its status and, when there was one, its problem document. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(describe(status, problem));
    this.name = "ApiError";
    this.status = status;
    this.problem = problem;
  }
}

function describe(status, problem) {
  if (problem && typeof problem === "object") {
    const field = problem.field ? ` (${problem.field})` : "";
    const text = problem.detail || problem.title;
    if (text) return `${text}${field}`;
  }
  return `the server answered ${status}`;
}

/** Call the API: `body` is sent as JSON, the answer is parsed JSON (null for 204). */
export async function api(method, path, body, { signal, headers = {} } = {}) {
  const sent = { Accept: "application/json", ...headers };
  const current = token();
  if (current) sent.Authorization = `Bearer ${current}`;
  const init = { method, headers: sent, signal, cache: "no-store" };
  if (body !== undefined) {
    sent["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const type = response.headers.get("Content-Type") || "";
  const data = response.status !== 204 && type.includes("json") ? await response.json() : null;
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}
