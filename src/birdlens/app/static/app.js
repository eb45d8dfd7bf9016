// birdlens serve: upload -> /api/predict (top-5 + Grad-CAM) -> LIME, SHAP or any other offered method as queued
// tasks with progress.
// Plain JS, no build step, no CDN. Every response is tagged with the photo it belongs to (`seq`), so a slow
// answer for an earlier photo never lands on the current one.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const MB = 1024 * 1024;  // as the server counts (--max-upload-mb)
const state = { seq: 0, blob: null, target: null, top: [], info: null, tasks: {}, truth: null };
// methods with a panel of their own; every other offered method is in the "any method" panel
const OWN_PANELS = ["gradcam", "lime", "shap"];

// the parameter that counts a method's model forwards, as /api/info names its cap ("<method>_<param>")
function budgetKey(method) {
  const b = (state.info && state.info.budget) || {};
  const key = Object.keys(b).find((k) => k.startsWith(`${method}_`) && k !== `${method}_default`);
  return key ? key.slice(method.length + 1) : null;
}

function panelOf(method) {
  return OWN_PANELS.includes(method) ? method : "more";
}

function pretty(label) {
  return label.toLowerCase().replace(/\b\w/g, (c) => c.toUpperCase());
}

// 0.00123 -> "1.2e-3", 0.5 -> "0.50", 0 -> "0"
function num(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a < 0.01 || a >= 1000 ? v.toExponential(1) : v.toFixed(2);
}

function percent(p) {
  return p > 0 && p < 0.001 ? "<0.1%" : `${(100 * p).toFixed(1)}%`;
}

function showError(msg) {
  const el = $("#error");
  el.textContent = msg;
  el.hidden = !msg;
}

async function apiError(resp) {
  try {
    const body = await resp.json();
    if (typeof body.detail === "string") return body.detail;
    return JSON.stringify(body.detail ?? body);
  } catch (_) {
    return `${resp.status} ${resp.statusText}`;
  }
}

// ---- model info and examples ------------------------------------------------------------------------
async function loadInfo() {
  const resp = await fetch("/api/info");
  if (!resp.ok) { $("#model-info").textContent = "model info unavailable"; return; }
  const info = await resp.json();
  state.info = info;
  const chips = [
    ["run", info.run, "run"],
    ["model", info.model + (info.mode ? ` · ${info.mode}` : "")],
    ["classes", String(info.classes.length)],
    ["input", `${info.image_size} px`],
  ];
  for (const key of ["test_accuracy", "accuracy", "valid_accuracy", "val_accuracy"]) {
    if (key in info.metrics) { chips.push([key.replace("_", " "), `${(100 * info.metrics[key]).toFixed(1)}%`]); break; }
  }
  const box = $("#model-info");
  box.textContent = "";
  for (const [k, v, cls] of chips) {
    const c = document.createElement("span");
    c.className = "chip" + (cls ? ` ${cls}` : "");
    c.innerHTML = `<span class="muted">${k}</span> <b></b>`;
    c.querySelector("b").textContent = v;
    box.appendChild(c);
  }
  renderAbout(info);
  $("#limit-hint").textContent = `JPEG, PNG, WebP, TIFF… up to ${(info.max_upload_bytes / MB).toFixed(0)} MB`;
  const b = info.budget;
  setBudget("lime", b.lime_default, b.lime_num_samples);
  setBudget("shap", b.shap_default, b.shap_max_evals);
  const select = $("#panel-more .method");
  select.textContent = "";
  for (const m of info.methods.filter((m) => !OWN_PANELS.includes(m))) {
    const o = document.createElement("option");
    o.value = m;
    o.textContent = m;
    select.appendChild(o);
  }
  for (const [m, why] of Object.entries(info.refused || {})) {  // offered by birdlens, refused by this model
    const o = document.createElement("option");
    o.value = m;
    o.textContent = `${m} (not for this model)`;
    o.title = why;
    o.disabled = true;
    select.appendChild(o);
  }
  chooseMore();
}

