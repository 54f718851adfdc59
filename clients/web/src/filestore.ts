// createFilestore: typed Connect clients of the public APIs (served to browsers by filestore-edge),
// the upload engine on top of them, a download helper and status watching.
import { type Client, Code, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";

import { ClientReason, FilestoreError } from "./errors.js";
import { type EngineOptions, type UploadApi, UploadEngine, type UploadRequest, type UploadTask } from "./engine.js";
import { DownloadService, Disposition, type DownloadUrl } from "./gen/filestore/v1/download_service_pb.js";
import { MetadataService } from "./gen/filestore/v1/metadata_service_pb.js";
import { type File as FileResource, FileStatus } from "./gen/filestore/v1/resources_pb.js";
import { UploadService } from "./gen/filestore/v1/upload_service_pb.js";
import { callWithRetries, defaultRetryPolicy, sleep } from "./retry.js";

export interface FilestoreConfig {
  /** The face's URL, e.g. `https://files.example.com` (the stack prints it as `edge_url`). */
  baseUrl: string;
  /** A bearer token (JWT), or a function answering the current one (called before every call). */
  token?: string;
  getToken?: () => string | Promise<string>;
  /** Upload engine options (part size, concurrency, part checksum, retries, resume store). */
  upload?: Partial<EngineOptions>;
  /** Passed to the transport, e.g. a fetch with credentials or a test double. */
  fetch?: typeof globalThis.fetch;
}

/** States a file does not leave on its own: processing is over. */
export const SETTLED_STATUSES: ReadonlySet<FileStatus> = new Set([FileStatus.READY, FileStatus.QUARANTINED, FileStatus.FAILED, FileStatus.DELETED]);

export interface WatchOptions {
  /** Called with the file at every poll whose status differs from the previous one. */
  onStatus?: (file: FileResource) => void;
  signal?: AbortSignal;
  /** First wait between polls; it grows by half each time up to `maxIntervalMs`. */
  intervalMs?: number;
  maxIntervalMs?: number;
  /** Give up (WATCH_TIMEOUT) after this long; default 10 minutes. */
  timeoutMs?: number;
}

export interface Filestore {
  uploads: Client<typeof UploadService>;
  files: Client<typeof MetadataService>;
  downloads: Client<typeof DownloadService>;
  /** The UploadService calls the engine makes, over this transport (for an engine of other options). */
  uploadApi: UploadApi;
  engine: UploadEngine;
  /** Starts an upload; see UploadRequest (resume after reload, by file id, progress, pause). */
  upload(file: Blob, request?: UploadRequest): UploadTask;
  /** A short-lived GET URL for a READY file (`inline`: for <img>/<video>, else a download). */
  downloadUrl(fileId: string, options?: { inline?: boolean; ttlSeconds?: number }): Promise<DownloadUrl>;
  /** Makes the browser download a READY file under its name (a short-lived URL, opened by a link). */
  saveFile(fileId: string): Promise<void>;
  /** Polls the file until it is READY, QUARANTINED, FAILED or DELETED, and answers it. */
  watchFile(fileId: string, options?: WatchOptions): Promise<FileResource>;
}

export function createFilestore(config: FilestoreConfig): Filestore {
  const { token, getToken } = config;
  if (!token && !getToken) throw new Error("createFilestore needs a token or getToken");
  // The token travels in the Authorization header only, never in a URL.
  const auth: Interceptor = (next) => async (request) => {
    request.header.set("Authorization", `Bearer ${getToken ? await getToken() : token}`);
    return next(request);
  };
  const transport = createConnectTransport({ baseUrl: config.baseUrl, interceptors: [auth], fetch: config.fetch });
  const uploads = createClient(UploadService, transport);
  const files = createClient(MetadataService, transport);
  const downloads = createClient(DownloadService, transport);
  const api: UploadApi = {
    createUpload: (request, options) => uploads.createUpload(request, options),
    getUpload: (request, options) => uploads.getUpload(request, options),
    signParts: (request, options) => uploads.signParts(request, options),
    completeUpload: (request, options) => uploads.completeUpload(request, options),
    abortUpload: (request, options) => uploads.abortUpload(request, options),
    // Newest first: the caller's latest OPEN upload of the file is the one to continue.
    findOpenUpload: async (fileId, options) => (await uploads.listOpenUploads({ fileId, pageSize: 1 }, options)).uploads[0]?.id,
  };
  const engine = new UploadEngine(api, { resumeScope: config.baseUrl, ...config.upload });
  const retry = engine.options.retry;

  return {
    uploads,
    files,
    downloads,
    uploadApi: api,
    engine,
    upload: (file, request) => engine.upload(file, request),
    downloadUrl: (fileId, options = {}) =>
      callWithRetries(
        () =>
          downloads.getDownloadUrl({
            fileId,
            ttlSeconds: options.ttlSeconds ?? 0,
            disposition: options.inline ? Disposition.INLINE : Disposition.UNSPECIFIED,
          }),
        retry,
      ),
    async saveFile(fileId) {
      const { url } = await this.downloadUrl(fileId);
      // Storage answers it with Content-Disposition: attachment, so the page stays where it is.
      const link = document.createElement("a");
      link.href = url;
      link.rel = "noopener";
      document.body.append(link);
      link.click();
      link.remove();
    },
    async watchFile(fileId, options = {}) {
      const deadline = Date.now() + (options.timeoutMs ?? 600_000);
      let interval = options.intervalMs ?? 500;
      let last: FileStatus | undefined;
      for (;;) {
        const file = await callWithRetries(() => files.getFile({ fileId }, { signal: options.signal }), retry, options.signal);
        if (file.status !== last) options.onStatus?.(file);
        last = file.status;
        if (SETTLED_STATUSES.has(file.status)) return file;
        if (Date.now() + interval > deadline) {
          throw new FilestoreError(`file ${fileId} did not settle in time (status ${FileStatus[file.status]})`, {
            code: Code.DeadlineExceeded,
            reason: ClientReason.WATCH_TIMEOUT,
            domain: "client",
            metadata: { file_id: fileId, status: FileStatus[file.status] },
          });
        }
        await sleep(interval, options.signal);
        interval = Math.min(options.maxIntervalMs ?? 5_000, interval * 1.5);
      }
    },
  };
}

export { defaultRetryPolicy };
