// Drives the browser client from the tests (Playwright's page.evaluate): uploads a file the test
// server holds, with the engine talking to an UploadApi given by the test.
import * as filestore from "./filestore-web.js";

const { create, fromJson, toJson, ConnectError, UploadEngine, MemoryResumeStore, uploadMessages: m, resourceMessages: r } = filestore;

// The UploadApi over the test's bridge: every call goes to the Python side (Playwright's
// exposeFunction `filestoreCall`), which makes it with gRPC against the real broker. Messages cross as
// protobuf JSON; a gRPC error comes back as its code and message.
function bridged(method, requestSchema, responseSchema) {
  return async (request) => {
    const answer = await window.filestoreCall(method, toJson(requestSchema, create(requestSchema, request)));
    if (answer.error) {
      // As Connect hands details over: the Any's type name and bytes.
      const details = answer.error.details.map((detail) => ({ type: detail.type, value: Uint8Array.from(atob(detail.value), (c) => c.charCodeAt(0)) }));
      throw new ConnectError(answer.error.message, answer.error.code, undefined, details);
    }
    return fromJson(responseSchema, answer.response);
  };
}

export function bridgedUploadApi() {
  return {
    createUpload: bridged("CreateUpload", m.CreateUploadRequestSchema, m.CreateUploadResponseSchema),
    getUpload: bridged("GetUpload", m.GetUploadRequestSchema, r.UploadSchema),
    signParts: bridged("SignParts", m.SignPartsRequestSchema, m.SignPartsResponseSchema),
    completeUpload: bridged("CompleteUpload", m.CompleteUploadRequestSchema, m.CompleteUploadResponseSchema),
    abortUpload: bridged("AbortUpload", m.AbortUploadRequestSchema, m.AbortUploadResponseSchema),
  };
}

let running;

window.harness = {
  events: [],
  partsSent: 0,
  /** The UploadApi uploads use: the bridge to the broker, until `connect()` names the face. */
  api: undefined,

  /** From now on, calls go to the browser face at `baseUrl` with `token`, as a page's would. */
  connect(baseUrl, token) {
    this.fs = filestore.createFilestore({ baseUrl, token });
    this.api = this.fs.uploadApi;
  },

  /** Starts uploading `path` (served beside this page) as a File of `name` and `lastModified`; the
   * engine options as given (resumeStore "memory" for none), `pauseAfterParts` to pause the task in
   * the event of that part (not later, however fast storage is), `reloadAfterParts` to reload the page
   * there instead, cutting the PUTs in flight. Answers at once; `finish()` awaits it. */
  async start(path, name, lastModified, options = {}, request = {}, pauseAfterParts = 0, reloadAfterParts = 0) {
    const blob = await (await fetch(path)).blob();
    const file = new File([blob], name, { lastModified, type: "application/octet-stream" });
    const engineOptions = { ...options };
    if (options.resumeStore === "memory") engineOptions.resumeStore = new MemoryResumeStore();
    const engine = new UploadEngine(this.api ?? bridgedUploadApi(), engineOptions);
    this.events = [];
    this.partsSent = 0;
    const progress = (this.progress = { last: undefined, outOfRange: 0 });
    // The engine's own time, from the call to the file UPLOADED (what a benchmark compares).
    const startedAt = performance.now();
    const task = engine.upload(file, {
      ...request,
      onProgress: (p) => {
        progress.last = p;
        if (p.bytesSent < 0 || p.bytesSent > p.totalBytes || p.partsDone > p.partCount) progress.outOfRange += 1;
      },
      onEvent: (event) => {
        this.events.push(event);
        if (event.type === "part-sent") this.partsSent += 1;
        if (event.type === "part-sent" && this.partsSent === pauseAfterParts) task.pause();
        if (event.type === "part-sent" && this.partsSent === reloadAfterParts) location.reload();
      },
    });
    running = task.done.finally(() => (this.wallMs = performance.now() - startedAt));
    this.task = task;
  },

  /** What the page ends up knowing of a file: its settled status, and the SHA-256 of the bytes it
   * downloads through a signed URL (READY files only), or the error it got. */
  async settle(fileId) {
    try {
      const file = await this.fs.watchFile(fileId, { intervalMs: 200 });
      const status = filestore.FileStatus[file.status];
      if (status !== "READY") return { status };
      const { url } = await this.fs.downloadUrl(fileId);
      const bytes = await (await fetch(url)).arrayBuffer();
      const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
      return { status, sha256: Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("") };
    } catch (error) {
      if (!(error instanceof filestore.FilestoreError)) throw error;
      return { error: { code: error.code, reason: error.reason } };
    }
  },

  /** The result, or the FilestoreError as the page sees it. */
  async finish() {
    let result;
    try {
      result = await running;
    } catch (error) {
      if (!(error instanceof filestore.FilestoreError)) throw error;
      return { error: { code: error.code, reason: error.reason, domain: error.domain, metadata: error.metadata, retryable: error.retryable } };
    }
    return {
      fileId: result.file.id,
      uploadId: result.uploadId,
      kind: result.kind,
      partsSent: result.partsSent,
      partsResumed: result.partsResumed,
      bytesSent: result.bytesSent,
      wallMs: this.wallMs,
      events: this.events.map((event) => event.type),
      progress: this.progress,
    };
  },
};
