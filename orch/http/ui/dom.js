// Building the page without HTML strings: every value from the API becomes a text
// node (textContent), so an agent's metadata holding <script> shows as text.

import { serverNow } from "./api.js";

export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "className") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = String(value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function json(value) {
  return h("pre", { className: "json" }, JSON.stringify(value, null, 2));
}

// Seconds as "4.2 s", "3 min", "2 h".
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  const s = Math.max(0, seconds);
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

// Age of an epoch-seconds time from the server, from now on the server's clock.
export function age(epochSeconds) {
  if (!epochSeconds) return "–";
  return duration(serverNow() - epochSeconds);
}

export function clock(epochSeconds) {
  if (!epochSeconds) return "–";
  return new Date(epochSeconds * 1000).toLocaleTimeString();
}

export function stateBadge(state) {
  return h("span", { className: `state state-${String(state)}` }, String(state));
}

// Whether the operator is selecting text inside ``el`` (to copy an error or an id):
// a periodic re-read must not redraw it from under them; a real change still does.
export function selectingIn(el) {
  const selection = document.getSelection();
  return Boolean(selection && !selection.isCollapsed && selection.anchorNode && el.contains(selection.anchorNode));
}

export function link(href, label) {
  return h("a", { href }, label);
}

// A table from column definitions [{label, cell(row) -> Node|string}], or a line
// saying there is nothing.
export function table(columns, rows, { empty = "none", rowClass } = {}) {
  if (!rows.length) return h("p", { className: "empty" }, empty);
  const head = h("tr", {}, columns.map((c) => h("th", {}, c.label)));
  const body = rows.map((row) =>
    h("tr", { className: rowClass ? rowClass(row) : undefined }, columns.map((c) => h("td", {}, c.cell(row)))),
  );
  return h("table", {}, h("thead", {}, head), h("tbody", {}, body));
}

// Calls ``fn`` at most once per ``ms``, the last call winning (live refreshes).
export function throttle(fn, ms) {
  let timer = null;
  let pending = false;
  let last = 0;
  const run = () => {
    timer = null;
    pending = false;
    last = Date.now();
    fn();
  };
  const throttled = () => {
    if (pending) return;
    pending = true;
    timer = setTimeout(run, Math.max(0, last + ms - Date.now()));
  };
  throttled.cancel = () => {
    if (timer) clearTimeout(timer);
    timer = null;
    pending = false;
  };
  return throttled;
}
