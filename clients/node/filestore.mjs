// Filestore from Node.js: the filestore.v1 services through @grpc/grpc-js, with the protos loaded at
// run time by @grpc/proto-loader (no generated code to keep fresh), and the bytes sent and fetched with
// fetch() on the presigned URLs, never through a service.
//
//   const client = new FilestoreClient({ upload: "127.0.0.1:50052", metadata: "127.0.0.1:50051",
//                                        download: "127.0.0.1:50054", token });
//   const { file } = await client.uploadBytes(bytes, { name: "a.pdf", contentType: "application/pdf" });
//   await client.waitForStatus(file.id, { timeoutMs: 60_000 });
//   const body = await client.downloadBytes(file.id);
//   client.close();

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

/** The repository's protos/ directory: the one contract every language uses. */
export const PROTOS_DIR = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "protos");

const SERVICE_FILES = [
  "filestore/v1/upload_service.proto",
  "filestore/v1/metadata_service.proto",
  "filestore/v1/processor_service.proto",
  "filestore/v1/download_service.proto",
];

/** File states after which a file's status no longer changes by itself. */
export const SETTLED_STATUSES = new Set([
  "FILE_STATUS_READY",
  "FILE_STATUS_QUARANTINED",
  "FILE_STATUS_FAILED",
  "FILE_STATUS_DELETED",
]);

// google.rpc.Status and ErrorInfo, as the services put them in `grpc-status-details-bin` (AIP-193);
// `Detail` has google.protobuf.Any's wire format, so the status decodes without any import.
const RPC_STATUS = protobuf.parse(`
  syntax = "proto3";
  package google.rpc;
  message Detail { string type_url = 1; bytes value = 2; }
  message Status { int32 code = 1; string message = 2; repeated Detail details = 3; }
  message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
`, { keepCase: true }).root;
const STATUS_TYPE = RPC_STATUS.lookupType("google.rpc.Status");
const ERROR_INFO_TYPE = RPC_STATUS.lookupType("google.rpc.ErrorInfo");
const ERROR_INFO_URL = "type.googleapis.com/google.rpc.ErrorInfo";

/** A failed call, with the ErrorInfo `reason` clients switch on (for example `FILE_NOT_FOUND`). */
export class FilestoreError extends Error {
  constructor(error) {
    super(error.details || error.message);
    this.name = "FilestoreError";
    /** The gRPC status code (a number, see grpc.status). */
    this.code = error.code;
    this.codeName = grpc.status[error.code] ?? String(error.code);
    this.reason = "";
    this.domain = "";
    this.metadata = {};
    const raw = error.metadata?.get("grpc-status-details-bin")?.[0];
    if (raw) {
      const status = STATUS_TYPE.decode(raw);
      const info = status.details.find((detail) => detail.type_url === ERROR_INFO_URL);
      if (info) {
        const decoded = ERROR_INFO_TYPE.decode(info.value);
        this.reason = decoded.reason;
        this.domain = decoded.domain;
        this.metadata = { ...decoded.metadata };
      }
    }
  }
}

/** The filestore.v1 package as grpc-js service constructors (loaded once per process). */
let loaded;
export function loadFilestoreV1() {
  loaded ??= grpc.loadPackageDefinition(
    protoLoader.loadSync(SERVICE_FILES, {
      includeDirs: [PROTOS_DIR],
      keepCase: true, // field names exactly as in the protos (and the Python stubs): upload_id, not uploadId
      longs: String, // int64 sizes stay exact above 2^53
      enums: String,
      defaults: true,
      oneofs: true,
    }),
  ).filestore.v1;
  return loaded;
}

/** Adds `authorization: Bearer <token>` to every call; `token` is a string or a function returning one. */
function bearerInterceptor(token) {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set("authorization", `Bearer ${typeof token === "function" ? token() : token}`);
        next(metadata, listener);
      },
    });
}

