// Live data for every view: the event feed's long poll (GET /events?after=&wait=),
// and /stats, /health and /metrics polled every two seconds for the header and the
// charts. One request of each kind at a time for the whole page, never one per agent.

import { ApiError, api } from "./api.js";

const KEEP_EVENTS = 2000; // the newest events the page remembers (the server keeps 10,000)
const PAGE = 1000; // the feed's largest page
const POLL_MS = 2000;
const HISTORY_S = 600; // the charts' window

let waitS = 10; // lowered if the server allows less (ORCH_EVENTS_MAX_WAIT_S)
let next = 0;
let feedRunning = false;
let pollRunning = false;

export const recentEvents = []; // oldest first
export const history = []; // {t, completed, failed, pending, running, heartbeats}
export const latest = { stats: null, health: null };

const eventListeners = new Set();
const statsListeners = new Set();
const statusListeners = new Set();

// ``listener(events, {reset})`` for every batch of new events; returns an unsubscriber.
export function onEvents(listener) {
  eventListeners.add(listener);
  return () => eventListeners.delete(listener);
}

// ``listener(latest)`` after every /stats and /health poll; returns an unsubscriber.
export function onStats(listener) {
  statsListeners.add(listener);
  return () => statsListeners.delete(listener);
}

// ``listener(connected, error)`` when the feed connects or loses the server.
export function onFeedStatus(listener) {
  statusListeners.add(listener);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function deliver(events, reset) {
  if (reset) recentEvents.length = 0;
  recentEvents.push(...events);
  if (recentEvents.length > KEEP_EVENTS) recentEvents.splice(0, recentEvents.length - KEEP_EVENTS);
  for (const listener of eventListeners) {
    try {
      listener(events, { reset });
    } catch (error) {
      console.error("event listener failed", error);
    }
  }
}

// Polls without waiting, every POLL_MS, still to come: the server parks long polls on
// at most half its HTTP threads and refuses one more with 503, "poll again shortly or
// without wait". A fifth tab on a default server, or a CLI --follow beside four, must
// still be live; the long poll is tried again once these run out.
const SHORT_POLLS = 15;
let shortPolls = 0;

export async function startFeed() {
  if (feedRunning) return;
  feedRunning = true;
  let catchingUp = true; // read the ring without waiting until a page comes back short
  while (feedRunning) {
    try {
      const wait = catchingUp || shortPolls > 0 ? 0 : waitS;
      const page = await api(`/events?after=${next}&limit=${PAGE}&wait=${wait}`);
      statusListeners.forEach((listener) => listener(true, null));
      next = page.next;
      if (page.events.length || page.reset) deliver(page.events, Boolean(page.reset));
      catchingUp = page.events.length === PAGE;
      if (shortPolls > 0 && !catchingUp) {
        shortPolls -= 1;
        await sleep(POLL_MS);
      }
    } catch (error) {
      if (error instanceof ApiError && error.status === 503 && shortPolls === 0) {
        shortPolls = SHORT_POLLS; // no long-poll slot free: poll without waiting
        continue;
      }
      statusListeners.forEach((listener) => listener(false, error));
      if (error instanceof ApiError && error.status === 400 && waitS > 1) waitS = 1;
      await sleep(error instanceof ApiError && error.status === 401 ? 500 : 2000);
    }
  }
}

export function stopFeed() {
  feedRunning = false;
}

// The counter of heartbeats from the Prometheus text (heartbeats are too frequent
// to be events; /metrics counts them).
function heartbeatsTotal(text) {
  const match = /^orchestrator_heartbeats_total (\S+)$/m.exec(text);
  return match ? Number(match[1]) : null;
}

async function metricsText() {
  const response = await fetch("/metrics", { cache: "no-store" });
  return response.ok ? response.text() : "";
}

export async function pollOnce() {
  const [stats, health, metrics] = await Promise.all([
    api("/stats"),
    fetch("/health", { cache: "no-store" })
      .catch((error) => {
        throw new ApiError(0, { title: "Server unreachable", detail: String(error.message) });
      })
      .then((r) => r.json()),
    metricsText().catch(() => ""),
  ]);
  latest.stats = stats;
  latest.health = health;
  const tasks = stats.tasks.tasks_by_state;
  history.push({
    t: Date.now() / 1000,
    completed: stats.total_tasks_completed,
    failed: stats.total_tasks_failed,
    pending: stats.pending_tasks,
    running: tasks.running + tasks.assigned,
    heartbeats: heartbeatsTotal(metrics),
  });
  const cutoff = Date.now() / 1000 - HISTORY_S;
  while (history.length && history[0].t < cutoff) history.shift();
  for (const listener of statsListeners) {
    try {
      listener(latest);
    } catch (error) {
      console.error("stats listener failed", error);
    }
  }
  return latest;
}

export async function startPolling() {
  if (pollRunning) return;
  pollRunning = true;
  while (pollRunning) {
    try {
      await pollOnce();
    } catch (error) {
      statusListeners.forEach((listener) => listener(false, error));
    }
    await sleep(POLL_MS);
  }
}

// Per-second rates between consecutive samples: [{t, value}] for ``key``.
export function rates(key) {
  const out = [];
  for (let i = 1; i < history.length; i += 1) {
    const a = history[i - 1];
    const b = history[i];
    if (a[key] === null || b[key] === null || b.t <= a.t) continue;
    out.push({ t: b.t, value: Math.max(0, (b[key] - a[key]) / (b.t - a.t)) });
  }
  return out;
}

export function levels(key) {
  return history.map((sample) => ({ t: sample.t, value: sample[key] }));
}
