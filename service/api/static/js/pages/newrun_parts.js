// Pieces of the New run page: the dataset picker, the defaults that fit the workers that are up,
// and the estimate of a run's steps (what the engine will count: images // batch x epochs).
import { get } from "../api.js";
import { fmtNumber, h } from "../ui.js";

export const BUILTIN = [{ source: "builtin:digits", name: "scikit-learn digits (builtin)", sizes: { train: 1437, test: 360 } }];

// Uploaded datasets, then the builtin ones: [{source, name, sizes: {train, test} | null, labelled}].
export async function datasetChoices() {
  let uploads = [];
  try { uploads = (await get("/v1/datasets?limit=500")).items; } catch (_) { /* the builtin ones still work */ }
  return [
    ...uploads.map((d) => ({ source: d.source, name: `${d.name} (${fmtNumber(d.summary.num_images)} images)`,
      sizes: { train: d.summary.num_images, test: d.summary.num_images }, labelled: !!d.summary.classes })),
    ...BUILTIN.map((b) => ({ ...b, labelled: true })),
  ];
}

// A <select> of datasets. `withSplit`: each builtin twice, as its train and its test split, the
// value then a spec object ({"source", "split"}) in JSON. `read()` gives what the API takes.
export function datasetPicker(choices, { path, value, withSplit = false, labelledOnly = false } = {}) {
  const options = [];
  for (const c of choices.filter((c) => !labelledOnly || c.labelled)) {
    if (withSplit && c.source.startsWith("builtin:")) {
      for (const split of ["train", "test"]) options.push([JSON.stringify({ source: c.source, split }), `${c.name}, ${split} split`]);
    } else options.push([JSON.stringify(c.source), c.name]);
  }
  const el = h("select", { "data-path": path, name: path }, options.map(([v, label]) => h("option", { value: v }, label)));
  if (value !== undefined) el.value = JSON.stringify(value);
  if (!el.value && options.length) el.value = options[0][0];
  return { el, read: () => (el.value ? JSON.parse(el.value) : null) };
}

// How many images a training dataset gives: the source's size (its split), capped by max_images.
function imagesOf(choices, dataset) {
  const spec = typeof dataset === "string" ? { source: dataset } : dataset || {};
  const choice = choices.find((c) => c.source === spec.source);
  const n = choice && choice.sizes ? choice.sizes[spec.split || "train"] : null;
  if (n === null || n === undefined) return null;
  return spec.max_images ? Math.min(n, spec.max_images) : n;
}

// {steps, text} for one pretrain config (the server's defaults filled in where the form left them).
export function estimateSteps(choices, config, defaults) {
  const get = (k) => (config[k] !== undefined && config[k] !== null ? config[k] : defaults[k]);
  const dataset = { ...(typeof defaults.dataset === "object" ? defaults.dataset : {}),
    ...(typeof config.dataset === "string" ? { source: config.dataset } : config.dataset || {}) };
  const n = imagesOf(choices, dataset);
  const batch = get("batch_size");
  const epochs = get("epochs");
  if (!n || !batch || !epochs) return { steps: null, text: "steps: unknown for this dataset" };
  const perEpoch = Math.floor(n / batch);
  if (perEpoch === 0) return { steps: 0, text: `batch ${batch} is larger than the ${fmtNumber(n)} images: lower batch_size` };
  let steps = perEpoch * epochs;
  const cap = get("max_steps");
  const capped = cap && cap < steps;
  if (capped) steps = cap;
  return { steps, text: `≈ ${fmtNumber(steps)} steps: ${fmtNumber(n)} images / batch ${batch} = ${fmtNumber(perEpoch)} step${perEpoch === 1 ? "" : "s"} an epoch` +
    ` × ${epochs} epochs${capped ? `, capped by max_steps ${cap}` : ""}` };
}

// Every combination of a grid ({"method": [...], "batch_size": [...]}) as {path: value} objects.
export function gridPoints(grid) {
  let points = [{}];
  for (const [k, values] of Object.entries(grid || {})) {
    if (!Array.isArray(values) || !values.length) return [];
    points = points.flatMap((p) => values.map((v) => ({ ...p, [k]: v })));
  }
  return points;
}

export function withPoint(config, point) {
  const out = JSON.parse(JSON.stringify(config));
  for (const [path, v] of Object.entries(point)) {
    const keys = path.split(".");
    let at = out;
    for (const k of keys.slice(0, -1)) at = at[k] = typeof at[k] === "object" && at[k] !== null ? at[k] : {};
    at[keys[keys.length - 1]] = v;
  }
  return out;
}

// What the workers that are up can do, from /readyz (its details are shown with auth off or to an
// operator key): {known, workers, cuda}.
export async function workerFacts() {
  try {
    const body = await (await fetch("/readyz")).json();
    const items = body.workers && body.workers.items;
    if (!Array.isArray(items)) return { known: false, workers: body.workers ? body.workers.count : null };
    return { known: true, workers: items.length, cuda: items.some((w) => w.info && w.info.cuda) };
  } catch (_) {
    return { known: false, workers: null };
  }
}

// Start values that fit a CPU-only service (the schema's resnet18, batch 256, 100 epochs would
// run for hours there), and the sentence that says why.
export const CPU_DEFAULTS = { "config.encoder": "convnet_small", "config.batch_size": 64, "config.epochs": 5 };

export function defaultsNote(facts) {
  if (facts.known && facts.workers === 0) {
    return h("div.alert.info", { "data-defaults": "none" }, "No worker is up: a run waits in the queue until one starts " +
      "(`dcl worker`). The form starts from small settings (convnet_small, batch 64, 5 epochs) that suit a CPU.");
  }
  if (facts.known && !facts.cuda) {
    return h("div.alert.info", { "data-defaults": "cpu" }, "The workers here have no GPU, so the form starts from " +
      "convnet_small, batch 64 and 5 epochs: minutes on a CPU, where the schema's defaults (resnet18, batch 256, " +
      "100 epochs) would take hours.");
  }
  return null;
}
