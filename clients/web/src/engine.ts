// The upload engine: one PUT up to the multipart threshold, parts in parallel above it, with the rules
// of the Python SDK (libs/client/src/filestore/client/client.py): CRC32 per part by default (SHA-256 on
// request) signed into each part's URL, parts hashed then signed in batches ahead of the lanes that
// send them, retries with backoff and full jitter, URL renewal, resume from storage's own part list,
// and CompleteUpload with every part's checksum.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, type CallOptions } from "@connectrpc/connect";

import { abortedError, FilestoreError } from "./errors.js";
import { ChecksumAlgorithm, type File as FileResource, type PresignedRequest, type Upload, UploadKind, UploadState } from "./gen/filestore/v1/resources_pb.js";
import type {
  AbortUploadRequestSchema,
  AbortUploadResponse,
  CompleteUploadRequestSchema,
  CompleteUploadResponse,
  CreateUploadRequestSchema,
  CreateUploadResponse,
  GetUploadRequestSchema,
  SignPartsRequestSchema,
  SignPartsResponse,
} from "./gen/filestore/v1/upload_service_pb.js";
import { type ChecksumName, digestOfRange } from "./hashing.js";
import { type Progress, ProgressMeter } from "./progress.js";
import { LocalStorageResumeStore, MemoryResumeStore, type ResumeRecord, type ResumeStore, resumeKey } from "./resume-state.js";
import { callWithRetries, defaultRetryPolicy, type RetryPolicy } from "./retry.js";
import { anySignal, PauseGate, putRange, type Signer, type TransferEvent } from "./storage.js";

const MIB = 1024 * 1024;

/** The UploadService calls the engine makes: a Connect client of UploadService satisfies it, and a
 * test can hand in anything with the same shape. */
/** `ask(token)` with an upload's session token and, if the brokers no longer take it (their key
 * changed: SESSION_TOKEN_INVALID), once more without one, which signs through the catalogue. Answers
 * the result and the token to send from then on ("" once refused). */
export async function withSessionToken<T>(token: string, ask: (token: string) => Promise<T>): Promise<{ answer: T; token: string }> {
  try {
    return { answer: await ask(token), token };
  } catch (error) {
    if (!(error instanceof FilestoreError) || error.reason !== "SESSION_TOKEN_INVALID" || !token) throw error;
    return { answer: await ask(""), token: "" };
  }
}

export interface UploadApi {
  createUpload(request: MessageInitShape<typeof CreateUploadRequestSchema>, options?: CallOptions): Promise<CreateUploadResponse>;
  getUpload(request: MessageInitShape<typeof GetUploadRequestSchema>, options?: CallOptions): Promise<Upload>;
  signParts(request: MessageInitShape<typeof SignPartsRequestSchema>, options?: CallOptions): Promise<SignPartsResponse>;
  completeUpload(request: MessageInitShape<typeof CompleteUploadRequestSchema>, options?: CallOptions): Promise<CompleteUploadResponse>;
  abortUpload(request: MessageInitShape<typeof AbortUploadRequestSchema>, options?: CallOptions): Promise<AbortUploadResponse>;
  /** The id of the caller's OPEN upload of file `fileId`, if any: what lets another browser, which
   * knows only the file id, resume. Optional: without it `upload(file, { fileId })` starts over. */
  findOpenUpload?(fileId: string, options?: CallOptions): Promise<string | undefined>;
}

export interface EngineOptions {
  /** Above this many bytes an upload is multipart (the broker's own default threshold). */
  multipartThreshold: number;
  /** Part size wanted, 5 MiB..5 GiB; 0 lets the broker choose. The broker may raise it. */
  partSize: number;
  /** Parts in flight at once. Browsers open at most 6 HTTP/1.1 connections per host. */
  concurrency: number;
  /** The checksum signed into each part's URL: CRC32 (cheap on both ends), SHA-256, or none. */
  partChecksum: ChecksumName | "none";
  /** Parts per SignParts call (at most 1,000): hashed ahead, then signed together. */
  signBatch: number;
  retry: RetryPolicy;
  /** A URL closer than this to its expiry is signed again before use. */
  urlRefreshMarginMs: number;
  /** Where interrupted uploads are remembered across reloads (localStorage when there is one). */
  resumeStore: ResumeStore;
  /** Separates resume records of different deployments in one origin's storage. */
  resumeScope: string;
}

