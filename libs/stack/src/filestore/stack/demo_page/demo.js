// The demo page: uploads with the browser client (clients/web, bundled by `make web` and served beside
// this page), as the local stack's development user. No framework: a few functions over the DOM.

const $ = (selector, root = document) => root.querySelector(selector);
/** Ask for a new token this long before the current one expires. */
const TOKEN_MARGIN_S = 300;
/** A share link lives as long as the download service allows (the stack's maximum is an hour). */
const SHARE_TTL_S = 3600;
const POLL_BUSY_MS = 1500;
const POLL_IDLE_MS = 20000;
// Polls (at POLL_BUSY_MS) a READY file is asked for its thumbnail before the page stops asking.
const THUMB_TRIES = 40;
// StepOutcome (protos/filestore/v1/resources.proto) values after which a step leaves no derivative.
const THUMB_ENDED_WITHOUT = new Set([3 /* FAILED */, 4 /* SKIPPED */]);

let filestore; // the bundle's exports
let fs; // createFilestore(...)
let identity;
const uploads = new Set();
const rows = new Map(); // file id -> { el, status, thumbDone, thumbAsking, thumbTries }
let pollTimer;

// ---------------------------------------------------------------------------------------- helpers

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function formatEta(seconds) {
  if (seconds === undefined || !Number.isFinite(seconds)) return "";
  if (seconds < 60) return `${Math.ceil(seconds)} s left`;
  return `${Math.floor(seconds / 60)} min ${Math.ceil(seconds % 60)} s left`;
}

function formatTime(timestamp) {
  if (!timestamp) return "";
  return new Date(Number(timestamp.seconds) * 1000).toLocaleString();
}

/** Says `message` to screen readers (the polite live region). */
function announce(message) {
  const region = $("#announcer");
  region.textContent = "";
  requestAnimationFrame(() => (region.textContent = message));
}

let alertTimer;
function showError(message) {
  const alert = $("#alert");
  alert.textContent = message;
  alert.hidden = false;
  clearTimeout(alertTimer);
  alertTimer = setTimeout(() => (alert.hidden = true), 8000);
}

function describeError(error) {
  if (error instanceof filestore.FilestoreError) return `${error.reason || "ERROR"}: ${error.message}`;
  return String(error?.message ?? error);
}

// ------------------------------------------------------------------------------ the identity

async function fetchIdentity() {
  const response = await fetch("/dev-identity", { cache: "no-store" });
  if (!response.ok) throw new Error(`the local stack refused a development identity (HTTP ${response.status})`);
  return response.json();
}

async function currentToken() {
  if (Date.now() / 1000 > identity.expiresAt - TOKEN_MARGIN_S) identity = await fetchIdentity();
  return identity.token;
}

// ---------------------------------------------------------------------------------- uploads

function statusName(status) {
  return filestore.FileStatus[status] ?? "UNKNOWN";
}

function activeUploads() {
  return [...uploads].filter((u) => u.state === "uploading" || u.state === "paused");
}

function renderTotal() {
  const counted = [...uploads].filter((u) => u.state !== "cancelled");
  const total = counted.reduce((sum, u) => sum + u.total, 0);
  const sent = counted.reduce((sum, u) => sum + (u.state === "done" ? u.total : u.sent), 0);
  const finished = counted.every((u) => u.state === "done" || u.state === "failed");
  const percent = counted.length === 0 ? 0 : total === 0 ? (finished ? 100 : 0) : Math.floor((sent * 100) / total);
  const bar = $("#total-progress");
  bar.value = percent;
  const rate = counted.reduce((sum, u) => sum + (u.state === "uploading" ? u.rate : 0), 0);
  const done = counted.filter((u) => u.state === "done").length;
  $("#total-text").textContent =
    `${done} of ${counted.length} files · ${formatBytes(sent)} of ${formatBytes(total)}` +
    (rate > 0 && !finished ? ` · ${formatBytes(rate)}/s` : "");
  const active = activeUploads();
  const pauseAll = $("#pause-all");
  pauseAll.disabled = active.length === 0;
  pauseAll.textContent = active.length > 0 && active.every((u) => u.state === "paused") ? "Resume all" : "Pause all";
  // The live summary changes at every quarter, not at every byte: a screen reader must not chatter.
  const step = finished ? "finished" : Math.floor(percent / 25);
  if (step !== renderTotal.lastStep) {
    renderTotal.lastStep = step;
    $("#total-summary").textContent = finished
      ? `All uploads finished: ${done} of ${counted.length} files uploaded.`
      : `Uploading ${counted.length} files: ${percent}%.`;
  }
}

