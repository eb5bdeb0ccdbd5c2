// One job: status, live curves (thinned history, then the event stream), config, error,
// artifacts, scores, its name, tags and notes; an encoder's evaluations; a sweep's table.
// Cancel and retry call the API and show what it says.
import { download, followEvents, get, post, request } from "../api.js";
import { barChart, lineChart } from "../charts.js";
import { badge, card, clear, errorBox, finishingPhase, fmtAgo, fmtBytes, fmtDuration, fmtNumber, fmtPct, fmtTime, h,
  jobFacts, kv, progressBar, scoreText, shortId } from "../ui.js";
import { labelsCard } from "../labels.js";
import { sweepSection } from "./sweep.js";

const MAX_POINTS = 2000;
const TERMINAL = ["succeeded", "failed", "cancelled"];

// Metric rows keyed by step: a resumed job rewrites steps, and the stream resumes after the last one.
export class Series {
  constructor() { this.rows = new Map(); this.sorted = null; }
  add(rows) { for (const r of rows) this.rows.set(r.step, r); this.sorted = null; }
  list() {
    if (!this.sorted) this.sorted = [...this.rows.values()].sort((a, b) => a.step - b.step);
    return this.sorted;
  }
  lastStep() { const l = this.list(); return l.length ? l[l.length - 1].step : 0; }
  has(name) { return this.list().some((r) => typeof r[name] === "number"); }
  columns(x, names) {
    const rows = this.list().filter((r) => typeof r[x] === "number");
    return [rows.map((r) => r[x]), ...names.map((n) => rows.map((r) => (typeof r[n] === "number" ? r[n] : null)))];
  }
  attemptStarts(x) {
    const out = [];
    let prev = null;
    for (const r of this.list()) {
      if (prev !== null && r.attempt !== prev && typeof r[x] === "number") out.push({ x: r[x], label: `attempt ${r.attempt}` });
      prev = r.attempt;
    }
    return out;
  }
}

export async function loadSeries(jobId) {
  const series = new Series();
  const page = await get(`/v1/jobs/${jobId}/metrics?since=0&max_points=${MAX_POINTS}`);
  series.add(page.items);
  return { series, nextSince: page.next_since };
}

