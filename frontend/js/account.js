// The account panel: one form to log in or sign up (the API's own messages for bad names and
// passwords), and, once signed in, who you are and a Log out button.

import { explain } from "./api.js";
import { byId, say } from "./dom.js";
import * as session from "./session.js";
import * as state from "./state.js";

export function mountAccount() {
  const form = byId("auth-form");
  const signedIn = byId("signed-in");
  const message = byId("auth-message");
  const who = byId("signed-in-text");

  state.on("user", (user) => {
    form.hidden = Boolean(user?.canWrite);
    signedIn.hidden = !user;
    if (user) {
      who.textContent = user.canWrite
        ? `Signed in as ${user.username} (${user.role}).`
        : `Signed in as ${user.username} in another tab: log in again here to place orders.`;
      form.elements.username.value ||= user.username;
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const action = event.submitter?.value === "signup" ? "signup" : "login";
    const username = form.elements.username.value;
    const password = form.elements.password.value;
    say(message, action === "signup" ? "Creating your account…" : "Logging in…");
    for (const b of form.querySelectorAll("button")) b.disabled = true;
    try {
      await session[action](username, password);
      form.elements.password.value = "";
      say(message, action === "signup" ? "Account created; you are signed in." : "", "ok");
    } catch (e) {
      say(message, explain(e), "error");
      form.elements[e.message?.startsWith("password") ? "password" : "username"].focus();
    } finally {
      for (const b of form.querySelectorAll("button")) b.disabled = false;
    }
  });

  byId("logout").addEventListener("click", async () => {
    try {
      await session.logout();
      say(message, "Logged out.", "ok");
    } catch (e) {
      say(message, explain(e), "error");
    }
  });
}
