// An order's path through the exchange as a small waterfall: the five timestamps the pipeline
// writes on it (gateway received → published to the log → consumed by the matcher → matched →
// persisted to Redis), each stage a bar placed on one time axis with its duration.

import { h } from "./dom.js";
import { duration } from "./format.js";

export const HOPS = [
  ["gateway_ns", "gateway", "received at the edge"],
  ["published_ns", "published", "the broker acked the log write"],
  ["consumed_ns", "consumed", "the matcher read it from the log"],
  ["matched_ns", "matched", "the book applied it"],
  ["persisted_ns", "persisted", "written to Redis, readable here"],
];

/** The waterfall of `hops` (an order's `hops` object), as a figure. */
export function waterfall(hops = {}) {
  const times = HOPS.map(([key]) => (typeof hops?.[key] === "number" ? hops[key] : null));
  const known = times.filter((t) => t !== null).length;
  const t0 = times[0];
  const end = times.findLast((t) => t !== null);
  const total = t0 !== null && end !== null ? end - t0 : null;
  const rows = [];
  for (let i = 1; i < HOPS.length; i += 1) {
    const [, name, what] = HOPS[i];
    const [from, to] = [times[i - 1], times[i]];
    const bar = h("span", { class: "hop-bar" });
    const track = h("span", { class: "hop-track", "aria-hidden": "true" }, bar);
    let text = "not yet";
    if (from !== null && to !== null && total) {
      const d = Math.max(0, to - from);
      bar.style.marginLeft = `${((from - t0) / total) * 100}%`;
      bar.style.width = `${Math.max(0.5, (d / total) * 100)}%`;
      text = duration(d);
    }
    rows.push(
      h(
        "li",
        { class: "hop", dataset: { hop: name, known: String(to !== null) }, title: `${HOPS[i - 1][1]} → ${name}: ${what}` },
        h("span", { class: "hop-name" }, `→ ${name}`),
        track,
        h("span", { class: "hop-time num" }, text),
      ),
    );
  }
  return h(
    "figure",
    { class: "waterfall", dataset: { hops: String(known) } },
    h("figcaption", {}, total !== null ? `Path: ${duration(total)} from gateway to ${HOPS[times.lastIndexOf(end)][1]} (${known} of 5 hops)` : "Path: not recorded yet"),
    h("ol", {}, rows),
  );
}
