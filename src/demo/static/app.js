// The demo page: fields -> POST /api/generate -> poll /api/jobs/<id> -> audio, piano roll, downloads, facts.
"use strict";
const $ = (id) => document.getElementById(id);
const FIELDS = ["prompt", "style", "emotion", "tempo", "key", "time_signature", "form", "bars_per_section",
                "temperature", "top_p", "guidance", "seed"];
const HISTORY_KEY = "hybrid-music-songs";
let info = null;
window.demoTimings = [];  // [{id, clickToAudioMs}] for tests and benchmarks

function option(select, value, label) {
  const o = document.createElement("option");
  o.value = value; o.textContent = label; select.appendChild(o);
}

function setExample(ex) {
  $("prompt").value = ex.prompt; $("style").value = ex.style; $("emotion").value = ex.emotion;
  $("tempo").value = ex.tempo; $("form").value = ex.form; $("key").value = ex.key; $("time_signature").value = "";
  updatePlaceholders(); showInstruments();
}

function updatePlaceholders() {
  if (!info) return;
  $("form").placeholder = "default for the style: " + (info.default_forms[$("style").value] || "a,b,a");
  $("tempo").placeholder = "default: " + (info.default_tempo[$("emotion").value] || 100);
}

let instrumentTimer = null;
function showInstruments() {
  clearTimeout(instrumentTimer);
  instrumentTimer = setTimeout(async () => {
    const r = await fetch("/api/words?prompt=" + encodeURIComponent($("prompt").value));
    const words = await r.json(), found = words.instruments;
    $("metre").textContent = words.metre ? `Metre: ${words.metre.word} → ${words.metre.time_signature}` : "";
    const box = $("instruments");
    box.textContent = "Instruments: ";
    if (!found.length) { box.textContent += "none named (the style's usual ones)"; return; }
    for (const f of found) {
      const s = document.createElement("span");
      s.className = "chip" + (f.seen ? "" : " unseen");
      s.textContent = `${f.word} → ${f.name}` + (f.seen ? "" : " (unseen in training: assigned by register)");
      box.appendChild(s);
    }
  }, 150);
}

function clearErrors() {
  for (const e of document.querySelectorAll(".err")) e.textContent = "";
}

function showError(field, message) {
  const box = $("err-" + field) || $("err-general");
  box.textContent = (box.id === "err-general" && field ? field + ": " : "") + message;
}

function fields() {
  const out = {};
  for (const f of FIELDS) out[f] = $(f).value;
  out.renderer = $("renderer-neural").checked ? "neural" : "fluidsynth";
  return out;
}

function describeProgress(job) {
  if (job.state === "queued") return [0, job.ahead ? `waiting: ${job.ahead} song(s) ahead` : "starting…"];
  if (job.stage === "plan") return [0.8 * job.done / Math.max(job.total, 1), `planning bar ${job.done} of ${job.total}`];
  if (job.stage === "render") {
    return [0.8 + 0.2 * job.done / Math.max(job.total, 1), `rendering audio: segment ${job.done} of ${job.total}`];
  }
  return [0, "loading…"];
}

async function poll(id, clicked) {
  for (;;) {
    const r = await fetch("/api/jobs/" + id);
    const job = await r.json();
    if (!r.ok) { showError("", job.error); break; }
    const [value, text] = describeProgress(job);
    $("progress").value = value; $("progress-text").textContent = text;
    if (job.state === "done") { showResult(job, clicked); addToHistory(job); break; }
    if (job.state === "failed") { showError("", "generation failed: " + job.error); break; }
    await new Promise((ok) => setTimeout(ok, 300));
  }
  $("progress-box").hidden = true;
  $("generate").disabled = false;
}

function row(table, name, value) {
  const tr = table.insertRow();
  tr.insertCell().textContent = name;
  tr.insertCell().textContent = value;
}

