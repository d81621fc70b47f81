// The scene-graph editor: vanilla JS, no build step, talks to the same server's /api.
"use strict";

const $ = (id) => document.getElementById(id);

// The graph being edited. Each object keeps a box / attributes a loaded graph came with.
const state = {
  objects: [], // {label, box?, attributes?}
  relationships: [], // [subject index, predicate, object index]
  vocab: null,
  hasLayout: false, // a layout model: its images are drawn from boxes, given or predicted
  images: [], // the last results: {graph, seed, png, boxes}
  graphs: [], // the graphs they were made from (the editor's graph may have changed since)
  overlays: [], // {image, layer}: the layout drawn over each result, restacked on each edit
  depth: false, // the model knows depth order ('in front of' / 'behind'): /api/vocabulary says
};

// The depth predicates, as graph.py names them; used only when the vocabulary lists them.
const FRONT = "in front of";
const BEHIND = "behind";

// ------------------------------------------------------------------------------ server

async function api(path, body, accept) {
  const init = body === undefined ? {} : {
    method: "POST",
    headers: {"Content-Type": "application/json", Accept: accept || "application/json"},
    body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  return response;
}

async function errorText(response) {
  try {
    const data = await response.json();
    if (typeof data.detail === "string") return data.detail;
    if (Array.isArray(data.detail)) return data.detail.map((p) => p.msg).join("; ");
  } catch (_) { /* not JSON */ }
  return `${response.status} ${response.statusText}`;
}

// ------------------------------------------------------------------------------ graph

function graphJSON() {
  const graph = {
    objects: state.objects.map((o) => o.label),
    relationships: state.relationships.map((r) => [r[0], r[1], r[2]]),
  };
  if (state.objects.length && state.objects.every((o) => Array.isArray(o.box))) {
    graph.boxes = state.objects.map((o) => o.box);
  }
  if (state.objects.some((o) => Array.isArray(o.attributes) && o.attributes.length)) {
    graph.attributes = state.objects.map((o) => o.attributes || []);
  }
  return graph;
}

function setGraph(graph) {
  const boxes = Array.isArray(graph.boxes) ? graph.boxes : [];
  const attrs = Array.isArray(graph.attributes) ? graph.attributes : [];
  state.objects = (graph.objects || []).map((label, i) => ({
    label: String(label),
    box: boxes[i],
    attributes: attrs[i],
  }));
  state.relationships = (graph.relationships || []).map((r) => (Array.isArray(r) ? r : [r]));
  changed();
}

function addObject(label) {
  state.objects.push({label});
  changed();
}

function removeObject(i) {
  state.objects.splice(i, 1);
  // drop the relationships that used it, renumber the ones after it
  state.relationships = state.relationships
    .filter((r) => r[0] !== i && r[2] !== i)
    .map((r) => [r[0] > i ? r[0] - 1 : r[0], r[1], r[2] > i ? r[2] - 1 : r[2]]);
  changed();
}

function addRelationship(s, p, o) {
  state.relationships.push([s, p, o]);
  changed();
}

function removeRelationship(k) {
  state.relationships.splice(k, 1);
  changed();
}

// ------------------------------------------------------------------------------ rendering

function option(value, text) {
  const el = document.createElement("option");
  el.value = value;
  el.textContent = text === undefined ? value : text;
  return el;
}

function button(text, onClick, cls) {
  const el = document.createElement("button");
  el.type = "button";
  el.textContent = text;
  if (cls) el.className = cls;
  el.addEventListener("click", onClick);
  return el;
}

function objectName(i) {
  const o = state.objects[i];
  return o ? `${i} ${o.label}` : `${i} (no such object)`;
}

function renderObjects() {
  const list = $("objects");
  list.replaceChildren();
  state.objects.forEach((o, i) => {
    const li = document.createElement("li");
    li.id = `object-${i}`;
    const idx = document.createElement("span");
    idx.className = "idx";
    idx.textContent = i;
    const pick = document.createElement("select");
    pick.className = "label";
    pick.setAttribute("aria-label", `Object ${i}`);
    const names = state.vocab ? state.vocab.objects : [];
    if (!names.includes(o.label)) pick.append(option(o.label, `${o.label} (not in the model)`));
    names.forEach((n) => pick.append(option(n)));
    pick.value = o.label;
    pick.addEventListener("change", () => { o.label = pick.value; changed(); });
    const error = document.createElement("div");
    error.className = "error";
    li.append(idx, pick, button("✕", () => removeObject(i), "remove"), error);
    list.append(li);
  });
  $("objects-hint").hidden = state.objects.length > 0;
  const n = state.objects.length;
  for (const [id, fallback] of [["rel-subject", 0], ["rel-object", Math.min(1, n - 1)]]) {
    const sel = $(id);
    const before = sel.value;
    sel.replaceChildren(...state.objects.map((_, i) => option(i, objectName(i))));
    if (n) sel.value = before !== "" && Number(before) < n ? before : String(fallback);
  }
  if (n > 1 && $("rel-subject").value === $("rel-object").value) {
    $("rel-object").value = String((Number($("rel-subject").value) + 1) % n);
  }
  $("add-relationship").disabled = state.objects.length < 2;
}

function renderRelationships() {
  const list = $("relationships");
  list.replaceChildren();
  state.relationships.forEach((r, k) => {
    const li = document.createElement("li");
    li.id = `relationship-${k}`;
    const idx = document.createElement("span");
    idx.className = "idx";
    idx.textContent = k;
    const text = document.createElement("span");
    text.className = "triple";
    const pred = document.createElement("span");
    pred.className = "pred";
    pred.textContent = ` ${r[1]} `;
    text.append(objectName(r[0]), pred, objectName(r[2]));
    const error = document.createElement("div");
    error.className = "error";
    li.append(idx, text, button("✕", () => removeRelationship(k), "remove"), error);
    list.append(li);
  });
}

// ------------------------------------------------------------------------------ errors

function clearErrors(scope) {
  // the paste box keeps its messages until the next paste
  for (const el of document.querySelectorAll(`${scope} .error:not(#paste-error)`)) {
    el.replaceChildren();
  }
  for (const el of document.querySelectorAll(`${scope} .has-error`)) {
    el.classList.remove("has-error");
  }
}

function say(el, text) {
  const p = document.createElement("p");
  p.textContent = text;
  el.append(p);
}

// Put each problem next to what it concerns: loc is its path in the request body.
function showProblems(problems, fallback) {
  for (const problem of problems) {
    let loc = problem.loc.slice(problem.loc[0] === "body" ? 1 : 0);
    if (loc[0] === "graphs" && typeof loc[1] === "number") loc = loc.slice(2);
    let target = null;
    if ((loc[0] === "objects" || loc[0] === "boxes" || loc[0] === "attributes")
        && typeof loc[1] === "number") {
      target = document.querySelector(`#object-${loc[1]} .error`);
    } else if (loc[0] === "relationships" && typeof loc[1] === "number") {
      target = document.querySelector(`#relationship-${loc[1]} .error`);
    } else if (loc.length >= 1) {
      target = document.querySelector(`[data-error-for="${loc[0]}"]`);
    }
    const where = target || !loc.length ? "" : `${loc.join(".")}: `;
    target = target || fallback;
    say(target, where + problem.msg);
    const row = target.closest("li");
    if (row) row.classList.add("has-error");
  }
}

// ------------------------------------------------------------------------------ live checks

let drawTimer = null;
let drawSerial = 0;
let drawnURL = null;

function scheduleRefresh() {
  clearTimeout(drawTimer);
  drawTimer = setTimeout(refresh, 150);
}

async function refresh() {
  const serial = ++drawSerial;
  const graph = graphJSON();
  clearErrors("#build");
  $("graph-error").replaceChildren();
  if (!graph.objects.length) {
    $("graph-drawing").hidden = true;
    $("drawing-empty").hidden = false;
    return;
  }
  const [checked, drawn] = await Promise.all([
    api("/api/validate", graph),
    api("/api/draw", {graph, size: 320}, "image/png"),
  ]);
  if (serial !== drawSerial) return; // a newer edit is on its way
  if (checked.ok) {
    const result = await checked.json();
    showProblems(result.errors, $("graph-error"));
  }
  if (drawn.ok) {
    const blob = await drawn.blob();
    if (serial !== drawSerial) return;
    if (drawnURL) URL.revokeObjectURL(drawnURL);
    drawnURL = URL.createObjectURL(blob);
    $("graph-drawing").src = drawnURL;
    $("graph-drawing").hidden = false;
    $("drawing-empty").hidden = true;
  } else {  // no stale picture: the placeholder says why
    $("graph-drawing").hidden = true;
    $("drawing-empty").hidden = false;
    say($("graph-error"), `cannot draw the graph: ${await errorText(drawn)}`);
  }
}

function changed() {
  renderObjects();
  renderRelationships();
  restack();
  scheduleRefresh();
}

// ------------------------------------------------------------------------------ depth order

// [front, back, k] for each depth triple k ("a in front of b", "b behind a"), as graph.py's.
function depthEdges(relationships) {
  const out = [];
  relationships.forEach((r, k) => {
    if (r[1] === FRONT) out.push([r[0], r[2], k]);
    else if (r[1] === BEHIND) out.push([r[2], r[0], k]);
  });
  return out;
}

// Per object, as graph.depth_ranks: 0 when it is in front of nothing, else 1 + the largest
// rank of what it is in front of; drawn by increasing rank, each box lies over what it is in
// front of. A cycle (the server reports it at its triple) stops after n passes.
function depthRanks(n, relationships) {
  const ranks = new Array(n).fill(0);
  const edges = depthEdges(relationships).filter(([f, b]) => f !== b && f < n && b < n);
  for (let pass = 0; pass < n; pass++) {
    let moved = false;
    for (const [front, back] of edges) {
      if (ranks[front] < ranks[back] + 1) {
        ranks[front] = ranks[back] + 1;
        moved = true;
      }
    }
    if (!moved) break;
  }
  return ranks;
}

// Whether two boxes share an area (touching edges do not count).
function overlapping(a, b) {
  return Math.min(a[2], b[2]) > Math.max(a[0], b[0]) && Math.min(a[3], b[3]) > Math.max(a[1], b[1]);
}

// The relationships with object i in front of every object whose box overlaps its box:
// "j in front of i" / "i behind j" become "i in front of j" where they stood, a pair with no
// depth triple gets one, "i in front of j" stays. Then every remaining triple that puts some
// x in front of i, where x is now (through others) behind i, is dropped: it would close a
// depth cycle. `names`: the depth predicates the model has (FRONT is written if it is one).
function broughtToFront(relationships, boxes, i, names) {
  const over = new Set();
  boxes.forEach((box, j) => { if (j !== i && overlapping(boxes[i], box)) over.add(j); });
  const ahead = (j) => (names.includes(FRONT) ? [i, FRONT, j] : [j, BEHIND, i]);
  const edge = (r) => (r[1] === FRONT ? [r[0], r[2]] : r[1] === BEHIND ? [r[2], r[0]] : null);
  const done = new Set();
  let out = [];
  let replaced = 0;
  for (const r of relationships) {
    const e = edge(r);
    if (e && e[1] === i && over.has(e[0])) { // j in front of i: turned round
      replaced += 1;
      if (!done.has(e[0])) out.push(ahead(e[0]));
      done.add(e[0]);
      continue;
    }
    if (e && e[0] === i && over.has(e[1])) done.add(e[1]);
    out.push(r.slice());
  }
  const added = [...over].filter((j) => !done.has(j)).sort((a, b) => a - b);
  out.push(...added.map(ahead));
  // what i is now in front of, directly or not (never through i itself)
  const behindI = new Set();
  const stack = [i];
  while (stack.length) {
    const at = stack.pop();
    for (const r of out) {
      const e = edge(r);
      if (e && e[0] === at && e[1] !== i && !behindI.has(e[1])) {
        behindI.add(e[1]);
        stack.push(e[1]);
      }
    }
  }
  const before = out.length;
  out = out.filter((r) => { const e = edge(r); return !(e && e[1] === i && behindI.has(e[0])); });
  return {relationships: out, overlapping: over.size, replaced, added: added.length,
    dropped: before - out.length};
}

// The graph of an image's layout: the editor's, while it has that image's objects (so edits
// show at once), else the graph the image was made from.
function sameObjects(image) {
  const graph = state.graphs[image.graph];
  return graph.objects.length === state.objects.length
    && graph.objects.every((label, i) => state.objects[i].label === label);
}

// Each overlay's boxes stacked back to front by its graph's depth order; a box in front of a
// box it overlaps is marked "front", one behind a box it overlaps is dashed.
function restack() {
  if (!state.depth) return; // a model without depth order: the names mean nothing to it
  for (const {image, layer} of state.overlays) {
    const rels = sameObjects(image) ? state.relationships : state.graphs[image.graph].relationships;
    const n = image.boxes.length;
    const ranks = depthRanks(n, rels || []);
    const front = new Set();
    const behind = new Set();
    for (const [f, b] of depthEdges(rels || [])) {
      if (f < n && b < n && f !== b && overlapping(image.boxes[f], image.boxes[b])) {
        front.add(f);
        behind.add(b);
      }
    }
    for (const el of layer.querySelectorAll(".box")) {
      const i = Number(el.dataset.index);
      el.dataset.depth = ranks[i];
      el.style.zIndex = String(1 + ranks[i]);
      el.classList.toggle("front", front.has(i));
      el.classList.toggle("behind", behind.has(i));
    }
  }
}

function bringToFront(image, i) {
  if (!sameObjects(image)) {
    $("status").textContent = "the graph's objects have changed since this image: "
      + "generate again to edit its depth order";
    return;
  }
  const result = broughtToFront(state.relationships, image.boxes, i, state.vocab.depth_predicates);
  const name = objectName(i);
  if (!result.overlapping) {
    $("status").textContent = `${name} overlaps no other box: nothing to be in front of`;
    return;
  }
  state.relationships = result.relationships;
  // the image's graph too, so that "generate again" draws this order
  state.graphs[image.graph].relationships = result.relationships.map((r) => r.slice());
  image.boxes.forEach((box, k) => { state.objects[k].box = box.slice(); });
  const dropped = result.dropped ? `, ${result.dropped} dropped (a depth cycle)` : "";
  $("status").textContent = `${name} in front of ${result.overlapping} box(es): `
    + `${result.replaced} relation(s) turned round, ${result.added} added${dropped}`;
  changed();
}

// ------------------------------------------------------------------------------ generating

function randomSeed() {
  return crypto.getRandomValues(new Uint32Array(1))[0];
}

function number(id) {
  const text = $(id).value.trim();
  return text === "" ? null : Number(text);
}

async function generate() {
  const body = {
    graphs: [graphJSON()],
    steps: number("steps"),
    guidance: number("guidance"),
    num_images: number("num-images") || 1,
  };
  const seed = number("seed");
  if (seed !== null) body.seed = seed;
  if ($("sampler").value) body.sampler = $("sampler").value;
  if (state.hasLayout) body.layout = $("layout").value;
  for (const key of ["steps", "guidance"]) if (body[key] === null) delete body[key];

  clearErrors("#generate-panel");
  clearErrors("#build");
  $("generate").disabled = $("regenerate").disabled = true;
  $("status").textContent = "generating…";
  const started = performance.now();
  try {
    const response = await api("/api/generate", body);
    if (response.status === 422) {
      const data = await response.json();
      showProblems(data.detail, $("generate-error"));
      $("status").textContent = "the server found problems: see the marked parts";
      return;
    }
    if (!response.ok) {
      const retry = response.headers.get("Retry-After");
      say($("generate-error"),
        await errorText(response) + (retry ? ` (retry after ${retry} s)` : ""));
      $("status").textContent = "";
      return;
    }
    const data = await response.json();
    showResults(data, body);
    const secs = ((performance.now() - started) / 1000).toFixed(2);
    $("status").textContent = `${data.images.length} image(s) in ${secs} s`;
  } catch (err) {
    say($("generate-error"), `no answer from the server: ${err}`);
    $("status").textContent = "";
  } finally {
    $("generate").disabled = $("regenerate").disabled = false;
  }
}

function showResults(data, body) {
  state.images = data.images;
  state.graphs = body.graphs;
  state.overlays = [];
  const box = $("results");
  box.replaceChildren();
  for (const image of data.images) {
    const figure = document.createElement("figure");
    const frame = document.createElement("div");
    frame.className = "frame";
    const img = document.createElement("img");
    img.src = `data:image/png;base64,${image.png}`;
    img.alt = `generated image, seed ${image.seed}`;
    img.className = "generated";
    frame.append(img);
    const caption = document.createElement("figcaption");
    caption.append(`seed ${image.seed}`);
    const link = document.createElement("a");
    link.href = img.src;
    link.download = `sg2image_seed${image.seed}.png`;
    link.textContent = "PNG";
    const reuse = button("use seed", () => { $("seed").value = image.seed; });
    reuse.title = "Put this seed in the Seed box (with Images = 1 it gives this image again)";
    caption.append(link, reuse);
    if (Array.isArray(image.boxes)) {
      frame.append(layoutOverlay(image, body.graphs[image.graph]));
      const again = button("generate again", () => generateAgain(image), "again");
      again.title = "Generate this seed again from this layout, as you moved it (layout: given)";
      caption.append(again);
    }
    figure.append(frame, caption);
    box.append(figure);
  }
  restack();
  $("result-info").textContent =
    `${data.width}×${data.height}, ${data.steps} steps, guidance ${data.guidance}, ` +
    `${data.sampler}${data.layout ? `, ${data.layout} layout` : ""}; ` +
    `ran in a batch of ${data.batch_size}`;
  $("download-images").disabled = data.images.length === 0;
}

// ------------------------------------------------------------------------------ layout

const PALETTE = ["#e6194b", "#3cb44b", "#0082c8", "#f58230", "#911eb4", "#46f0f0", "#f032e6",
  "#d2f53c", "#008080", "#aa6e28"]; // as drawing.py's, for labels that name no colour
const MIN_SIDE = 0.02; // a box is never resized below this (x0 < x1 must hold)
const CORNERS = ["nw", "ne", "sw", "se"];

function boxColour(label, i) {
  const word = String(label).toLowerCase().split(/\s+/)[0];
  return word && CSS.supports("color", word) ? word : PALETTE[i % PALETTE.length];
}

const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
const tidy = (box) => box.map((v) => clamp(Math.round(v * 1e4) / 1e4, 0, 1));

// A box at least MIN_SIDE wide and high, so it can be seen, grabbed and sent back as given
// (a box that a layout generator left outside the canvas comes back clamped to a sliver).
function usable(box) {
  const out = box.slice();
  for (const k of [0, 1]) {
    if (out[k + 2] - out[k] >= MIN_SIDE) continue;
    const mid = clamp((out[k] + out[k + 2]) / 2, MIN_SIDE / 2, 1 - MIN_SIDE / 2);
    [out[k], out[k + 2]] = [mid - MIN_SIDE / 2, mid + MIN_SIDE / 2];
  }
  return tidy(out);
}

function placeBox(el, [x0, y0, x1, y1]) {
  el.style.left = `${x0 * 100}%`;
  el.style.top = `${y0 * 100}%`;
  el.style.width = `${(x1 - x0) * 100}%`;
  el.style.height = `${(y1 - y0) * 100}%`;
}

// The box dragged by (dx, dy) in image fractions: moved whole, or by one corner.
function draggedBox([x0, y0, x1, y1], corner, dx, dy) {
  if (!corner) {
    const nx = clamp(x0 + dx, 0, 1 - (x1 - x0));
    const ny = clamp(y0 + dy, 0, 1 - (y1 - y0));
    return tidy([nx, ny, nx + x1 - x0, ny + y1 - y0]);
  }
  const out = [x0, y0, x1, y1];
  if (corner.includes("w")) out[0] = clamp(x0 + dx, 0, x1 - MIN_SIDE);
  if (corner.includes("e")) out[2] = clamp(x1 + dx, x0 + MIN_SIDE, 1);
  if (corner.includes("n")) out[1] = clamp(y0 + dy, 0, y1 - MIN_SIDE);
  if (corner.includes("s")) out[3] = clamp(y1 + dy, y0 + MIN_SIDE, 1);
  return tidy(out);
}

function layoutOverlay(image, graph) {
  const layer = document.createElement("div");
  layer.className = "layout";
  image.boxes = image.boxes.map(usable);
  image.boxes.forEach((box, i) => {
    const label = graph.objects[i];
    const el = document.createElement("div");
    el.className = "box";
    el.dataset.index = i;
    el.title = `${i} ${label}`;
    el.style.setProperty("--box-colour", boxColour(label, i));
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = `${i} ${label}`;
    el.append(tag);
    for (const corner of CORNERS) {
      const handle = document.createElement("span");
      handle.className = "handle";
      handle.dataset.corner = corner;
      el.append(handle);
    }
    if (state.depth) {
      const mark = document.createElement("span");
      mark.className = "front-tag";
      mark.textContent = "front";
      const raise = button("▲", () => bringToFront(image, i), "raise");
      raise.title = `Bring ${i} ${label} to the front: in front of every box it overlaps`;
      raise.setAttribute("aria-label", `bring ${i} ${label} to the front`);
      el.append(mark, raise);
    }
    placeBox(el, box);
    el.addEventListener("pointerdown", (event) => startDrag(event, image, i, el, layer));
    layer.append(el);
  });
  layer.classList.toggle("depth", state.depth);
  state.overlays.push({image, layer});
  return layer;
}

function startDrag(event, image, i, el, layer) {
  if (event.button !== 0 || event.target.closest(".raise")) return; // a click, not a drag
  event.preventDefault();
  const rect = layer.getBoundingClientRect();
  const corner = event.target.dataset.corner || null;
  const start = image.boxes[i].slice();
  const [x, y] = [event.clientX, event.clientY];
  el.classList.add("dragging");
  const move = (e) => {
    image.boxes[i] = draggedBox(start, corner, (e.clientX - x) / rect.width,
      (e.clientY - y) / rect.height);
    placeBox(el, image.boxes[i]);
  };
  const stop = () => {
    window.removeEventListener("pointermove", move);
    window.removeEventListener("pointerup", stop);
    window.removeEventListener("pointercancel", stop);
    el.classList.remove("dragging");
    adoptLayout(image);
    restack(); // the boxes that overlap may have changed
  };
  window.addEventListener("pointermove", move);
  window.addEventListener("pointerup", stop);
  window.addEventListener("pointercancel", stop);
}

// An edited layout becomes the graph's boxes (so "Download graph JSON" has them), if the
// graph still has that image's objects.
function adoptLayout(image) {
  if (!sameObjects(image)) return;
  image.boxes.forEach((box, i) => { state.objects[i].box = box.slice(); });
  changed();
}

// The same seed, from this image's layout: its graph with these boxes, layout "given".
function generateAgain(image) {
  setGraph({...state.graphs[image.graph], boxes: image.boxes.map((b) => b.slice())});
  $("layout").value = "given";
  $("seed").value = image.seed;
  $("num-images").value = 1;
  generate();
}

function download(name, href) {
  const a = document.createElement("a");
  a.href = href;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
}

// ------------------------------------------------------------------------------ loading

function loadPasted() {
  const box = $("paste-error");
  box.replaceChildren();
  let data;
  try {
    data = JSON.parse($("paste").value);
  } catch (err) {
    say(box, `not JSON: ${err.message}`);
    return;
  }
  const scenes = Array.isArray(data) ? data : [data];
  const first = scenes[0];
  if (!first || typeof first !== "object" || !Array.isArray(first.objects)) {
    // not something the editor can show: let the server say precisely what is wrong
    api("/api/validate", data).then(async (r) => {
      if (r.ok) (await r.json()).problems.forEach((line) => say(box, line));
      else say(box, await errorText(r));
    });
    return;
  }
  if (scenes.length > 1) say(box, `loaded scene 0 of ${scenes.length}`);
  setGraph(first);
}

// ------------------------------------------------------------------------------ start

async function start() {
  const [vocabResponse, examplesResponse, healthResponse] = await Promise.all([
    api("/api/vocabulary"), api("/api/examples"), api("/api/health"),
  ]);
  const vocab = await vocabResponse.json();
  state.vocab = vocab;
  $("object-pick").replaceChildren(...vocab.objects.map((n) => option(n)));
  // depth predicates apart, when the model has them
  state.depth = vocab.depth_predicates.length > 0;
  const place = vocab.predicates.filter((n) => !vocab.depth_predicates.includes(n));
  const group = (text, names) => {
    const el = document.createElement("optgroup");
    el.label = text;
    el.append(...names.map((n) => option(n)));
    return el;
  };
  $("rel-predicate").replaceChildren(...(state.depth
    ? [group("place", place), group("depth order", vocab.depth_predicates)]
    : vocab.predicates.map((n) => option(n))));
  $("depth-hint").hidden = !state.depth;
  $("sampler").replaceChildren(
    option("", `model default (${vocab.default_sampler})`),
    ...vocab.samplers.map((n) => option(n)),
  );
  const limits = vocab.limits;
  if (vocab.default_sampler === "fast") {
    // Empty steps and guidance keep the fast default (the distilled student); filling
    // either, or choosing a scheduler, asks for the full sampler.
    $("steps").placeholder = `${limits.fast_steps} (fast)`;
    $("guidance").placeholder = `${limits.fast_guidance} built in`;
  } else if (vocab.default_sampler === "finish") {
    // Empty keeps the finish default (a draft and one guided step, 3 or 4 UNet
    // evaluations); filling either, or choosing a scheduler, asks for the full sampler.
    $("steps").placeholder = `${limits.finish_steps} (finish)`;
    $("guidance").placeholder = `${limits.default_guidance} (finish)`;
  } else {
    $("steps").value = limits.default_steps;
    $("guidance").value = limits.default_guidance;
  }
  $("steps").max = limits.max_steps;
  $("guidance").max = limits.max_guidance;
  $("num-images").max = limits.max_images;
  state.hasLayout = vocab.has_layout;
  const modes = {predicted: "predicted", given: "given (boxes)"};
  $("layout").replaceChildren(...vocab.layout_modes.map((m) => option(m, modes[m] || m)));
  $("layout-field").hidden = $("layout-toggle").hidden = !vocab.has_layout;
  const examples = (await examplesResponse.json()).examples;
  $("example-pick").replaceChildren(...examples.map((e, i) => option(i, e.name)));
  $("load-example").disabled = examples.length === 0;
  if (healthResponse.ok) $("model-name").textContent = `model: ${(await healthResponse.json()).model}`;

  $("add-object").addEventListener("click", () => addObject($("object-pick").value));
  $("add-relationship").addEventListener("click", () => addRelationship(
    Number($("rel-subject").value), $("rel-predicate").value, Number($("rel-object").value)));
  $("load-example").addEventListener("click", () => {
    const example = examples[Number($("example-pick").value)];
    if (example) setGraph(example.graph);
  });
  $("clear-graph").addEventListener("click", () => setGraph({objects: []}));
  $("download-graph").addEventListener("click", () => {
    const text = JSON.stringify(graphJSON(), null, 1);
    const url = URL.createObjectURL(new Blob([text], {type: "application/json"}));
    download("scene_graph.json", url);
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  });
  $("load-json").addEventListener("click", loadPasted);
  $("generate").addEventListener("click", generate);
  $("show-layout").addEventListener("change", () => {
    $("results").classList.toggle("show-layout", $("show-layout").checked);
  });
  $("regenerate").addEventListener("click", () => {
    $("seed").value = randomSeed();
    generate();
  });
  $("download-images").addEventListener("click", () => {
    for (const image of state.images) {
      download(`sg2image_graph${image.graph}_seed${image.seed}.png`,
        `data:image/png;base64,${image.png}`);
    }
  });
  changed();
  document.body.dataset.ready = "true";
}

start().catch((err) => {
  $("status").textContent = `could not reach the server: ${err}`;
});
