// DOM helpers and formatters. Text always goes in as text (never as HTML): job specs,
// dataset names and error messages are user data.

export function h(tag, attrs, ...children) {
  const [name, ...classes] = tag.split(".");
  const el = document.createElement(name || "div");
  if (classes.length) el.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className += (el.className ? " " : "") + v;
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function fmtNumber(v, digits = 4) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return v.toLocaleString("en-US");
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  return v.toFixed(digits).replace(/\.?0+$/, "") || "0";
}

export const fmtPct = (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)}%`);

export function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function fmtDuration(s) {
  if (s === null || s === undefined) return "–";
  s = Math.round(s);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

export function fmtAgo(iso) {
  if (!iso) return "–";
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

export const fmtTime = (iso) => (iso ? new Date(iso).toLocaleString() : "–");

export function badge(status) {
  return h(`span.badge.s-${status}`, { "data-status": status }, status);
}

export function progressBar(job) {
  const p = job.progress || {};
  const frac = p.fraction ?? (job.status === "succeeded" ? 1 : 0);
  return h("div.progress", { title: p.total_steps ? `${p.step} / ${p.total_steps} steps` : `${p.step || 0} steps` },
    h(`div.bar.s-${job.status}`, { style: { width: `${Math.round(100 * frac)}%` } }));
}

export function errorBox(err) {
  return h("div.alert.error", {}, err instanceof Error ? err.message : String(err));
}

export function card(title, ...children) {
  return h("section.card", {}, title ? h("h3", {}, title) : null, ...children);
}

export function kv(pairs) {
  return h("dl.kv", {}, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

export function shortId(id) { return id && id.length > 14 ? id.slice(0, 12) + "…" : id; }

// What a job trained or measured, for tables: method, batch size, encoder, final loss, scores.
export function jobFacts(job) {
  const c = (job.spec && job.spec.config) || {};
  const r = job.result || {};
  const scores = { ...(r.scores || {}) };
  if (typeof r.accuracy === "number") scores[r.classifier === "knn" ? "knn_top1" : "linear_top1"] = r.accuracy;
  const m = job.latest_metrics || {};
  if (typeof m.knn_acc === "number" && scores.knn_top1 === undefined) scores.knn_monitor = m.knn_acc;
  // An encoder scored by a linear probe job (its primary score), not by its own evaluate.
  if (typeof job.score === "number" && job.type === "pretrain" && scores.linear_top1 === undefined) scores.linear_top1 = job.score;
  return {
    method: c.method, batch: c.batch_size, encoder: c.encoder,
    loss: (r.final_metrics && r.final_metrics.loss) ?? m.loss, scores,
  };
}

export function scoreText(scores) {
  const parts = Object.entries(scores || {}).filter(([, v]) => typeof v === "number")
    .map(([k, v]) => `${k.replace("_top1", "").replace("recall_at_", "R@").replace("map_at_r", "MAP@R").replace("_", " ")} ${fmtPct(v)}`);
  return parts.length ? parts.join(" · ") : "–";
}

export function parseHashQuery() {
  const q = location.hash.split("?")[1] || "";
  return new URLSearchParams(q);
}

// A running job whose steps are all done is scoring its encoder (`evaluate`) or saving it: no ETA.
export function finishingPhase(job) {
  const p = job.progress || {};
  if (job.status !== "running" || !p.total_steps || p.step < p.total_steps) return null;
  return job.spec && job.spec.config && job.spec.config.evaluate ? "evaluating" : "finishing";
}

// What a job trained, in a few words; a sweep shows its grid ("method dcl/simclr · batch_size 64/128"),
// not the base config's values the grid overrides.
export function jobLabel(job) {
  const grid = (job.spec && job.spec.grid) || null;
  if (grid) return Object.entries(grid).map(([k, v]) => `${k} ${Array.isArray(v) ? v.join("/") : v}`).join(" · ");
  const f = jobFacts(job);
  return [f.method, f.batch && `batch ${f.batch}`, f.encoder].filter(Boolean).join(" · ");
}

// The best member of a sweep by one score (linear top-1, else kNN top-1, else the first there is):
// {name, value, index} or null.
export function bestScore(scoreSets) {
  const names = [...new Set(scoreSets.flatMap((s) => Object.keys(s || {})))];
  const name = ["linear_top1", "knn_top1"].find((n) => names.includes(n)) || names[0];
  let best = null;
  scoreSets.forEach((s, index) => {
    const v = s && s[name];
    if (typeof v === "number" && (!best || v > best.value)) best = { name, value: v, index };
  });
  return best;
}
