// Datasets: upload with progress, the list, and one dataset's summary, sample grid and
// augmented views (drawn by the API with `dcl show-augment`, where torch is installed).
import { del, get, request, upload } from "../api.js";
import { barChart } from "../charts.js";
import { card, clear, errorBox, fmtAgo, fmtBytes, fmtNumber, h, parseHashQuery } from "../ui.js";

const PAGE = 20;

export async function datasetsPage(main) {
  const q = parseHashQuery();
  const list = h("div");
  const detail = h("div", { id: "dataset-detail" });
  clear(main, h("div.page-head", {}, h("h1", {}, "Datasets")), uploadCard(), h("div.ds-grid", {}, list, detail));
  let offset = 0;

  async function loadList() {
    let page;
    try { page = await get(`/v1/datasets?limit=${PAGE}&offset=${offset}`); } catch (err) { clear(list, errorBox(err)); return; }
    clear(list, card(`Uploaded (${page.total})`, page.items.length ? h("table.datasets", {},
      h("thead", {}, h("tr", {}, ["Name", "Images", "Classes", "Size", "Uploaded"].map((t) => h("th", {}, t)))),
      h("tbody", {}, page.items.map((d) => h("tr", { "data-dataset": d.id, class: q.get("id") === d.id ? "selected" : null },
        h("td", {}, h("a", { href: `#/datasets?id=${d.id}` }, d.name)),
        h("td.num", {}, fmtNumber(d.summary.num_images)),
        h("td.num", {}, d.summary.classes ? d.summary.classes.length : "–"),
        h("td.num", {}, fmtBytes(d.bytes)), h("td", {}, fmtAgo(d.created_at))))))
      : h("p.muted", {}, "Nothing uploaded yet."),
    page.total > PAGE ? h("div.toolbar", {},
      h("button.ghost", { disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - PAGE); loadList(); } }, "‹ Newer"),
      h("button.ghost", { disabled: offset + PAGE >= page.total, onclick: () => { offset += PAGE; loadList(); } }, "Older ›")) : null));
  }

  function uploadCard() {
    const file = h("input", { type: "file", accept: ".zip,.tar,.tgz,.gz,.npz", "aria-label": "dataset file" });
    const name = h("input", { placeholder: "name (default: the file name)", "aria-label": "dataset name" });
    const skip = h("input", { type: "checkbox" });
    const bar = h("div.bar.s-running", { style: { width: "0%" } });
    const progress = h("div.progress.big", { hidden: true }, bar);
    const status = h("div.small");
    const button = h("button.primary", { onclick: async () => {
      if (!file.files.length) { clear(status, errorBox("Choose a .zip, .tar(.gz) or .npz file first.")); return; }
      button.disabled = true;
      progress.hidden = false;
      clear(status, "Uploading…");
      try {
        const path = `/v1/datasets${skip.checked ? "?skip_corrupt=true" : ""}`;
        const ds = await upload(path, file.files[0], { name: name.value.trim() }, (f) => {
          bar.style.width = `${Math.round(100 * f)}%`;
          status.textContent = f < 1 ? `Uploading… ${Math.round(100 * f)}%` : "Checking every image…";
        });
        clear(status, `Uploaded ${ds.name}: ${fmtNumber(ds.summary.num_images)} images.`);
        location.hash = `#/datasets?id=${ds.id}`;
      } catch (err) {
        clear(status, errorBox(err));
      } finally {
        button.disabled = false;
        progress.hidden = true;
        bar.style.width = "0%";
      }
    } }, "Upload");
    return card("Upload", h("p.muted.small", {}, "A .zip or .tar(.gz) of an image folder (class sub-folders give labels), or an .npz with x (N,H,W,C uint8) and optional y."),
      h("div.toolbar", {}, file, name, h("label.small", {}, skip, " skip unreadable images"), button), progress, status);
  }

  await loadList();
  if (q.get("id")) await showDataset(detail, q.get("id"), async () => { location.hash = "#/datasets"; });
}

