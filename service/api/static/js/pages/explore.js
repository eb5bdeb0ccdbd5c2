// Explore an embed job: its 2-D map drawn on a canvas (pan with the mouse, zoom with the wheel),
// coloured by class; hover shows the image, click shows its neighbours; mislabelled candidates;
// search by an uploaded image; and side by side with a second embed job of the same dataset.
import { get, request, upload } from "../api.js";
import { card, clear, errorBox, fmtNumber, fmtPct, h, parseHashQuery, shortId } from "../ui.js";

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
  "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5"];
const K = 12;

// A .npy file (format 1.0-3.0, little-endian f4/i4/i8, C order) as {shape, data}.
export function parseNpy(buffer) {
  const bytes = new Uint8Array(buffer);
  const major = bytes[6];
  const view = new DataView(buffer);
  const headerLen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(bytes.subarray(start, start + headerLen));
  const descr = header.match(/'descr':\s*'([^']+)'/)[1];
  const shape = header.match(/'shape':\s*\(([^)]*)\)/)[1].split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  const offset = start + headerLen;
  const count = shape.reduce((a, b) => a * b, 1);
  const types = { "<f4": Float32Array, "<i4": Int32Array, "<i8": BigInt64Array };
  if (!types[descr] || /True/.test(header.match(/'fortran_order':\s*(\w+)/)[1])) throw new Error(`unsupported .npy (${descr})`);
  let data = new types[descr](buffer.slice(offset, offset + count * types[descr].BYTES_PER_ELEMENT));
  if (descr === "<i8") data = Int32Array.from(data, Number);
  return { shape, data };
}

async function npy(jobId, name) {
  const res = await request("GET", `/v1/jobs/${jobId}/artifacts/${name}`, { raw: true });
  return parseNpy(await res.arrayBuffer());
}

const sameData = (a, b) => JSON.stringify(a.spec.data) === JSON.stringify(b.spec.data);
const colour = (label) => (label < 0 ? "#9ca3af" : PALETTE[label % PALETTE.length]);

// Thumbnails of the items of an uploaded dataset, from its samples endpoint (cached by item).
function thumbnails(job) {
  const source = job.spec.data.source || "";
  const dataset = source.startsWith("dataset:") ? source.slice(8) : null;
  const cache = new Map();
  return async (items) => {
    if (!dataset) return new Map();
    const missing = [...new Set(items)].filter((i) => !cache.has(i));
    for (let s = 0; s < missing.length; s += 64) {
      const part = missing.slice(s, s + 64);
      const found = await get(`/v1/datasets/${dataset}/samples?items=${part.join(",")}`);
      for (const it of found.items) cache.set(it.index, it.src);
    }
    return new Map(items.map((i) => [i, cache.get(i)]));
  };
}

