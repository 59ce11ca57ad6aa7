// Locks: every held or awaited resource with its mode, holders, fencing token,
// lease expiry and waiters.

import { api, describeError, segment, serverNow } from "../api.js";
import { clear, clock, duration, h, link, table, selectingIn, throttle } from "../dom.js";
import { onEvents } from "../live.js";

const agentLink = (id) => link(`#/agents/${segment(id)}`, id);

function holders(lock) {
  if (!lock.holders.length) return "–";
  return h(
    "ul",
    { className: "plain" },
    lock.holders.map((g) => h("li", {}, agentLink(g.agent_id), ` token ${g.fencing_token}`)),
  );
}

function expiry(lock) {
  if (!lock.holders.length) return "–";
  const soonest = Math.min(...lock.holders.map((g) => g.expires_at));
  return `${clock(soonest)} (in ${duration(soonest - serverNow())})`;
}

function waiters(lock) {
  if (!lock.waiters.length) return "none";
  return h("ol", { className: "plain" }, lock.waiters.map((w) => h("li", {}, agentLink(w.agent_id), ` (${w.mode})`)));
}

export function mount(root) {
  let alive = true;
  const body = h("div", { id: "locks-table" }, h("p", {}, "Loading…"));
  clear(root, h("h2", {}, "Locks"), body);

  async function load({ periodic = false } = {}) {
    try {
      const found = await api("/locks");
      if (!alive || (periodic && selectingIn(body))) return;
      clear(
        body,
        table(
          [
            { label: "Resource", cell: (l) => l.resource },
            { label: "Mode", cell: (l) => l.mode || "–" },
            { label: "Holders", cell: holders },
            { label: "Fencing token", cell: (l) => String(l.fencing_token) },
            { label: "Expires", cell: expiry },
            { label: "Waiters", cell: waiters },
          ],
          found.locks,
          { empty: "no lock is held or awaited" },
        ),
      );
    } catch (error) {
      if (alive) clear(body, h("p", { className: "error", role: "alert" }, describeError(error)));
    }
  }

  const refresh = throttle(load, 300);
  const off = onEvents((events) => {
    if (events.some((e) => e.type.startsWith("lock."))) refresh();
  });
  const timer = setInterval(() => load({ periodic: true }), 2000); // expiries count down
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
