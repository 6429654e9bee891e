// Who is signed in. `GET /api/v1/auth/me` answers from the cookie (a reload, a new tab) or the
// token; `state.user` is `{username, role, canWrite}` or null. canWrite: this tab holds a token,
// which writes need — a signed-in tab without one is asked to log in again before its first write.

import { api, ApiError, forgetToken, saveToken, token } from "./api.js";
import * as state from "./state.js";

/** Asks the API who we are; sets state "user". */
export async function refreshMe() {
  try {
    const me = await api("GET", "/api/v1/auth/me");
    state.set("user", { username: me.username, role: me.role || "trader", canWrite: token() !== null });
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 404)) {
      forgetToken();
      state.set("user", null);
    } else {
      throw e;
    }
  }
  return state.get("user");
}

export async function login(username, password) {
  const answer = await api("POST", "/api/v1/auth/login", { username, password });
  saveToken(answer.access_token, answer.expires_in ?? 3600);
  return refreshMe();
}

export async function signup(username, password) {
  await api("POST", "/api/v1/auth/signup", { username, password });
  return login(username, password);
}

export async function logout() {
  try {
    await api("POST", "/api/v1/auth/logout");
  } finally {
    forgetToken();
    state.set("user", null);
  }
}

/** Throws the message a person needs if a write cannot be sent with credentials. */
export function needWriteToken() {
  const user = state.get("user");
  if (user && !token()) {
    throw new ApiError(
      401,
      "token_missing",
      `You are signed in as ${user.username}, but this tab has no session token for placing or changing orders: log in again.`,
    );
  }
}
