// Charts: uPlot (vendored, /ui/vendor/uplot) for curves, plain DOM bars for per-class scores.
import { h, fmtNumber, fmtPct } from "./ui.js";

export const PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777",
  "#65a30d", "#475569", "#ea580c"];

// Steps are whole numbers: no 1.5 on the axis.
const STEP_INCRS = [1, 2, 5].flatMap((m) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7].map((p) => m * p)).sort((a, b) => a - b);

// Tick labels with as many decimals as the step between ticks needs: 0.0150, 0.0155 (uPlot's own
// labels can print 0.015 twice for a learning rate).
export function tickLabels(splits, incr) {
  if (!incr || !splits.length) return splits.map((v) => fmtNumber(v));
  const top = Math.max(...splits.map(Math.abs));
  if (top !== 0 && (top < 1e-3 || top >= 1e5)) {
    const digits = Math.max(1, Math.min(8, Math.ceil(Math.log10(top / incr) - 1e-9)));
    return splits.map((v) => (v === 0 ? "0" : v.toExponential(digits)));
  }
  const decimals = Math.max(0, Math.min(10, Math.ceil(-Math.log10(incr) - 1e-9)));
  return splits.map((v) => v.toFixed(decimals));
}

// Vertical dashed lines where a new attempt (a resume after a worker loss) starts.
function markersPlugin(getMarkers) {
  return {
    hooks: {
      draw: (u) => {
        const { ctx } = u;
        const { top, height } = u.bbox;
        ctx.save();
        ctx.strokeStyle = "#9ca3af";
        ctx.fillStyle = "#6b7280";
        ctx.setLineDash([4, 4]);
        ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
        for (const m of getMarkers()) {
          const x = Math.round(u.valToPos(m.x, "x", true));
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
          ctx.beginPath();
          ctx.moveTo(x, top);
          ctx.lineTo(x, top + height);
          ctx.stroke();
          ctx.fillText(m.label, x + 4 * devicePixelRatio, top + 12 * devicePixelRatio);
        }
        ctx.restore();
      },
    },
  };
}

// A line chart that grows: `chart.setData([xs, ys...])`. `series`: [{label, color}].
export function lineChart(target, { title, xLabel, series, markers, height = 220, yFormat }) {
  const box = h("div.chart", {}, h("div.chart-title", {}, title));
  target.append(box);
  const width = () => Math.max(300, box.clientWidth - 8);
  const opts = {
    width: width(),
    height,
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: false } },
    axes: [
      { label: xLabel, labelSize: 18, size: 36, grid: { stroke: "#eef0f3" }, stroke: "#6b7280",
        incrs: xLabel === "step" ? STEP_INCRS : undefined },
      { size: 64, grid: { stroke: "#eef0f3" }, stroke: "#6b7280",
        values: (u, splits, axis, space, incr) => {
          const labels = yFormat ? splits.map(yFormat) : tickLabels(splits, incr);
          box.dataset.yticks = labels.join("|");  // what the axis shows, for the tests
          return labels;
        } },
    ],
    series: [{ label: xLabel, value: (u, v) => fmtNumber(v, 3) },
      ...series.map((s, i) => ({
        label: s.label, stroke: s.color || PALETTE[i % PALETTE.length], width: 1.5, spanGaps: true,
        value: (u, v) => (yFormat ? yFormat(v) : fmtNumber(v, 4)),
      }))],
    plugins: markers ? [markersPlugin(markers)] : [],
  };
  const empty = [[], ...series.map(() => [])];
  const plot = new uPlot(opts, empty, box);
  new ResizeObserver(() => plot.setSize({ width: width(), height })).observe(box);
  return {
    el: box,
    plot,
    setData(data) { plot.setData(data); },
    points() { return plot.data[0].length; },
  };
}

// Horizontal bars, one a class: accuracy 0..1.
export function barChart(labels, values, { format = fmtPct } = {}) {
  return h("div.bars", {}, labels.map((label, i) => {
    const v = values[i];
    return h("div.bar-row", {},
      h("span.bar-label", { title: label }, label),
      h("span.bar-track", {}, h("span.bar-fill", { style: { width: `${Math.max(0, Math.min(1, v ?? 0)) * 100}%` } })),
      h("span.bar-value", {}, v === null || v === undefined ? "–" : format(v)));
  }));
}
