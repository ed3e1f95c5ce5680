"use strict";
// drustage web page: read a radiograph through the REST API, and label radiographs in a folder.
// Boxes are kept in original image pixels and drawn as percentages of the displayed image.

const BONES = ["radius", "ulna"];
const STAGES = {
  radius: Array.from({ length: 11 }, (_, i) => `R${i + 1}`),
  ulna: Array.from({ length: 9 }, (_, i) => `U${i + 1}`),
};
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "style") Object.assign(node.style, value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function apiError(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

function fitViewer(viewer, width, height) {
  // keep the whole radiograph on screen: width limited so height <= 82% of the viewport
  viewer.style.maxWidth = `calc(82vh * ${width / height})`;
}

function placeBox(node, box, width, height) {
  node.style.left = `${(100 * box[0]) / width}%`;
  node.style.top = `${(100 * box[1]) / height}%`;
  node.style.width = `${(100 * (box[2] - box[0])) / width}%`;
  node.style.height = `${(100 * (box[3] - box[1])) / height}%`;
}

// ---------------------------------------------------------------- reading

let current = null; // the last prediction

function pct(value) {
  return `${Math.round(100 * value)}%`;
}

// a bone's reading in a few characters; a withheld one (no readable bone in the box, or in its
// partner's) says so
function readingText(result) {
  return result.prediction === null ? "not read" : `${result.prediction} (${pct(result.confidence)})`;
}

function renderBone(result, resultId) {
  const card = $(`card-${result.bone}`);
  card.className = `bone-card ${result.bone}`;
  card.replaceChildren(el("h2", {}, result.bone));
  if (!result.found) {
    card.append(el("p", { class: "stage" }, "not found"));
    return;
  }
  const crop = el("img", { alt: `${result.bone} crop`, class: "crop", "data-bone": result.bone });
  crop.src = cropUrl(resultId, result.bone);
  const source = result.detection_score === null ? "box given" : `detector score ${result.detection_score.toFixed(2)}`;
  if (result.prediction === null) {
    card.append(crop, el("div", {},
      el("div", { class: "stage", "data-field": "prediction" }, "not read"),
      el("div", { "data-field": "phase" }, "reading withheld: check the box (see review)"),
      el("div", { class: "meta" }, source)));
    return;
  }
  card.append(
    crop,
    el("div", {},
      el("div", { class: "stage", "data-field": "prediction" }, result.prediction),
      el("div", { "data-field": "phase" }, `phase: ${result.phase} (${pct(result.phase_confidence ?? result.confidence)})`),
      el("div", { "data-field": "confidence" }, `confidence ${pct(result.confidence)}`),
      el("div", { class: "meta" }, source)),
  );
  const bars = el("div", { class: "bars" });
  for (const [name, p] of Object.entries(result.probabilities)) {
    const row = el("div", { class: name === result.prediction ? "bar top" : "bar", "data-class": name },
      el("span", {}, name), el("div", {}, el("div", { class: "fill", style: { width: pct(p) } })), el("span", {}, pct(p)));
    bars.append(row);
  }
  card.append(bars);
}

function cropUrl(resultId, bone) {
  return `/v1/predictions/${resultId}/crops/${bone}.png${$("gradcam").checked ? "?gradcam=true" : ""}`;
}

function renderGuidance(report) {
  const box = $("guidance");
  box.replaceChildren();
  if (!report.guidance) {
    box.append(el("p", {}, "No guidance: both bones must be staged."));
    return;
  }
  const g = report.guidance;
  box.append(el("h3", { "data-field": "action" }, g.action), el("p", {}, g.wording), el("p", { class: "disclaimer" }, g.disclaimer));
}

function renderReview(report) {
  const review = $("review");
  review.hidden = !report.needs_review;
  review.replaceChildren(el("strong", {}, "Review needed"),
    el("ul", {}, ...report.review_reasons.map((reason) => el("li", {}, reason))));
}

function renderBoxes(report) {
  const viewer = $("viewer");
  viewer.querySelectorAll(".box").forEach((node) => node.remove());
  const [height, width] = report.image_size;
  for (const bone of BONES) {
    const result = report[bone];
    if (!result.box) continue;
    const node = el("div", { class: `box ${bone}`, "data-bone": bone },
      el("span", { class: "tag" }, `${bone} ${readingText(result)}`));
    placeBox(node, result.box, width, height);
    viewer.append(node);
  }
  fitViewer(viewer, width, height);
}

function showResult(report) {
  current = report;
  $("radiograph").src = report.links.image;
  renderBoxes(report);
  for (const bone of BONES) renderBone(report[bone], report.id);
  renderGuidance(report);
  renderReview(report);
  const json = new Blob([JSON.stringify(report, null, 2)], { type: "application/json" });
  $("download").href = URL.createObjectURL(json);
  $("overlay-link").href = report.links.overlay + ($("gradcam").checked ? "?gradcam=true" : "");
  $("result").hidden = false;
}

async function upload(file) {
  const status = $("status");
  status.className = "";
  status.textContent = `Reading ${file.name}…`;
  const form = new FormData();
  form.append("file", file);
  // the patient's sex and age only check the reading's plausibility; the result does not carry them
  if ($("sex").value) form.append("sex", $("sex").value);
  if ($("age").value) form.append("age_years", $("age").value);
  const response = await fetch("/v1/predictions", { method: "POST", body: form });
  if (!response.ok) {
    status.className = "error";
    status.textContent = `${file.name}: ${await apiError(response)}`;
    return;
  }
  showResult(await response.json());
  status.textContent = `${file.name}: done`;
  refreshPast();
}

function pastReading(summary) {
  return summary.prediction ?? (summary.found ? "not read" : "not found");
}

// past results are kept by the server (across restarts when it has a state folder)
async function refreshPast() {
  const response = await fetch("/v1/predictions?limit=50");
  if (!response.ok) return;
  const select = $("past");
  select.replaceChildren(el("option", { value: "" }, "—"));
  for (const item of (await response.json()).items) {
    const when = new Date(item.created * 1000).toLocaleString();
    const flag = item.needs_review ? " · review" : "";
    select.append(el("option", { value: item.id },
      `${when}: radius ${pastReading(item.radius)}, ulna ${pastReading(item.ulna)}${flag}`));
  }
}

async function openPast(resultId) {
  if (!resultId) return;
  const response = await fetch(`/v1/predictions/${resultId}`);
  if (!response.ok) {
    $("status").className = "error";
    $("status").textContent = await apiError(response);
    return;
  }
  showResult(await response.json());
  $("status").className = "";
  $("status").textContent = "past result";
}

function setupReading() {
  const drop = $("drop");
  $("past").addEventListener("change", (event) => openPast(event.target.value));
  refreshPast();
  $("file").addEventListener("change", (event) => event.target.files[0] && upload(event.target.files[0]));
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files[0]) upload(event.dataTransfer.files[0]);
  });
  $("gradcam").addEventListener("change", () => {
    if (!current) return;
    document.querySelectorAll("img.crop").forEach((img) => { img.src = cropUrl(current.id, img.dataset.bone); });
    $("overlay-link").href = current.links.overlay + ($("gradcam").checked ? "?gradcam=true" : "");
  });
}