// One map: a canvas scatter of the points, with hover and click.
function scatter(map, { onHover, onPick }) {
  const canvas = h("canvas.map-canvas", { width: 560, height: 460, "data-map": "" });
  const ctx = canvas.getContext("2d");
  const n = map.points.shape[0], xy = map.points.data;
  let minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity;
  for (let i = 0; i < n; i++) {
    minX = Math.min(minX, xy[2 * i]); maxX = Math.max(maxX, xy[2 * i]);
    minY = Math.min(minY, xy[2 * i + 1]); maxY = Math.max(maxY, xy[2 * i + 1]);
  }
  const view = { scale: 1, dx: 0, dy: 0 };
  const sx = new Float32Array(n), sy = new Float32Array(n);
  const colours = Uint32Array.from(map.labels.data, (l) => {
    const c = colour(l); // #rrggbb -> ABGR for the canvas' little-endian pixels
    return (255 << 24 | parseInt(c.slice(5, 7), 16) << 16 | parseInt(c.slice(3, 5), 16) << 8 | parseInt(c.slice(1, 3), 16)) >>> 0;
  });
  let marked = [], grid = new Map(), frame = 0;
  const CELL = 8;
  function project() {
    const w = canvas.width, ht = canvas.height, pad = 12;
    const base = Math.min((w - 2 * pad) / (maxX - minX || 1), (ht - 2 * pad) / (maxY - minY || 1));
    grid = new Map();
    for (let i = 0; i < n; i++) {
      sx[i] = (pad + (xy[2 * i] - minX) * base) * view.scale + view.dx;
      sy[i] = (ht - pad - (xy[2 * i + 1] - minY) * base) * view.scale + view.dy;
      if (sx[i] < 0 || sy[i] < 0 || sx[i] >= w || sy[i] >= ht) continue;
      const key = ((sx[i] / CELL) | 0) * 4096 + ((sy[i] / CELL) | 0);
      (grid.get(key) || grid.set(key, []).get(key)).push(i);
    }
  }
  function draw() {
    frame = 0;
    project();
    const w = canvas.width, ht = canvas.height;
    const image = ctx.createImageData(w, ht);
    const px = new Uint32Array(image.data.buffer);
    px.fill(0xffffffff);
    const r = n > 20000 ? 1 : 2;
    for (let i = 0; i < n; i++) {
      const x = sx[i] | 0, y = sy[i] | 0;
      if (x < r || y < r || x >= w - r || y >= ht - r) continue;
      for (let yy = y - r + 1; yy < y + r; yy++) for (let xx = x - r + 1; xx < x + r; xx++) px[yy * w + xx] = colours[i];
    }
    ctx.putImageData(image, 0, 0);
    ctx.lineWidth = 2;
    for (const [i, style] of marked) {
      ctx.strokeStyle = style;
      ctx.beginPath(); ctx.arc(sx[i], sy[i], style === "#111827" ? 7 : 4, 0, 2 * Math.PI); ctx.stroke();
    }
  }
  const redraw = () => { if (!frame) frame = requestAnimationFrame(draw); };
  function nearest(ev) {
    const rect = canvas.getBoundingClientRect();
    const x = (ev.clientX - rect.left) * canvas.width / rect.width, y = (ev.clientY - rect.top) * canvas.height / rect.height;
    let best = -1, bestD = 36;
    for (let gx = ((x / CELL) | 0) - 1; gx <= ((x / CELL) | 0) + 1; gx++) {
      for (let gy = ((y / CELL) | 0) - 1; gy <= ((y / CELL) | 0) + 1; gy++) {
        for (const i of grid.get(gx * 4096 + gy) || []) {
          const d = (sx[i] - x) ** 2 + (sy[i] - y) ** 2;
          if (d < bestD) { bestD = d; best = i; }
        }
      }
    }
    return { point: best, x: ev.clientX - rect.left, y: ev.clientY - rect.top };
  }
  let drag = null;
  canvas.addEventListener("mousedown", (ev) => { drag = { x: ev.clientX, y: ev.clientY, moved: false }; });
  window.addEventListener("mouseup", () => { setTimeout(() => { drag = null; }, 0); });
  canvas.addEventListener("mousemove", (ev) => {
    if (drag && (ev.buttons & 1)) {
      view.dx += ev.clientX - drag.x; view.dy += ev.clientY - drag.y;
      drag.moved = drag.moved || Math.abs(ev.clientX - drag.x) + Math.abs(ev.clientY - drag.y) > 2;
      drag.x = ev.clientX; drag.y = ev.clientY;
      redraw();
      return;
    }
    const hit = nearest(ev);
    onHover(hit.point >= 0 ? map.items.data[hit.point] : null, hit);
  });
  canvas.addEventListener("mouseleave", () => onHover(null, null));
  canvas.addEventListener("click", (ev) => {
    if (drag && drag.moved) return;
    const hit = nearest(ev);
    if (hit.point >= 0) onPick(map.items.data[hit.point]);
  });
  canvas.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const rect = canvas.getBoundingClientRect();
    const x = (ev.clientX - rect.left) * canvas.width / rect.width, y = (ev.clientY - rect.top) * canvas.height / rect.height;
    const f = ev.deltaY < 0 ? 1.25 : 0.8;
    view.dx = x - (x - view.dx) * f; view.dy = y - (y - view.dy) * f; view.scale *= f;
    redraw();
  }, { passive: false });
  const pointOf = new Map();
  for (let i = 0; i < n; i++) pointOf.set(map.items.data[i], i);
  draw();
  return {
    canvas,
    mark(items) { marked = items.filter(([item]) => pointOf.has(item)).map(([item, s]) => [pointOf.get(item), s]); redraw(); },
    get drawnPoints() { return n; },
  };
}

