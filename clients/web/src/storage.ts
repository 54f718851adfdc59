// PUTs of Blob ranges to presigned storage URLs, with retries. Only signed URLs reach this module;
// asking the services for (fresh) ones is the caller's part, through a Signer.
//
// XMLHttpRequest rather than fetch: fetch reports no upload progress (and streaming request bodies
// need HTTP/2 and duplex, which storage endpoints rarely speak).
import { Code } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";

import { abortedError, ClientReason, FilestoreError } from "./errors.js";
import type { PresignedRequest } from "./gen/filestore/v1/resources_pb.js";
import { backoffDelayMs, isTransientStatus, type RetryPolicy, sleep } from "./retry.js";

/** Answers the presigned request for one PUT; `renew` asks for a freshly signed one. */
export type Signer = (renew: boolean) => Promise<PresignedRequest>;

/** What the engine hears about one transfer: for logs, and for a page that wants to show retries. */
export type TransferEvent =
  | { type: "retrying"; partNumber?: number; attempt: number; delayMs: number; cause: string }
  | { type: "url-renewed"; partNumber?: number; cause: string };

/** Lets an upload be paused: PUTs wait at the gate, and those in flight are cut (and sent again). */
export class PauseGate {
  private opened: Promise<void> = Promise.resolve();
  private open: (() => void) | undefined;
  private cut = new AbortController();

  get paused(): boolean {
    return this.open !== undefined;
  }

  /** Fires when the gate closes: in-flight PUTs stop. */
  get signal(): AbortSignal {
    return this.cut.signal;
  }

  pause(): void {
    if (this.paused) return;
    this.opened = new Promise((resolve) => (this.open = resolve));
    this.cut.abort();
  }

  resume(): void {
    if (!this.open) return;
    this.cut = new AbortController();
    const open = this.open;
    this.open = undefined;
    open();
  }

  /** Resolves while (or once) the gate is open; rejects when `signal` aborts. */
  async wait(signal: AbortSignal): Promise<void> {
    while (this.paused) {
      if (signal.aborted) throw abortedError();
      let onAbort = () => undefined as void;
      const aborted = new Promise<never>((_, reject) => {
        onAbort = () => reject(abortedError());
        signal.addEventListener("abort", onAbort, { once: true });
      });
      try {
        await Promise.race([this.opened, aborted]);
      } finally {
        signal.removeEventListener("abort", onAbort);
      }
    }
  }
}

export interface PutContext {
  policy: RetryPolicy;
  /** A URL closer than this to its expiry is signed again before use. */
  refreshMarginMs: number;
  signal: AbortSignal;
  gate: PauseGate;
  /** Bytes moved (negative: bytes of a cut attempt, to be sent again). */
  onBytes: (delta: number) => void;
  onEvent: (event: TransferEvent) => void;
}

// A URL expired at storage answers 403 with an S3 error whose message says so.
const EXPIRED = /expired/i;
const S3_CODE = /<Code>([^<]{1,64})<\/Code>/;
// Re-signing the same URL over and over means something else is wrong (clock skew, policy change).
const MAX_RENEWALS = 3;
// The browser sets these itself (and refuses to let a page set them); the signature covers them.
const BROWSER_SET_HEADERS = new Set(["host", "content-length"]);

function expiresWithin(request: PresignedRequest, marginMs: number): boolean {
  return request.expireTime !== undefined && timestampDate(request.expireTime).getTime() <= Date.now() + marginMs;
}

interface Answer {
  status: number; // 0: no answer (network error, or a refusal without CORS headers)
  etag: string;
  body: string;
}

class Cut extends Error {}