export function defaultEngineOptions(): EngineOptions {
  return {
    multipartThreshold: 64 * MIB,
    partSize: 0,
    concurrency: 4,
    partChecksum: "crc32",
    signBatch: 8,
    retry: defaultRetryPolicy,
    urlRefreshMarginMs: 30_000,
    resumeStore: typeof localStorage === "undefined" ? new MemoryResumeStore() : new LocalStorageResumeStore(),
    resumeScope: "",
  };
}

export type UploadEvent =
  | { type: "started"; uploadId: string; fileId: string; partCount: number }
  | { type: "resumed"; uploadId: string; fileId: string; partsStored: number; partCount: number }
  | { type: "part-sent"; partNumber: number }
  | { type: "paused" }
  | { type: "unpaused" }
  | { type: "completed"; fileId: string }
  | TransferEvent;

export interface UploadRequest {
  /** Display name; defaults to the File's name. */
  name?: string;
  /** Defaults to the File's type, else application/octet-stream. */
  contentType?: string;
  labels?: Record<string, string>;
  /** Lower-case hex SHA-256 of the whole content, when the page knows it (enables dedup). */
  sha256?: string;
  /** Continue an interrupted upload of the same file (remembered here, or found by `fileId`). Default true. */
  resume?: boolean;
  /** Resume the OPEN upload of this file id (from another browser): needs `UploadApi.findOpenUpload`. */
  fileId?: string;
  onProgress?: (progress: Progress) => void;
  onEvent?: (event: UploadEvent) => void;
  signal?: AbortSignal;
}

export interface UploadResult {
  file: FileResource;
  uploadId: string;
  kind: "single" | "multipart" | "dedup";
  /** Parts (or the one object) sent by this run. */
  partsSent: number;
  /** Parts storage already held from an earlier run. */
  partsResumed: number;
  bytesSent: number;
}

/** One running upload: await `done`; `pause()`, `resume()`, `abort()` at any time. */
export class UploadTask {
  private readonly gate = new PauseGate();
  private readonly stop = new AbortController();
  private uploadId = "";
  private forget: (() => void) | undefined;
  readonly done: Promise<UploadResult>;

  constructor(
    private readonly api: UploadApi,
    private readonly options: EngineOptions,
    run: (task: UploadTask) => Promise<UploadResult>,
    private readonly onEvent: ((event: UploadEvent) => void) | undefined,
    outer?: AbortSignal,
  ) {
    outer?.addEventListener("abort", () => this.stop.abort(), { once: true });
    this.done = run(this);
    this.done.catch(() => undefined); // the caller awaits `done`; an abort must not be "unhandled" meanwhile
  }

  get paused(): boolean {
    return this.gate.paused;
  }

  pause(): void {
    if (this.gate.paused) return;
    this.gate.pause();
    this.onEvent?.({ type: "paused" });
  }

  resume(): void {
    if (!this.gate.paused) return;
    this.gate.resume();
    this.onEvent?.({ type: "unpaused" });
  }

  /** Stops every PUT, aborts the upload at the broker (storage drops its parts) and forgets it. An
   * upload whose CreateUpload had not answered yet is left to the broker's reaper. */
  async abort(): Promise<void> {
    this.stop.abort();
    this.gate.resume();
    this.forget?.();
    if (this.uploadId) {
      await callWithRetries(() => this.api.abortUpload({ uploadId: this.uploadId, requestId: crypto.randomUUID() }), this.options.retry).catch(
        (error: FilestoreError) => {
          if (error.code !== Code.FailedPrecondition && error.code !== Code.NotFound) throw error; // completed meanwhile, or gone
        },
      );
    }
  }

