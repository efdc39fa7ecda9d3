// The search page: plain JavaScript against the service's own HTTP API (no build step).
"use strict";

const $ = (id) => document.getElementById(id);
const LEVELS = [
  ["event", ["global"]],
  ["action", ["local_action", "individual_action", "concept_verb"]],
  ["entity", ["local_entity", "individual_entity", "concept_noun"]],
];

// ---- API calls; the key is asked for once, on the first 401, and kept for the session ----
let apiKey = sessionStorage.getItem("hanet-api-key");

async function api(path, options = {}, retried = false) {
  const headers = new Headers(options.headers || {});
  if (apiKey) headers.set("X-API-Key", apiKey);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401 && !retried && (await askForKey())) {
    await openMediaSession();
    return api(path, options, true);
  }
  return response;
}

// <video> and <img> cannot send the key: when the library is private, the server trades it for
// an HttpOnly cookie that lets the browser load files and thumbnails (the cookie never holds it).
async function openMediaSession() {
  if (apiKey) await fetch("/session", { method: "POST", headers: { "X-API-Key": apiKey } });
}
openMediaSession();

function askForKey() {
  const dialog = $("key-dialog");
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const ok = dialog.returnValue === "ok" && $("api-key").value;
      if (ok) {
        apiKey = $("api-key").value;
        sessionStorage.setItem("hanet-api-key", apiKey);
      }
      resolve(Boolean(ok));
    }, { once: true });
    dialog.showModal();
  });
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg).join("; ");
  } catch (_) { /* not JSON */ }
  return `HTTP ${response.status}`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

const seconds = (s) => `${s.toFixed(2)} s`;
const percent = (share, digits = 0) =>
  `${(Math.max(0, Math.min(1, share)) * 100).toFixed(digits)}%`;

// ---- search: hits as videos (each with its best moments) or as moments across the library ----
const groupBy = () => $("group-by").value; // "video" or "moment", the API's group_by

$("group-by").addEventListener("change", () => {
  if ($("query").value.trim()) $("search-form").requestSubmit(); // the same query, regrouped
});

// Filters from the form: only those filled in; a bad one is the API's 422, shown as it says.
const list = (id) => $(id).value.split(",").map((t) => t.trim()).filter(Boolean);
function filters() {
  const out = {};
  if (list("tags-all").length) out.tags_all = list("tags-all");
  if (list("tags-any").length) out.tags_any = list("tags-any");
  const pairs = list("meta").map((p) => p.split("="));
  if (pairs.length) out.metadata = Object.fromEntries(pairs.map(([k, ...v]) => [k.trim(), v.join("=").trim()]));
  if ($("duration-min").value !== "") out.duration_min_s = Number($("duration-min").value);
  if ($("duration-max").value !== "") out.duration_max_s = Number($("duration-max").value);
  if ($("after").value) out.ingested_after = `${$("after").value}T00:00:00Z`;
  if ($("before").value) out.ingested_before = `${$("before").value}T00:00:00Z`;
  return Object.keys(out).length ? { filters: out } : {};
}

const perPage = () => Math.max(1, Math.min(100, Math.round(Number($("per-page").value) || 12)));

// The search on screen: its request (for the next page) and what it is about (for the status).
let shown = { request: null, about: "", cursor: null, count: 0 };

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = $("query").value.trim();
  if (!query) return;
  search({ query, top_k: perPage(), group_by: groupBy(), ...filters() }, `"${query}"`);
});

function moreLike(hit, title) {
  search({ video_id: hit.video_id, top_k: perPage(), group_by: groupBy(), ...filters() },
         `more like ${title}`);
}

// Search by image: the picked file as multipart (one page: no filters, no cursor).
$("image-query").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file);
  form.append("top_k", String(perPage()));
  form.append("group_by", groupBy());
  search(form, `the image ${file.name}`, false, "/search/image");
});

$("more").addEventListener("click", () => {
  if (shown.cursor) search({ ...shown.request, cursor: shown.cursor }, shown.about, true);
});