// the "any method" panel's budget input follows the chosen method (hidden when it has no budget)
function chooseMore() {
  const p = $("#panel-more");
  const m = $(".method", p).value;
  const key = budgetKey(m);
  $(".budget-label", p).hidden = !key;
  if (key) {
    $(".budget-name", p).textContent = key.replace("_", " ");
    setBudget("more", state.info.budget[`${m}_default`], state.info.budget[`${m}_${key}`]);
  }
}

function renderAbout(info) {
  const rows = [["run", info.run], ["model", `${info.model}${info.mode ? ` (${info.mode})` : ""}`]];
  if (info.weights) rows.push(["start weights", info.weights]);
  const imgs = info.images || {};
  if (Object.keys(imgs).length) {
    rows.push(["images", ["train", "valid", "test"].filter((k) => k in imgs).map((k) => `${imgs[k]} ${k}`).join(" · ")]);
  }
  for (const [k, v] of Object.entries(info.metrics)) rows.push([k.replace("_", " "), `${(100 * v).toFixed(1)}%`]);
  if (info.cam_layer) rows.push(["Grad-CAM layer", info.cam_layer]);
  if (info.finished) rows.push(["trained", info.finished.replace("T", " ").replace("+00:00", " UTC")]);
  const dl = $("#about-list");
  dl.textContent = "";
  for (const [k, v] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    dl.append(dt, dd);
  }
  const cl = $("#class-list");
  cl.textContent = "";
  for (const c of info.classes) {
    const s = document.createElement("span");
    s.textContent = pretty(c);
    cl.appendChild(s);
  }
  $("#about").hidden = false;
}

function setBudget(method, value, cap) {
  const input = $(`#panel-${method} .budget`);
  input.value = value;
  input.max = cap;
  input.title = `server cap: ${cap}`;
}

async function loadExamples() {
  const resp = await fetch("/api/examples");
  if (!resp.ok) return;
  const examples = await resp.json();
  if (!examples.length) return;
  const box = $("#examples");
  box.textContent = "";
  for (const ex of examples) {
    const b = document.createElement("button");
    b.type = "button";
    b.title = pretty(ex.label);
    b.dataset.label = ex.label;
    b.innerHTML = `<img loading="lazy" alt="">`;
    b.querySelector("img").src = ex.url;
    b.querySelector("img").alt = pretty(ex.label);
    b.addEventListener("click", async () => {
      const r = await fetch(ex.url);
      if (r.ok) handleFile(await r.blob(), ex.label);
    });
    box.appendChild(b);
  }
}

// ---- upload and prediction --------------------------------------------------------------------------
function cancelTasks() {
  for (const [method, id] of Object.entries(state.tasks)) {
    if (id) fetch(`/api/tasks/${id}`, { method: "DELETE" }).catch(() => {});
    state.tasks[method] = null;
  }
}

function resetPanels() {
  for (const m of ["view", "gradcam", "lime", "shap", "more", "contrast"]) {
    const p = $(`#panel-${m}`);
    const img = $(".frame img", p);
    img.hidden = true;
    img.removeAttribute("src");
    const meta = $(".meta", p);
    if (meta) meta.textContent = "";
    const busy = $(".busy", p);
    if (busy) busy.hidden = true;
    const run = $(".run", p);
    if (run) run.disabled = true;
  }
}

function handleFile(blob, truth = null) {
  if (!blob) return;
  state.seq += 1;
  state.blob = blob;
  state.truth = truth;
  showTruth(null);
  state.target = null;
  cancelTasks();
  resetPanels();
  $("#neighbours").textContent = "";
  $("#neighbours-run").disabled = true;
  showError("");
  const preview = $("#preview");
  if (preview.dataset.url) URL.revokeObjectURL(preview.dataset.url);
  preview.dataset.url = URL.createObjectURL(blob);
  preview.src = preview.dataset.url;
  preview.hidden = false;
  $("#drop").classList.add("has-image");
  const limit = state.info ? state.info.max_upload_bytes : Infinity;
  if (blob.size > limit) {  // the server would answer 413; say so without sending the bytes
    failPredict(`upload too large: the limit is ${(limit / MB).toFixed(1)} MB (${(blob.size / MB).toFixed(1)} MB chosen)`);
    return;
  }
  predict(state.seq);
}