  /** @internal */
  get internals(): { gate: PauseGate; signal: AbortSignal; began: (uploadId: string, forget?: () => void) => void } {
    return {
      gate: this.gate,
      signal: this.stop.signal,
      began: (uploadId, forget) => {
        this.uploadId = uploadId;
        this.forget = forget;
      },
    };
  }
}

/** The equal parts of a multipart upload, the last holding the rest. */
class PartPlan {
  constructor(
    readonly size: number,
    readonly partSize: number,
    readonly count: number,
  ) {}
  start(number: number): number {
    return (number - 1) * this.partSize;
  }
  end(number: number): number {
    return Math.min(this.size, number * this.partSize);
  }
  length(number: number): number {
    return this.end(number) - this.start(number);
  }
}

const ALGORITHMS: Record<ChecksumName | "none", ChecksumAlgorithm> = {
  crc32: ChecksumAlgorithm.CRC32,
  sha256: ChecksumAlgorithm.SHA256,
  none: ChecksumAlgorithm.UNSPECIFIED,
};

function algorithmName(algorithm: ChecksumAlgorithm): ChecksumName | undefined {
  return algorithm === ChecksumAlgorithm.CRC32 ? "crc32" : algorithm === ChecksumAlgorithm.SHA256 ? "sha256" : undefined;
}

function isFile(blob: Blob): blob is File {
  return typeof (blob as File).name === "string" && typeof (blob as File).lastModified === "number";
}

export class UploadEngine {
  readonly options: EngineOptions;

  constructor(
    readonly api: UploadApi,
    options: Partial<EngineOptions> = {},
  ) {
    this.options = { ...defaultEngineOptions(), ...options };
  }

  /** Starts uploading `blob` (a File from an input or a drop, or any Blob with `name`). */
  upload(blob: Blob, request: UploadRequest = {}): UploadTask {
    return new UploadTask(this.api, this.options, (task) => this.run(task, blob, request), request.onEvent, request.signal);
  }

  private call<T>(task: UploadTask, call: (options: CallOptions) => Promise<T>): Promise<T> {
    const { signal } = task.internals;
    return callWithRetries(() => call({ signal }), this.options.retry, signal);
  }

  private async run(task: UploadTask, blob: Blob, request: UploadRequest): Promise<UploadResult> {
    const name = request.name || (isFile(blob) ? blob.name : "") || "upload.bin";
    const contentType = request.contentType || blob.type || "application/octet-stream";
    const spec = { name, contentType, labels: request.labels ?? {}, sha256: request.sha256 ?? "" };
    if (blob.size <= this.options.multipartThreshold && !request.fileId) return this.single(task, blob, spec, request);
    return this.multipart(task, blob, spec, request);
  }

  private context(task: UploadTask, meter: ProgressMeter, onEvent: UploadRequest["onEvent"]) {
    const { gate, signal } = task.internals;
    return {
      policy: this.options.retry,
      refreshMarginMs: this.options.urlRefreshMarginMs,
      signal,
      gate,
      onBytes: (delta: number) => (delta > 0 ? meter.advance(delta) : delta < 0 ? meter.rewind(-delta) : undefined),
      onEvent: (event: TransferEvent) => onEvent?.(event),
    };
  }