function xhrPut(request: PresignedRequest, body: Blob, onBytes: (delta: number) => void, stop: AbortSignal): Promise<Answer> {
  return new Promise((resolve, reject) => {
    // Stopped while the URL was being signed (an abort, or a pause): its "abort" event has fired
    // already, so the listener below would never cut this PUT.
    if (stop.aborted) {
      reject(new Cut());
      return;
    }
    const xhr = new XMLHttpRequest();
    let reported = 0;
    const onStop = () => xhr.abort();
    xhr.open(request.method || "PUT", request.url);
    for (const [name, value] of Object.entries(request.headers)) {
      if (!BROWSER_SET_HEADERS.has(name.toLowerCase())) xhr.setRequestHeader(name, value);
    }
    xhr.upload.onprogress = (event) => {
      onBytes(event.loaded - reported);
      reported = event.loaded;
    };
    const settle = () => stop.removeEventListener("abort", onStop);
    xhr.onload = () => {
      settle();
      // The last progress event may not have reported every byte.
      if (xhr.status >= 200 && xhr.status < 300) onBytes(body.size - reported);
      else onBytes(-reported);
      resolve({ status: xhr.status, etag: xhr.getResponseHeader("ETag") ?? "", body: xhr.responseText });
    };
    xhr.onerror = xhr.ontimeout = () => {
      settle();
      onBytes(-reported);
      resolve({ status: 0, etag: "", body: "" });
    };
    xhr.onabort = () => {
      settle();
      onBytes(-reported);
      reject(new Cut());
    };
    stop.addEventListener("abort", onStop, { once: true });
    xhr.send(body);
  });
}

export function anySignal(signals: AbortSignal[]): AbortSignal {
  const controller = new AbortController();
  for (const signal of signals) {
    if (signal.aborted) controller.abort();
    else signal.addEventListener("abort", () => controller.abort(), { once: true });
  }
  return controller.signal;
}

/**
 * PUT `blob[start, end)` to the URL `sign` answers, until it is stored: transient failures wait
 * (backoff, full jitter) and retry; an expired URL is signed again and retried at once; a pause cuts
 * the attempt and sends it again after `resume()`. Answers the ETag (`partNumber` undefined: a whole
 * object, whose write-once URL answering 412 means an earlier attempt already stored it).
 */
export async function putRange(blob: Blob, start: number, end: number, sign: Signer, context: PutContext, partNumber?: number): Promise<string> {
  const body = blob.slice(start, end);
  let retries = 0;
  let renewals = 0;
  let renew = false;
  for (;;) {
    await context.gate.wait(context.signal);
    let request = await sign(renew);
    if (!renew && expiresWithin(request, context.refreshMarginMs)) {
      context.onEvent({ type: "url-renewed", partNumber, cause: "about to expire" });
      request = await sign(true);
    }
    renew = false;
    let answer: Answer;
    try {
      answer = await xhrPut(request, body, context.onBytes, anySignal([context.signal, context.gate.signal]));
    } catch (error) {
      if (!(error instanceof Cut)) throw error;
      if (context.signal.aborted) throw abortedError();
      continue; // paused: wait at the gate, then send it again
    }
    if (answer.status >= 200 && answer.status < 300) return answer.etag;
    if (answer.status === 412 && partNumber === undefined) return answer.etag;
    const expired = (answer.status === 403 && EXPIRED.test(answer.body)) || (answer.status === 0 && expiresWithin(request, 0));
    if (expired) {
      if (++renewals > MAX_RENEWALS) {
        throw new FilestoreError("storage keeps refusing freshly signed URLs as expired; check the clocks", {
          code: Code.FailedPrecondition,
          reason: ClientReason.URL_EXPIRED,
          domain: "storage",
          metadata: partNumber === undefined ? {} : { part_number: String(partNumber) },
        });
      }
      context.onEvent({ type: "url-renewed", partNumber, cause: "storage refused the URL as expired" });
      renew = true;
      continue;
    }
    const cause = answer.status === 0 ? "network error" : `HTTP ${answer.status}`;
    if (answer.status !== 0 && !isTransientStatus(answer.status)) {
      const storageCode = S3_CODE.exec(answer.body)?.[1] ?? "";
      throw new FilestoreError(`storage refused the request: ${cause} ${storageCode}`.trimEnd(), {
        code: Code.FailedPrecondition,
        reason: ClientReason.STORAGE_REJECTED,
        domain: "storage",
        metadata: { status: String(answer.status), storage_code: storageCode, ...(partNumber === undefined ? {} : { part_number: String(partNumber) }) },
      });
    }
    if (++retries >= context.policy.maxAttempts) {
      throw new FilestoreError(`storage unavailable after ${retries} attempts: ${cause}`, {
        code: Code.Unavailable,
        reason: ClientReason.STORAGE_UNAVAILABLE,
        domain: "storage",
        metadata: { cause, ...(partNumber === undefined ? {} : { part_number: String(partNumber) }) },
      });
    }
    const delayMs = backoffDelayMs(context.policy, retries);
    context.onEvent({ type: "retrying", partNumber, attempt: retries, delayMs, cause });
    await sleep(delayMs, context.signal);
  }
}