function renderUpload(u) {
  const percent = u.state === "done" ? 100 : u.total === 0 ? 0 : Math.floor((u.sent * 100) / u.total);
  u.el.dataset.state = u.state;
  u.el.dataset.fileStatus = u.fileStatus ?? "";
  $("progress", u.el).value = percent;
  $(".upload-detail", u.el).textContent = formatBytes(u.total);
  const pause = $(".pause", u.el);
  const cancel = $(".cancel", u.el);
  const running = u.state === "uploading" || u.state === "paused";
  pause.hidden = cancel.hidden = !running;
  pause.textContent = u.state === "paused" ? "Resume" : "Pause";
  pause.setAttribute("aria-label", `${u.state === "paused" ? "Resume" : "Pause"} ${u.file.name}`);
  const text = {
    uploading: `${percent}%` + (u.rate > 0 ? ` · ${formatBytes(u.rate)}/s · ${formatEta(u.eta)}` : ""),
    paused: `Paused at ${percent}%`,
    done: { READY: "Uploaded and ready", QUARANTINED: "Quarantined: not safe", FAILED: "Processing failed" }[u.fileStatus] ?? "Uploaded: being checked",
    failed: `Failed: ${u.error ?? ""}`,
    cancelled: "Cancelled",
  }[u.state];
  $(".upload-state", u.el).textContent = text;
}

function startUploads(files) {
  if (files.length === 0) return;
  if (activeUploads().length === 0) {
    // A new batch: the last one's rows and totals are history (its files are listed below).
    uploads.clear();
    $("#upload-list").replaceChildren();
    renderTotal.lastStep = undefined;
  }
  $("#uploads").hidden = false;
  for (const file of files) startUpload(file);
  renderTotal();
  announce(`${files.length} ${files.length === 1 ? "file" : "files"} added to the uploads.`);
}

function startUpload(file) {
  const el = $("#upload-item").content.firstElementChild.cloneNode(true);
  const u = { file, el, total: file.size, sent: 0, rate: 0, eta: undefined, state: "uploading", task: undefined };
  el.dataset.name = file.name;
  $(".upload-name", el).textContent = file.name;
  $("progress", el).setAttribute("aria-label", `Upload of ${file.name}`);
  $(".cancel", el).setAttribute("aria-label", `Cancel ${file.name}`);
  $("#upload-list").append(el);
  uploads.add(u);
  u.task = fs.upload(file, {
    onProgress: (p) => {
      u.sent = p.bytesSent;
      u.total = p.totalBytes;
      u.rate = p.bytesPerSecond;
      u.eta = p.etaSeconds;
      renderUpload(u);
      renderTotal();
    },
    onEvent: (event) => {
      if (event.type === "paused") u.state = "paused";
      if (event.type === "unpaused") u.state = "uploading";
      renderUpload(u);
      renderTotal();
    },
  });
  $(".pause", el).addEventListener("click", () => (u.task.paused ? u.task.resume() : u.task.pause()));
  $(".cancel", el).addEventListener("click", async () => {
    u.state = "cancelled";
    renderUpload(u);
    renderTotal();
    await u.task.abort().catch(() => undefined);
    announce(`${file.name}: upload cancelled.`);
  });
  renderUpload(u);
  u.task.done.then(
    (result) => {
      u.state = "done";
      u.fileId = result.file.id;
      renderUpload(u);
      renderTotal();
      announce(`${file.name} uploaded; it is being checked.`);
      upsertFile(result.file);
      schedulePoll(0);
    },
    (error) => {
      if (u.state === "cancelled") return;
      u.state = "failed";
      u.error = describeError(error);
      renderUpload(u);
      renderTotal();
      announce(`${file.name} failed to upload.`);
    },
  );
}

// ----------------------------------------------------------------------------------- the files