// ---------------------------------------------------------------- labelling

const label = { items: [], item: null, boxes: {}, bone: "radius", drag: null };

function selectedBone() {
  return document.querySelector("input[name=bone]:checked").value;
}

function setBone(bone) {
  document.querySelector(`input[name=bone][value=${bone}]`).checked = true;
  drawLabelBoxes();
}

function drawLabelBoxes() {
  const viewer = $("label-viewer");
  viewer.querySelectorAll(".box").forEach((node) => node.remove());
  if (!label.item) return;
  for (const bone of BONES) {
    const box = label.boxes[bone];
    if (!box) continue;
    const node = el("div", { class: `box ${bone}${bone === selectedBone() ? " selected" : ""}`, "data-bone": bone },
      el("span", { class: "tag" }, bone), el("div", { class: "handle" }));
    placeBox(node, box, label.item.width, label.item.height);
    viewer.append(node);
  }
}

function toImage(event) {
  // pointer position in original image pixels, clamped to the image
  const rect = $("label-image").getBoundingClientRect();
  const x = ((event.clientX - rect.left) / rect.width) * label.item.width;
  const y = ((event.clientY - rect.top) / rect.height) * label.item.height;
  return [Math.min(Math.max(x, 0), label.item.width), Math.min(Math.max(y, 0), label.item.height)];
}