async function search(request, about, append = false, path = "/search") {
  const status = $("search-status");
  const results = $("results");
  const image = request instanceof FormData;
  const grouping = image ? request.get("group_by") : request.group_by;
  const noun = grouping === "moment" ? "moments" : "videos";
  if (!append) results.replaceChildren();
  $("more").hidden = true;
  status.className = "";
  status.textContent = "Searching…";
  results.setAttribute("aria-busy", "true");
  try {
    const response = await api(path, image ? { method: "POST", body: request } : {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(request),
    });
    if (!response.ok) throw new Error(await errorText(response));
    const body = await response.json();
    const { cursor: _, ...first } = image ? {} : request;
    const count = (append ? shown.count : 0) + body.hits.length;
    shown = { request: first, about, cursor: body.next_cursor, count };
    if (count === 0) {
      status.textContent = `No ${noun} match ${about}.`;
      return;
    }
    const offset = count - body.hits.length;
    results.append(...body.hits.map((hit, i) => hitCard(hit, offset + i)));
    status.textContent = `${count} ${noun} for ${about} (${body.took_ms} ms).`;
    $("more").hidden = !body.next_cursor;
  } catch (error) {
    status.className = "error";
    status.textContent = `Search failed: ${error.message}`;
  } finally {
    results.removeAttribute("aria-busy");
  }
}

function hitCard(hit, rank) {
  const title = hit.title || `video ${hit.video_id}`;
  const moment = hit.moment; // the best one: the thumbnail shows its first frame
  const img = el("img", {
    src: `/videos/${hit.video_id}/thumbnail?t=${moment.start_s.toFixed(1)}`,
    alt: `${title} at ${seconds(moment.start_s)}`, loading: "lazy",
  });
  const open = el("button", { type: "button", class: "open",
                              "aria-label": `Play ${title} from ${seconds(moment.start_s)}` }, img);
  open.addEventListener("click", () => play(hit.video_id, title, moment));
  const chips = el("ul", { class: "chips", "aria-label": "concepts the model sees" });
  const concepts = hit.concepts || { actions: [], entities: [] };
  for (const c of concepts.actions) chips.append(el("li", { class: "chip", text: c.name }));
  for (const c of concepts.entities) chips.append(el("li", { class: "chip entity", text: c.name }));
  const length = hit.duration_s ? ` of ${seconds(hit.duration_s)}` : "";
  const body = el("div", { class: "body" },
    el("div", { class: "title", text: `${rank + 1}. ${title}` }),
    el("div", { class: "meta", text: `score ${hit.score.toFixed(3)} · moment ` +
      `${moment.start_s.toFixed(2)}–${seconds(moment.end_s)}${length}` }),
    scoreBars(hit.scores), chips);
  const like = el("button", { type: "button", class: "secondary like",
                              "aria-label": `More like ${title}`, text: "More like this" });
  like.addEventListener("click", () => moreLike(hit, title));
  body.append(like);
  if (shown.request && shown.request.query) body.append(whyButton(hit, rank, title));
  return el("li", { class: "hit", "data-video-id": String(hit.video_id) },
    open, momentMarks(hit, title), body);
}

// "Why?": the same search again with explain, for this hit: each phrase of the query and the
// frames of the hit's best segment it attended to (HANet's cross-attention).
function whyButton(hit, rank, title) {
  const button = el("button", { type: "button", class: "secondary why", "aria-expanded": "false",
                                "aria-label": `Why ${title} matched`, text: "Why?" });
  const reasons = el("ul", { class: "why-list", hidden: "" });
  const request = { ...shown.request, top_k: Math.min(100, rank + 1), explain: true };
  button.addEventListener("click", async () => {
    if (!reasons.hidden) {
      reasons.hidden = true;
      button.setAttribute("aria-expanded", "false");
      return;
    }
    reasons.replaceChildren(el("li", { text: "Asking the model…" }));
    reasons.hidden = false;
    button.setAttribute("aria-expanded", "true");
    try {
      const response = await api("/search", { method: "POST",
        headers: { "content-type": "application/json" }, body: JSON.stringify(request) });
      if (!response.ok) throw new Error(await errorText(response));
      const found = (await response.json()).hits.find((h) => h.video_id === hit.video_id);
      if (!found || !found.explain) throw new Error("this hit is no longer in the index");
      reasons.replaceChildren(...found.explain.map(reasonItem));
    } catch (error) {
      reasons.replaceChildren(el("li", { class: "error", text: `No explanation: ${error.message}` }));
    }
  });
  return el("div", { class: "why-box" }, button, reasons);
}