function upsertFile(file) {
  let row = rows.get(file.id);
  if (row === undefined) {
    const el = $("#file-item").content.firstElementChild.cloneNode(true);
    el.dataset.fileId = file.id;
    row = { el, status: undefined, thumbDone: false, thumbAsking: false, thumbTries: 0, file };
    rows.set(file.id, row);
    $("#file-list").prepend(el);
    $(".copy", el).addEventListener("click", () => copyShareLink(row));
  }
  const previous = row.status;
  row.file = file;
  row.status = statusName(file.status);
  renderFile(row);
  for (const u of uploads) {
    if (u.fileId !== file.id || u.fileStatus === row.status) continue;
    u.fileStatus = row.status;
    renderUpload(u);
  }
  if (previous !== undefined && previous !== row.status) announce(`${file.name} is now ${row.status}.`);
  $("#files-empty").hidden = rows.size > 0;
}

function renderFile(row) {
  const { el, file, status } = row;
  el.dataset.name = file.name;
  el.dataset.status = status;
  $(".file-name", el).textContent = file.name;
  const type = file.sniffedContentType || file.declaredContentType;
  $(".file-meta", el).textContent = [formatBytes(Number(file.size)), type, formatTime(file.createTime)].filter(Boolean).join(" · ");
  const badge = $(".badge", el);
  badge.textContent = status;
  badge.dataset.status = status;
  const reason = {
    QUARANTINED: "Quarantined: it will never be served.",
    FAILED: "Processing failed.",
  }[status];
  $(".file-reason", el).textContent = reason ? `${reason} ${file.statusReason ? `(${file.statusReason})` : ""}` : "";
  renderThumb(row);
  renderActions(row);
}

function renderThumb(row) {
  const thumb = $(".thumb", row.el);
  if (!thumb.firstChild) thumb.textContent = (row.file.name.split(".").pop() || "file").slice(0, 4);
  if (row.status !== "READY" || row.thumbDone || row.thumbAsking) return;
  row.thumbAsking = true;
  // The processor renders thumbnails of images, PDFs and videos after the file is READY (they do not
  // gate it), so a READY file may not have one yet: ask again at each poll until the thumbnail step
  // has an outcome (other files have no such step: those stop asking after THUMB_TRIES polls).
  askForThumb(row, thumb)
    .catch((error) => console.warn("thumbnail", row.file.id, error))
    .finally(() => {
      row.thumbAsking = false;
    });
}

async function askForThumb(row, thumb) {
  const { derivatives } = await fs.files.listDerivatives({ fileId: row.file.id });
  const made = derivatives.find((d) => d.kind.startsWith("thumbnail_"));
  if (made) {
    row.thumbDone = true;
    const { url } = await fs.downloads.getDerivativeUrl({ fileId: row.file.id, kind: made.kind });
    const img = document.createElement("img");
    img.alt = "";
    img.src = url;
    img.addEventListener("load", () => thumb.replaceChildren(img), { once: true });
    return;
  }
  const { results } = await fs.files.listProcessingResults({ fileId: row.file.id });
  row.thumbTries += 1;
  // A thumbnail step SKIPPED or FAILED leaves no derivative: nothing will come. (PASSED without a
  // derivative listed yet, PENDING and ERROR, which the processor retries, are asked again.)
  const ended = results.some((r) => r.step === "thumbnail" && THUMB_ENDED_WITHOUT.has(r.outcome));
  if (ended || row.thumbTries >= THUMB_TRIES) {
    row.thumbDone = true;
  }
}

function renderActions(row) {
  const actions = $(".file-actions", row.el);
  const wanted = row.status === "READY" ? "READY" : "";
  if (actions.dataset.for === wanted) return; // keep the buttons (and the focus on them)
  actions.dataset.for = wanted;
  actions.replaceChildren();
  if (row.status !== "READY") {
    $(".share", row.el).hidden = true;
    return;
  }
  const download = button("Download", `Download ${row.file.name}`, async () => {
    try {
      await fs.saveFile(row.file.id);
    } catch (error) {
      showError(`Download of ${row.file.name} refused: ${describeError(error)}`);
    }
  });
  download.classList.add("download");
  const share = button("Share link", `Share a link to ${row.file.name}`, () => createShareLink(row));
  share.classList.add("secondary", "share-button");
  actions.append(download, share);
}

