// Compare 2-10 jobs: loss curves overlaid, the config fields that differ, scores side by side.
// A sweep among them adds its table and chart.
import { get } from "../api.js";
import { PALETTE, lineChart } from "../charts.js";
import { badge, card, clear, errorBox, fmtNumber, fmtPct, h, jobFacts, jobLabel, parseHashQuery, shortId } from "../ui.js";
import { loadSeries } from "./job.js";
import { childIds, sweepSection } from "./sweep.js";

const MAX_JOBS = 10;

export function flatten(value, prefix = "", out = {}) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else {
    out[prefix] = value;
  }
  return out;
}

export function configDiff(jobs) {
  const flat = jobs.map((j) => flatten(j.spec));
  const keys = [...new Set(flat.flatMap((f) => Object.keys(f)))].sort();
  return keys.filter((k) => new Set(flat.map((f) => JSON.stringify(f[k] ?? null))).size > 1)
    .map((k) => [k, flat.map((f) => f[k])]);
}

export async function comparePage(main) {
  let ids = [...new Set((parseHashQuery().get("ids") || "").split(",").filter(Boolean))].slice(0, MAX_JOBS);
  if (ids.length === 1) {  // a sweep alone opens with its runs
    const only = await get(`/v1/jobs/${ids[0]}`).catch(() => null);
    if (only && (only.children || only.type === "sweep")) ids = [ids[0], ...childIds(only)].slice(0, MAX_JOBS);
  }
  const picker = await pickerCard(ids);
  if (ids.length < 2) {
    clear(main, h("div.page-head", {}, h("h1", {}, "Compare")),
      h("p.muted", {}, "Pick 2 to 10 jobs (or tick them on the Jobs page)."), picker);
    return;
  }
  const jobs = await Promise.all(ids.map((id) => get(`/v1/jobs/${id}`).catch((err) => ({ id, missing: err }))));
  const found = jobs.filter((j) => !j.missing);
  const names = legendNames(found);
  const legend = h("div.legend", {}, found.map((j, i) => h("span.legend-item", { "data-legend": j.id },
    h("span.swatch", { style: { background: PALETTE[i % PALETTE.length] } }), h("a.mono", { href: `#/job/${j.id}`, title: j.id }, names[i]))));
  const curves = h("div.charts");
  const sweeps = found.filter((j) => j.children || j.type === "sweep");
  clear(main,
    h("div.page-head", {}, h("h1", {}, `Compare ${found.length} jobs`)),
    jobs.filter((j) => j.missing).map((j) => errorBox(`${j.id}: ${j.missing.message}`)),
    card("Loss", legend, curves),
    card("Config: fields that differ", diffTable(found)),
    card("Scores", scoresTable(found)),
    ...(await Promise.all(sweeps.map((s) => sweepSection(s)))),
    picker);

  const loaded = await Promise.all(found.map((j) => loadSeries(j.id).then((x) => x.series).catch(() => null)));
  const tables = loaded.map((s) => (s ? s.columns("step", ["loss"]) : [[], []]));
  const chart = lineChart(curves, { title: "Loss against step", xLabel: "step",
    series: found.map((j, i) => ({ label: names[i], color: PALETTE[i % PALETTE.length] })), height: 300 });
  chart.setData(tables.some((t) => t[0].length) ? uPlot.join(tables) : [[], ...found.map(() => [])]);
  curves.dataset.points = String(tables.reduce((n, t) => n + t[0].length, 0));
}

function diffTable(jobs) {
  const rows = configDiff(jobs);
  if (!rows.length) return h("p.muted", {}, "The configs are identical.");
  const cell = (v) => (v === undefined ? h("span.muted", {}, "—") : typeof v === "object" && v !== null ? JSON.stringify(v) : String(v));
  return h("table.diff", { "data-diff": "" },
    h("thead", {}, h("tr", {}, h("th", {}, "Field"), jobs.map((j) => h("th.mono", {}, shortId(j.id))))),
    h("tbody", {}, rows.map(([k, vals]) => h("tr", { "data-field": k }, h("td.mono", {}, k), vals.map((v) => h("td.mono", {}, cell(v)))))));
}

function scoresTable(jobs) {
  const facts = jobs.map(jobFacts);
  const names = [...new Set(facts.flatMap((f) => Object.keys(f.scores)))];
  return h("table.scores", {},
    h("thead", {}, h("tr", {}, h("th", {}, ""), jobs.map((j) => h("th.mono", {}, shortId(j.id))))),
    h("tbody", {},
      h("tr", {}, h("td", {}, "Status"), jobs.map((j) => h("td", {}, badge(j.status)))),
      h("tr", {}, h("td", {}, "Final loss"), facts.map((f) => h("td.num", {}, fmtNumber(f.loss)))),
      h("tr", {}, h("td", {}, "Steps"), jobs.map((j) => h("td.num", {}, fmtNumber(j.progress && j.progress.step)))),
      names.map((n) => h("tr", {}, h("td", {}, n), facts.map((f) => h("td.num", {}, fmtPct(f.scores[n])))))));
}

async function pickerCard(ids) {
  const chosen = new Set(ids);
  const go = h("button.primary", { onclick: () => { location.hash = `#/compare?ids=${[...chosen].join(",")}`; } }, "Compare");
  const note = h("span.muted.small");
  const update = () => {
    go.disabled = chosen.size < 2 || chosen.size > MAX_JOBS;
    note.textContent = `${chosen.size} chosen (2 to ${MAX_JOBS})`;
  };
  const byId = h("input", { placeholder: "job_… id", "aria-label": "job id" });
  const add = h("button.ghost", { onclick: () => { const v = byId.value.trim(); if (v) { chosen.add(v); location.hash = `#/compare?ids=${[...chosen].join(",")}`; } } }, "Add");
  let items = [];
  try { items = (await get("/v1/jobs?limit=30")).items; } catch (err) { return card("Pick jobs", errorBox(err)); }
  update();
  return card("Pick jobs", h("div.toolbar", {}, go, note, h("div.spacer"), byId, add),
    h("div.picker", {}, items.map((j) => h("label.pick", {},
      h("input", { type: "checkbox", value: j.id, checked: chosen.has(j.id), onchange: (e) => {
        e.target.checked ? chosen.add(j.id) : chosen.delete(j.id); update(); } }),
      h("span.mono", {}, shortId(j.id)), badge(j.status), h("span.muted.small", {}, [j.type, jobLabel(j)].filter(Boolean).join(" · "))))));
}

// Each job named by what sets it apart ("batch_size=16, temperature=0.2"): the config fields that
// differ, without the "config." prefix; its short id where nothing differs.
export function legendNames(jobs) {
  const rows = configDiff(jobs).filter(([k]) => k !== "type");
  return jobs.map((j, i) => {
    const parts = rows.map(([k, vals]) => `${k.replace(/^config\./, "")}=${typeof vals[i] === "object" && vals[i] !== null
      ? JSON.stringify(vals[i]) : vals[i] ?? "—"}`);
    const text = parts.join(", ");
    return !text ? shortId(j.id) : text.length > 60 ? `${text.slice(0, 57)}…` : text;
  });
}
