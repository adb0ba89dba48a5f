// The page: pick, drop or snap a photo, upload it with progress, show the result.
import { FaceViewer } from "./viewer.js";

const $ = (id) => document.getElementById(id);
const page = document.body;
let config = {
  max_upload_bytes: 20 << 20,
  allowed_types: ["image/jpeg", "image/png", "image/webp", "image/bmp"],
};
let viewer = null;

// One attribute tells the state (idle, uploading, reconstructing, ready, error): the CSS and
// the browser tests both read it.
function setState(state, message = "") {
  page.dataset.state = state;
  $("status-text").textContent = message;
  $("error").hidden = state !== "error";
  if (state === "error") $("error").textContent = message;
}

function megabytes(bytes) {
  return `${(bytes / (1 << 20)).toFixed(bytes < 1 << 20 ? 1 : 0)} MB`;
}

// The same checks as the gateway's, so a wrong file is refused before it is sent.
function checkPhoto(file) {
  if (!config.allowed_types.includes(file.type)) {
    return `“${file.name}” is not a JPEG, PNG, WebP or BMP image.`;
  }
  if (file.size > config.max_upload_bytes) {
    const limit = megabytes(config.max_upload_bytes);
    return `“${file.name}” is ${megabytes(file.size)}; the limit is ${limit}.`;
  }
  return null;
}

function upload(photo) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    const fit = $("registration").checked && !$("registration-option").hidden;
    request.open("POST", fit ? "/api/reconstruct?registration=1" : "/api/reconstruct");
    request.setRequestHeader("Content-Type", photo.type);
    request.responseType = "json";
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) $("progress").value = event.loaded / event.total;
    };
    request.upload.onload = () => {
      $("progress").removeAttribute("value"); // indeterminate while the service works
      setState("reconstructing", "Reconstructing the face…");
    };
    request.onload = () => {
      const body = request.response;
      if (request.status === 200 && body) resolve(body);
      else reject(new Error(errorMessage(request.status, body)));
    };
    request.onerror = () => reject(new Error("The upload failed: is the demo still running?"));
    request.send(photo);
  });
}

function errorMessage(status, body) {
  const message = body?.error ?? `The gateway answered HTTP ${status}.`;
  const fields = Object.entries(body?.fields ?? {}).map(([f, d]) => `${f}: ${d}`);
  // The service names the field at fault; say it unless the message already does.
  const repeated = fields.some((f) => f.endsWith(message));
  return fields.length && !repeated ? `${message} (${fields.join("; ")})` : message;
}

async function reconstruct(photo) {
  const problem = checkPhoto(photo);
  if (problem) return setState("error", problem);
  $("progress").value = 0;
  setState("uploading", `Uploading ${megabytes(photo.size)}…`);
  const started = performance.now();
  try {
    const result = await upload(photo);
    setState("reconstructing", "Loading the 3D viewer…");
    viewer ??= new FaceViewer($("viewer"));
    await viewer.load(result.meshes.glb.url);
    showResult(result, performance.now() - started);
    setState("ready", "Drag to turn the face, scroll to zoom.");
  } catch (error) {
    setState("error", error.message);
  }
}

// The service's stages in pipeline order, then the totals seen by each hop.
const STAGES = [
  "decode", "crop", "queue", "network", "mesh", "pose", "registration", "texture", "render",
  "encode",
];
const TOTALS = ["total", "gateway_total", "browser"];
const STAGE_LABELS = {
  total: "service total",
  gateway_total: "gateway total",
  browser: "round trip",
};
const stageOrder = (stage) => {
  const order = [...STAGES, ...TOTALS].indexOf(stage);
  return order < 0 ? STAGES.length : order; // stages this page does not know go before the totals
};