function tile(item, src, label, classes, { score, query, onPick } = {}) {
  const name = label === null || label === undefined ? "–" : (classes && classes[label]) || String(label);
  return h("figure.tile", { "data-item": item, class: query !== undefined && label !== query ? "other" : null,
    onclick: onPick ? () => onPick(item) : null },
    src ? h("img", { src, alt: `item ${item}` }) : h("div.noimg", { style: { background: colour(label ?? -1) } }, String(item)),
    h("figcaption", {}, `#${item} · ${name}`, score !== undefined ? h("span.muted", {}, ` · ${score.toFixed(2)}`) : null));
}

function scoresLine(job) {
  const s = (job.result && job.result.scores) || {};
  return ["recall_at_1", "recall_at_5", "recall_at_10", "map_at_r"].filter((k) => typeof s[k] === "number")
    .map((k) => `${k.replace("recall_at_", "R@").replace("map_at_r", "MAP@R")} ${fmtPct(s[k])}`).join(" · ") || "no labels: no retrieval scores";
}

async function panel(job, shared) {
  const [points, items, labels] = await Promise.all(["map.npy", "map_items.npy", "map_labels.npy"].map((n) => npy(job.id, n)));
  const thumbs = thumbnails(job);
  const classes = job.result.classes || null;
  const tip = h("div.map-tip", { hidden: true });
  let hoverTimer = null;
  const plot = scatter({ points, items, labels }, {
    onHover(item, at) {
      clearTimeout(hoverTimer);
      if (item === null) { tip.hidden = true; return; }
      hoverTimer = setTimeout(async () => {
        const src = (await thumbs([item])).get(item);
        const i = Array.prototype.indexOf.call(items.data, item);
        clear(tip, tile(item, src, labels.data[i] >= 0 ? labels.data[i] : null, classes));
        Object.assign(tip.style, { left: `${at.x + 14}px`, top: `${at.y + 14}px` });
        tip.hidden = false;
      }, 60);
    },
    onPick: (item) => shared.pick(item),
  });
  const list = h("div.neighbours", { "data-neighbours": job.id });
  const legend = h("div.legend", {}, (classes || []).slice(0, 40).map((c, i) => h("span", {}, h("i", { style: { background: colour(i) } }), c)));
  const box = card(null, h("div.panel-head", {}, h("a.mono", { href: `#/job/${job.id}` }, shortId(job.id)),
    h("span.small.muted", {}, ` ${job.result.map.method.toUpperCase()} of ${fmtNumber(points.shape[0])} points · ${scoresLine(job)}`)),
  h("div.map-wrap", {}, plot.canvas, tip), legend, list);
  async function show(query, found, title) {
    const srcs = await thumbs([...(query !== null ? [query] : []), ...found.items.map((r) => r.item)]);
    const own = found.label ?? null;
    clear(list, h("h4", {}, title),
      h("div.tiles", {}, found.items.map((r) => tile(r.item, srcs.get(r.item), r.label, classes,
        { score: r.score, query: own === null ? undefined : own, onPick: shared.pick }))));
    plot.mark([...found.items.map((r) => [r.item, "#f59e0b"]), ...(query !== null ? [[query, "#111827"]] : [])]);
  }
  return {
    box, job, thumbs, classes, plot,
    async neighbours(item) {
      const found = await get(`/v1/jobs/${job.id}/neighbours?item=${item}&k=${K}`);
      const others = found.items.filter((r) => found.label !== null && r.label !== found.label).length;
      await show(item, found, `Neighbours of #${item}` + (found.label !== null ? ` (${(classes && classes[found.label]) || found.label}): ${K - others} of ${K} share its label` : ""));
    },
    async search(file) {
      clear(list, h("p.muted", {}, "Embedding the image…"));
      const found = await upload(`/v1/jobs/${job.id}/search?k=${K}`, file, {}, () => {});
      await show(null, found, `Nearest to ${file.name}`);
    },
  };
}

