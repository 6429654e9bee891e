// The bar on every page: the page links (Operator only for operators), the connection badge
// (#conn-status, with data-state for tests and a text for people) and who is signed in.

import { byId } from "./dom.js";
import * as state from "./state.js";

/** Wires the header's parts that the page has. */
export function mountHeader() {
  const operatorLink = document.getElementById("nav-operator");
  const who = document.getElementById("whoami");
  state.on("user", (user) => {
    if (operatorLink) operatorLink.hidden = user?.role !== "operator";
    if (who) who.textContent = user ? `${user.username} · ${user.role}` : "not signed in";
  });
  const conn = document.getElementById("conn-status");
  if (conn) state.on("conn", (c) => showConn(conn, c));
  for (const link of document.querySelectorAll("nav a")) {
    if (link.pathname === location.pathname || (location.pathname === "/" && link.pathname === "/index.html")) {
      link.setAttribute("aria-current", "page");
    }
  }
}

function showConn(el, c) {
  el.dataset.state = c.state;
  el.dataset.instance = c.instance ?? "";
  const text = {
    connecting: "connecting…",
    live: `live${c.instance ? ` · ${c.instance}` : ""}`,
    disconnected: `disconnected — reconnecting in ${c.retryIn ?? 0}s`,
    resyncing: `resyncing${c.waiting?.length ? ` ${c.waiting.join(", ")}` : ""}…`,
  }[c.state];
  byId("conn-text").textContent = text ?? c.state;
  el.title = c.state === "live" ? `Market data live from ${c.instance}` : text;
}