function onPointerDown(event) {
  if (!label.item || event.button !== 0) return;
  event.preventDefault();
  const point = toImage(event);
  const target = event.target.closest(".box");
  if (target) {
    const bone = target.dataset.bone;
    setBone(bone);
    const mode = event.target.classList.contains("handle") ? "resize" : "move";
    label.drag = { mode, bone, start: point, box: [...label.boxes[bone]] };
  } else {
    const bone = selectedBone();
    label.drag = { mode: "draw", bone, start: point };
    label.boxes[bone] = [...point, ...point];
  }
  drawLabelBoxes();
}

function onPointerMove(event) {
  const drag = label.drag;
  if (!drag) return;
  const [x, y] = toImage(event);
  const [x0, y0] = drag.start;
  const { width, height } = label.item;
  if (drag.mode === "draw") {
    label.boxes[drag.bone] = [Math.min(x0, x), Math.min(y0, y), Math.max(x0, x), Math.max(y0, y)];
  } else if (drag.mode === "move") {
    const [bx1, by1, bx2, by2] = drag.box;
    const dx = Math.min(Math.max(x - x0, -bx1), width - bx2);
    const dy = Math.min(Math.max(y - y0, -by1), height - by2);
    label.boxes[drag.bone] = [bx1 + dx, by1 + dy, bx2 + dx, by2 + dy];
  } else {
    const [bx1, by1] = drag.box;
    label.boxes[drag.bone] = [bx1, by1, Math.max(x, bx1 + 2), Math.max(y, by1 + 2)];
  }
  drawLabelBoxes();
}

function onPointerUp() {
  const drag = label.drag;
  label.drag = null;
  if (!drag) return;
  const box = label.boxes[drag.bone];
  if (box && (box[2] - box[0] < 2 || box[3] - box[1] < 2)) delete label.boxes[drag.bone]; // a click, not a box
  drawLabelBoxes();
}

function fillStageSelect(bone, value) {
  const select = $(`stage-${bone}`);
  select.replaceChildren(el("option", { value: "" }, "—"), ...STAGES[bone].map((code) => el("option", { value: code }, code)));
  select.value = value || "";
}

function stepStage(delta) {
  const select = $(`stage-${selectedBone()}`);
  const index = Math.min(Math.max(select.selectedIndex + delta, 1), select.options.length - 1);
  select.selectedIndex = index;
}

async function refreshItems(after = null) {
  const query = after ? `?after=${encodeURIComponent(after)}` : "";
  const response = await fetch(`/v1/labelling/items${query}`);
  if (response.status === 404) {
    $("label-off").hidden = false;
    return null;
  }
  const data = await response.json();
  $("label-on").hidden = false;
  label.items = data.items;
  const select = $("label-select");
  const chosen = select.value;
  select.replaceChildren(...data.items.map((item) =>
    el("option", { value: item.image_id }, `${item.complete ? "✓" : "·"} ${item.file}`)));
  if (chosen) select.value = chosen;
  $("label-progress").textContent = `${data.complete} of ${data.count} labelled`;
  return data;
}

