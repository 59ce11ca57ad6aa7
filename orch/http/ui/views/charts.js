// Charts of the last minutes, drawn on <canvas>: tasks completed and failed per
// second, queue depth, heartbeats per second. Samples come from live.js's /stats and
// /metrics polls (every 2 s) since the page opened.

import { clear, h } from "../dom.js";
import { levels, onStats, rates } from "../live.js";

const WINDOW_S = 300;
const GREEN = "#2e7d32";
const RED = "#c62828";
const ORANGE = "#b26a00";
const BLUE = "#1565c0";

// "■ completed 1.50/s  ■ failed 0.00/s", the squares in the lines' colours.
function legend(el, entries) {
  clear(el, entries.map(([label, value, colour]) => h("span", { className: `series series-${colour}`, dataset: { series: label } }, `${label} ${value}`)));
}

function chart(id, title) {
  const canvas = h("canvas", { id: `${id}-canvas`, width: 640, height: 160 });
  const legend = h("p", { className: "legend", id: `${id}-legend` });
  return { canvas, legend, node: h("figure", { className: "chart", id }, h("figcaption", {}, title), canvas, legend) };
}

function format(value, unit) {
  if (value === null || value === undefined) return "–";
  return `${value.toFixed(value < 10 && unit === "/s" ? 2 : 0)}${unit}`;
}

// Lines of [{t, value}] series over the last WINDOW_S seconds, y from zero.
function draw(canvas, seriesList) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  const pad = 28;
  ctx.clearRect(0, 0, width, height);
  const now = Date.now() / 1000;
  const values = seriesList.flatMap((s) => s.points.map((p) => p.value)).filter((v) => v !== null);
  const max = Math.max(1, ...values);
  ctx.strokeStyle = "#bbb";
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(pad, 4);
  ctx.lineTo(pad, height - pad);
  ctx.lineTo(width - 4, height - pad);
  ctx.stroke();
  ctx.fillStyle = "#555";
  ctx.font = "11px sans-serif";
  ctx.fillText(max.toFixed(max < 10 ? 1 : 0), 2, 12);
  ctx.fillText("0", 2, height - pad);
  ctx.fillText(`-${WINDOW_S / 60} min`, pad, height - 8);
  ctx.fillText("now", width - 30, height - 8);
  const x = (t) => pad + ((t - (now - WINDOW_S)) / WINDOW_S) * (width - pad - 4);
  const y = (v) => height - pad - (v / max) * (height - pad - 8);
  seriesList.forEach((series) => {
    const points = series.points.filter((p) => p.value !== null && p.t >= now - WINDOW_S);
    if (!points.length) return;
    ctx.strokeStyle = series.color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    points.forEach((p, j) => (j ? ctx.lineTo(x(p.t), y(p.value)) : ctx.moveTo(x(p.t), y(p.value))));
    ctx.stroke();
  });
}

function last(points) {
  return points.length ? points[points.length - 1].value : null;
}

export function mount(root) {
  const throughput = chart("chart-throughput", "Tasks completed and failed per second");
  const queue = chart("chart-queue", "Queue depth (pending tasks) and running tasks");
  const heartbeats = chart("chart-heartbeats", "Heartbeats per second");
  clear(
    root,
    h("h2", {}, "Charts"),
    h("p", { className: "summary" }, `The last ${WINDOW_S / 60} minutes, sampled every 2 s since this page opened.`),
    throughput.node,
    queue.node,
    heartbeats.node,
  );

  function render() {
    const completed = rates("completed");
    const failed = rates("failed");
    const pending = levels("pending");
    const running = levels("running");
    const beats = rates("heartbeats");
    draw(throughput.canvas, [
      { points: completed, color: GREEN },
      { points: failed, color: RED },
    ]);
    legend(throughput.legend, [["completed", format(last(completed), "/s"), "green"], ["failed", format(last(failed), "/s"), "red"]]);
    draw(queue.canvas, [
      { points: pending, color: ORANGE },
      { points: running, color: BLUE },
    ]);
    legend(queue.legend, [["pending", format(last(pending), ""), "orange"], ["running", format(last(running), ""), "blue"]]);
    draw(heartbeats.canvas, [{ points: beats, color: BLUE }]);
    legend(heartbeats.legend, [["heartbeats", format(last(beats), "/s"), "blue"]]);
  }

  const off = onStats(render);
  render();
  return { unmount: off };
}
