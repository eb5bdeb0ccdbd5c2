// Jobs: newest first (or by score), filtered by status, type, name and tags, a page at a time,
// refreshed every few seconds. A sweep's members are listed under it (collapsed; ▸ opens them),
// and the sweep shows its best score.
import { get, schema } from "../api.js";
import { tagChips } from "../labels.js";
import { badge, bestScore, clear, errorBox, finishingPhase, fmtAgo, fmtDuration, fmtNumber, fmtPct, h, jobFacts,
  parseHashQuery, progressBar, scoreText, shortId } from "../ui.js";

const PAGE = 25;
const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const SORTS = [["-created", "newest first"], ["created", "oldest first"], ["-score", "best score first"], ["score", "lowest score first"]];

// The filter box: "tag:NAME" words are tags (all must match), the rest is searched in names.
export function parseFilter(text) {
  const words = text.trim().split(/\s+/).filter(Boolean);
  return { tags: words.filter((w) => w.startsWith("tag:") && w.length > 4).map((w) => w.slice(4)),
    q: words.filter((w) => !w.startsWith("tag:")).join(" ") };
}

async function jobTypes() {
  // From the API's own schema, so a new job type (sweep) shows up without a page change.
  try {
    const params = (await schema()).paths["/v1/jobs"].get.parameters;
    const type = params.find((p) => p.name === "type").schema;
    return (type.anyOf || [type]).flatMap((s) => s.enum || []);
  } catch (_) {
    return ["pretrain", "linear_probe", "embed"];
  }
}

