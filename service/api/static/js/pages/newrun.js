// New run: any job type. A pretrain (or a sweep's base) config is a form built from the API's own
// schema (TrainConfig in /openapi.json: every field, its default, its description); a sweep adds
// its grid and scoring, a probe or an embed picks a trained encoder and datasets. Or paste a JSON
// job. Datasets are picked from the uploads and the builtin ones; the start values fit the workers
// that are up; the run's steps are estimated before it is sent. The API validates; its errors are
// shown next to the field they name.
import { ApiError, get, post, schema } from "../api.js";
import { card, clear, errorBox, h, jobLabel, parseHashQuery, shortId } from "../ui.js";
import { CPU_DEFAULTS, datasetChoices, datasetPicker, defaultsNote, estimateSteps, gridPoints, withPoint,
  workerFacts } from "./newrun_parts.js";

const JOB_TYPES = [["pretrain", "Pretrain an encoder"], ["sweep", "Sweep: one pretrain run a grid point"],
  ["linear_probe", "Linear probe: score an encoder"], ["embed", "Embed: an encoder's features for a dataset"]];

const PRIMARY = ["method", "encoder", "batch_size", "epochs", "max_steps", "temperature", "optimizer", "lr", "device", "dataset"];

function resolve(doc, s) {
  while (s && s.$ref) s = doc.components.schemas[s.$ref.split("/").pop()];
  return s;
}

// {kind, nullable, schema} of a property: anyOf [X, null] is a nullable X.
function describe(doc, prop) {
  let s = prop;
  let nullable = false;
  if (prop.anyOf) {
    const rest = prop.anyOf.filter((a) => a.type !== "null");
    nullable = rest.length < prop.anyOf.length;
    s = rest.length === 1 ? rest[0] : { type: "string" };
  }
  const target = resolve(doc, s);
  if (target && target.type === "object" && target.properties) return { kind: "object", nullable, schema: target };
  if (target && target.type === "object") return { kind: "json", nullable, schema: target };  // free-form (encoder_kwargs)
  if (s.enum) return { kind: "enum", nullable, schema: s };
  if (s.type === "boolean") return { kind: "boolean", nullable, schema: s };
  if (s.type === "integer" || s.type === "number") return { kind: "number", nullable, schema: s };
  if (s.type === "array") return { kind: "array", nullable, schema: s };
  return { kind: "string", nullable, schema: s };
}