  private async single(task: UploadTask, blob: Blob, spec: Spec, request: UploadRequest): Promise<UploadResult> {
    const { signal, began } = task.internals;
    // Signed into the PUT (storage refuses other bytes) and what makes dedup possible; below the
    // multipart threshold reading the bytes once more is cheap.
    const sha256 = spec.sha256 || (await digestOfRange("sha256", blob, 0, blob.size, signal));
    const created = await this.call(task, (options) =>
      this.api.createUpload(
        { name: spec.name, size: BigInt(blob.size), contentType: spec.contentType, sha256, labels: spec.labels, kind: UploadKind.SINGLE, requestId: crypto.randomUUID() },
        options,
      ),
    );
    const upload = created.upload!;
    began(upload.id);
    const meter = new ProgressMeter(blob.size, 1, request.onProgress);
    if (upload.kind === UploadKind.DEDUP) {
      meter.resumed(blob.size, 1);
      request.onEvent?.({ type: "completed", fileId: upload.fileId });
      return { file: created.file!, uploadId: upload.id, kind: "dedup", partsSent: 0, partsResumed: 0, bytesSent: 0 };
    }
    request.onEvent?.({ type: "started", uploadId: upload.id, fileId: upload.fileId, partCount: 1 });
    let current = upload.request!;
    const sign: Signer = async (renew) => {
      // GetUpload signs an OPEN single upload's request again.
      if (renew) current = (await this.call(task, (options) => this.api.getUpload({ uploadId: upload.id }, options))).request!;
      return current;
    };
    await putRange(blob, 0, blob.size, sign, this.context(task, meter, request.onEvent));
    meter.partDone();
    const done = await this.call(task, (options) => this.api.completeUpload({ uploadId: upload.id, requestId: crypto.randomUUID() }, options));
    request.onEvent?.({ type: "completed", fileId: upload.fileId });
    return { file: done.file!, uploadId: upload.id, kind: "single", partsSent: 1, partsResumed: 0, bytesSent: blob.size };
  }

  /** The earlier upload of this very file that can still take parts (or is already complete). */
  private async earlier(task: UploadTask, blob: Blob, spec: Spec, request: UploadRequest, key: string | undefined): Promise<Upload | undefined> {
    let uploadId: string | undefined;
    if (request.fileId) {
      if (!this.api.findOpenUpload) return undefined;
      const fileId = request.fileId;
      uploadId = await this.call(task, (options) => this.api.findOpenUpload!(fileId, options));
    } else if (key) {
      const record = this.options.resumeStore.load(key);
      if (record && record.contentType === spec.contentType) uploadId = record.uploadId;
      else if (record) this.options.resumeStore.remove(key);
    }
    if (!uploadId) return undefined;
    const id = uploadId;
    let upload: Upload;
    try {
      upload = await this.call(task, (options) => this.api.getUpload({ uploadId: id }, options));
    } catch (error) {
      if (error instanceof FilestoreError && error.code === Code.NotFound) return undefined; // reaped: start over
      throw error;
    }
    const usable =
      (upload.state === UploadState.OPEN || upload.state === UploadState.COMPLETED) &&
      upload.kind === UploadKind.MULTIPART &&
      Number(upload.size) === blob.size &&
      (!request.fileId || upload.fileId === request.fileId);
    return usable ? upload : undefined;
  }

