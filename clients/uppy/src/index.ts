// @filestore/uppy: Uppy's S3 plugin (@uppy/aws-s3 5.x) signed by Filestore instead of Companion. The
// plugin's callbacks become UploadService calls on the browser face (through clients/web's Connect
// client), the bytes still go from the page to storage through presigned URLs. See README.md.
import AwsS3, { type AwsS3MultipartOptions, type AwsS3Part, type AwsS3UploadParameters } from "@uppy/aws-s3";
import type { Body, Meta, UppyFile } from "@uppy/utils";
import { Code } from "@connectrpc/connect";

import { type UploadApi, withSessionToken } from "../../web/src/engine.js";
import { FilestoreError } from "../../web/src/errors.js";
import { ChecksumAlgorithm, type PresignedRequest, UploadKind } from "../../web/src/gen/filestore/v1/resources_pb.js";
import { digestOfRange } from "../../web/src/hashing.js";
import { callWithRetries, defaultRetryPolicy, type RetryPolicy } from "../../web/src/retry.js";

const MIB = 1024 * 1024;
// The broker's part plan (services/upload/src/filestore/upload/plan.py): S3's limits and its default.
const MIN_PART_SIZE = 5 * MIB;
const MAX_PART_SIZE = 5 * 1024 * MIB;
const MAX_PARTS = 10_000;
const DEFAULT_PART_SIZE = 16 * MIB;

export interface FilestoreUppyOptions {
  /** Files above this many bytes go in parts (the broker's default threshold); others in one PUT. */
  multipartThreshold?: number;
  /** Part size wanted (5 MiB..5 GiB), raised as the broker raises it to fit 10,000 parts. */
  partSize?: number;
  /** CRC32 of each part (Uppy hands signPart the part's bytes) signed into its URL, or none. */
  partChecksum?: "crc32" | "none";
  /** Retries of the UploadService calls (the client's policy by default). */
  retry?: RetryPolicy;
}

export interface FilestoreUppy<M extends Meta, B extends Body> {
  /** For `uppy.use(AwsS3, adapter.options)`. */
  options: AwsS3MultipartOptions<M, B>;
  /** The Filestore file id an Uppy file was uploaded as (also after a reload, for multipart uploads). */
  fileIdOf(file: UppyFile<M, B>): string | undefined;
}

/** The part size of the broker's plan for `size` bytes when `wanted` is asked for: `wanted` raised
 * (to a whole MiB) only as far as 10,000 parts need. Uppy cuts the file at multiples of what
 * `getChunkSize` answers, so answering this makes Uppy's parts exactly the plan's parts. */
export function planPartSize(size: number, wanted: number = DEFAULT_PART_SIZE): number {
  if (!(MIN_PART_SIZE <= wanted && wanted <= MAX_PART_SIZE)) throw new RangeError(`partSize must be between ${MIN_PART_SIZE} and ${MAX_PART_SIZE} bytes`);
  const smallestFitting = Math.ceil(Math.ceil(size / MAX_PARTS) / MIB) * MIB;
  return Math.max(wanted, smallestFitting, MIN_PART_SIZE);
}

type Signer = { url: string; uploadId: string; uppyFileId: string };

/** The @uppy/aws-s3 options that make Filestore the signing backend, over `fs.uploadApi` (what
 * `createFilestore` answers, or any UploadApi). */
