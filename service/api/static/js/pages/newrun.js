// New run: a form built from the API's own schema (TrainConfig in /openapi.json: every field,
// its default, its description), or a pasted JSON job. The API validates; its errors are shown
// next to the field they name.
import { ApiError, get, post, schema } from "../api.js";
import { card, clear, errorBox, h, parseHashQuery } from "../ui.js";

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
  let datasets = [];
  try { datasets = (await get("/v1/datasets?limit=100")).items; } catch (_) { /* the form still works */ }
  const inputs = [];  // {path, el, initial, read}
  const errorSlots = new Map();
  const topErrors = h("div");

  const sources = h("datalist", { id: "sources" }, ["builtin:digits", ...datasets.map((d) => d.source)]
    .map((v) => h("option", { value: v }, datasets.find((d) => d.source === v)?.name)));

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
    } else {
      el = h("input", { value: def ?? "", list: name === "source" ? "sources" : null });
      read = () => (el.value.trim() === "" ? null : el.value.trim());
    }
    el.dataset.path = path;
    el.name = path;
    const initial = JSON.stringify(read());
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
  function collect() {
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
    return { type: "pretrain", config };
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
    if (src) src.el.value = q.get("dataset");
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
    topErrors,
    card("Pretraining run", h("div.form-grid", {}, primary)),
    h("details.card", {}, h("summary", {}, "All other settings (defaults shown)"), h("div.form-grid", {}, rest)),
    h("div.toolbar.submit", {}, submit, h("span.muted.small", {}, "Only the fields you change are sent; the server fills in the rest."))
  );

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
  } }, h("p.muted.small", {}, "Any job the API takes: pretrain, linear_probe, embed (see /docs)."), jsonErrors, jsonBox,
    h("div.toolbar", {}, h("button.primary", { type: "submit" }, "Submit JSON")));

  const tabs = h("div.tabs", {},
    h("button.tab.active", { type: "button", "data-tab": "form", onclick: () => show("form") }, "Form"),
    h("button.tab", { type: "button", "data-tab": "json", onclick: () => show("json") }, "Paste JSON"));
  const formPane = h("div", {}, sources, form);
  const jsonPane = h("div", { hidden: true }, card("Job JSON", jsonForm));
  function show(which) {
    formPane.hidden = which !== "form";
    jsonPane.hidden = which !== "json";
    tabs.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.tab === which));
    if (which === "json" && !jsonBox.value) jsonBox.value = JSON.stringify(collect(), null, 2);
  }
  clear(main, h("div.page-head", {}, h("h1", {}, "New run")), tabs, formPane, jsonPane);
}
