// The JSON API underneath every page: one fetch wrapper (the key as a Bearer header, 401 asks
// for a key), an SSE reader over fetch (EventSource cannot send headers), an upload with progress.

const KEY = "dcl.apiKey";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

export function apiKey() { return sessionStorage.getItem(KEY); }
export function forgetKey() { sessionStorage.removeItem(KEY); }

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

let keyPrompt = null;
// Ask for the key once, however many requests got a 401 at the same moment.
export function askForKey(message) {
  if (keyPrompt) return keyPrompt;
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  document.getElementById("key-error").textContent = message || "";
  input.value = "";
  keyPrompt = new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const key = input.value.trim();
      if (key) sessionStorage.setItem(KEY, key);
      keyPrompt = null;
      document.dispatchEvent(new CustomEvent("dcl:key"));
      resolve(key);
    }, { once: true });
  });
  dialog.showModal();
  input.focus();
  return keyPrompt;
}

async function body(response) {
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) return response.json();
  return { detail: (await response.text()) || response.statusText };
}

export async function request(method, path, { json, raw, headers } = {}) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const init = { method, headers: { ...authHeaders(), ...(headers || {}) } };
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    }
    const response = await fetch(path, init);
    if (response.status === 401) {
      const detail = (await body(response)).detail;
      const hadKey = apiKey() !== null;
      forgetKey();
      await askForKey(hadKey ? detail : "");
      continue;
    }
    if (!response.ok) throw new ApiError(response.status, await body(response));
    if (raw) return response;
    if (response.status === 204) return null;
    return body(response);
  }
  throw new ApiError(401, { detail: "no valid API key" });
}

export const get = (path) => request("GET", path);
export const post = (path, json) => request("POST", path, { json });
export const del = (path) => request("DELETE", path);

// A job's Server-Sent Events, resumed after a drop from the last step seen (Last-Event-ID), so the
// series has no gaps and no duplicates. `onEvent(name, data, id)`; returns a stop function.
export function followEvents(path, since, onEvent, { onState } = {}) {
  let stopped = false;
  let lastId = since;
  let controller = null;
  const run = async () => {
    let delay = 500;
    while (!stopped) {
      controller = new AbortController();
      let ended = false;
      try {
        const headers = { ...authHeaders(), Accept: "text/event-stream" };
        if (lastId > 0) headers["Last-Event-ID"] = String(lastId);
        const response = await fetch(path, { headers, signal: controller.signal });
        if (response.status === 401) { forgetKey(); await askForKey(); continue; }
        if (!response.ok) throw new ApiError(response.status, await body(response));
        onState && onState("live");
        delay = 500;
        ended = await readStream(response.body, (name, data, id) => {
          if (id !== null && name === "metrics") lastId = Number(id);
          onEvent(name, data, id);
        });
      } catch (err) {
        if (stopped) return;
        onState && onState("reconnecting", err);
      }
      if (ended || stopped) { onState && onState("ended"); return; }
      onState && onState("reconnecting");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 5000);
    }
  };
  run();
  return () => { stopped = true; controller && controller.abort(); };
}

async function readStream(stream, emit) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { name: "message", data: [], id: null };
  while (true) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, cut).replace(/\r$/, "");
      buffer = buffer.slice(cut + 1);
      if (line === "") {
        if (event.data.length) {
          let data = event.data.join("\n");
          try { data = JSON.parse(data); } catch (_) { /* keep text */ }
          emit(event.name, data, event.id);
          if (event.name === "end") { reader.cancel(); return true; }
        }
        event = { name: "message", data: [], id: null };
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event.name = val;
      else if (field === "data") event.data.push(val);
      else if (field === "id") event.id = val;
    }
  }
}

// A multipart upload with progress (fetch reports none for request bodies).
export function upload(path, file, fields, onProgress) {
  return new Promise((resolve, reject) => {
    const send = () => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", path);
      const key = apiKey();
      if (key) xhr.setRequestHeader("Authorization", `Bearer ${key}`);
      xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
      xhr.onload = async () => {
        let data;
        try { data = JSON.parse(xhr.responseText); } catch (_) { data = { detail: xhr.responseText || xhr.statusText }; }
        if (xhr.status === 401) { forgetKey(); await askForKey(data.detail); send(); return; }
        if (xhr.status >= 200 && xhr.status < 300) resolve(data); else reject(new ApiError(xhr.status, data));
      };
      xhr.onerror = () => reject(new ApiError(0, { detail: "the upload was interrupted (network error)" }));
      const form = new FormData();
      for (const [k, v] of Object.entries(fields || {})) if (v) form.append(k, v);
      form.append("file", file);
      xhr.send(form);
    };
    send();
  });
}

// Download with the key: a plain link when auth is off, else fetched and handed over as a blob.
export async function download(url, name) {
  if (!apiKey()) { window.location.assign(url); return; }
  const response = await request("GET", url, { raw: true });
  const blobUrl = URL.createObjectURL(await response.blob());
  const a = Object.assign(document.createElement("a"), { href: blobUrl, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(blobUrl), 10000);
}

let openapi = null;
export async function schema() {
  if (!openapi) openapi = await fetch("/openapi.json").then((r) => r.json());
  return openapi;
}
