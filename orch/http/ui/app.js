// The dashboard's shell: the token prompt, the health banner and counts, the
// navigation, and mounting one view at a time from the address's #fragment.

import { ApiError, api, describeError, forgetToken, onUnauthorized, setToken, token } from "./api.js";
import { initActions } from "./actions.js";
import { clear, clock, h } from "./dom.js";
import { latest, onFeedStatus, onStats, pollOnce, startFeed, startPolling } from "./live.js";
import * as agent from "./views/agent.js";
import * as charts from "./views/charts.js";
import * as events from "./views/events.js";
import * as fleet from "./views/fleet.js";
import * as locks from "./views/locks.js";
import * as task from "./views/task.js";
import * as tasks from "./views/tasks.js";

const $ = (id) => document.getElementById(id);
const VIEWS = { fleet, agent, tasks, task, locks, events, charts };
const NAV_OF = { agent: "fleet", task: "tasks" };

let mounted = null;
let started = false;

// A typed or pasted address may hold a stray "%": it names what it says rather than
// leaving a blank page behind a URIError.
function decodeSegment(part) {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

// "#/agents/a1" -> {name: "agent", arg: "a1"}; "#/fleet?status=idle" -> params.
function parseRoute() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeSegment);
  const params = new URLSearchParams(query);
  if (parts[0] === "agents" && parts.length > 1) return { name: "agent", arg: parts.slice(1).join("/"), params };
  if (parts[0] === "tasks" && parts.length > 1) return { name: "task", arg: parts.slice(1).join("/"), params };
  const name = VIEWS[parts[0]] && !NAV_OF[parts[0]] ? parts[0] : "fleet";
  return { name, arg: null, params };
}

function route() {
  if (mounted) mounted.unmount();
  const { name, arg, params } = parseRoute();
  const nav = NAV_OF[name] || name;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === nav);
  const root = clear($("view"));
  root.dataset.view = name;
  mounted = VIEWS[name].mount(root, { arg, params });
}

const CHECK_LABELS = { store: "Store", todo_service: "TODO service", gateway: "Gateway", actors: "Actors" };

// When the server stopped answering (null while it answers): the banner and counts
// then say so, rather than go on showing its last "Store: ok" as if it were current.
let unreachableSince = null;

function renderUnreachable(error) {
  unreachableSince = unreachableSince || Date.now() / 1000;
  const banner = $("health");
  banner.className = "banner banner-unhealthy";
  clear(
    banner,
    h("strong", { className: "overall" }, "unreachable"),
    h("span", { className: "check check-failing", dataset: { check: "server" } }, `No answer from the server since ${clock(unreachableSince)} (${describeError(error)}); the counts below are from before.`),
  );
  $("counts").classList.add("stale");
}

function renderHealth(health) {
  const banner = $("health");
  if (!health) return;
  unreachableSince = null;
  $("counts").classList.remove("stale");
  banner.className = `banner banner-${health.status}`;
  const items = [h("strong", { className: "overall" }, String(health.status))];
  for (const [name, check] of Object.entries(health.checks || {})) {
    const label = CHECK_LABELS[name] || name;
    const detail = check.last_error ? ` (${check.last_error})` : "";
    items.push(h("span", { className: `check check-${check.status}`, dataset: { check: name } }, `${label}: ${check.status}${detail}`));
  }
  if (health.role) items.push(h("span", { className: "check role", dataset: { check: "role" } }, `Role: ${health.role}`));
  if (health.leader) {
    const leader = typeof health.leader === "object" ? health.leader.url || JSON.stringify(health.leader) : health.leader;
    items.push(h("span", { className: "check leader", dataset: { check: "leader" } }, `Leader: ${leader}`));
  }
  clear(banner, items);
}

// Each count links to the view that lists what it counts (a lost agent at 3 a.m.
// is one click from the list of lost agents).
function renderCounts(stats) {
  if (!stats) return;
  const agents = stats.agents_by_state || {};
  const tasksByState = stats.tasks.tasks_by_state;
  const count = (label, value, key, href) =>
    h("a", { className: "count", href, dataset: { count: key } }, h("b", {}, String(value)), ` ${label}`);
  clear(
    $("counts"),
    count("agents", stats.total_agents, "agents", "#/fleet"),
    count("active", stats.active_agents, "active", "#/fleet"),
    count("unhealthy", agents.unhealthy || 0, "unhealthy", "#/fleet?status=unhealthy"),
    count("lost", agents.lost || 0, "lost", "#/fleet?status=lost"),
    count("failed agents", agents.failed || 0, "failed-agents", "#/fleet?status=failed"),
    count("pending", stats.pending_tasks, "pending", "#/tasks"),
    count("running", tasksByState.running + tasksByState.assigned, "running", "#/tasks"),
    count("completed", stats.total_tasks_completed, "completed", "#/tasks"),
    count("dead", tasksByState.dead, "dead", "#/tasks"),
    count("locks held", stats.locks.locks_held, "locks", "#/locks"),
  );
}

function showLogin(message) {
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token-input").focus();
}

async function begin() {
  // The first read tells whether the server wants a token: 401 means ask for it.
  try {
    await pollOnce();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      showLogin(token() ? "That token was refused." : "");
      return;
    }
    $("boot-error").hidden = false;
    $("boot-error").textContent = `The server did not answer: ${describeError(error)}`;
    return;
  }
  $("boot-error").hidden = true;
  $("login").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = !token();
  renderHealth(latest.health);
  renderCounts(latest.stats);
  if (!started) {
    started = true;
    startPolling();
    startFeed();
    window.addEventListener("hashchange", route);
  }
  route();
}

function init() {
  initActions();
  onStats(({ stats, health }) => {
    renderHealth(health);
    renderCounts(stats);
  });
  onFeedStatus((connected, error) => {
    const badge = $("live-status");
    badge.textContent = connected ? "live" : "reconnecting";
    badge.className = `live ${connected ? "on" : "off"}`;
    if (!connected && error instanceof ApiError && error.status === 0) renderUnreachable(error);
  });
  onUnauthorized(() => {
    if ($("login").hidden) showLogin(token() ? "The token was refused; enter it again." : "");
  });
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) return;
    setToken(value);
    $("token-input").value = "";
    begin();
  });
  $("sign-out").addEventListener("click", () => {
    forgetToken();
    location.reload();
  });
  begin();
}

init();