function showResult(job, clicked) {
  const res = job.result, f = res.facts, s = res.settings;
  $("result").hidden = false;
  $("result-title").textContent = `${res.name}: ${s.prompt || "(no prompt)"}`;
  const audio = $("audio");
  audio.onloadedmetadata = () => {
    window.demoTimings.push({ id: job.id, clickToAudioMs: performance.now() - clicked, duration: audio.duration });
    audio.dataset.ready = job.id;
  };
  audio.src = job.files.wav;
  $("roll").src = job.files.png;
  for (const ext of ["mid", "wav", "json", "png"]) {
    $("dl-" + ext).href = job.files[ext] + "?download=1";
    $("dl-" + ext).setAttribute("download", job.files[ext].split("/").pop());
  }
  const t = $("facts");
  t.innerHTML = "";
  const plan = f.key_plan.key ? `, planned ${f.key_plan.key} (${f.key_plan.source})` : `; ${f.key_plan.source}`;
  row(t, "key", `${f.estimated_key} (confidence ${f.key_confidence})` + (s.key ? `, asked ${s.key}` : plan));
  const fx = f.fixups, fixed = [`${fx.samples} sample(s)`];
  if (fx.transposed) fixed.push(`transposed ${fx.transposed} semitones`);
  if (fx.parallel_mode) fixed.push("mapped to the parallel mode");
  if (fx.voices_reassigned) fixed.push("voices reassigned by register");
  row(t, "the model wrote", `${f.raw.key}, ${Object.keys(f.raw.parts).join(", ")}; then ${fixed.join(", ")}`);
  row(t, "tempo", `${f.tempo} BPM`);
  row(t, "bars", `${f.bars} in ${f.sections.map((x) => `${x.name}:${x.bars}`).join(", ")}`);
  row(t, "time signature", f.time_signature);
  row(t, "instruments", Object.entries(f.instruments).map(([k, v]) => `${k} (${v} notes)`).join(", "));
  row(t, "duration", `${f.duration_s} s of music, ${res.audio_seconds} s of audio`);
  row(t, "seed", res.seed);
  row(t, "made in", `${job.seconds} s`);
  const c = res.checkpoint;
  $("made-by").textContent = `Planner: ${c.kind} checkpoint ${c.path} (step ${c.step}, sha256 ${c.sha256}), ` +
    `because ${c.reason}. ` +
    `Audio: ${res.renderer}, because ${res.renderer_reason}.`;
  const notes = $("notes");
  notes.innerHTML = "";
  for (const n of res.notes.length ? res.notes : ["none (no fallback, reassignment or warning)"]) {
    const li = document.createElement("li"); li.textContent = n; notes.appendChild(li);
  }
}

function loadHistory() {
  try { return JSON.parse(sessionStorage.getItem(HISTORY_KEY) || "[]"); } catch (e) { return []; }
}

function addToHistory(job) {
  const songs = loadHistory();
  const f = job.result.facts, s = job.result.settings;
  songs.unshift({ id: job.id, wav: job.files.wav, mid: job.files.mid,
    title: `${s.style.toLowerCase()}, ${s.emotion.toLowerCase()}, ${f.tempo} BPM, ${f.estimated_key}, ` +
           `${f.bars} bars, seed ${s.seed}: ${s.prompt || "(no prompt)"}` });
  sessionStorage.setItem(HISTORY_KEY, JSON.stringify(songs));
  drawHistory();
}

function drawHistory() {
  const ul = $("history");
  ul.innerHTML = "";
  for (const song of loadHistory()) {
    const li = document.createElement("li");
    const a = document.createElement("audio");
    a.controls = true; a.preload = "none"; a.src = song.wav;
    const link = document.createElement("a");
    link.href = song.mid + "?download=1"; link.textContent = "MIDI";
    li.append(song.title + " ", a, " ", link);
    ul.appendChild(li);
  }
}

async function submit(ev) {
  ev.preventDefault();
  clearErrors();
  const clicked = performance.now();
  $("generate").disabled = true;
  const r = await fetch("/api/generate", { method: "POST", headers: { "Content-Type": "application/json" },
                                            body: JSON.stringify(fields()) });
  const body = await r.json();
  if (!r.ok) { showError(body.field, body.error); $("generate").disabled = false; return; }
  $("progress-box").hidden = false;
  $("progress").value = 0; $("progress-text").textContent = "queued";
  poll(body.id, clicked);
}

async function init() {
  info = await (await fetch("/api/info")).json();
  for (const s of info.styles) {
    option($("style"), s, s.toLowerCase() + (info.known_styles.includes(s) ? "" : " (not in the training data)"));
  }
  for (const e of info.emotions) option($("emotion"), e, e.toLowerCase());
  for (const k of info.keys) option($("keys"), k, k);
  for (const t of info.time_signatures) option($("time_signature"), t, t);
  $("tempo").min = info.tempo_range[0]; $("tempo").max = info.tempo_range[1];
  for (const [k, v] of Object.entries(info.sampling)) $(k).value = v;  // config/generation.yaml's defaults
  for (const ex of info.examples) {
    const b = document.createElement("button");
    b.type = "button"; b.textContent = ex.prompt;
    b.onclick = () => setExample(ex);
    $("examples").appendChild(b);
  }
  if (info.problem) {
    $("problem").hidden = false;
    $("problem").textContent = info.problem;
    $("generate").disabled = true;
    $("loaded").textContent = "No planner is loaded.";
  } else {
    const c = info.checkpoint;
    $("loaded").textContent = `Planner: ${c.kind} checkpoint ${c.path} (step ${c.step}; ${c.reason}). ` +
      `Songs are made one at a time, in the order asked for; files are deleted after ${info.max_age_s / 60} minutes.`;
  }
  if (!info.neural.available) {
    $("renderer-neural").disabled = true;
    $("renderer-fluidsynth").checked = true;
    $("neural-note").textContent = "Neural renderer unavailable: " + info.neural.reason;
  } else {
    $("neural-note").textContent = "Neural: " + info.neural.name;
  }
  setExample(info.examples[0]);
  $("style").onchange = updatePlaceholders;
  $("emotion").onchange = updatePlaceholders;
  $("prompt").oninput = showInstruments;
  $("song-form").onsubmit = submit;
  drawHistory();
  document.body.dataset.ready = "1";
}

init();
