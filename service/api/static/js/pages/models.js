// Models: the registry. Your models with their latest version and aliases; register a succeeded
// pretrain job as a model's next version; one model's versions (job, scores, sha256), its
// aliases moved or deleted, and each version's encoder downloaded.
import { del, download, get, post, request } from "../api.js";
import { card, clear, errorBox, fmtAgo, fmtTime, h, parseHashQuery, scoreText, shortId } from "../ui.js";

const PAGE = 50;

export async function modelsPage(main) {
  const q = parseHashQuery();
  const selected = q.get("name");
  const list = h("div");
  const detail = h("div", { id: "model-detail" });
  clear(main, h("div.page-head", {}, h("h1", {}, "Models")),
    h("div.models-grid", {}, h("div", {}, list, await registerCard(q.get("job"), selected)), detail));

  let page;
  try { page = await get(`/v1/models?limit=${PAGE}`); } catch (err) { clear(list, errorBox(err)); return; }
  clear(list, card(`Registered (${page.total})`, page.items.length ? h("table.models", {},
    h("thead", {}, h("tr", {}, ["Model", "Latest", "Versions", "Aliases"].map((t) => h("th", {}, t)))),
    h("tbody", {}, page.items.map((m) => h("tr", { "data-model": m.name, class: selected === m.name ? "selected" : null,
      title: `registered ${fmtTime(m.created_at)}` },
      h("td", {}, h("a", { href: `#/models?name=${encodeURIComponent(m.name)}` }, m.name)),
      h("td.num", {}, m.latest_version ? `v${m.latest_version}` : "–"),
      h("td.num", {}, m.version_count),
      h("td", {}, aliasChips(m.aliases))))))
    : h("p.muted", {}, "Nothing registered yet. Register a pretrain job that succeeded, then point an alias such as production at it.")));
  if (selected) await showModel(detail, selected);
}

function aliasChips(aliases, onDelete) {
  const entries = Object.entries(aliases || {});
  if (!entries.length) return h("span.muted", {}, "–");
  return h("span.chips", {}, entries.map(([alias, version]) => h("span.chip", { "data-alias": alias },
    `${alias} → v${version}`,
    onDelete ? h("button.chip-x", { title: `delete alias ${alias}`, "aria-label": `delete alias ${alias}`,
      onclick: () => onDelete(alias) }, "×") : null)));
}

async function registerCard(jobId, model) {
  const status = h("div.small");
  const name = h("input", { placeholder: "model name (cifar-r18)", value: model || "", "aria-label": "model name" });
  const job = h("select", { "aria-label": "job to register" }, h("option", { value: "" }, "a succeeded pretrain job…"));
  try {
    const jobs = await get("/v1/jobs?type=pretrain&status=succeeded&limit=100");
    if (jobId && !jobs.items.some((j) => j.id === jobId)) jobs.items.unshift({ id: jobId });
    for (const j of jobs.items) {
      job.append(h("option", { value: j.id, selected: j.id === jobId }, j.name ? `${j.name} (${shortId(j.id)})` : j.id));
    }
  } catch (err) { clear(status, errorBox(err)); }
  const button = h("button.primary", { onclick: async () => {
    button.disabled = true;
    try {
      const v = await post("/v1/models", { name: name.value.trim(), job: job.value });
      location.hash = `#/models?name=${encodeURIComponent(v.name)}&v=${v.version}`;
    } catch (err) {
      clear(status, errorBox(err));
    } finally { button.disabled = false; }
  } }, "Register");
  return card("Register a version", h("p.muted.small", {}, "The job's encoder becomes the model's next version (the model is made on first use)."),
    h("div.toolbar", {}, name, job, button), status);
}

async function showModel(box, name) {
  let model;
  try { model = await get(`/v1/models/${encodeURIComponent(name)}`); } catch (err) { clear(box, errorBox(err)); return; }
  const message = h("div");
  const reload = async () => showModel(box, name);
  const fail = (err) => clear(message, errorBox(err));
  const deleteAlias = async (alias) => {
    if (!confirm(`Delete alias ${alias} of ${name}?`)) return;
    try { await del(`/v1/models/${encodeURIComponent(name)}/aliases/${encodeURIComponent(alias)}`); await reload(); } catch (err) { fail(err); }
  };
  clear(box,
    card(model.name, message,
      h("dl.kv", {},
        h("dt", {}, "Aliases"), h("dd", { "data-aliases": "" }, aliasChips(model.aliases, deleteAlias)),
        h("dt", {}, "Versions"), h("dd", {}, model.version_count),
        h("dt", {}, "Created"), h("dd", {}, fmtTime(model.created_at)),
        h("dt", {}, "Use it"), h("dd.mono", {}, `"encoder_job": "model:${model.name}@${Object.keys(model.aliases)[0] || "ALIAS"}"`)),
      aliasForm(model, reload, fail)),
    card("Versions", model.versions.length ? h("div.table-wrap", {}, h("table.versions", {},
      h("thead", {}, h("tr", {}, ["Version", "Job", "Scores", "Encoder sha256", "Registered", "Aliases", "Files"].map((t) => h("th", {}, t)))),
      h("tbody", {}, model.versions.map((v) => h("tr", { "data-version": v.version },
        h("td.num", {}, `v${v.version}`),
        h("td.mono", {}, h("a", { href: `#/job/${v.job}`, title: v.job }, shortId(v.job))),
        h("td", {}, scoreText(v.scores)),
        h("td.mono.muted", { title: v.sha256 || "" }, v.sha256 ? `${v.sha256.slice(0, 12)}…` : "–"),
        h("td", { title: v.created_at }, fmtAgo(v.created_at)),
        h("td", {}, v.aliases.length ? h("span.chips", {}, v.aliases.map((a) => h("span.chip", {}, a))) : "–"),
        h("td.files", {}, ["encoder.safetensors", "encoder.json"].map((file) => h("a", {
          href: `${v.url}/files/${file}`, title: `download ${file} of v${v.version} (sha256-checked by the server)`,
          onclick: (e) => { e.preventDefault(); download(`${v.url}/files/${file}`, file).catch(fail); } },
          file.endsWith(".json") ? "json" : "weights"))))))))
      : h("p.muted", {}, "No versions left.")));
}

function aliasForm(model, reload, fail) {
  const alias = h("input", { placeholder: "alias (production)", "aria-label": "alias", value: Object.keys(model.aliases)[0] || "" });
  const version = h("select", { "aria-label": "version" }, model.versions.map((v) => h("option", { value: v.version }, `v${v.version}`)));
  const button = h("button", { onclick: async () => {
    button.disabled = true;
    try {
      await request("PUT", `/v1/models/${encodeURIComponent(model.name)}/aliases/${encodeURIComponent(alias.value.trim())}`,
        { json: { version: Number(version.value) } });
      await reload();
    } catch (err) { fail(err); } finally { button.disabled = false; }
  } }, "Point alias");
  return h("div.toolbar", {}, alias, h("span.muted", {}, "→"), version, button);
}
