// The system map (system.html): the exchange's processes as boxes joined by the way requests flow,
// each coloured by its health (up and ready, up but not ready, down) with its instance, request
// rate and p99 latency; redrawn from `GET /api/v1/system` every interval it names (2 s).

import { api, explain, isMissingRoute } from "./api.js";
import { byId, h, s, say } from "./dom.js";
import { clock } from "./format.js";
import { mountHeader } from "./header.js";
import * as session from "./session.js";

const W = 148;
const H = 100;
const col = (i) => 10 + i * 166;
/** Where each known process sits: requests flow left to right. */
const PLACES = {
  "market-sim": [col(0), 14],
  nginx: [col(0), 170],
  "gateway-1": [col(1), 64],
  "gateway-2": [col(1), 276],
  "order-svc-1": [col(2), 64],
  "order-svc-2": [col(2), 276],
  broker: [col(3), 170],
  matcher: [col(4), 170],
  redis: [col(5), 170],
};
/** The map drawn before the first answer (or by a gateway without /api/v1/system). */
const DEFAULT = {
  nodes: ["nginx", "gateway-1", "gateway-2", "order-svc-1", "order-svc-2", "broker", "matcher", "redis"].map((name) => ({ name })),
  edges: [
    ["nginx", "gateway-1"], ["nginx", "gateway-2"],
    ["gateway-1", "order-svc-1"], ["gateway-1", "order-svc-2"], ["gateway-2", "order-svc-1"], ["gateway-2", "order-svc-2"],
    ["order-svc-1", "broker"], ["order-svc-2", "broker"], ["broker", "matcher"], ["matcher", "redis"],
  ],
};

mountHeader();
session.refreshMe().catch(() => {});

const map = byId("map");
const served = byId("served-by");

function health(n) {
  if (n.up === undefined) return "unknown";
  if (!n.up) return "down";
  return n.ready ? "ready" : "up";
}

const STATE_WORDS = { ready: "up, ready", up: "up, not ready", down: "down", unknown: "unknown" };

function place(nodes) {
  const at = new Map();
  let spare = 1;
  for (const n of nodes) {
    at.set(n.name, PLACES[n.name] ?? [col(spare++ % 6), 24]);
  }
  return at;
}

function edgePath([x1, y1], [x2, y2]) {
  let a;
  let b;
  if (x2 > x1) [a, b] = [[x1 + W, y1 + H / 2], [x2, y2 + H / 2]];
  else if (x2 < x1) [a, b] = [[x1, y1 + H / 2], [x2 + W, y2 + H / 2]];
  else [a, b] = y2 > y1 ? [[x1 + W / 2, y1 + H], [x2 + W / 2, y2]] : [[x1 + W / 2, y1], [x2 + W / 2, y2 + H]];
  const dx = (b[0] - a[0]) / 2;
  return `M${a[0]},${a[1]} C${a[0] + dx},${a[1]} ${b[0] - dx},${b[1]} ${b[0]},${b[1]}`;
}

const fixed = (v) => v.toFixed(v < 10 ? 1 : 0);
const rate = (n) => (typeof n.rps === "number" ? `${fixed(n.rps)} req/s` : n.up === false ? "no answer" : "—");
const p99 = (n) => (typeof n.p99_ms === "number" ? `p99 ${fixed(n.p99_ms)} ms` : "");

/** The box's last line: what else is worth saying about it. */
function note(n, view, state) {
  if (state === "down") return "DOWN";
  if (n.name === view.served_by) return "served this page";
  if (typeof n.commands_per_s === "number") return `${fixed(n.commands_per_s)} commands/s`;
  return "";
}

function draw(view) {
  const at = place(view.nodes);
  const defs = s(
    "defs",
    {},
    s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, s("path", { d: "M0,0 L10,5 L0,10 z", fill: "#3b4a5c" })),
  );
  const edges = view.edges
    .filter(([a, b]) => at.has(a) && at.has(b))
    .map(([a, b]) => {
      // The main flow goes one column right; reads that skip columns and feeds that flow back
      // (the broker's events to the gateways) are drawn lighter.
      const step = (at.get(b)[0] - at.get(a)[0]) / 166;
      const main = step === 1 || (step === 0 && a === "market-sim");
      return s("path", { class: main ? "edge" : "edge side", d: edgePath(at.get(a), at.get(b)), "marker-end": "url(#arrow)", dataset: { from: a, to: b } });
    });
  const boxes = view.nodes.map((n) => {
    const [x, y] = at.get(n.name);
    const state = health(n);
    const instance = n.instance ?? (n.kind && n.kind !== n.name ? n.kind : "");
    return s(
      "g",
      { class: "node", dataset: { node: n.name, state, served: String(n.name === view.served_by) }, transform: `translate(${x},${y})` },
      s("title", {}, `${n.name}: ${STATE_WORDS[state]}${n.error ? ` — ${n.error}` : ""}`),
      s("rect", { width: W, height: H, rx: 8 }),
      s("text", { class: "name", x: 10, y: 21 }, n.name),
      s("text", { class: "stat", x: 10, y: 39 }, instance || STATE_WORDS[state]),
      s("text", { class: "stat", x: 10, y: 55 }, rate(n)),
      s("text", { class: "stat", x: 10, y: 71 }, p99(n)),
      s("text", { class: "stat note", x: 10, y: 89 }, note(n, view, state)),
    );
  });
  map.replaceChildren(map.querySelector("desc"), defs, ...edges, ...boxes);

  byId("nodes-body").replaceChildren(
    ...view.nodes.map((n) => {
      const state = health(n);
      return h(
        "tr",
        { dataset: { node: n.name, state } },
        h("th", { scope: "row" }, n.name),
        h("td", { class: "state" }, STATE_WORDS[state]),
        h("td", {}, n.instance ?? "—"),
        h("td", { class: "num" }, typeof n.rps === "number" ? n.rps.toFixed(1) : "—"),
        h("td", { class: "num" }, typeof n.commands_per_s === "number" ? n.commands_per_s.toFixed(1) : "—"),
        h("td", { class: "num" }, typeof n.p99_ms === "number" ? `${n.p99_ms.toFixed(1)} ms` : "—"),
        h("td", {}, n.error ?? ""),
      );
    }),
  );
}

async function refresh() {
  let wait = 2000;
  try {
    const view = await api("GET", "/api/v1/system");
    wait = view.interval_ms || wait;
    draw(view);
    served.dataset.servedBy = view.served_by ?? "";
    say(served, `Served by ${view.served_by} · checked ${clock((view.checked_ms ?? Date.now()) * 1e6)}`);
  } catch (e) {
    delete served.dataset.servedBy;
    if (isMissingRoute(e)) {
      draw({ ...DEFAULT, served_by: null });
      say(served, "This exchange does not report its health yet (no /api/v1/system): the map shows its shape only.", "error");
      wait = 10_000;
    } else {
      say(served, `Could not read the system's state: ${explain(e)}`, "error");
    }
  }
  setTimeout(refresh, wait);
}

draw({ ...DEFAULT, served_by: null });
refresh();
