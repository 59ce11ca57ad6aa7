// Pieces several views share: an event list and a key/value list.

import { age, clock, h, table } from "../dom.js";

const META = new Set(["seq", "type", "at"]);

// "agent_id=a1 error=boom" from an event's own fields, as text.
export function eventDetails(event) {
  return Object.entries(event)
    .filter(([key]) => !META.has(key))
    .map(([key, value]) => `${key}=${typeof value === "object" ? JSON.stringify(value) : value}`)
    .join(" ");
}

export function eventTable(events, empty = "no events yet") {
  return table(
    [
      { label: "#", cell: (e) => String(e.seq) },
      { label: "Time", cell: (e) => clock(e.at) },
      { label: "Type", cell: (e) => h("span", { className: `etype etype-${e.type.split(".")[0]}` }, e.type) },
      { label: "Details", cell: (e) => eventDetails(e) },
    ],
    events,
    { empty },
  );
}

// A definition list of [label, value-or-node] pairs.
export function facts(pairs) {
  return h(
    "dl",
    { className: "facts" },
    pairs.flatMap(([label, value]) => [h("dt", {}, label), h("dd", {}, value === null || value === undefined || value === "" ? "–" : value)]),
  );
}

// Whether an event concerns this agent or task (by its id fields).
export function mentions(event, key, id) {
  return event[key] !== undefined && String(event[key]) === String(id);
}

// "60% tests pass, writing docs (12 s ago)" from a task's last progress report: what
// a long task is doing is the first question about it, and a stale report is the
// sign of a stuck one.
export function progressText(progress) {
  if (!progress) return null;
  const percent = progress.percent === null || progress.percent === undefined ? "" : `${Math.round(progress.percent)}% `;
  return `${percent}${progress.message} (${age(progress.at)} ago)`;
}
