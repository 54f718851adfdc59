// Typed errors: every failure the client reports is a FilestoreError carrying the status code and the
// ErrorInfo reason the services attach (protos/filestore/v1/error_reason.proto lists them), so callers
// switch on `reason`, never on message text.
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";

/** The reasons this client raises itself, for failures that happen in the browser or at storage. */
export const ClientReason = {
  /** Storage refused a request for good (its HTTP status and S3 code are in `metadata`). */
  STORAGE_REJECTED: "STORAGE_REJECTED",
  /** Storage did not answer, or kept answering a transient error, through every retry. */
  STORAGE_UNAVAILABLE: "STORAGE_UNAVAILABLE",
  /** Storage keeps refusing freshly signed URLs as expired: a clock is off. */
  URL_EXPIRED: "URL_EXPIRED",
  /** The caller aborted the upload (`UploadTask.abort()`) or its AbortSignal fired. */
  ABORTED: "ABORTED",
  /** The face did not answer: no connection, or a refusal the browser hides from the page (an origin
   * the face does not allow fails its CORS check exactly like a network error). Retryable. */
  NETWORK_ERROR: "NETWORK_ERROR",
  /** The file did not settle (READY, QUARANTINED, FAILED, DELETED) before the watch gave up. */
  WATCH_TIMEOUT: "WATCH_TIMEOUT",
} as const;

export class FilestoreError extends Error {
  /** The gRPC/Connect code (`Code.NotFound`...); `Code.Unavailable` for storage that does not answer. */
  readonly code: Code;
  /** ErrorInfo `reason` (UPPER_SNAKE), "" when the error carried none. */
  readonly reason: string;
  /** ErrorInfo `domain`: the service that raised it, or "storage" / "client". */
  readonly domain: string;
  /** ErrorInfo metadata (`field`, `part_number`, ...). */
  readonly metadata: Readonly<Record<string, string>>;

  constructor(
    message: string,
    init: { code: Code; reason?: string; domain?: string; metadata?: Record<string, string>; cause?: unknown },
  ) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = "FilestoreError";
    this.code = init.code;
    this.reason = init.reason ?? "";
    this.domain = init.domain ?? "";
    this.metadata = init.metadata ?? {};
  }

  /** The API's retry rule (resources.proto): UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, and
   * RESOURCE_EXHAUSTED only when rate limited (a quota does not free itself). */
  get retryable(): boolean {
    return (
      this.code === Code.Unavailable ||
      this.code === Code.DeadlineExceeded ||
      this.code === Code.Aborted ||
      (this.code === Code.ResourceExhausted && this.reason === "RATE_LIMITED")
    );
  }
}

const ERROR_INFO = "google.rpc.ErrorInfo";

interface ErrorInfo {
  reason: string;
  domain: string;
  metadata: Record<string, string>;
}

// google.rpc.ErrorInfo is not among this repository's protos, and Connect hands details over as the
// Any's bytes, so its three fields are read here with protobuf-es's own wire reader.
function decodeErrorInfo(bytes: Uint8Array): ErrorInfo {
  const info: ErrorInfo = { reason: "", domain: "", metadata: {} };
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1) info.reason = reader.string();
    else if (field === 2) info.domain = reader.string();
    else if (field === 3) {
      const entry = new BinaryReader(reader.bytes());
      let key = "";
      let value = "";
      while (entry.pos < entry.len) {
        const [entryField, entryWire] = entry.tag();
        if (entryField === 1) key = entry.string();
        else if (entryField === 2) value = entry.string();
        else entry.skip(entryWire);
      }
      info.metadata[key] = value;
    } else reader.skip(wireType);
  }
  return info;
}

/** The FilestoreError for anything a Connect call threw (a ConnectError, a network failure, an abort). */
export function errorFromConnect(error: unknown): FilestoreError {
  if (error instanceof FilestoreError) return error;
  const connect = ConnectError.from(error);
  // fetch rejects with a TypeError when no answer reached the page, which Connect reports as
  // UNKNOWN; it is the transient failure a retry may cure, as UNAVAILABLE is.
  if (connect.code === Code.Unknown && connect.cause instanceof TypeError) {
    return new FilestoreError(`the face did not answer: ${connect.cause.message}`, {
      code: Code.Unavailable,
      reason: ClientReason.NETWORK_ERROR,
      domain: "client",
      cause: error,
    });
  }
  const detail = connect.details.find((d) => "type" in d && d.type === ERROR_INFO);
  const info = detail && detail.value instanceof Uint8Array ? decodeErrorInfo(detail.value) : undefined;
  return new FilestoreError(connect.rawMessage, {
    code: connect.code,
    reason: info?.reason,
    domain: info?.domain,
    metadata: info?.metadata,
    cause: error,
  });
}

export function abortedError(): FilestoreError {
  return new FilestoreError("the upload was aborted", { code: Code.Canceled, reason: ClientReason.ABORTED, domain: "client" });
}