function button(text, label, onClick) {
  const el = document.createElement("button");
  el.type = "button";
  el.className = "button small";
  el.textContent = text;
  el.setAttribute("aria-label", label);
  el.addEventListener("click", onClick);
  return el;
}

async function createShareLink(row) {
  try {
    // A signed download URL: whoever has it can download the file until it expires, no account
    // needed (a grant would share with another user of the tenant, who signs in with their own).
    const link = await fs.downloadUrl(row.file.id, { ttlSeconds: SHARE_TTL_S });
    const panel = $(".share", row.el);
    const input = $(".share-url", panel);
    const inputId = `share-${row.file.id}`;
    input.id = inputId;
    const label = $(".share-label", panel);
    label.htmlFor = inputId;
    const until = link.expireTime ? new Date(Number(link.expireTime.seconds) * 1000).toLocaleTimeString() : "it expires";
    label.textContent = `Anyone with this link can download ${row.file.name} until ${until}.`;
    input.value = link.url;
    panel.hidden = false;
    input.focus();
    input.select();
    announce(`Share link for ${row.file.name} created; it is selected.`);
  } catch (error) {
    showError(`No share link for ${row.file.name}: ${describeError(error)}`);
  }
}

async function copyShareLink(row) {
  const input = $(".share-url", row.el);
  try {
    await navigator.clipboard.writeText(input.value);
    announce("Link copied.");
  } catch {
    input.select();
    announce("Select and copy the link with Ctrl+C.");
  }
}

async function refreshFiles() {
  const { files } = await fs.files.listFiles({ pageSize: 50 });
  for (const file of [...files].reverse()) upsertFile(file); // oldest first, each new row on top
}

function schedulePoll(delayMs) {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(poll, delayMs);
}

async function poll() {
  try {
    await refreshFiles();
  } catch (error) {
    showError(`Could not list your files: ${describeError(error)}`);
  }
  const settled = new Set(["READY", "QUARANTINED", "FAILED", "DELETED"]);
  const busy =
    activeUploads().length > 0 ||
    [...rows.values()].some((row) => !settled.has(row.status) || (row.status === "READY" && !row.thumbDone));
  schedulePoll(busy ? POLL_BUSY_MS : POLL_IDLE_MS);
}

// ---------------------------------------------------------------------------------- wiring

function wireDropzone() {
  const zone = $("#dropzone");
  const input = $("#file-input");
  input.addEventListener("change", () => {
    startUploads([...input.files]);
    input.value = ""; // the same file may be chosen again
  });
  // A file dropped anywhere on the page uploads, instead of the browser navigating to it.
  let depth = 0;
  document.addEventListener("dragenter", (event) => {
    if (!event.dataTransfer?.types.includes("Files")) return;
    depth += 1;
    zone.classList.add("dragging");
  });
  document.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) zone.classList.remove("dragging");
  });
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    depth = 0;
    zone.classList.remove("dragging");
    startUploads([...(event.dataTransfer?.files ?? [])]);
  });
  $("#pause-all").addEventListener("click", () => {
    const active = activeUploads();
    const resume = active.every((u) => u.state === "paused");
    for (const u of active) resume ? u.task.resume() : u.task.pause();
  });
  $("#refresh").addEventListener("click", () => schedulePoll(0));
}

async function main() {
  try {
    filestore = await import("/filestore-web.js");
  } catch {
    $("#identity").textContent = "The browser client is not built: run `make web`, then reload.";
    showError("The browser client (clients/web/dist/filestore-web.js) is missing: run `make web`, then reload.");
    return;
  }
  try {
    identity = await fetchIdentity();
  } catch (error) {
    $("#identity").textContent = "Not connected.";
    showError(String(error.message ?? error));
    return;
  }
  $("#identity").textContent = `Signed in as ${identity.subject} (tenant ${identity.tenant}), the local stack's development user`;
  fs = filestore.createFilestore({ baseUrl: identity.edgeUrl, getToken: currentToken });
  wireDropzone();
  await poll();
  document.body.dataset.ready = "true";
}

main();