async function predict(seq) {
  const top5 = $("#top5");
  top5.innerHTML = `<li class="placeholder"><div class="spinner" style="margin:auto"></div></li>`;
  $("#panel-gradcam .busy").hidden = false;
  const form = new FormData();
  form.append("image", state.blob, "upload");
  let resp;
  try {
    resp = await fetch("/api/predict", { method: "POST", body: form });
  } catch (e) {
    if (seq === state.seq) failPredict(`network error: ${e}`);
    return;
  }
  if (seq !== state.seq) return;
  if (!resp.ok) { failPredict(await apiError(resp)); return; }
  const pred = await resp.json();
  if (seq !== state.seq) return;
  state.top = pred.top;
  renderTop(pred.top, pred.top[0].index);
  showTruth(pred.top[0].label);
  $("#pred-time").textContent = `${(pred.seconds * 1000).toFixed(0)} ms on the model`;
  showImage("view", pred.view_png, `${pred.width}×${pred.height} px upload`);
  renderEvidence(pred.gradcam);
  for (const m of ["lime", "shap"]) $(`#panel-${m} .run`).disabled = false;
  $("#panel-more .run").disabled = !$("#panel-more .method").value;  // no other method offered
  $("#neighbours-run").disabled = false;
}

// ---- the nearest training photos in the model's feature space (predicted species and runner-up) -----
async function showNeighbours() {
  if (!state.blob) return;
  const seq = state.seq;
  const box = $("#neighbours");
  const run = $("#neighbours-run");
  run.disabled = true;
  box.innerHTML = `<div class="spinner"></div>`;
  const form = new FormData();
  form.append("image", state.blob, "upload");
  form.append("k", "5");
  const resp = await fetch("/api/neighbours", { method: "POST", body: form });
  if (seq !== state.seq) return;
  run.disabled = false;
  box.textContent = "";
  if (!resp.ok) { showError(await apiError(resp)); return; }
  const nb = await resp.json();
  for (const [title, group] of [["predicted", nb.predicted], ["runner-up", nb.runner_up]]) {
    const row = document.createElement("div");
    row.className = "nb-row";
    const h = document.createElement("h3");
    h.textContent = `${title}: ${pretty(group.label)}`;
    const strip = document.createElement("div");
    strip.className = "nb-strip";
    for (const n of group.neighbours) {
      const fig = document.createElement("figure");
      const img = document.createElement("img");
      img.src = n.url;
      img.alt = `training photo of ${pretty(n.label)}`;
      const cap = document.createElement("figcaption");
      cap.textContent = `distance ${n.distance.toFixed(3)}`;
      fig.append(img, cap);
      strip.appendChild(fig);
    }
    row.append(h, strip);
    box.appendChild(row);
  }
}

// for example photos: their test-split label next to the model's answer
function showTruth(predicted) {
  const el = $("#truth");
  el.hidden = !state.truth;
  if (!state.truth) return;
  el.innerHTML = `test-split photo labelled <b></b> <span></span>`;
  $("b", el).textContent = pretty(state.truth);
  const verdict = $("span", el);
  if (predicted) {
    const ok = predicted === state.truth;
    verdict.className = ok ? "ok" : "bad";
    verdict.textContent = ok ? "✓ the model agrees" : "✗ the model says otherwise";
  }
}

function failPredict(msg) {
  showError(msg);
  $("#top5").innerHTML = `<li class="placeholder">No prediction.</li>`;
  $("#panel-gradcam .busy").hidden = true;
  $("#pred-time").textContent = "";
}