export async function newRunPage(main) {
  const doc = await schema();
  const train = doc.components.schemas.TrainConfig;
  const q = parseHashQuery();
  const [choices, facts, encoders] = await Promise.all([datasetChoices(), workerFacts(), trainedEncoders()]);
  const overrides = facts.known && !facts.cuda ? CPU_DEFAULTS : {};  // a CPU-only (or idle) service
  const inputs = [];  // {path, el, initial, read}
  const errorSlots = new Map();
  const topErrors = h("div");

  function field(path, name, prop, fallback) {
    const d = describe(doc, prop);
    const def = fallback !== undefined ? fallback : prop.default;
    const help = prop.description || d.schema.description;
    if (d.kind === "object") return group(path, name, d, def ?? null, help);
    let el;
    let read;
    if (d.kind === "enum" || (d.kind === "boolean" && d.nullable)) {
      const options = d.kind === "enum" ? d.schema.enum : [true, false];
      el = h("select", {}, d.nullable ? h("option", { value: "" }, "auto / default") : null,
        options.map((o) => h("option", { value: JSON.stringify(o) }, String(o))));
      el.value = def === null || def === undefined ? "" : JSON.stringify(def);
      read = () => (el.value === "" ? null : JSON.parse(el.value));
    } else if (d.kind === "boolean") {
      el = h("input", { type: "checkbox", checked: !!def });
      read = () => el.checked;
    } else if (d.kind === "number") {
      el = h("input", { type: "number", step: d.schema.type === "integer" ? "1" : "any", value: def ?? "",
        placeholder: d.nullable ? "auto" : "" });
      read = () => (el.value === "" ? null : Number(el.value));
    } else if (d.kind === "json") {
      el = h("input.mono", { value: def === null || def === undefined ? "" : JSON.stringify(def), placeholder: "{}" });
      read = () => { try { return el.value.trim() === "" ? null : JSON.parse(el.value); } catch (_) { return el.value; } };
    } else if (d.kind === "array") {
      const item = (d.schema.prefixItems && d.schema.prefixItems[0]) || resolve(doc, d.schema.items) || {};
      const numeric = item.type === "number" || item.type === "integer";
      const shown = (v) => (numeric && typeof v === "number" ? String(Number(v.toPrecision(6))) : String(v));
      el = h("input", { value: Array.isArray(def) ? def.map(shown).join(", ") : "",
        placeholder: d.schema.prefixItems ? "low, high" : "comma-separated" });
      read = () => (el.value.trim() === "" ? (d.nullable ? null : []) : el.value.split(",").map((x) => x.trim())
        .filter((x) => x !== "").map((x) => (numeric ? Number(x) : x)));
    } else if (path === "config.dataset.source") {  // a picker, not free text
      ({ el, read } = datasetPicker(choices, { path, value: def }));
    } else {
      el = h("input", { value: def ?? "" });
      read = () => (el.value.trim() === "" ? null : el.value.trim());
    }
    el.dataset.path = path;
    el.name = path;
    const initial = JSON.stringify(read());
    if (path in overrides) el.value = el.tagName === "SELECT" ? JSON.stringify(overrides[path]) : String(overrides[path]);
    inputs.push({ path, el, initial, read });
    const slot = h("div.field-error");
    errorSlots.set(path, slot);
    return h("label.field", { "data-field": path }, h("span.field-label", {}, name), el,
      help ? h("span.field-help", { title: help }, help) : null, slot);
  }

  function group(path, name, d, def, help) {
    const props = d.schema.properties;
    const body = h("div.form-grid", {}, Object.entries(props).map(([k, p]) =>
      field(`${path}.${k}`, k, p, def && def[k] !== undefined ? def[k] : undefined)));
    const slot = h("div.field-error");
    errorSlots.set(path, slot);
    if (d.nullable) {  // e.g. knn_monitor: off unless ticked
      const on = h("input", { type: "checkbox", "data-enable": path, checked: def !== null,
        onchange: () => { body.hidden = !on.checked; } });
      body.hidden = !on.checked;
      inputs.push({ path, el: on, initial: JSON.stringify(def !== null), read: () => on.checked, toggle: true });
      return h("fieldset.group.wide", { "data-field": path }, h("legend", {}, h("label", {}, on, ` ${name}`)),
        help ? h("p.field-help", {}, help) : null, slot, body);
    }
    return h("fieldset.group.wide", { "data-field": path }, h("legend", {}, name), slot, body);
  }

  // Only what the user changed is sent: the API fills in every default (one source of truth). A
  // nested object (dataset, augment) is replaced whole by the server, so once one of its fields
  // changes, all of it is sent.
  function collectConfig() {
    const config = {};
    const off = inputs.filter((i) => i.toggle && !i.read()).map((i) => i.path);
    const on = inputs.filter((i) => i.toggle && i.read()).map((i) => i.path);
    const topGroup = (path) => path.split(".").slice(0, 2).join(".");
    const changed = new Set(inputs.filter((i) => !i.toggle && JSON.stringify(i.read()) !== i.initial).map((i) => i.path));
    const touchedGroups = new Set([...changed].filter((p) => p.split(".").length > 2).map(topGroup).concat(on.map(topGroup)));
    for (const i of inputs) {
      if (i.toggle || off.some((p) => i.path.startsWith(p + "."))) continue;
      const value = i.read();
      const whole = touchedGroups.has(topGroup(i.path)) && i.path.split(".").length > 2;
      if (!(changed.has(i.path) || (whole && value !== null))) continue;
      const parts = i.path.split(".").slice(1);
      let at = config;
      for (const p of parts.slice(0, -1)) at = at[p] = at[p] || {};
      at[parts[parts.length - 1]] = value;
    }
    return config;
  }

  // The job the form describes, of the chosen type.
  function collect() {
    const type = typeSelect.value;
    if (type === "pretrain") return { type, config: collectConfig() };
    if (type === "sweep") {
      const body = { type, config: collectConfig(), grid: readGrid() };
      if (evaluateOn.checked) body.evaluate = { train: evalTrain.read(), test: evalTest.read(), classifier: evalClassifier.value };
      return body;
    }
    if (type === "linear_probe") {
      return { type, encoder_job: encoderSelect.value, train: probeTrain.read(), test: probeTest.read(), classifier: probeClassifier.value };
    }
    return { type, encoder_job: encoderSelect.value, data: embedData.read() };
  }

  function showErrors(err) {
    for (const slot of errorSlots.values()) clear(slot);
    document.querySelectorAll(".field.invalid").forEach((f) => f.classList.remove("invalid"));
    clear(topErrors);
    const items = (err.body && err.body.errors) || [];
    const unplaced = [];
    for (const e of items) {
      let path = e.field;
      while (path && !errorSlots.has(path)) path = path.includes(".") ? path.slice(0, path.lastIndexOf(".")) : "";
      if (!path) { unplaced.push(`${e.field}: ${e.msg}`); continue; }
      errorSlots.get(path).append(h("div", {}, e.msg));
      errorSlots.get(path).closest("[data-field]").classList.add("invalid");
    }
    if (!items.length || unplaced.length) topErrors.append(errorBox(unplaced.length ? unplaced.join("; ") : err.message));
    const first = document.querySelector(".field.invalid, fieldset.invalid");
    first && first.scrollIntoView({ block: "center", behavior: "smooth" });
  }

  const props = train.properties;
  const primary = PRIMARY.filter((k) => props[k]).map((k) => field(`config.${k}`, k, props[k]));
  const rest = Object.keys(props).filter((k) => !PRIMARY.includes(k)).map((k) => field(`config.${k}`, k, props[k]));
  if (q.get("dataset")) {
    const src = inputs.find((i) => i.path === "config.dataset.source");
    if (src) src.el.value = JSON.stringify(q.get("dataset"));
  }

  // The other job types' parts.
  const slot = (path) => { const el = h("div.field-error"); errorSlots.set(path, el); return el; };
  const labelled = (path, name, el, help) => h("label.field", { "data-field": path }, h("span.field-label", {}, name), el,
    help ? h("span.field-help", {}, help) : null, slot(path));
  const select = (path, options, value) => h("select", { "data-path": path, name: path },
    options.map((o) => h("option", { value: o, selected: o === value }, o)));
  const encoderSelect = h("select", { "data-path": "encoder_job", name: "encoder_job" }, encoders.map((j) =>
    h("option", { value: j.id, selected: j.id === q.get("encoder") }, `${shortId(j.id)} · ${jobLabel(j)}`)));
  const noEncoder = encoders.length ? null : h("p.muted", { "data-no-encoder": "" }, "No pretrain job has succeeded yet: train an encoder first.");
  const gridBox = h("textarea.json", { rows: 3, "data-path": "grid", spellcheck: false },
    JSON.stringify({ method: ["dcl", "simclr"] }));
  const readGrid = () => { try { return JSON.parse(gridBox.value); } catch (_) { return gridBox.value; } };
  const evaluateOn = h("input", { type: "checkbox", checked: true, "data-enable": "evaluate" });
  const evalTrain = datasetPicker(choices, { path: "evaluate.train", labelledOnly: true, withSplit: true, value: { source: "builtin:digits", split: "train" } });
  const evalTest = datasetPicker(choices, { path: "evaluate.test", labelledOnly: true, withSplit: true, value: { source: "builtin:digits", split: "test" } });
  const evalClassifier = select("evaluate.classifier", ["logistic", "knn", "both"], "both");
  const probeTrain = datasetPicker(choices, { path: "train", labelledOnly: true, withSplit: true, value: { source: "builtin:digits", split: "train" } });
  const probeTest = datasetPicker(choices, { path: "test", labelledOnly: true, withSplit: true, value: { source: "builtin:digits", split: "test" } });
  const probeClassifier = select("classifier", ["logistic", "knn"], "logistic");
  const embedData = datasetPicker(choices, { path: "data" });
  const sweepCard = card("Sweep", h("div.form-grid", {},
    labelled("grid", "grid", gridBox, "Field path -> values, one pretrain run per combination, e.g. " +
      '{"method": ["dcl", "simclr"], "batch_size": [64, 128]}. The settings above are the base every run starts from.'),
    h("fieldset.group.wide", { "data-field": "evaluate" }, h("legend", {}, h("label", {}, evaluateOn, " evaluate: score every run")),
      slot("evaluate"), h("div.form-grid", {}, labelled("evaluate.train", "train", evalTrain.el),
        labelled("evaluate.test", "test", evalTest.el), labelled("evaluate.classifier", "classifier", evalClassifier)))));
  const probeCard = card("Linear probe", noEncoder, h("div.form-grid", {}, labelled("encoder_job", "encoder job", encoderSelect),
    labelled("train", "train", probeTrain.el), labelled("test", "test", probeTest.el), labelled("classifier", "classifier", probeClassifier)));
  const embedCard = card("Embed", noEncoder && noEncoder.cloneNode(true), h("div.form-grid", {},
    labelled("encoder_job", "encoder job", encoderSelect.cloneNode(true)), labelled("data", "data", embedData.el)));
  const embedEncoder = embedCard.querySelector("select[data-path=encoder_job]");
  embedEncoder.addEventListener("change", () => { encoderSelect.value = embedEncoder.value; });

  const typeSelect = h("select", { "data-jobtype": "", "aria-label": "job type", onchange: () => showType() },
    JOB_TYPES.map(([v, label]) => h("option", { value: v, selected: v === (q.get("type") || "pretrain") }, label)));
  const estimate = h("span.estimate", { "data-estimate": "" });
  const configCards = [card("Pretraining run", h("div.form-grid", {}, primary)),
    h("details.card", {}, h("summary", {}, "All other settings (defaults shown)"), h("div.form-grid", {}, rest))];
  const defaults = { batch_size: props.batch_size.default, epochs: props.epochs.default, max_steps: props.max_steps.default,
    dataset: props.dataset.default };
  function updateEstimate() {
    const type = typeSelect.value;
    if (type === "linear_probe" || type === "embed") { estimate.textContent = ""; return; }
    const config = collectConfig();
    if (type === "pretrain") { estimate.textContent = estimateSteps(choices, config, defaults).text; return; }
    const grid = readGrid();
    const points = typeof grid === "object" ? gridPoints(grid) : [];
    if (!points.length) { estimate.textContent = "the grid is not a JSON object of lists yet"; return; }
    const each = points.map((pt) => estimateSteps(choices, withPoint(config, pt), defaults));
    const known = each.every((e) => e.steps !== null);
    estimate.textContent = `${points.length} runs` + (known ? `, ≈ ${each.reduce((n, e) => n + e.steps, 0).toLocaleString("en-US")} steps in all` +
      ` (first run: ${each[0].text})` : `; ${each[0].text}`);
  }
  function showType() {
    const type = typeSelect.value;
    for (const c of configCards) c.hidden = !(type === "pretrain" || type === "sweep");
    sweepCard.hidden = type !== "sweep";
    probeCard.hidden = type !== "linear_probe";
    embedCard.hidden = type !== "embed";
    submit.disabled = (type === "linear_probe" || type === "embed") && !encoders.length;
    updateEstimate();
  }

  const submit = h("button.primary", { type: "submit" }, "Start run");
  const form = h("form.run-form", { novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    submit.disabled = true;
    try {
      const job = await post("/v1/jobs", collect());
      location.hash = `#/job/${job.id}`;
    } catch (err) {
      if (err instanceof ApiError) showErrors(err); else clear(topErrors, errorBox(err));
    } finally { submit.disabled = false; }
  } },
    topErrors, defaultsNote(facts),
    h("div.toolbar", {}, h("label.field-label", {}, "Job type "), typeSelect),
    ...configCards, sweepCard, probeCard, embedCard,
    h("div.toolbar.submit", {}, submit, estimate,
      h("span.muted.small", {}, "Only the fields you change are sent; the server fills in the rest."))
  );
  form.addEventListener("input", updateEstimate);
  form.addEventListener("change", updateEstimate);
  showType();

  const jsonBox = h("textarea.json", { rows: 18, spellcheck: false, "aria-label": "job JSON" });
  const jsonErrors = h("div");
  const jsonForm = h("form", { onsubmit: async (e) => {
    e.preventDefault();
    clear(jsonErrors);
    let body;
    try { body = JSON.parse(jsonBox.value); } catch (err) { clear(jsonErrors, errorBox(`Not valid JSON: ${err.message}`)); return; }
    try {
      const job = await post("/v1/jobs", body);
      location.hash = `#/job/${job.id}`;
    } catch (err) {
      const items = (err.body && err.body.errors) || [];
      clear(jsonErrors, items.length ? h("div.alert.error", {}, h("ul", {}, items.map((i) => h("li", {}, h("code", {}, i.field), ": ", i.msg))))
        : errorBox(err));
    }
  } }, h("p.muted.small", {}, "Any job the API takes: pretrain, sweep, linear_probe, embed (see /docs)."), jsonErrors, jsonBox,
    h("div.toolbar", {}, h("button.primary", { type: "submit" }, "Submit JSON")));

  const tabs = h("div.tabs", {},
    h("button.tab.active", { type: "button", "data-tab": "form", onclick: () => show("form") }, "Form"),
    h("button.tab", { type: "button", "data-tab": "json", onclick: () => show("json") }, "Paste JSON"));
  const formPane = h("div", {}, form);
  const jsonPane = h("div", { hidden: true }, card("Job JSON", jsonForm));
  function show(which) {
    formPane.hidden = which !== "form";
    jsonPane.hidden = which !== "json";
    tabs.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.tab === which));
    if (which === "json" && !jsonBox.value) jsonBox.value = JSON.stringify(collect(), null, 2);
  }
  clear(main, h("div.page-head", {}, h("h1", {}, "New run")), tabs, formPane, jsonPane);
}

// Succeeded pretrain jobs (newest first): the encoders a probe or an embed can use.
async function trainedEncoders() {
  try { return (await get("/v1/jobs?type=pretrain&status=succeeded&limit=100")).items; } catch (_) { return []; }
}
