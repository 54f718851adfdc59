#!/usr/bin/env node
// One upload and one download against a running stack, with the Node client:
//
//   FILESTORE_UPLOAD_ADDR=127.0.0.1:50052 FILESTORE_METADATA_ADDR=127.0.0.1:50051 \
//   FILESTORE_DOWNLOAD_ADDR=127.0.0.1:50054 FILESTORE_TOKEN=<jwt> \
//   node clients/node/e2e.mjs --in report.pdf --out copy.pdf --content-type application/pdf
//
// Create, PUT, complete, wait for the file to settle (READY expected), presigned GET; the downloaded
// bytes go to --out. Prints one JSON line describing what happened; exits 1 on any failure. The token
// comes from the environment, not argv, so it does not show in process listings.
//
// TLS: FILESTORE_TLS_CA_FILE (and, for services that demand one, FILESTORE_TLS_CLIENT_CERT_FILE and
// FILESTORE_TLS_CLIENT_KEY_FILE), as a TLS stack's stack.json names them; for storage over HTTPS with
// the same CA, NODE_EXTRA_CA_CERTS=<the CA file>.

import { createHash } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { basename } from "node:path";
import { parseArgs } from "node:util";

import { FilestoreClient, FilestoreError, tlsCredentials } from "./filestore.mjs";

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required but not set`);
  return value;
}

async function main() {
  const { values } = parseArgs({
    options: {
      in: { type: "string" },
      out: { type: "string" },
      name: { type: "string" },
      "content-type": { type: "string", default: "application/octet-stream" },
      "timeout-ms": { type: "string", default: "60000" },
    },
  });
  if (!values.in || !values.out) throw new Error("usage: e2e.mjs --in FILE --out FILE [--content-type T]");
  const client = new FilestoreClient({
    upload: required("FILESTORE_UPLOAD_ADDR"),
    metadata: required("FILESTORE_METADATA_ADDR"),
    download: required("FILESTORE_DOWNLOAD_ADDR"),
    token: required("FILESTORE_TOKEN"),
    credentials: process.env.FILESTORE_TLS_CA_FILE
      ? tlsCredentials({
          caFile: process.env.FILESTORE_TLS_CA_FILE,
          certFile: process.env.FILESTORE_TLS_CLIENT_CERT_FILE,
          keyFile: process.env.FILESTORE_TLS_CLIENT_KEY_FILE,
        })
      : undefined,
  });
  try {
    const body = await readFile(values.in);
    const completed = await client.uploadBytes(body, {
      name: values.name ?? basename(values.in),
      contentType: values["content-type"],
    });
    const settled = await client.waitForStatus(completed.file.id, {
      timeoutMs: Number(values["timeout-ms"]),
    });
    const downloaded = await client.downloadBytes(settled.id);
    await writeFile(values.out, downloaded.body);
    // Errors carry the ErrorInfo reason clients switch on: a file that does not exist (or that this
    // caller may not see) is FILE_NOT_FOUND.
    const missing = await client.getFile("00000000-0000-4000-8000-000000000000").then(
      () => null,
      (error) => error,
    );
    return {
      file_id: settled.id,
      upload_id: completed.upload.id,
      status_after_complete: completed.file.status,
      status: settled.status,
      size: settled.size,
      sha256: settled.sha256,
      uploaded_sha256: createHash("sha256").update(body).digest("hex"),
      downloaded_sha256: createHash("sha256").update(downloaded.body).digest("hex"),
      downloaded_bytes: downloaded.body.byteLength,
      content_type: downloaded.contentType,
      missing_file_error: missing && { code: missing.codeName, reason: missing.reason, domain: missing.domain },
    };
  } finally {
    client.close();
  }
}

main().then(
  (result) => {
    process.stdout.write(`${JSON.stringify(result)}\n`);
  },
  (error) => {
    const detail =
      error instanceof FilestoreError
        ? { error: error.message, code: error.codeName, reason: error.reason, domain: error.domain }
        : { error: String(error?.message ?? error) };
    process.stderr.write(`${JSON.stringify(detail)}\n`);
    process.exitCode = 1;
  },
);
