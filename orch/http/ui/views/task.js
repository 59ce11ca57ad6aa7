// One task: its state, attempts, agent, payload, result or error, and its events.

import { api, describeError, segment } from "../api.js";
import { age, clear, clock, h, json, link, stateBadge, selectingIn, throttle } from "../dom.js";
import { onEvents, recentEvents } from "../live.js";
import { eventTable, facts, mentions, progressText } from "./common.js";
import { cancelButton } from "./tasks.js";

const ENDED = new Set(["completed", "dead", "cancelled"]);

export function mount(root, { arg: taskId }) {
  let alive = true;
  const body = h("div", { id: "task-page" }, h("p", {}, "Loading…"));
  clear(root, h("p", {}, link("#/tasks", "← Tasks")), h("h2", {}, "Task ", h("span", { id: "task-title" }, taskId)), body);

  async function load({ periodic = false } = {}) {
    try {
      const task = await api(`/tasks/${segment(taskId)}`);
      if (!alive || (periodic && selectingIn(body))) return;
      const events = recentEvents.filter((e) => mentions(e, "task_id", task.task_id)).slice(-50).reverse();
      clear(
        body,
        ENDED.has(task.status) ? null : h("div", { className: "actions" }, cancelButton(task, refresh)),
        facts([
          ["Status", stateBadge(task.status)],
          ["Priority", String(task.priority)],
          ["Attempts", `${task.attempts} of ${task.max_attempts}`],
          ["Agent", task.agent_id ? link(`#/agents/${segment(task.agent_id)}`, task.agent_id) : null],
          ["Agent type", task.agent_type || "any"],
          ["Capabilities", task.capabilities.join(", ")],
          ["Resources", task.resources.join(", ")],
          ["Timeout", task.timeout_s === null ? null : `${task.timeout_s} s`],
          ["Submitted", `${clock(task.created_at)} (${age(task.created_at)} ago)`],
          ["Assigned", task.assigned_at ? clock(task.assigned_at) : null],
          ["Finished", task.finished_at ? clock(task.finished_at) : null],
          ["Progress", progressText(task.progress)],
          ["Error", task.error],
        ]),
        h("h3", {}, "Payload"),
        json(task.payload),
        h("h3", {}, "Result"),
        json(task.result),
        Object.keys(task.fencing_tokens).length ? [h("h3", {}, "Fencing tokens"), json(task.fencing_tokens)] : null,
        h("h3", {}, "Events"),
        eventTable(events, "no events of this task since the page opened"),
      );
    } catch (error) {
      if (alive) clear(body, h("p", { className: "error", role: "alert" }, describeError(error)));
    }
  }

  const refresh = throttle(load, 300);
  const off = onEvents((events) => {
    if (events.some((e) => mentions(e, "task_id", taskId))) refresh();
  });
  // Ages move, and a progress report is an event at most once a second per task
  // (ORCH_PROGRESS_EVENT_INTERVAL_S): the latest report may come with no event.
  const timer = setInterval(() => load({ periodic: true }), 2000);
  load();
  return {
    unmount() {
      alive = false;
      off();
      clearInterval(timer);
      refresh.cancel();
    },
  };
}