  private async multipart(task: UploadTask, blob: Blob, spec: Spec, request: UploadRequest): Promise<UploadResult> {
    const { signal, began } = task.internals;
    const store = this.options.resumeStore;
    const key = request.resume !== false && isFile(blob) ? resumeKey(this.options.resumeScope, blob) : undefined;
    let upload = request.resume !== false ? await this.earlier(task, blob, spec, request, key) : undefined;
    const resumed = upload !== undefined;
    let firstUrls = new Map<number, PresignedRequest>();
    if (upload === undefined) {
      const algorithm = ALGORITHMS[this.options.partChecksum];
      const created = await this.call(task, (options) =>
        this.api.createUpload(
          {
            name: spec.name,
            size: BigInt(blob.size),
            contentType: spec.contentType,
            sha256: spec.sha256,
            labels: spec.labels,
            kind: UploadKind.MULTIPART,
            partSize: BigInt(this.options.partSize),
            partChecksumAlgorithm: algorithm,
            requestId: crypto.randomUUID(),
          },
          options,
        ),
      );
      upload = created.upload!;
      if (upload.kind === UploadKind.DEDUP) {
        new ProgressMeter(blob.size, 0, request.onProgress).resumed(blob.size, 0);
        request.onEvent?.({ type: "completed", fileId: upload.fileId });
        return { file: created.file!, uploadId: upload.id, kind: "dedup", partsSent: 0, partsResumed: 0, bytesSent: 0 };
      }
      firstUrls = new Map(upload.partUrls.map((part) => [part.partNumber, part.request!]));
    }
    const uploadId = upload.id;
    began(uploadId, key ? () => store.remove(key) : undefined);
    if (upload.state === UploadState.COMPLETED) {
      // The last run completed it but stopped before forgetting it: completing again answers the file.
      const done = await this.call(task, (options) => this.api.completeUpload({ uploadId, requestId: crypto.randomUUID() }, options));
      if (key) store.remove(key);
      new ProgressMeter(blob.size, upload.partCount, request.onProgress).resumed(blob.size, upload.partCount);
      request.onEvent?.({ type: "completed", fileId: upload.fileId });
      return { file: done.file!, uploadId, kind: "multipart", partsSent: 0, partsResumed: upload.partCount, bytesSent: 0 };
    }
    const plan = new PartPlan(blob.size, Number(upload.partSize), upload.partCount);
    if (key) {
      const record: ResumeRecord = { uploadId, fileId: upload.fileId, contentType: spec.contentType, partSize: plan.partSize, partCount: plan.count, savedAt: Date.now() };
      store.save(key, record);
    }
    // Storage's own list decides what is there (a part whose size is off is sent again).
    const stored = new Set(upload.uploadedParts.filter((p) => Number(p.size) === plan.length(p.partNumber)).map((p) => p.partNumber));
    const meter = new ProgressMeter(blob.size, plan.count, request.onProgress);
    if (resumed) {
      meter.resumed([...stored].reduce((sum, n) => sum + plan.length(n), 0), stored.size);
      request.onEvent?.({ type: "resumed", uploadId, fileId: upload.fileId, partsStored: stored.size, partCount: plan.count });
    } else {
      meter.emit();
      request.onEvent?.({ type: "started", uploadId, fileId: upload.fileId, partCount: plan.count });
    }
    // The upload's own algorithm, not this run's options: a resumed upload was created (and storage
    // told) with the first run's.
    const algorithm = algorithmName(upload.partChecksumAlgorithm);
    let sessionToken = upload.sessionToken;
    const digests = new Map<number, string>();
    const digestOf = async (number: number): Promise<string> => {
      let digest = digests.get(number);
      if (digest === undefined) {
        digest = await digestOfRange(algorithm!, blob, plan.start(number), plan.end(number), signal);
        digests.set(number, digest);
      }
      return digest;
    };

    const signParts = async (numbers: number[]): Promise<Map<number, PresignedRequest>> => {
      const checksums: Record<number, string> = {};
      if (algorithm) for (const number of numbers) checksums[number] = await digestOf(number);
      const ask = (token: string) =>
        this.call(task, (options) =>
          this.api.signParts(
            { uploadId, partNumbers: numbers, sessionToken: token, ...(algorithm === "crc32" ? { partCrc32: checksums } : algorithm === "sha256" ? { partSha256: checksums } : {}) },
            options,
          ),
        );
      let signed: SignPartsResponse;
      ({ answer: signed, token: sessionToken } = await withSessionToken(sessionToken, ask));
      return new Map(signed.partUrls.map((part) => [part.partNumber, part.request!]));
    };

    const missing = Array.from({ length: plan.count }, (_, i) => i + 1).filter((n) => !stored.has(n));
    // Parts are hashed and signed a batch at a time, one batch ahead of the lanes, so that a free lane
    // finds its next URL ready; URLs from CreateUpload (parts without checksums) need no signing.
    // Batches grow 1, 2, 4, ... up to `signBatch` parts: the first PUT waits for one part's hash, not
    // a whole batch's (hashing runs on this thread, one part after another: ~30 ms per 16 MiB).
    const batchSize = Math.max(1, Math.min(1000, this.options.signBatch));
    const batchStarts: number[] = []; // index into `missing` of each batch's first part
    const batchOfIndex: number[] = [];
    for (let start = 0; start < missing.length; ) {
      const end = Math.min(missing.length, start + Math.min(batchSize, 2 ** batchStarts.length));
      for (let i = start; i < end; i++) batchOfIndex.push(batchStarts.length);
      batchStarts.push(start);
      start = end;
    }
    const batches = new Map<number, Promise<Map<number, PresignedRequest>>>();
    const batch = (index: number): Promise<Map<number, PresignedRequest>> => {
      let prepared = batches.get(index);
      if (prepared === undefined) {
        const numbers = missing.slice(batchStarts[index], batchStarts[index + 1] ?? missing.length);
        const unsigned = numbers.filter((n) => algorithm || !firstUrls.has(n));
        prepared = (unsigned.length ? signParts(unsigned) : Promise.resolve(new Map<number, PresignedRequest>())).then((urls) => {
          for (const n of numbers) if (!urls.has(n) && firstUrls.has(n)) urls.set(n, firstUrls.get(n)!);
          return urls;
        });
        prepared.catch(() => undefined); // awaited by the lane that needs it; a prefetch alone must not be "unhandled"
        batches.set(index, prepared);
      }
      return prepared;
    };

    // The first part that fails for good stops the others (their PUTs are cut), as one error.
    const failed = new AbortController();
    let cursor = 0;
    const context = { ...this.context(task, meter, request.onEvent), signal: anySignal([signal, failed.signal]) };
    const lane = async (): Promise<void> => {
      while (cursor < missing.length && !failed.signal.aborted) {
        const index = cursor++;
        const number = missing[index];
        const batchIndex = batchOfIndex[index];
        let current: PresignedRequest | undefined = (await batch(batchIndex)).get(number);
        if (batchIndex + 1 < batchStarts.length) void batch(batchIndex + 1);
        batches.delete(batchIndex - 1); // keep memory bounded on 10,000-part uploads
        const sign: Signer = async (renew) => {
          if (renew || current === undefined) current = (await signParts([number])).get(number);
          return current!;
        };
        await putRange(blob, plan.start(number), plan.end(number), sign, context, number);
        meter.partDone();
        request.onEvent?.({ type: "part-sent", partNumber: number });
      }
    };
    const lanes = Array.from({ length: Math.min(this.options.concurrency, Math.max(1, missing.length)) }, () =>
      lane().catch((error) => {
        failed.abort();
        throw error;
      }),
    );
    await Promise.all(lanes);
    let partChecksums: Record<number, string> = {};
    if (algorithm) {
      // Completing needs every part's checksum: storage may not list them (SeaweedFS does not), and
      // parts an earlier run sent were not hashed by this one.
      for (let n = 1; n <= plan.count; n++) await digestOf(n);
      partChecksums = Object.fromEntries(digests);
    }
    if (signal.aborted) throw abortedError();
    const done = await this.call(task, (options) => this.api.completeUpload({ uploadId, requestId: crypto.randomUUID(), partChecksums }, options));
    if (key) store.remove(key);
    request.onEvent?.({ type: "completed", fileId: upload.fileId });
    const bytesSent = missing.reduce((sum, n) => sum + plan.length(n), 0);
    return { file: done.file!, uploadId, kind: "multipart", partsSent: missing.length, partsResumed: stored.size, bytesSent };
  }
}

interface Spec {
  name: string;
  contentType: string;
  labels: Record<string, string>;
  sha256: string;
}


