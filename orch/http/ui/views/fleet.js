// Fleet: every agent, filtered by status, type and capability, in a virtual list:
// only the rows in sight exist in the page, fetched a page at a time
// (GET /agents?offset=&limit=), so 10,000 agents cost what 50 do.

import { api, describeError, segment } from "../api.js";
import { age, clear, h, stateBadge, throttle } from "../dom.js";
import { latest, onEvents, onStats } from "../live.js";

const ROW_PX = 30;
const CHUNK = 200; // agents per request
const OVERSCAN = 10;
const REFRESH_MS = 2000; // heartbeat ages move; the rows in sight are re-read this often
const STATES = ["registered", "idle", "busy", "stopping", "stopped", "unhealthy", "lost", "failed"];

function load(agent) {
  const slots = agent.config ? agent.config.max_concurrent_tasks : 1;
  return `${agent.current_tasks.length} / ${slots}`;
}

function field(agent, key) {
  const value = agent.metadata ? agent.metadata[key] : undefined;
  return value === undefined || value === null ? "–" : String(value);
}

const COLUMNS = [
  ["Agent", (a) => h("a", { href: `#/agents/${segment(a.agent_id)}` }, a.agent_id)],
  ["Status", (a) => stateBadge(a.status)],
  ["Type", (a) => a.agent_type],
  ["Capabilities", (a) => a.capabilities.join(", ") || "–"],
  ["Load", (a) => load(a)],
  ["Heartbeat", (a) => (a.last_heartbeat_at === null ? "–" : `${age(a.last_heartbeat_at)} ago`)],
  ["Restarts", (a) => String(a.restarts)],
  ["Host", (a) => field(a, "host")],
  ["PID", (a) => field(a, "pid")],
];

export function mount(root, { params }) {
  const filters = {
    status: params.get("status") || "",
    agent_type: params.get("agent_type") || "",
    capability: params.get("capability") || "",
  };
  let matched = 0;
  let generation = 0; // bumped when filters change: late answers of old ones are dropped
  const chunks = new Map(); // chunk index -> agents
  const inFlight = new Set();

  const status = h("select", { id: "filter-status", "aria-label": "Status" }, h("option", { value: "" }, "any status"), STATES.map((s) => h("option", { value: s }, s)));
  status.value = filters.status;
  const type = h("input", { id: "filter-type", placeholder: "agent type", "aria-label": "Agent type", value: filters.agent_type });
  const capability = h("input", { id: "filter-capability", placeholder: "capability", "aria-label": "Capability", value: filters.capability });
  const goto = h("input", { id: "goto-agent", placeholder: "open agent by id", "aria-label": "Open agent by id" });
  const summary = h("p", { id: "fleet-summary", className: "summary" });
  const error = h("p", { className: "error", role: "alert" });
  const header = h("div", { className: "vrow vhead" }, COLUMNS.map(([label]) => h("span", {}, label)));
  const spacer = h("div", { className: "vspacer" });
  const rows = h("div", { className: "vrows" });
  const viewport = h("div", { id: "fleet-list", className: "viewport" }, spacer, rows);

  const applyFilters = () => {
    filters.status = status.value;
    filters.agent_type = type.value.trim();
    filters.capability = capability.value.trim();
    const query = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
    history.replaceState(null, "", `#/fleet${query.toString() ? `?${query}` : ""}`);
    generation += 1;
    chunks.clear();
    viewport.scrollTop = 0;
    fetchVisible(true);
  };
  status.addEventListener("change", applyFilters);
  for (const input of [type, capability]) input.addEventListener("change", applyFilters);
  goto.addEventListener("change", () => {
    if (goto.value.trim()) location.hash = `#/agents/${segment(goto.value.trim())}`;
  });

  clear(
    root,
    h("h2", {}, "Fleet"),
    h("div", { className: "filters" }, status, type, capability, h("button", { type: "button", id: "filter-apply", onclick: applyFilters }, "Filter"), goto),
    summary,
    error,
    h("div", { className: "vtable" }, header, viewport),
  );

  function visibleRange() {
    const first = Math.max(0, Math.floor(viewport.scrollTop / ROW_PX) - OVERSCAN);
    const count = Math.ceil(viewport.clientHeight / ROW_PX) + 2 * OVERSCAN;
    return [first, Math.min(matched, first + count)];
  }

  function render() {
    spacer.style.height = `${matched * ROW_PX}px`;
    const [first, last] = visibleRange();
    rows.style.transform = `translateY(${first * ROW_PX}px)`;
    const out = [];
    for (let i = first; i < last; i += 1) {
      const chunk = chunks.get(Math.floor(i / CHUNK));
      const agent = chunk ? chunk[i % CHUNK] : undefined;
      if (!agent) {
        out.push(h("div", { className: "vrow loading", dataset: { index: i } }, h("span", {}, "…")));
        continue;
      }
      out.push(h("div", { className: "vrow", dataset: { index: i, agentId: agent.agent_id } }, COLUMNS.map(([, cell]) => h("span", {}, cell(agent)))));
    }
    clear(rows, out);
    const total = latest.stats ? latest.stats.total_agents : matched;
    summary.textContent = `${matched} of ${total} agents shown; rows ${matched ? first + 1 : 0}–${last}`;
  }

  async function fetchChunk(index, force) {
    const key = `${generation}:${index}`;
    if (inFlight.has(key) || (!force && chunks.has(index))) return;
    inFlight.add(key);
    const mine = generation;
    const query = new URLSearchParams({ offset: index * CHUNK, limit: CHUNK });
    if (filters.status) query.set("status", filters.status);
    if (filters.agent_type) query.set("agent_type", filters.agent_type);
    if (filters.capability) query.set("capability", filters.capability);
    try {
      const page = await api(`/agents?${query}`);
      if (mine !== generation) return;
      matched = page.matched;
      chunks.set(index, page.agents);
      error.textContent = "";
      render();
    } catch (e) {
      if (mine === generation) error.textContent = describeError(e);
    } finally {
      inFlight.delete(key);
    }
  }

  function fetchVisible(force) {
    const [first, last] = visibleRange();
    const lastIndex = Math.max(first, last - 1);
    for (let c = Math.floor(first / CHUNK); c <= Math.floor(lastIndex / CHUNK); c += 1) fetchChunk(c, force);
    render();
  }

  const refresh = throttle(() => fetchVisible(true), 500);
  viewport.addEventListener("scroll", () => fetchVisible(false));
  const timer = setInterval(() => fetchVisible(true), REFRESH_MS);
  const offEvents = onEvents((events) => {
    if (events.some((e) => e.type.startsWith("agent.") || e.type.startsWith("task."))) refresh();
  });
  const offStats = onStats(render);
  fetchVisible(true);

  return {
    unmount() {
      clearInterval(timer);
      refresh.cancel();
      offEvents();
      offStats();
      generation += 1;
    },
  };
}