export function filestoreUppy<M extends Meta, B extends Body>(fs: { uploadApi: UploadApi }, settings: FilestoreUppyOptions = {}): FilestoreUppy<M, B> {
  const api = fs.uploadApi;
  const threshold = settings.multipartThreshold ?? 64 * MIB;
  const wanted = settings.partSize ?? DEFAULT_PART_SIZE;
  const checksums = (settings.partChecksum ?? "crc32") === "crc32";
  const retry = settings.retry ?? defaultRetryPolicy;
  const call = <T>(rpc: (options: { signal?: AbortSignal }) => Promise<T>, signal?: AbortSignal) => callWithRetries(() => rpc({ signal }), retry, signal);

  // In memory only: what a reload loses is asked of the broker again (the session token through
  // GetUpload in listParts; the file id is Uppy's persisted `key`; checksums are recomputed).
  const fileIds = new Map<string, string>();
  const sessionTokens = new Map<string, string>();
  const partDigests = new Map<string, Map<number, string>>();
  const singles = new Map<string, Signer>();

  const signed = (request: PresignedRequest | undefined): AwsS3UploadParameters => {
    if (!request) throw new FilestoreError("the broker answered no request to sign", { code: Code.Internal, domain: "client" });
    return { method: "PUT", url: request.url, headers: { ...request.headers } };
  };
  const contentType = (file: UppyFile<M, B>) => file.type || "application/octet-stream";

  const options: AwsS3MultipartOptions<M, B> = {
    shouldUseMultipart: (file: UppyFile<M, B>) => (file.size ?? 0) > threshold,
    getChunkSize: (data: { size: number }) => planPartSize(data.size, wanted),

    async getUploadParameters(file: UppyFile<M, B>, { signal }: { signal?: AbortSignal }) {
      const { upload, file: created } = await call(
        (o) => api.createUpload({ name: file.name ?? "file", size: BigInt(file.size ?? 0), contentType: contentType(file), kind: UploadKind.SINGLE, requestId: crypto.randomUUID() }, o),
        signal,
      );
      fileIds.set(file.id, created!.id);
      const parameters = signed(upload!.request);
      // Uppy's single PUT has no completion callback: uploadPartBytes below completes it.
      singles.set(parameters.url, { url: parameters.url, uploadId: upload!.id, uppyFileId: file.id });
      return parameters;
    },

    async uploadPartBytes(request: Parameters<typeof AwsS3.uploadPartBytes>[0]) {
      const sent = await AwsS3.uploadPartBytes(request);
      const single = singles.get(request.signature.url);
      if (single) {
        await call((o) => api.completeUpload({ uploadId: single.uploadId, requestId: crypto.randomUUID() }, o), request.signal);
        singles.delete(single.url);
      }
      return sent;
    },

    async createMultipartUpload(file: UppyFile<M, B>) {
      const size = file.size ?? 0;
      const partSize = planPartSize(size, wanted);
      const { upload, file: created } = await call((o) =>
        api.createUpload(
          {
            name: file.name ?? "file",
            size: BigInt(size),
            contentType: contentType(file),
            kind: UploadKind.MULTIPART,
            partSize: BigInt(partSize),
            partChecksumAlgorithm: checksums ? ChecksumAlgorithm.CRC32 : ChecksumAlgorithm.UNSPECIFIED,
            requestId: crypto.randomUUID(),
          },
          o,
        ),
      );
      if (Number(upload!.partSize) !== partSize) {
        // Uppy has already cut the file: parts of another size would be refused one by one.
        await call((o) => api.abortUpload({ uploadId: upload!.id, requestId: crypto.randomUUID() }, o));
        throw new FilestoreError(`the broker planned parts of ${upload!.partSize} bytes, Uppy cuts ${partSize}`, {
          code: Code.FailedPrecondition,
          reason: "PART_PLAN_MISMATCH",
          domain: "client",
        });
      }
      fileIds.set(file.id, created!.id);
      sessionTokens.set(upload!.id, upload!.sessionToken);
      // Uppy persists {uploadId, key} (Golden Retriever): the upload id is all the broker needs.
      return { uploadId: upload!.id, key: created!.id };
    },

    async listParts(file: UppyFile<M, B>, { uploadId, key, signal }: { uploadId?: string; key: string; signal?: AbortSignal }): Promise<AwsS3Part[]> {
      const upload = await call((o) => api.getUpload({ uploadId: uploadId! }, o), signal);
      fileIds.set(file.id, key);
      sessionTokens.set(upload.id, upload.sessionToken);
      return upload.uploadedParts.map((part) => ({ PartNumber: part.partNumber, Size: Number(part.size), ETag: part.etag }));
    },

    async signPart(_file: UppyFile<M, B>, { uploadId, partNumber, body, signal }: { uploadId: string; key: string; partNumber: number; body: Blob; signal?: AbortSignal }) {
      const partCrc32: Record<number, string> = {};
      if (checksums) {
        const digest = await digestOfRange("crc32", body, 0, body.size, signal);
        digestsOf(uploadId).set(partNumber, digest);
        partCrc32[partNumber] = digest;
      }
      const ask = (sessionToken: string) => call((o) => api.signParts({ uploadId, partNumbers: [partNumber], sessionToken, partCrc32 }, o), signal);
      const { answer, token } = await withSessionToken(sessionTokens.get(uploadId) ?? "", ask);
      if (!token) sessionTokens.delete(uploadId);
      return signed(answer.partUrls.find((part) => part.partNumber === partNumber)?.request);
    },

    async completeMultipartUpload(file: UppyFile<M, B>, { uploadId, key, parts, signal }: { uploadId: string; key: string; parts: AwsS3Part[]; signal: AbortSignal }) {
      const partChecksums: Record<number, string> = {};
      if (checksums) {
        // Storage lists no part checksums, so the broker needs them all; parts sent before a reload
        // are hashed again from the restored file.
        const known = digestsOf(uploadId);
        const partSize = planPartSize(file.size ?? 0, wanted);
        for (const { PartNumber } of parts) {
          const start = (PartNumber! - 1) * partSize;
          partChecksums[PartNumber!] =
            known.get(PartNumber!) ?? (await digestOfRange("crc32", file.data as Blob, start, Math.min(file.size ?? 0, start + partSize), signal));
        }
      }
      await call((o) => api.completeUpload({ uploadId, requestId: crypto.randomUUID(), partChecksums }, o), signal);
      partDigests.delete(uploadId);
      sessionTokens.delete(uploadId);
      fileIds.set(file.id, key);
      return {};
    },

    async abortMultipartUpload(_file: UppyFile<M, B>, { uploadId, signal }: { uploadId?: string; key: string; signal?: AbortSignal }) {
      if (!uploadId) return;
      await call((o) => api.abortUpload({ uploadId, requestId: crypto.randomUUID() }, o), signal);
      partDigests.delete(uploadId);
      sessionTokens.delete(uploadId);
    },
  };

  function digestsOf(uploadId: string): Map<number, string> {
    let digests = partDigests.get(uploadId);
    if (!digests) partDigests.set(uploadId, (digests = new Map()));
    return digests;
  }

  return {
    options,
    fileIdOf: (file) => fileIds.get(file.id) ?? (file as { s3Multipart?: { key?: string } }).s3Multipart?.key,
  };
}
