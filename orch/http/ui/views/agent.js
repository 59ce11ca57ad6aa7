// One agent: its record and config, the tasks it holds, its recent events, and the
// operator's actions on it (start, stop with or without draining, deregister).

import { api, describeError, segment } from "../api.js";
import { act } from "../actions.js";
import { age, clear, h, json, link, stateBadge, table, selectingIn, throttle } from "../dom.js";
import { onEvents, recentEvents } from "../live.js";
import { eventTable, facts, mentions } from "./common.js";

export function mount(root, { arg: agentId }) {
  const path = `/agents/${segment(agentId)}`;
  const body = h("div", { id: "agent-page" }, h("p", {}, "Loading…"));
  let alive = true;
  clear(root, h("p", {}, link("#/fleet", "← Fleet")), h("h2", {}, "Agent ", h("span", { id: "agent-title" }, agentId)), body);

  const actions = (agent) =>
    h(
      "div",
      { className: "actions" },
      h("button", { type: "button", id: "action-start", onclick: () => act({ title: `Start ${agentId}`, message: `Admit agent ${agentId} to scheduling?`, confirmLabel: "Start", path: `${path}/start`, done: refresh }) }, "Start"),
      h("button", { type: "button", id: "action-stop-drain", onclick: () => act({ title: `Stop ${agentId}`, message: `Stop agent ${agentId}, letting its running tasks finish (drain)?`, confirmLabel: "Stop (drain)", path: `${path}/stop`, body: { drain: true }, done: refresh }) }, "Stop (drain)"),
      h("button", { type: "button", id: "action-stop-now", className: "danger", onclick: () => act({ title: `Stop ${agentId} now`, message: `Stop agent ${agentId} now? Its running tasks are requeued.`, confirmLabel: "Stop now", path: `${path}/stop`, body: { drain: false }, done: refresh }) }, "Stop now"),
      h("button", { type: "button", id: "action-deregister", className: "danger", onclick: () => act({ title: `Deregister ${agentId}`, message: `Deregister agent ${agentId}? Its tasks are requeued and its locks released.`, confirmLabel: "Deregister", method: "DELETE", path, done: refresh }) }, "Deregister"),
    );

  async function load({ periodic = false } = {}) {
    try {
      const [agent, held] = await Promise.all([api(path), api(`${path}/tasks`)]);
      if (!alive || (periodic && selectingIn(body))) return;
      const events = recentEvents.filter((e) => mentions(e, "agent_id", agentId)).slice(-50).reverse();
      clear(
        body,
        actions(agent),
        facts([
          ["Status", stateBadge(agent.status)],
          ["Type", agent.agent_type],
          ["Capabilities", agent.capabilities.join(", ")],
          ["Load", `${agent.current_tasks.length} / ${agent.config.max_concurrent_tasks}`],
          ["Last heartbeat", agent.last_heartbeat_at === null ? "–" : `${age(agent.last_heartbeat_at)} ago`],
          ["Restarts", String(agent.restarts)],
          ["Registered", `${age(agent.registered_at)} ago`],
          ["Host", agent.metadata.host === undefined ? "–" : String(agent.metadata.host)],
          ["PID", agent.metadata.pid === undefined ? "–" : String(agent.metadata.pid)],
          ["Project", agent.project_id],
          ["In process", agent.in_process ? "yes" : "no"],
          ["Last error", agent.last_error],
        ]),
        h("h3", {}, "Current tasks"),
        table(
          [
            { label: "Task", cell: (t) => link(`#/tasks/${segment(t.task_id)}`, String(t.task_id)) },
            { label: "Status", cell: (t) => stateBadge(t.status) },
            { label: "Attempt", cell: (t) => String(t.attempts) },
            { label: "Running for", cell: (t) => age(t.assigned_at) },
          ],
          held.tasks,
          { empty: "no tasks" },
        ),
        h("h3", {}, "Config"),
        json(agent.config),
        h("h3", {}, "Metadata"),
        json(agent.metadata),
        h("h3", {}, "Recent events"),
        eventTable(events, "no events of this agent since the page opened"),
      );
    } catch (error) {
      if (alive) clear(body, h("p", { className: "error", role: "alert" }, describeError(error)));
    }
  }

  const refresh = throttle(load, 300);
  const off = onEvents((events) => {
    if (events.some((e) => mentions(e, "agent_id", agentId))) refresh();
  });
  const timer = setInterval(() => load({ periodic: true }), 2000);
  load();
  return {
    unmount() {
      alive = false;
      off();
      refresh.cancel();
      clearInterval(timer);
    },
  };
}
