// Names, tags and notes: tag chips for lists, and the card that edits them on a job's page
// (PATCH /v1/jobs/ID, only the fields changed). The API checks every value; this page shows its answer.
import { request } from "./api.js";
import { card, clear, errorBox, h } from "./ui.js";

export const TAG = /^[A-Za-z0-9_.:-]{1,64}$/;

// Tag chips; `onPick(tag)` (optional) runs when one is clicked.
export function tagChips(tags, onPick) {
  if (!tags || !tags.length) return null;
  return h("span.tags", {}, tags.map((t) => onPick
    ? h("button.tag", { type: "button", "data-tag": t, title: `only jobs tagged ${t}`, onclick: (e) => { e.preventDefault(); onPick(t); } }, t)
    : h("span.tag", { "data-tag": t }, t)));
}

// The editor. `onSaved(job)` gets the job as the API answered.
export function labelsCard(job, onSaved) {
  const message = h("div");
  const save = async (changes) => {
    try {
      const updated = await request("PATCH", `/v1/jobs/${job.id}`, { json: changes });
      clear(message);
      onSaved(updated);
    } catch (err) {
      clear(message, errorBox(err));
    }
  };
  const name = h("input", { "data-label": "name", value: job.name || "", placeholder: "a name for this run", maxLength: 100 });
  const notes = h("textarea", { "data-label": "notes", rows: 4, placeholder: "what this run tried, what it showed" });
  notes.value = job.notes || "";
  const newTag = h("input", { "data-label": "add-tag", placeholder: "add a tag, Enter", maxLength: 64 });
  const addTag = () => {
    const t = newTag.value.trim();
    if (!t) return;
    if (!TAG.test(t)) { clear(message, errorBox(`"${t}" is not a tag: 1-64 of A-Z a-z 0-9 _ . : -`)); return; }
    save({ add_tags: [t] });
  };
  newTag.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); addTag(); } });
  const chips = (job.tags || []).map((t) => h("span.tag", { "data-tag": t }, t,
    h("button.tag-remove", { type: "button", title: `remove ${t}`, "aria-label": `remove tag ${t}`,
      onclick: () => save({ remove_tags: [t] }) }, "×")));
  return card("Name, tags and notes", h("div.labels", { "data-labels": "" },
    h("label.field", {}, h("span.field-label", {}, "name"), name),
    h("div.field", {}, h("span.field-label", {}, "tags"), h("div.tags", {}, chips, newTag)),
    h("label.field", {}, h("span.field-label", {}, "notes"), notes),
    h("div.actions", {}, h("button.primary", { "data-action": "save-labels", onclick: () => save({
      name: name.value.trim() || null, notes: notes.value.trim() ? notes.value : null }) }, "Save")),
    message));
}