function showResult(result, totalMs) {
  $("result").hidden = false;
  const pose = result.pose;
  $("pose").textContent = pose
    ? `yaw ${pose.yaw}°, pitch ${pose.pitch}°, roll ${pose.roll}°`
    : "—";
  // what the service said about the photo, e.g. that it found no face and used all of it
  $("notes").textContent = (result.notes ?? []).join(" ");
  $("notes").hidden = !(result.notes ?? []).length;
  $("model").textContent = `${result.model.name} ${result.model.version}`;
  showFitted(result);
  const timings = { ...result.timings_ms, browser: totalMs };
  const stages = Object.keys(timings).sort((a, b) => stageOrder(a) - stageOrder(b));
  $("timings").replaceChildren(
    ...stages.map((stage) => {
      const ms = timings[stage];
      const row = document.createElement("tr");
      row.insertCell().textContent = STAGE_LABELS[stage] ?? stage;
      row.insertCell().textContent = `${Math.round(ms)} ms`;
      return row;
    }),
  );
  $("downloads").replaceChildren(
    ...Object.entries(result.meshes).map(([kind, file]) => {
      const link = document.createElement("a");
      link.href = file.url;
      const fitted = kind === "textured_glb";
      link.download = fitted ? "face_fitted.glb" : `face.${kind}`;
      link.className = "button";
      link.textContent = `${fitted ? "FITTED GLB" : kind.toUpperCase()} (${megabytes(file.bytes)})`;
      return link;
    }),
  );
  const frontal = result.frontal ? [{ ...result.frontal, label: "frontal" }] : [];
  const views = [...frontal, ...result.views];
  $("views").replaceChildren(
    ...views.map((view) => {
      const figure = document.createElement("figure");
      const image = document.createElement("img");
      image.src = view.src;
      image.alt = view.label ?? `yaw ${view.yaw}°`;
      const caption = document.createElement("figcaption");
      caption.textContent = image.alt;
      figure.append(image, caption);
      return figure;
    }),
  );
}

// The fitted ICT head, when asked for: its figures, and a switch of what the viewer shows.
function showFitted(result) {
  const registration = result.registration;
  $("fitted").hidden = !registration;
  if (!registration) return;
  const pose = registration.pose;
  $("fitted-figures").textContent =
    `${registration.vertices} vertices (${registration.topology}); yaw ${pose.yaw}°, ` +
    `pitch ${pose.pitch}°, roll ${pose.roll}°; fit error ${registration.fit_error_px} px`;
  const choices = [
    [$("show-raw"), result.meshes.glb.url],
    [$("show-fitted"), result.meshes.textured_glb.url],
  ];
  for (const [button, url] of choices) {
    button.setAttribute("aria-pressed", String(button === $("show-raw")));
    button.onclick = async () => {
      for (const [other] of choices) other.setAttribute("aria-pressed", String(other === button));
      await viewer.load(url);
    };
  }
}

// Webcam: preview, then one frame as a JPEG, through the same path as a file.
async function startCamera() {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 1280 } });
    $("camera-video").srcObject = stream;
    $("camera").hidden = false;
  } catch (error) {
    setState("error", `The camera is not available: ${error.message}`);
  }
}

function stopCamera() {
  const video = $("camera-video");
  video.srcObject?.getTracks().forEach((track) => track.stop());
  video.srcObject = null;
  $("camera").hidden = true;
}

function snap() {
  const video = $("camera-video");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  stopCamera();
  const upload = (blob) => reconstruct(new File([blob], "webcam.jpg", { type: "image/jpeg" }));
  canvas.toBlob(upload, "image/jpeg", 0.92);
}

function wire() {
  const drop = $("drop");
  // A photo dropped beside the drop zone must not make the browser navigate to it.
  for (const type of ["dragover", "drop"]) window.addEventListener(type, (e) => e.preventDefault());
  $("file").addEventListener("change", (event) => {
    const [file] = event.target.files;
    if (file) reconstruct(file);
    event.target.value = ""; // choosing the same file again fires another change
  });
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const [file] = event.dataTransfer.files;
    if (file) reconstruct(file);
  });
  $("camera-start").hidden = !navigator.mediaDevices?.getUserMedia;
  $("camera-start").addEventListener("click", startCamera);
  $("camera-snap").addEventListener("click", snap);
  $("camera-cancel").addEventListener("click", stopCamera);
}

async function main() {
  wire();
  try {
    config = await (await fetch("/api/config")).json();
    const limit = megabytes(config.max_upload_bytes);
    $("limits").textContent = `JPEG, PNG, WebP or BMP, up to ${limit}.`;
    $("registration-option").hidden = !config.registration;
    const model = config.model;
    if (model) {
      $("served").textContent = `Model: ${model.name} ${model.version} on ${model.device}.`;
    }
  } catch {
    // The defaults above still let the page work; the gateway checks again anyway.
  }
  setState("idle");
}

main();