export async function explorePage(main, jobId) {
  const job = await get(`/v1/jobs/${jobId}`);
  if (job.type !== "embed" || job.status !== "succeeded" || !job.result || !job.result.map) {
    main.append(h("h1", {}, "Explore"), h("div.alert.error", {}, `job ${jobId} is not a succeeded embed job with a map; `
      + "run an embed job (its map is on by default) and open it here"));
    return;
  }
  const withId = parseHashQuery().get("with");
  const alerts = h("div");
  const panels = h("div.explore-panels");
  const shared = {
    current: [],
    async pick(item) {
      try { await Promise.all(shared.current.map((p) => p.neighbours(item))); } catch (err) { clear(alerts, errorBox(err)); }
    },
  };
  const candidates = (await get("/v1/jobs?type=embed&status=succeeded&limit=200")).items
    .filter((j) => j.id !== job.id && sameData(j, job) && j.result && j.result.map);
  const picker = h("select", { "data-with": "", onchange: (e) => { location.hash = `#/explore/${job.id}${e.target.value ? `?with=${e.target.value}` : ""}`; } },
    h("option", { value: "" }, "— one map —"),
    candidates.map((j) => h("option", { value: j.id, selected: j.id === withId }, `${shortId(j.id)} (encoder ${shortId(j.spec.encoder_job)})`)));
  const fileInput = h("input", { type: "file", accept: "image/*", "data-search": "",
    onchange: async (e) => {
      const file = e.target.files[0];
      if (!file) return;
      clear(alerts);
      // One after the other: the API embeds one search at a time per key.
      try { for (const p of shared.current) await p.search(file); } catch (err) { clear(alerts, errorBox(err)); }
    } });
  main.append(h("div.page-head", {}, h("div", {}, h("div.crumbs", {}, h("a", { href: `#/job/${job.id}` }, job.id), " / explore"),
    h("h1", {}, "Explore ", h("span.mono.small", {}, job.spec.data.source)))),
  h("div.toolbar", {}, h("label", {}, "Side by side with ", picker), h("label", {}, "Search by image ", fileInput),
    h("span.small.muted", {}, "Drag to pan, wheel to zoom, click a point for its neighbours.")), alerts, panels);
  const jobs = [job];
  if (withId) jobs.push(withId === job.id ? job : await get(`/v1/jobs/${withId}`));
  shared.current = await Promise.all(jobs.map((j) => panel(j, shared)));
  panels.classList.toggle("two", shared.current.length > 1);
  clear(panels, shared.current.map((p) => p.box));
  const wrong = (job.result.retrieval && job.result.retrieval.mislabelled) || [];
  if (wrong.length) {
    const first = shared.current[0];
    const srcs = await first.thumbs(wrong.slice(0, 24).map((c) => c.item));
    main.append(card(`Possibly mislabelled: ${wrong.length} images whose neighbours mostly carry another label`,
      h("div.tiles", { "data-mislabelled": "" }, wrong.slice(0, 24).map((c) => tile(c.item, srcs.get(c.item), c.label, first.classes,
        { onPick: shared.pick })))));
  }
}
