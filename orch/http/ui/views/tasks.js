// Tasks: the queue in assignment order, what runs where, and what ended lately
// (completed, failed awaiting a retry, dead, cancelled) with their errors.

import { api, describeError, segment } from "../api.js";
import { act } from "../actions.js";
import { age, clear, h, link, stateBadge, table, throttle } from "../dom.js";
import { latest, onEvents } from "../live.js";
import { progressText } from "./common.js";

const SHOWN = 100;

const idLink = (t) => link(`#/tasks/${segment(t.task_id)}`, String(t.task_id));
const agentLink = (t) => (t.agent_id ? link(`#/agents/${segment(t.agent_id)}`, t.agent_id) : "–");

export function cancelButton(task, done) {
  return h(
    "button",
    {
      type: "button",
      className: "small danger cancel-task",
      dataset: { taskId: String(task.task_id) },
      onclick: () => act({ title: `Cancel task ${task.task_id}`, message: `Cancel task ${task.task_id}? Its agent and locks are freed.`, confirmLabel: "Cancel task", path: `/tasks/${segment(task.task_id)}/cancel`, done }),
    },
    "Cancel",
  );
}

// "Pending, in assignment order (376, the first 100 shown)": a list cut at SHOWN must
// not pass for the whole queue.
function section(id, title, count, content, shown, which = "first") {
  let told = count === null || count === undefined ? "" : ` (${count})`;
  if (told && shown < count) told = ` (${count}, the ${which} ${shown} shown)`;
  return h("section", { id, className: "task-section" }, h("h3", {}, title, told), content);
}

export function mount(root) {
  let alive = true;
  const body = h("div", {}, h("p", {}, "Loading…"));
  const error = h("p", { className: "error", role: "alert" });
  clear(root, h("h2", {}, "Tasks"), error, body);

  async function load() {
    try {
      const [pending, running, assigned, completed, failed, dead, cancelled] = await Promise.all([
        api(`/tasks/pending?limit=${SHOWN}`),
        api(`/tasks?status=running&limit=${SHOWN}`),
        api(`/tasks?status=assigned&limit=${SHOWN}`),
        api(`/tasks?status=completed&limit=25`),
        api(`/tasks?status=failed&limit=25`),
        api(`/tasks?status=dead&limit=25`),
        api(`/tasks?status=cancelled&limit=10`),
      ]);
      if (!alive) return;
      error.textContent = "";
      const counts = latest.stats ? latest.stats.tasks.tasks_by_state : {};
      const recent = (found) => found.tasks.slice().reverse(); // newest first
      clear(
        body,
        section(
          "tasks-pending",
          "Pending, in assignment order",
          counts.pending ?? pending.count,
          table(
            [
              { label: "Task", cell: idLink },
              { label: "Priority", cell: (t) => String(t.priority) },
              { label: "Agent type", cell: (t) => t.agent_type || "any" },
              { label: "Capabilities", cell: (t) => t.capabilities.join(", ") || "–" },
              { label: "Resources", cell: (t) => t.resources.join(", ") || "–" },
              { label: "Attempts", cell: (t) => `${t.attempts} / ${t.max_attempts}` },
              { label: "Waiting", cell: (t) => age(t.created_at) },
              { label: "", cell: (t) => cancelButton(t, refresh) },
            ],
            pending.pending_tasks,
            { empty: "the queue is empty" },
          ),
          pending.pending_tasks.length,
        ),
        section(
          "tasks-running",
          "Running",
          counts.running === undefined ? null : counts.running + counts.assigned,
          table(
            [
              { label: "Task", cell: idLink },
              { label: "Status", cell: (t) => stateBadge(t.status) },
              { label: "Agent", cell: agentLink },
              { label: "Attempt", cell: (t) => `${t.attempts} / ${t.max_attempts}` },
              { label: "For", cell: (t) => age(t.assigned_at) },
              { label: "Progress", cell: (t) => progressText(t.progress) || "–" },
              { label: "", cell: (t) => cancelButton(t, refresh) },
            ],
            [...assigned.tasks, ...running.tasks],
            { empty: "nothing runs" },
          ),
          assigned.count + running.count,
          "latest",
        ),
        section(
          "tasks-failed",
          "Failed, retrying",
          counts.failed ?? null,
          table(
            [
              { label: "Task", cell: idLink },
              { label: "Attempts", cell: (t) => `${t.attempts} / ${t.max_attempts}` },
              { label: "Error", cell: (t) => t.error || "–" },
              { label: "Failed", cell: (t) => `${age(t.finished_at)} ago` },
            ],
            recent(failed),
            { empty: "none" },
          ),
          failed.count,
          "latest",
        ),
        section(
          "tasks-dead",
          "Dead (out of attempts)",
          counts.dead ?? null,
          table(
            [
              { label: "Task", cell: idLink },
              { label: "Attempts", cell: (t) => String(t.attempts) },
              { label: "Agent", cell: agentLink },
              { label: "Error", cell: (t) => t.error || "–" },
              { label: "Ended", cell: (t) => `${age(t.finished_at)} ago` },
            ],
            recent(dead),
            { empty: "none" },
          ),
          dead.count,
          "latest",
        ),
        section(
          "tasks-completed",
          "Recently completed",
          counts.completed ?? null,
          table(
            [
              { label: "Task", cell: idLink },
              { label: "Agent", cell: agentLink },
              { label: "Attempts", cell: (t) => String(t.attempts) },
              { label: "Ended", cell: (t) => `${age(t.finished_at)} ago` },
            ],
            recent(completed),
            { empty: "none yet" },
          ),
          completed.count,
          "latest",
        ),
        section(
          "tasks-cancelled",
          "Recently cancelled",
          counts.cancelled ?? null,
          table(
            [
              { label: "Task", cell: idLink },
              { label: "Ended", cell: (t) => `${age(t.finished_at)} ago` },
            ],
            recent(cancelled),
            { empty: "none" },
          ),
          cancelled.count,
          "latest",
        ),
      );
    } catch (e) {
      if (alive) error.textContent = describeError(e);
    }
  }

  const refresh = throttle(load, 500);
  const off = onEvents((events) => {
    if (events.some((e) => e.type.startsWith("task.") || e.type.startsWith("intake."))) refresh();
  });
  const timer = setInterval(load, 10000); // ages move; changes come by events
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