function reasonItem(reason) {
  const frames = reason.frames
    .map((f) => `${seconds(f.t_s)} (${Math.round(100 * f.weight)}%)`).join(", ");
  const segment = reason.segment
    ? `; key segment ${seconds(reason.segment.start_s)}–${seconds(reason.segment.end_s)}` : "";
  return el("li", { text: `“${reason.phrase}” (${reason.kind}, ${reason.score.toFixed(2)}): ` +
    `frames at ${frames}${segment}` });
}

function scoreBars(scores) {
  const bars = el("div", { class: "bars" });
  for (const [name, keys] of LEVELS) {
    const value = keys.reduce((sum, k) => sum + (scores[k] ?? 0), 0) / keys.length;
    const fill = el("span");
    fill.style.width = percent(value); // through the CSSOM: the CSP refuses style="..." attributes
    bars.append(
      el("span", { text: name }),
      el("span", { class: "bar", role: "img", "aria-label": `${name} ${value.toFixed(2)}` }, fill),
      el("span", { text: value.toFixed(2) }),
    );
  }
  return bars;
}

// The hit's moments as marks on a bar standing for the whole video, best first in tab order;
// each mark is a button that plays from its moment.
function momentMarks(hit, title) {
  const moments = hit.moments && hit.moments.length ? hit.moments : [hit.moment];
  // the video's duration; a server without it gives at least the span the moments cover
  const duration = hit.duration_s || Math.max(...moments.map((m) => m.end_s)) || 1;
  const track = el("div", { class: "marks", role: "group",
                            "aria-label": `Moments in ${title}, best first` });
  moments.forEach((m, i) => {
    const span = `${seconds(m.start_s)} to ${seconds(m.end_s)}`;
    const score = m.score === undefined ? "" : `, score ${m.score.toFixed(3)}`;
    const mark = el("button", {
      type: "button", class: i === 0 ? "mark best" : "mark", title: span,
      "data-start-s": String(m.start_s),
      "aria-label": `Play ${title} from ${span} (moment ${i + 1} of ${moments.length}${score})`,
    });
    mark.style.left = percent(m.start_s / duration, 2);
    mark.style.width = percent((m.end_s - m.start_s) / duration, 2);
    mark.addEventListener("click", () => play(hit.video_id, title, m));
    track.append(mark);
  });
  return track;
}

// Opens the player at `moment` ({start_s, end_s}) and plays from its start; a video already
// loaded is only moved to it.
function play(videoId, title, moment) {
  const video = $("video");
  const { start_s: start, end_s: end } = moment;
  $("player").hidden = false;
  $("player-title").textContent = title;
  $("moment-text").textContent = `The moment: ${seconds(start)} to ${seconds(end)}.`;
  const showMoment = () => {
    const duration = video.duration || end || 1;
    const bar = $("moment-bar");
    bar.style.left = `${(100 * start) / duration}%`;
    bar.style.width = `${Math.max(1, (100 * (end - start)) / duration)}%`;
  };
  const playFromStart = () => {
    video.currentTime = start;
    showMoment();
    video.play().catch(() => { /* autoplay refused: the user presses play */ });
  };
  if (video.dataset.videoId === String(videoId) && video.readyState >= 1) {
    video.onloadedmetadata = null;
    playFromStart();
  } else {
    video.dataset.videoId = String(videoId);
    video.onloadedmetadata = playFromStart;
    video.src = `/videos/${videoId}/file`;
  }
  $("player").scrollIntoView({ block: "nearest" });
  video.focus();
}

$("player-close").addEventListener("click", () => {
  const video = $("video");
  video.pause();
  $("player").hidden = true;
  $("query").focus();
});