function unary(stub, method, request, deadlineMs) {
  return new Promise((resolve, reject) => {
    stub[method](request, { deadline: Date.now() + deadlineMs }, (error, response) => {
      if (error) reject(new FilestoreError(error));
      else resolve(response);
    });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * TLS credentials from PEM files: the CA the services are verified against and, where they demand a
 * client certificate (a TLS stack: mutual TLS), the certificate and its key. The bytes go to storage
 * with fetch(), which trusts what Node trusts: start Node with NODE_EXTRA_CA_CERTS=<the CA file> when
 * storage's certificate comes from the same private CA.
 *
 * @param {object} files
 * @param {string} files.caFile
 * @param {string} [files.certFile]
 * @param {string} [files.keyFile]
 * @returns {grpc.ChannelCredentials}
 */
export function tlsCredentials({ caFile, certFile, keyFile }) {
  if (Boolean(certFile) !== Boolean(keyFile)) throw new Error("a client certificate and its key go together");
  return grpc.credentials.createSsl(
    readFileSync(caFile),
    keyFile ? readFileSync(keyFile) : null,
    certFile ? readFileSync(certFile) : null,
  );
}

export class FilestoreClient {
  /**
   * @param {object} options
   * @param {string} options.upload   host:port of UploadService
   * @param {string} options.metadata host:port of MetadataService
   * @param {string} options.download host:port of DownloadService
   * @param {string|(() => string)} options.token the caller's JWT
   * @param {grpc.ChannelCredentials} [options.credentials] TLS credentials (default: plaintext)
   * @param {number} [options.deadlineMs] per-call deadline (default 30 s)
   */
  constructor({ upload, metadata, download, token, credentials, deadlineMs = 30_000 }) {
    if (!token) throw new Error("a token is required: every Filestore RPC is authenticated");
    const v1 = loadFilestoreV1();
    const creds = credentials ?? grpc.credentials.createInsecure();
    const options = { interceptors: [bearerInterceptor(token)] };
    this.deadlineMs = deadlineMs;
    this.upload = new v1.UploadService(upload, creds, options);
    this.metadata = new v1.MetadataService(metadata, creds, options);
    this.download = new v1.DownloadService(download, creds, options);
  }

  close() {
    for (const stub of [this.upload, this.metadata, this.download]) stub.close();
  }

  createUpload(request) {
    return unary(this.upload, "CreateUpload", request, this.deadlineMs);
  }

  completeUpload(uploadId, requestId = "") {
    return unary(this.upload, "CompleteUpload", { upload_id: uploadId, request_id: requestId }, this.deadlineMs);
  }

  getFile(fileId) {
    return unary(this.metadata, "GetFile", { file_id: fileId }, this.deadlineMs);
  }

  getDownloadUrl(fileId) {
    return unary(this.download, "GetDownloadUrl", { file_id: fileId }, this.deadlineMs);
  }

  /**
   * One single-PUT upload: CreateUpload (size, type and SHA-256 signed), PUT the bytes to storage on
   * the presigned URL, CompleteUpload. Answers the CompleteUploadResponse (the file is UPLOADED).
   */
  async uploadBytes(body, { name, contentType, labels = {} }) {
    const bytes = body instanceof Uint8Array ? body : new Uint8Array(body);
    const created = await this.createUpload({
      name,
      size: String(bytes.byteLength),
      content_type: contentType,
      sha256: createHash("sha256").update(bytes).digest("hex"),
      kind: "UPLOAD_KIND_SINGLE",
      labels,
    });
    if (created.upload.kind === "UPLOAD_KIND_DEDUP") {
      // The tenant already holds these bytes: no bytes move, and the file is already UPLOADED or READY.
      return { upload: created.upload, file: created.file };
    }
    const { method, url, headers } = created.upload.request;
    if (method !== "PUT") throw new Error(`expected a presigned PUT, got ${method}`);
    // fetch() computes Content-Length from the body itself; the signed value must agree with it.
    const sendHeaders = Object.fromEntries(
      Object.entries(headers).filter(([key]) => key.toLowerCase() !== "content-length"),
    );
    const put = await fetch(url, { method: "PUT", headers: sendHeaders, body: bytes });
    if (!put.ok) {
      throw new Error(`storage refused the PUT: HTTP ${put.status} ${await put.text()}`);
    }
    return this.completeUpload(created.upload.id);
  }

  /** Polls GetFile until the file settles (READY, QUARANTINED, FAILED, DELETED) or the deadline passes. */
  async waitForStatus(fileId, { timeoutMs = 60_000, intervalMs = 200 } = {}) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const file = await this.getFile(fileId);
      if (SETTLED_STATUSES.has(file.status)) return file;
      if (Date.now() + intervalMs > deadline) {
        throw new Error(`file ${fileId} is still ${file.status} after ${timeoutMs} ms`);
      }
      await sleep(intervalMs);
    }
  }

  /** A presigned GET from the download signer, then the bytes straight from storage. */
  async downloadBytes(fileId) {
    const signed = await this.getDownloadUrl(fileId);
    const got = await fetch(signed.url);
    if (!got.ok) throw new Error(`storage refused the GET: HTTP ${got.status}`);
    return {
      body: new Uint8Array(await got.arrayBuffer()),
      contentType: got.headers.get("content-type"),
      contentDisposition: got.headers.get("content-disposition"),
    };
  }
}
