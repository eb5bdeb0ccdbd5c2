// A sweep (a parent job whose children are pretrain runs): its counts, its members live while it
// runs (settings, progress, loss), then its table of runs and scores, mean ± std by setting, the
// paired differences between methods (95% t-intervals) and the accuracy.png it drew.
import { get, request } from "../api.js";
import { badge, card, clear, errorBox, finishingPhase, fmtNumber, fmtPct, h, jobFacts, progressBar, scoreText,
  shortId } from "../ui.js";

const TERMINAL = ["succeeded", "failed", "cancelled"];

const points = (v) => `${v >= 0 ? "+" : "−"}${Math.abs(100 * v).toFixed(1)}`;

// One row a comparison and score: "dcl − simclr  batch_size=32  linear_top1  3  +1.2  [−0.3, +2.7]".
function differencesTable(differences) {
  const rows = differences.flatMap((d) => Object.keys(d.mean).map((name) => {
    const ci = d.ci95[name];
    return h("tr", { "data-difference": `${d.a}-${d.b}` },
      h("td.mono", {}, paramText(d.params) || "–"), h("td", {}, `${d.a} − ${d.b}`), h("td.mono", {}, name),
      h("td.num", {}, d.n[name]), h("td.num", {}, points(d.mean[name])),
      h("td.num", { "data-ci": "" }, ci ? `[${points(ci[0])}, ${points(ci[1])}]` : "n/a"));
  }));
  return [h("h4", {}, "Paired differences (points of top-1, over matching seeds)"), h("table.differences", {},
    h("thead", {}, h("tr", {}, ["Setting", "Methods", "Score", "Pairs", "Difference", "95% CI"].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td.empty", { colSpan: 6 }, "No seed scored for both methods."))))];
}

const SCORE_KEYS = ["linear_top1", "knn_top1", "recall_at_1", "map_at_r"];
const paramText = (params) => Object.entries(params || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");

export function childIds(job) {
  return ((job.result && job.result.rows) || []).map((r) => r.job_id).filter(Boolean);
}

export async function sweepSection(job) {
  const r = job.result || {};
  const kids = job.children;
  const parts = [];
  if (kids) parts.push(h("div.chips", {}, ["queued", "running", "succeeded", "failed", "cancelled"]
    .map((s) => h(`span.chip.s-${s}`, {}, `${s} ${kids[s] ?? 0}`)), h("span.chip", {}, `total ${kids.total}`)));
  if (Array.isArray(r.summary) && r.summary.length) {
    // mean and std are per score ({linear_top1, knn_top1}), over the seeds of one setting.
    // One seed has no spread: "—", not "± 0.0".
    const meanStd = (s, key) => (s.mean && typeof s.mean[key] === "number")
      ? `${fmtPct(s.mean[key])} ± ${s.n > 1 ? (100 * ((s.std && s.std[key]) || 0)).toFixed(1) : "—"}` : "–";
    parts.push(h("h4", {}, "By setting (top-1, mean ± std over seeds)"), h("table", {},
      h("thead", {}, h("tr", {}, ["Setting", "Runs", "Linear", "kNN", "R@1", "MAP@R"].map((t) => h("th", {}, t)))),
      h("tbody", {}, r.summary.map((s) => h("tr", {}, h("td.mono", {}, paramText(s.params)), h("td.num", {}, s.n),
        SCORE_KEYS.map((k) => h("td.num", {}, meanStd(s, k))))))));
  }
  if (Array.isArray(r.differences) && r.differences.length) parts.push(differencesTable(r.differences));
  if (Array.isArray(r.rows) && r.rows.length) {
    parts.push(h("h4", {}, "Runs"), h("table.sweep-rows", {},
      h("thead", {}, h("tr", {}, ["Job", "Status", "Settings", "Linear", "kNN", "R@1", "MAP@R", "Error"].map((t) => h("th", {}, t)))),
      h("tbody", {}, r.rows.map((row) => h("tr", {},
        h("td.mono", {}, row.job_id ? h("a", { href: `#/job/${row.job_id}` }, shortId(row.job_id)) : "–"),
        h("td", {}, row.status ? badge(row.status) : "–"), h("td.mono", {}, paramText(row.params)),
        SCORE_KEYS.map((k) => h("td.num", {}, fmtPct(row.scores && row.scores[k]))),
        h("td.small", {}, row.error || ""))))));
    const ids = childIds(job).slice(0, 10);
    if (ids.length >= 2) parts.push(h("p", {}, h("a.button", { href: `#/compare?ids=${ids.join(",")}` }, `Compare ${ids.length} runs`)));
  }
  if (!(Array.isArray(r.rows) && r.rows.length) && kids && kids.total) parts.push(membersTable(job));
  const figure = h("div.figure");
  parts.push(figure);
  request("GET", `/v1/jobs/${job.id}/artifacts/accuracy.png`, { raw: true })
    .then(async (res) => clear(figure, h("img", { src: URL.createObjectURL(await res.blob()), alt: "accuracy against the swept setting" })))
    .catch((err) => { if (err.status !== 404) clear(figure, errorBox(err)); });
  return card("Sweep", parts.length > 1 ? parts : [h("p.muted", {}, "No runs yet."), ...parts]);
}

// The value of a grid key ("batch_size", "augment.crop_scale") in a member's config.
function valueAt(config, path) {
  return path.split(".").reduce((at, k) => (at && typeof at === "object" ? at[k] : undefined), config);
}

// The members as they run: their grid settings, status, progress and latest loss, every few seconds
// until every member has ended.
function membersTable(sweep) {
  const keys = Object.keys((sweep.spec && sweep.spec.grid) || {});
  const body = h("tbody");
  const box = h("div", { "data-members": "" }, h("h4", {}, "Members"), h("table.sweep-members", {},
    h("thead", {}, h("tr", {}, ["Job", "Status", ...keys, "Progress", "Loss", "Scores"].map((t) => h("th", {}, t)))), body));
  const show = (members) => clear(body, members.map((m) => {
    const p = m.progress || {};
    const phase = finishingPhase(m);
    return h("tr", { "data-member": m.id, "data-status": m.status },
      h("td.mono", {}, h("a", { href: `#/job/${m.id}` }, shortId(m.id))), h("td", {}, badge(m.status)),
      keys.map((k) => h("td.mono", {}, JSON.stringify(valueAt(m.spec.config, k)) ?? "–")),
      h("td", {}, progressBar(m), h("span.small.muted", {}, phase || (p.total_steps ? `${p.step} / ${p.total_steps}` : ""))),
      h("td.num", { "data-loss": "" }, fmtNumber(jobFacts(m).loss)),
      h("td", {}, scoreText(jobFacts(m).scores)));
  }));
  const load = async () => {
    if (!box.isConnected && box.dataset.loaded) return;  // the page moved on
    try {
      const page = await get(`/v1/jobs?parent=${encodeURIComponent(sweep.id)}&limit=500`);
      show(page.items.slice().reverse());  // in the order they were made
      box.dataset.loaded = "1";
      if (page.items.some((m) => !TERMINAL.includes(m.status))) setTimeout(load, document.hidden ? 15000 : 2000);
    } catch (err) { clear(body, h("tr", {}, h("td", { colSpan: keys.length + 5 }, errorBox(err)))); }
  };
  load();
  return box;
}