function renderTop(top, selected) {
  const ol = $("#top5");
  ol.textContent = "";
  for (const sp of top) {
    const li = document.createElement("li");
    li.className = "sp" + (sp.index === selected ? " selected" : "");
    li.dataset.index = sp.index;
    li.dataset.label = sp.label;
    li.title = `show the evidence for ${pretty(sp.label)}`;
    li.innerHTML = `<div class="fill"></div><div class="text"><span class="label"></span><span class="prob"></span></div>`;
    $(".fill", li).style.width = `${Math.max(0.5, 100 * sp.prob)}%`;
    $(".label", li).textContent = pretty(sp.label);
    $(".prob", li).textContent = percent(sp.prob);
    li.addEventListener("click", () => selectTarget(sp.index));
    ol.appendChild(li);
  }
  state.target = selected;
  const chosen = top.find((s) => s.index === selected);
  $("#target-label").textContent = chosen ? pretty(chosen.label) : "—";
  offerWhyNot();
}

// ---- "why not the runner-up?": Grad-CAM of logit(shown species) - logit(likeliest other species) ----
function runnerUp() {
  return state.top.find((s) => s.index !== state.target) || null;
}

function offerWhyNot() {
  const p = $("#panel-contrast");
  const rival = runnerUp();
  $(".frame img", p).hidden = true;
  $(".meta", p).textContent = "";
  $(".busy", p).hidden = true;
  const run = $(".run", p);
  run.disabled = !rival || !state.blob;
  run.textContent = rival ? `Why not ${pretty(rival.label)}?` : "Why not …?";
  $(".rival", p).textContent = rival ? pretty(rival.label) : "the runner-up";
}

async function whyNot() {
  const rival = runnerUp();
  if (!state.blob || !rival) return;
  const seq = state.seq;
  const target = state.target;
  const p = $("#panel-contrast");
  $(".busy", p).hidden = false;
  $(".run", p).disabled = true;
  const form = new FormData();
  form.append("image", state.blob, "upload");
  form.append("method", "gradcam");
  form.append("target", String(target));
  form.append("contrast", String(rival.index));
  const resp = await fetch("/api/explain", { method: "POST", body: form });
  if (seq !== state.seq || target !== state.target) return;
  $(".run", p).disabled = false;
  if (!resp.ok) { $(".busy", p).hidden = true; showError(await apiError(resp)); return; }
  renderEvidence(await resp.json());
}

async function selectTarget(index) {
  if (!state.blob || index === state.target) return;
  const seq = state.seq;
  cancelTasks();
  renderTop(state.top, index);
  for (const m of ["gradcam", "lime", "shap"]) {
    const p = $(`#panel-${m}`);
    $(".frame img", p).hidden = true;
    $(".meta", p).textContent = "";
    $(".busy", p).hidden = m !== "gradcam";
  }
  const form = new FormData();
  form.append("image", state.blob, "upload");
  form.append("method", "gradcam");
  form.append("target", String(index));
  const resp = await fetch("/api/explain", { method: "POST", body: form });
  if (seq !== state.seq || index !== state.target) return;
  if (!resp.ok) { $("#panel-gradcam .busy").hidden = true; showError(await apiError(resp)); return; }
  renderEvidence(await resp.json());
}

// ---- evidence panels --------------------------------------------------------------------------------
function showImage(method, dataUrl, meta) {
  const p = $(`#panel-${method}`);
  const img = $(".frame img", p);
  img.src = dataUrl;
  img.hidden = false;
  const m = $(".meta", p);
  if (m) m.textContent = meta || "";
}