// ---- upload: several files, by picker or drag and drop; each shows its status ----
$("files").addEventListener("change", (event) => {
  upload([...event.target.files]);
  event.target.value = "";
});
const zone = $("drop-zone");
zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (event) => {
  event.preventDefault();
  zone.classList.remove("over");
  upload([...event.dataTransfer.files]);
});

function upload(files) {
  for (const file of files) {
    const line = el("li", { "data-file": file.name, text: `${file.name}: uploading…` });
    $("uploads").append(line);
    sendFile(file, line);
  }
}

async function sendFile(file, line) {
  const form = new FormData();
  form.append("file", file);
  form.append("title", file.name);
  try {
    const response = await api("/videos", { method: "POST", body: form });
    if (!response.ok) throw new Error(await errorText(response));
    const video = await response.json();
    line.dataset.videoId = String(video.id);
    await follow(video, line, file.name);
  } catch (error) {
    setStatus(line, `${file.name}: upload failed: ${error.message}`, "failed");
  }
}

async function follow(video, line, name) {
  for (;;) {
    if (video.status === "indexed") {
      setStatus(line, `${name}: indexed (video ${video.id})`, "indexed");
      refreshLibrary();
      return;
    }
    if (video.status === "failed") {
      setStatus(line, `${name}: failed: ${video.failure_reason}`, "failed");
      refreshLibrary();
      return;
    }
    setStatus(line, `${name}: ${stateText(video)} (video ${video.id})`, video.status);
    showLibraryState(video);
    await new Promise((r) => setTimeout(r, 1000));
    const response = await api(`/videos/${video.id}`);
    if (!response.ok) throw new Error(await errorText(response));
    video = await response.json();
  }
}

// A video's state in words: "processing 42%" while the indexer reports how far it has read.
function stateText(video) {
  if (video.status === "failed") return `failed: ${video.failure_reason}`;
  if (video.status === "processing" && typeof video.progress === "number") {
    return `processing ${percent(video.progress)}`;
  }
  if (video.status === "indexed" && video.segments > 1) return `indexed, ${video.segments} segments`;
  return video.status;
}

function setStatus(line, text, status) {
  line.textContent = text;
  line.dataset.status = status;
  line.className = `status-${status}`;
}

// ---- the library: every video with its status, and delete ----
let olderCursor = null; // the video list's next page

async function refreshLibrary(append = false) {
  const status = $("library-status");
  try {
    const page = append && olderCursor ? `&cursor=${encodeURIComponent(olderCursor)}` : "";
    const response = await api(`/videos?limit=100${page}`);
    if (!response.ok) throw new Error(await errorText(response));
    const body = await response.json();
    if (append) $("library").append(...body.items.map(libraryRow));
    else $("library").replaceChildren(...body.items.map(libraryRow));
    olderCursor = body.next_cursor;
    $("older").hidden = !olderCursor;
    const rows = $("library").children.length;
    status.textContent = body.total > rows
      ? `Showing the newest ${rows} of ${body.total} videos.`
      : `${body.total} videos.`;
  } catch (error) {
    status.textContent = `Could not list the videos: ${error.message}`;
  }
}

function libraryRow(video) {
  const remove = el("button", { type: "button", class: "secondary",
                                "aria-label": `Delete video ${video.id}`, text: "Delete" });
  remove.addEventListener("click", async () => {
    const response = await api(`/videos/${video.id}`, { method: "DELETE" });
    if (response.ok) refreshLibrary();
    else $("library-status").textContent = `Delete failed: ${await errorText(response)}`;
  });
  return el("tr", { "data-video-id": String(video.id) },
    el("td", { text: String(video.id) }),
    el("td", { text: video.title || "" }),
    el("td", { class: `status-${video.status}`, text: stateText(video) }),
    el("td", {}, remove));
}

// A followed upload's state, also on its library row when the list shows it.
function showLibraryState(video) {
  const cell = document.querySelector(`#library tr[data-video-id="${video.id}"] td:nth-child(3)`);
  if (!cell) return;
  cell.className = `status-${video.status}`;
  cell.textContent = stateText(video);
}

$("refresh").addEventListener("click", () => refreshLibrary());
$("older").addEventListener("click", () => refreshLibrary(true));
refreshLibrary();