async function openItem(imageId) {
  const status = $("label-status");
  status.className = "";
  status.textContent = "Loading…";
  const response = await fetch(`/v1/labelling/items/${encodeURIComponent(imageId)}`);
  if (!response.ok) {
    status.className = "error";
    status.textContent = await apiError(response);
    return;
  }
  const item = await response.json();
  label.item = item;
  label.boxes = {};
  const boxes = Object.keys(item.boxes).length ? item.boxes : item.proposed_boxes || {};
  for (const bone of BONES) if (boxes[bone]) label.boxes[bone] = [...boxes[bone]];
  for (const bone of BONES) fillStageSelect(bone, item.stages[bone]);
  $("laterality").value = item.laterality || item.laterality_metadata || "";
  $("label-select").value = item.image_id;
  const image = $("label-image");
  image.src = `/v1/labelling/items/${encodeURIComponent(imageId)}/image.png`;
  fitViewer($("label-viewer"), item.width, item.height);
  drawLabelBoxes();
  const proposed = !Object.keys(item.boxes).length && item.proposed_boxes;
  status.textContent = proposed ? "Boxes proposed by the detector: check them." : "";
}

async function saveItem() {
  if (!label.item) return;
  const status = $("label-status");
  const body = {
    stages: Object.fromEntries(BONES.map((bone) => [bone, $(`stage-${bone}`).value || null])),
    boxes: Object.fromEntries(BONES.map((bone) => [bone, label.boxes[bone] || null])),
    laterality: $("laterality").value || null,
  };
  const response = await fetch(`/v1/labelling/items/${encodeURIComponent(label.item.image_id)}`, {
    method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  if (!response.ok) {
    status.className = "error";
    status.textContent = `not saved: ${await apiError(response)}`;
    return;
  }
  const saved = await response.json();
  await refreshItems();
  status.className = "";
  status.textContent = `saved ${saved.file}`;
  if (saved.next_unlabelled) {
    await openItem(saved.next_unlabelled);
    status.textContent = `saved ${saved.file}`;
  }
}

async function nextUnlabelled() {
  const data = await refreshItems(label.item ? label.item.image_id : null);
  if (data.next_unlabelled) await openItem(data.next_unlabelled);
  else $("label-status").textContent = "Every radiograph is labelled.";
}

function previousItem() {
  const ids = label.items.map((item) => item.image_id);
  const index = label.item ? ids.indexOf(label.item.image_id) : 0;
  if (index > 0) openItem(ids[index - 1]);
}

function setupLabelling() {
  const viewer = $("label-viewer");
  viewer.addEventListener("pointerdown", onPointerDown);
  window.addEventListener("pointermove", onPointerMove);
  window.addEventListener("pointerup", onPointerUp);
  document.querySelectorAll("input[name=bone]").forEach((input) => input.addEventListener("change", drawLabelBoxes));
  $("label-select").addEventListener("change", (event) => openItem(event.target.value));
  $("label-save").addEventListener("click", saveItem);
  $("label-next").addEventListener("click", nextUnlabelled);
  $("label-prev").addEventListener("click", previousItem);
  document.addEventListener("keydown", (event) => {
    if ($("view-label").hidden || event.target.tagName === "SELECT" || event.ctrlKey || event.metaKey) return;
    const actions = {
      r: () => setBone("radius"), u: () => setBone("ulna"), s: saveItem, n: nextUnlabelled, p: previousItem,
      "[": () => stepStage(-1), "]": () => stepStage(1),
    };
    if (actions[event.key]) {
      event.preventDefault();
      actions[event.key]();
    }
  });
}

async function showView(name) {
  document.querySelectorAll(".tab").forEach((tab) => tab.classList.toggle("active", tab.dataset.view === name));
  $("view-read").hidden = name !== "read";
  $("view-label").hidden = name !== "label";
  if (name === "label" && !label.item) {
    const data = await refreshItems();
    if (data && data.items.length) await openItem(data.next_unlabelled || data.items[0].image_id);
  }
}

document.querySelectorAll(".tab").forEach((tab) => tab.addEventListener("click", () => showView(tab.dataset.view)));
setupReading();
setupLabelling();
if (location.hash === "#label") showView("label");