function renderEvidence(ev) {
  const contrastive = ev.contrast !== null && ev.contrast !== undefined;
  const panel = contrastive ? "contrast" : panelOf(ev.method);
  const p = $(`#panel-${panel}`);
  if (!p) return;
  $(".busy", p).hidden = true;
  const key = budgetKey(ev.method);
  const parts = [`${ev.seconds.toFixed(2)} s`];
  if (panel === "more") parts.unshift(ev.method);
  if (key && ev.params[key] !== undefined) parts.push(`${key.replace("_", " ")} ${ev.params[key]}`);
  if (ev.params.layer) parts.push(`layer ${ev.params.layer}`);
  parts.push(`map ${num(ev.stats.min)} … ${num(ev.stats.max)}`);
  if (contrastive) parts.unshift(`${pretty(ev.target_label)} rather than ${pretty(ev.contrast_label)}`);
  showImage(panel, ev.overlay_png, parts.join(" · ") + (ev.notes.length ? ` · ${ev.notes.join("; ")}` : ""));
}

async function runTask(method) {
  if (!state.blob) return;
  const seq = state.seq;
  const target = state.target;
  const slot = panelOf(method);  // state.tasks is keyed by panel: one task per panel at a time
  const p = $(`#panel-${slot}`);
  const busy = $(".busy", p);
  const bar = $(".bar", p);
  const status = $(".status", p);
  const run = $(".run", p);
  const key = budgetKey(method);
  const params = {};
  const n = parseInt($(".budget", p).value, 10);
  if (key && Number.isFinite(n)) params[key] = n;

  $(".frame img", p).hidden = true;
  $(".meta", p).textContent = "";
  busy.hidden = false;
  bar.style.width = "0%";
  status.textContent = "sending…";
  run.disabled = true;

  const form = new FormData();
  form.append("image", state.blob, "upload");
  form.append("method", method);
  form.append("params", JSON.stringify(params));
  if (target !== null) form.append("target", String(target));
  const resp = await fetch("/api/tasks", { method: "POST", body: form });
  if (seq !== state.seq) return;
  if (!resp.ok) { busy.hidden = true; run.disabled = false; status.textContent = ""; showError(await apiError(resp)); return; }
  let task = await resp.json();
  state.tasks[slot] = task.id;
  while (seq === state.seq && state.tasks[slot] === task.id) {
    if (task.state === "queued") {
      status.textContent = task.queue_position > 0 ? `queued · ${task.queue_position} ahead` : "starting…";
    } else if (task.state === "running") {
      bar.style.width = `${(100 * task.progress).toFixed(0)}%`;
      status.textContent = `computing ${(100 * task.progress).toFixed(0)}% · ${task.elapsed.toFixed(1)} s`;
    } else {
      break;
    }
    await new Promise((r) => setTimeout(r, 250));
    const r = await fetch(`/api/tasks/${task.id}`);
    if (!r.ok) { task = { state: "error", error: await apiError(r) }; break; }
    task = await r.json();
  }
  if (seq !== state.seq || state.tasks[slot] !== task.id) return;
  state.tasks[slot] = null;
  run.disabled = false;
  if (task.state === "done") {
    bar.style.width = "100%";
    renderEvidence(task.result);
  } else {
    busy.hidden = true;
    $(".meta", p).textContent = task.state === "cancelled" ? "cancelled" : `failed: ${task.error}`;
  }
}

// ---- wiring -----------------------------------------------------------------------------------------
function wire() {
  const drop = $("#drop");
  const input = $("#file");
  input.addEventListener("change", () => { if (input.files.length) handleFile(input.files[0]); input.value = ""; });
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => {
    const f = e.dataTransfer && e.dataTransfer.files[0];
    if (f) handleFile(f);
  });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  $("#panel-contrast .run").addEventListener("click", whyNot);
  $("#neighbours-run").addEventListener("click", showNeighbours);
  $("#panel-more .method").addEventListener("change", chooseMore);
  for (const m of ["lime", "shap", "more"]) {
    const p = $(`#panel-${m}`);
    $(".run", p).addEventListener("click", () => runTask(m === "more" ? $(".method", p).value : m));
    $(".cancel", p).addEventListener("click", () => {
      const id = state.tasks[m];
      if (id) fetch(`/api/tasks/${id}`, { method: "DELETE" });
    });
  }
}

wire();
loadInfo();
loadExamples();