async function showDataset(box, id, onDeleted) {
  let ds;
  try { ds = await get(`/v1/datasets/${id}`); } catch (err) { clear(box, errorBox(err)); return; }
  const s = ds.summary;
  const grid = h("div.samples", { "data-samples": "" }, h("p.muted.small", {}, "Loading samples…"));
  const counts = s.class_counts || {};
  const max = Math.max(1, ...Object.values(counts));
  clear(box,
    card(ds.name,
      h("dl.kv", { "data-summary": "" },
        h("dt", {}, "Images"), h("dd", { "data-num-images": "" }, fmtNumber(s.num_images)),
        h("dt", {}, "Classes"), h("dd", {}, s.classes ? `${s.classes.length}` : "unlabelled"),
        h("dt", {}, "Sizes"), h("dd", {}, (s.sizes || []).map((z) => `${z.width}×${z.height} (${fmtNumber(z.count)})`).join(", ") || "–"),
        h("dt", {}, "Format"), h("dd", {}, s.format),
        h("dt", {}, "Stored"), h("dd", {}, fmtBytes(ds.bytes)),
        h("dt", {}, "Corrupt, skipped"), h("dd", {}, s.corrupt && s.corrupt.length ? `${s.corrupt.length}: ${s.corrupt.slice(0, 5).join(", ")}` : "none"),
        h("dt", {}, "Source"), h("dd.mono", {}, ds.source)),
      s.classes && Object.keys(counts).length ? [h("h4", {}, "Images per class"),
        barChart(Object.keys(counts), Object.values(counts).map((c) => c / max), { format: (v) => fmtNumber(Math.round(v * max)) })] : null,
      h("div.toolbar", {}, h("a.button", { href: `#/new?dataset=${encodeURIComponent(ds.source)}` }, "Train on it"),
        h("button.ghost.danger", { onclick: async () => {
          if (!confirm(`Delete ${ds.name}?`)) return;
          try { await del(`/v1/datasets/${ds.id}`); onDeleted(); } catch (err) { box.prepend(errorBox(err)); }
        } }, "Delete"))),
    card("Samples", grid),
    augmentCard(ds));
  try {
    const samples = (await get(`/v1/datasets/${id}/samples?n=24`)).items;
    clear(grid, samples.map((x) => h("figure.sample", {}, h("img", { src: x.src, alt: x.class || `image ${x.index}`, width: 96, height: 96 }),
      h("figcaption", {}, x.class ?? `#${x.index}`))));
  } catch (err) { clear(grid, errorBox(err)); }
}

function augmentCard(ds) {
  const fields = {
    crop_low: num(0.08, 0.01, "crop scale low"), crop_high: num(1.0, 0.01, "crop scale high"),
    jitter_p: num(0.8, 0.05, "jitter p"), brightness: num(0.4, 0.05, "brightness"), contrast: num(0.4, 0.05, "contrast"),
    saturation: num(0.4, 0.05, "saturation"), hue: num(0.1, 0.01, "hue"), grayscale_p: num(0.2, 0.05, "grayscale p"),
    hflip_p: num(0.5, 0.05, "flip p"), image_size: num(32, 1, "image size"), views: num(4, 1, "views"),
  };
  const out = h("div.figure", { "data-augment": "" });
  const button = h("button", { onclick: async () => {
    const v = Object.fromEntries(Object.entries(fields).map(([k, el]) => [k, Number(el.querySelector("input").value)]));
    const body = { n: 6, views: v.views, image_size: v.image_size, augment: {
      crop_scale: [v.crop_low, v.crop_high], jitter_p: v.jitter_p, brightness: v.brightness, contrast: v.contrast,
      saturation: v.saturation, hue: v.hue, grayscale_p: v.grayscale_p, hflip_p: v.hflip_p } };
    button.disabled = true;
    clear(out, h("p.muted.small", {}, "Drawing…"));
    try {
      const res = await request("POST", `/v1/datasets/${ds.id}/augment-preview`, { json: body, raw: true });
      clear(out, h("img.pixelated", { src: URL.createObjectURL(await res.blob()), alt: "each row: an image, then its augmented views" }));
    } catch (err) {
      clear(out, errorBox(err));
    } finally { button.disabled = false; }
  } }, "Show augmented views");
  return card("Augmented views", h("p.muted.small", {}, "Each row: an image, then views as training makes them. Tune the settings, then copy them into a run's augment config."),
    h("div.form-grid.compact", {}, Object.values(fields)), h("div.toolbar", {}, button), out);
}

function num(value, step, label) {
  return h("label.field", {}, h("span.field-label", {}, label), h("input", { type: "number", value: String(value), step: String(step) }));
}
