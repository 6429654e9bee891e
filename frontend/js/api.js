// Calls to the exchange's HTTP API, same origin through nginx. Answers are JSON; a refusal is
// `{"error": {"code", "message"}}`, thrown as an ApiError carrying the API's own words.
//
// Credentials: the login's token is kept in sessionStorage (this tab only) and sent as
// `Authorization: Bearer` — writes need it; the HttpOnly session cookie the login also sets
// authenticates reads and the WebSocket on its own.

const TOKEN_KEY = "tradinglab.token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The token, or null when there is none or it expired. */
export function token() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(TOKEN_KEY) ?? "null");
    if (saved && saved.expires_ms > Date.now()) return saved.token;
  } catch {
    /* a damaged entry counts as none */
  }
  return null;
}

export function saveToken(accessToken, expiresInSecs) {
  const expires_ms = Date.now() + Math.max(0, expiresInSecs - 30) * 1000;
  sessionStorage.setItem(TOKEN_KEY, JSON.stringify({ token: accessToken, expires_ms }));
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** `method` `path` with an optional JSON `body`; the parsed answer, or throws ApiError. */
export async function api(method, path, body) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  const t = token();
  if (t) headers.authorization = `Bearer ${t}`;
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (e) {
    throw new ApiError(0, "network", `could not reach the exchange (${e.message})`);
  }
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    /* not JSON: reported below */
  }
  if (!res.ok) {
    const err = json?.error;
    throw new ApiError(res.status, err?.code ?? `http_${res.status}`, err?.message ?? `HTTP ${res.status} ${res.statusText}`);
  }
  return json;
}

/** True if the error says this route does not exist here (yet): an older gateway. */
export function isMissingRoute(e) {
  return e instanceof ApiError && (e.status === 404 || e.status === 405) && /route|method/i.test(e.message);
}

/** The words to show a person for a failed call. */
export function explain(e) {
  if (!(e instanceof ApiError)) return String(e?.message ?? e);
  if (e.status === 401 && !token()) return `Log in to do this — the exchange says: ${e.message}`;
  if (e.code === "token_expired") return `Your session expired: log in again. (${e.message})`;
  return e.message;
}