export async function jobsPage(main) {
  const q = parseHashQuery();
  const state = { status: q.get("status") || "", type: q.get("type") || "", offset: Number(q.get("offset") || 0),
    sort: q.get("sort") || "-created", text: [q.get("q") || "", ...q.getAll("tag").map((t) => `tag:${t}`)].join(" ").trim() };
  const selected = new Set();
  const open = new Set(q.get("open") ? q.get("open").split(",") : []);  // sweeps shown with their members
  const members = new Map();  // sweep id -> its members (newest first), read when it is open or running
  const types = await jobTypes();

  const select = (name, options) => h("select", { "data-filter": name, onchange: (e) => {
    state[name] = e.target.value; state.offset = 0; load(); } },
    h("option", { value: "" }, `any ${name}`), options.map((o) => h("option", { value: o, selected: state[name] === o }, o)));
  const sortSelect = h("select", { "data-filter": "sort", onchange: (e) => { state.sort = e.target.value; state.offset = 0; load(); } },
    SORTS.map(([value, label]) => h("option", { value, selected: state.sort === value }, label)));
  let typing = null;
  const filterBox = h("input", { type: "search", "data-filter": "text", value: state.text, placeholder: "name, or tag:NAME",
    "aria-label": "filter by name or tag", oninput: (e) => {
      clearTimeout(typing);
      typing = setTimeout(() => { state.text = e.target.value; state.offset = 0; load(); }, 250);
    } });
  const pickTag = (tag) => {
    if (parseFilter(state.text).tags.includes(tag)) return;
    state.text = `${state.text} tag:${tag}`.trim();
    filterBox.value = state.text;
    state.offset = 0;
    load();
  };
  const compareBtn = h("button", { disabled: true, onclick: () => {
    location.hash = `#/compare?ids=${[...selected].join(",")}`; } }, "Compare selected");
  const summary = h("span.muted");
  const prev = h("button.ghost", { onclick: () => { state.offset = Math.max(0, state.offset - PAGE); load(); } }, "‹ Newer");
  const next = h("button.ghost", { onclick: () => { state.offset += PAGE; load(); } }, "Older ›");
  const tbody = h("tbody");
  const message = h("div");

  clear(main,
    h("div.page-head", {}, h("h1", {}, "Jobs"), h("div.spacer"),
      h("a.button.primary", { href: "#/new" }, "New run")),
    h("div.toolbar", {}, filterBox, select("status", STATUSES), select("type", types), sortSelect, compareBtn,
      h("div.spacer"), summary, prev, next),
    message,
    h("div.table-wrap", {}, h("table.jobs", {},
      h("thead", {}, h("tr", {}, ["", "Job", "Status", "Type", "Method", "Batch", "Encoder", "Progress", "ETA",
        "Final loss", "Scores", "Created"].map((t) => h("th", {}, t)))),
      tbody)));

  const updateCompare = () => {
    compareBtn.disabled = selected.size < 2 || selected.size > 10;
    compareBtn.textContent = selected.size ? `Compare selected (${selected.size})` : "Compare selected";
  };

  const row = (job, member = false) => {
    const f = jobFacts(job);
    const p = job.progress || {};
    const kids = job.children;
    const grid = (job.spec && job.spec.grid) || {};  // a sweep: show the swept values, not the base's
    const swept = (key, base) => (Array.isArray(grid[key]) ? grid[key].join(" / ") : base);
    const toggle = kids ? h("button.ghost.small.toggle", { "data-toggle": job.id, "aria-expanded": String(open.has(job.id)),
      title: open.has(job.id) ? "hide its members" : "show its members",
      onclick: () => { open.has(job.id) ? open.delete(job.id) : open.add(job.id); load(); } }, open.has(job.id) ? "▾" : "▸") : null;
    const best = kids ? sweepBestFrom(job, members.get(job.id)) : null;
    return h("tr", { "data-job": job.id, "data-status": job.status, "data-parent": member ? job.parent : null,
      class: member ? "member" : null },
      h("td", {}, h("input", { type: "checkbox", checked: selected.has(job.id), "aria-label": `select ${job.id}`,
        onchange: (e) => { e.target.checked ? selected.add(job.id) : selected.delete(job.id); updateCompare(); } })),
      h("td", {}, toggle, job.name
        ? [h("a.job-name", { href: `#/job/${job.id}`, title: job.id }, job.name), h("div.small.muted.mono", {}, shortId(job.id))]
        : h("a.mono", { href: `#/job/${job.id}`, title: job.id }, shortId(job.id)), tagChips(job.tags, pickTag)),
      h("td", {}, badge(job.status)),
      h("td", {}, job.type, kids ? h("span.muted", {}, ` (${kids.total})`) : null),
      h("td", {}, swept("method", f.method) || "–"),
      h("td.num", {}, swept("batch_size", f.batch) ?? "–"),
      h("td", {}, f.encoder || "–"),
      h("td", {}, progressBar(job), h("span.small.muted", {},
        p.total_steps ? `${p.step} / ${p.total_steps}` : (kids ? `${kids.succeeded + kids.failed + kids.cancelled} / ${kids.total}` : ""))),
      h("td.num", {}, job.status !== "running" ? "–" : finishingPhase(job) || fmtDuration(p.eta_s)),
      h("td.num", {}, fmtNumber(f.loss)),
      h("td", { "data-best": best ? best.value : null }, best ? `best ${best.name.replace("_top1", "").replace("_", " ")} ${fmtPct(best.value)}`
        : scoreText(f.scores)),
      h("td", { title: job.created_at }, fmtAgo(job.created_at)));
  };

  let timer = null;
  let gone = false;
  async function load() {
    clearTimeout(timer);
    const params = new URLSearchParams({ limit: PAGE, offset: state.offset });
    if (state.status) params.set("status", state.status);
    if (state.type) params.set("type", state.type);
    if (state.sort !== "-created") params.set("sort", state.sort);
    const filter = parseFilter(state.text);
    if (filter.q) params.set("q", filter.q);
    for (const t of filter.tags) params.append("tag", t);
    // Members sit under their sweep, unless a name or tag filter looks for them one by one.
    if (!filter.q && !filter.tags.length) params.set("top_level", "true");
    try {
      const page = await get(`/v1/jobs?${params}`);
      if (gone) return;
      clear(message);
      // Members of the open sweeps, and of running ones (for their best score so far).
      await Promise.all(page.items.filter((j) => j.children && (open.has(j.id) || j.status === "running" || !(j.result && j.result.rows)))
        .map(async (j) => { members.set(j.id, (await get(`/v1/jobs?parent=${encodeURIComponent(j.id)}&limit=500`)).items); }));
      if (gone) return;
      clear(tbody, page.items.length ? page.items.flatMap((j) => [row(j),
        ...(open.has(j.id) ? (members.get(j.id) || []).slice().reverse().map((m) => row(m, true)) : [])]) :
        h("tr", {}, h("td.empty", { colSpan: 12 }, page.total ? "No jobs on this page." :
          h("span", {}, "No jobs yet. ", h("a", { href: "#/new" }, "Start a run"), "."))));
      const first = page.total ? page.offset + 1 : 0;
      summary.textContent = `${first.toLocaleString()}–${(page.offset + page.items.length).toLocaleString()} of ${page.total.toLocaleString()}`;
      prev.disabled = page.offset === 0;
      next.disabled = page.offset + page.items.length >= page.total;
    } catch (err) {
      if (gone) return;
      clear(message, errorBox(err));
    }
    if (!gone) timer = setTimeout(load, document.hidden ? 15000 : 3000);
  }
  await load();
  return () => { gone = true; clearTimeout(timer); clearTimeout(typing); };
}

// A sweep's best score: from its table once it has ended, else from the members that have scores.
function sweepBestFrom(job, members) {
  const rows = (job.result && job.result.rows) || null;
  return bestScore(rows ? rows.map((r) => r.scores) : (members || []).map((m) => jobFacts(m).scores));
}
