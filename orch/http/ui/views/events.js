// Events: the live feed, newest first, filtered by type and by any text in it.

import { clear, h } from "../dom.js";
import { onEvents, recentEvents } from "../live.js";
import { eventDetails, eventTable } from "./common.js";

const SHOWN = 300;

export function mount(root, { params }) {
  const kind = h("select", { id: "event-type", "aria-label": "Event type" }, h("option", { value: "" }, "every type"));
  const text = h("input", { id: "event-text", placeholder: "agent, task, resource…", "aria-label": "Text", value: params.get("q") || "" });
  const paused = h("input", { type: "checkbox", id: "event-pause" });
  const summary = h("p", { className: "summary", id: "events-summary" });
  const list = h("div", { id: "event-list" });
  const known = new Set();
  clear(
    root,
    h("h2", {}, "Events"),
    h("div", { className: "filters" }, kind, text, h("label", {}, paused, " pause")),
    summary,
    list,
  );

  function addTypes() {
    let added = false;
    for (const e of recentEvents) {
      if (!known.has(e.type)) {
        known.add(e.type);
        added = true;
      }
    }
    if (!added) return;
    const chosen = kind.value;
    clear(kind, h("option", { value: "" }, "every type"), [...known].sort().map((t) => h("option", { value: t }, t)));
    kind.value = chosen;
  }

  function render() {
    addTypes();
    if (paused.checked) return;
    const wanted = kind.value;
    const needle = text.value.trim().toLowerCase();
    const shown = [];
    for (let i = recentEvents.length - 1; i >= 0 && shown.length < SHOWN; i -= 1) {
      const e = recentEvents[i];
      if (wanted && e.type !== wanted) continue;
      if (needle && !`${e.type} ${eventDetails(e)}`.toLowerCase().includes(needle)) continue;
      shown.push(e);
    }
    summary.textContent = `${shown.length} shown of the ${recentEvents.length} newest events`;
    clear(list, eventTable(shown, "no event matches"));
  }

  kind.addEventListener("change", render);
  text.addEventListener("input", render);
  paused.addEventListener("change", render);
  const off = onEvents(render);
  render();
  return { unmount: off };
}