export async function jobPage(main, jobId) {
  let job = await get(`/v1/jobs/${jobId}`);
  const evaluations = job.evaluations;  // status events carry none: kept from the first read
  const { series, nextSince } = await loadSeries(jobId);

  const head = h("div.page-head");
  const facts = h("div");
  const alerts = h("div");
  const chartsBox = h("div.charts");
  const labelsBox = h("div");  // drawn once and after a save, not on every status event (it holds typing)
  const details = h("div");
  const side = h("div.side", {}, labelsBox, details);
  const below = h("div");
  const liveState = h("span.live-state.small.muted");
  // Only a job that trains has curves (a probe, an embed or a sweep itself logs none).
  const curves = job.type === "pretrain" || series.list().length ? card(h("span", {}, "Training curves ", liveState),
    h("div.xtoggle", {}, "x axis: ", ...["step", "epoch"].map((x) => h("label", {},
      h("input", { type: "radio", name: "xaxis", value: x, checked: x === "step", onchange: () => { xAxis = x; rebuild(); } }), ` ${x}`))),
    chartsBox) : null;
  clear(main, head, alerts, h("div.job-grid", {}, h("div", {}, facts, curves, below), side));

  let xAxis = "step";
  let charts = [];
  const chartDefs = () => [
    { key: "loss", title: "Loss", names: ["loss"] },
    { key: "lr", title: "Learning rate", names: ["lr"] },
    { key: "knn", title: "kNN accuracy (monitor)", names: ["knn_acc"], yFormat: fmtPct },
  ].filter((d) => d.names.some((n) => series.has(n)) || (d.key === "loss" && job.type === "pretrain"));

  function rebuild() {
    clear(chartsBox);
    charts = chartDefs().map((d) => ({ d, chart: lineChart(chartsBox, {
      title: d.title, xLabel: xAxis, series: d.names.map((n) => ({ label: n })), yFormat: d.yFormat,
      markers: () => series.attemptStarts(xAxis) }) }));
    if (!series.list().length) chartsBox.append(h("p.muted.small", {}, job.type === "pretrain" ?
      "No metrics yet: the curve appears with the first logged step." : "This job type logs no training curve."));
    redraw();
  }
  function redraw() {
    if (chartDefs().length !== charts.length) return rebuild();
    for (const { d, chart } of charts) chart.setData(series.columns(xAxis, d.names));
    chartsBox.dataset.points = String(series.list().length);
  }

  function drawHead() {
    const active = !TERMINAL.includes(job.status);
    const actions = h("div.actions");
    if (active) actions.append(h("button.danger", { "data-action": "cancel", disabled: job.cancel_requested, onclick: async (e) => {
      e.target.disabled = true;
      try { job = await post(`/v1/jobs/${jobId}/cancel`); drawAll(); } catch (err) { showAlert(err); e.target.disabled = false; }
    } }, job.cancel_requested ? "Cancelling…" : "Cancel"));
    // Retry queues a failed or cancelled job again; a finished sweep, its failed or cancelled members.
    const kids = job.children;
    const retryable = ["failed", "cancelled"].includes(job.status) || (kids && kids.failed + kids.cancelled > 0);
    if (!active && retryable) actions.append(h("button", { "data-action": "retry", onclick: async () => {
      try {
        const created = await post(`/v1/jobs/${jobId}/retry`);
        location.hash = `#/job/${(created && created.id) || jobId}`;
      } catch (err) {
        showAlert(err.status === 404 || err.status === 405 ? new Error(`retry is not available on this server (${err.message})`) : err);
      }
    } }, "Retry"));
    actions.append(h("a.button.ghost", { href: `#/compare?ids=${jobId}` }, "Compare…"));
    clear(head, h("div", {}, h("div.crumbs", {}, h("a", { href: "#/jobs" }, "Jobs"), " / ", job.type,
      job.name ? h("span.mono", {}, " / ", job.id) : null),
      job.name ? h("h1", { "data-name": "" }, job.name, " ", badge(job.status)) : h("h1.mono", {}, job.id, " ", badge(job.status))),
      h("div.spacer"), actions);
  }

  function drawFacts() {
    const p = job.progress || {};
    const f = jobFacts(job);
    clear(facts, h("div.stats", {},
      stat("Progress", h("div", {}, progressBar(job), h("span.small", {}, p.total_steps ? `step ${p.step} of ${p.total_steps}` : `step ${p.step || 0}`))),
      stat("Epoch", fmtNumber(p.epoch, 2)),
      stat(job.status === "running" ? "ETA" : "Run time", job.status !== "running" ? fmtDuration(p.elapsed_s)
        : finishingPhase(job) ? h("span", { "data-phase": finishingPhase(job) }, finishingPhase(job)) : fmtDuration(p.eta_s)),
      stat("Loss", fmtNumber(f.loss)),
      stat("Scores", scoreText(f.scores)),
      stat("Attempts", String(job.attempts))));
  }

  function drawLabels() {
    clear(labelsBox, labelsCard(job, (updated) => { job = updated; drawAll(); drawLabels(); }));
  }

  function drawSide() {
    clear(details,
      card("Details", kv([
        ["Type", job.type], ["Status", job.status], ["Worker", job.worker || "–"],
        ["Created", h("span", { title: fmtTime(job.created_at) }, fmtAgo(job.created_at))],
        ["Started", fmtTime(job.started_at)], ["Finished", fmtTime(job.finished_at)],
        job.parent ? ["Sweep", h("a.mono", { href: `#/job/${job.parent}` }, job.parent)] : null,
        job.spec.encoder_job ? ["Encoder", h("a.mono", { href: `#/job/${job.spec.encoder_job}` }, job.spec.encoder_job)] : null,
      ])),
      card("Config", h("pre.config", { "data-config": "" }, JSON.stringify(job.spec, null, 2))));
  }

  let alertBox = null;
  function showAlert(err) { alertBox = errorBox(err); drawAlerts(); }
  function drawAlerts() {
    clear(alerts);
    if (job.status === "failed" && job.error) alerts.append(h("div.alert.error", { "data-error": "" }, h("strong", {}, "Failed: "), job.error));
    if (job.cancel_requested && job.status === "running") alerts.append(h("div.alert.info", {}, "Cancel requested: the job stops at its next step."));
    if (alertBox) alerts.append(alertBox);
  }

  async function drawBelow() {
    const parts = [];
    const r = job.result || {};
    if (Array.isArray(r.per_class_accuracy)) {
      const labels = r.classes || r.per_class_accuracy.map((_, i) => `class ${i}`);
      parts.push(card(`Probe: ${r.classifier || ""} accuracy ${fmtPct(r.accuracy)}`,
        kv([["Train images", fmtNumber(r.num_train)], ["Test images", fmtNumber(r.num_test)], ["Time", fmtDuration(r.seconds)]]),
        h("h4", {}, "Per-class accuracy"), barChart(labels, r.per_class_accuracy)));
    }
    if (r.scores && typeof r.scores === "object") {
      const s = r.scores;
      const perClass = s.per_class_accuracy || (s.linear && s.linear.per_class_accuracy);
      parts.push(card("Probe scores", kv(Object.entries(s).filter(([, v]) => typeof v === "number").map(([k, v]) => [k, fmtPct(v)])),
        Array.isArray(perClass) ? [h("h4", {}, "Per-class accuracy"), barChart(s.classes || perClass.map((_, i) => `class ${i}`), perClass)] : null));
    }
    if (Array.isArray(evaluations)) parts.push(evaluationsCard(evaluations));
    if (job.type === "embed" && job.status === "succeeded" && r.map) parts.push(card("Explore", h("a.button.primary", { href: `#/explore/${job.id}`, "data-explore": "" }, "Open the map, neighbours and search")));
    if (job.children || job.type === "sweep") parts.push(await sweepSection(job));
    parts.push(await artifactsCard());
    clear(below, parts);
  }

  async function artifactsCard() {
    let items = [];
    try { items = (await get(`/v1/jobs/${jobId}/artifacts`)).items; } catch (err) { return card("Artifacts", errorBox(err)); }
    if (!items.length) return card("Artifacts", h("p.muted", {}, TERMINAL.includes(job.status) ? "None." : "Written when the job ends (checkpoints while it runs)."));
    return card("Artifacts", h("table.artifacts", {}, h("thead", {}, h("tr", {}, ["Name", "Size", "sha256", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, items.map((a) => h("tr", { "data-artifact": a.name },
        h("td.mono", {}, a.name), h("td.num", {}, fmtBytes(a.size)),
        h("td.mono.sha", { title: a.sha256 }, a.sha256),
        h("td", {}, h("a.button.small", { href: a.url, onclick: (e) => { e.preventDefault(); download(a.url, a.name).catch(showAlert); } }, "Download")))))));
  }

  function drawAll() { drawHead(); drawFacts(); drawAlerts(); drawSide(); }

  series.add([]);
  drawAll();
  drawLabels();
  rebuild();
  await drawBelow();

  let stop = () => {};
  let wasTerminal = TERMINAL.includes(job.status);
  if (!wasTerminal) {
    stop = followEvents(`/v1/jobs/${jobId}/events`, nextSince, (name, data) => {
      if (name === "metrics") { series.add([data]); scheduleRedraw(); }
      else if ((name === "status" || name === "end") && data && data.id) {
        job = data;
        drawAll();
        if (TERMINAL.includes(job.status) && !wasTerminal) { wasTerminal = true; drawBelow(); }
      }
    }, { onState: (s) => { liveState.textContent = s === "live" ? "● live" : s === "reconnecting" ? "reconnecting…" : ""; } });
  }
  let pending = false;
  function scheduleRedraw() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; redraw(); drawFacts(); });
  }
  return () => stop();
}

// The probe and embed jobs that name this encoder, with their scores.
function evaluationsCard(items) {
  if (!items.length) return card("Evaluations", h("p.muted", {}, "No probe or embed job names this encoder yet."));
  return card("Evaluations", h("table.evaluations", {},
    h("thead", {}, h("tr", {}, ["Job", "Type", "Classifier", "Status", "Score"].map((t) => h("th", {}, t)))),
    h("tbody", {}, items.map((e) => h("tr", { "data-evaluation": e.id },
      h("td", {}, h("a", { href: `#/job/${e.id}`, title: e.id }, e.name || shortId(e.id))),
      h("td", {}, e.type), h("td", {}, e.classifier || "–"), h("td", {}, badge(e.status)),
      h("td.num", {}, fmtPct(e.score)))))));
}

function stat(label, value) {
  return h("div.stat", {}, h("div.stat-label", {}, label), h("div.stat-value", {}, value));
}
