// Checksums of byte ranges of a Blob with hash-wasm (WASM, incremental): a part is read in chunks so
// that hashing a 5 GiB part never holds more than one chunk in memory.
import { createCRC32, createSHA256, type IHasher } from "hash-wasm";

import { abortedError } from "./errors.js";

export type ChecksumName = "crc32" | "sha256";

const CHUNK_BYTES = 4 * 1024 * 1024;

function hasherFor(algorithm: ChecksumName): Promise<IHasher> {
  // CRC32 is IEEE 802.3 (hash-wasm's default polynomial), as S3's x-amz-checksum-crc32.
  return algorithm === "crc32" ? createCRC32() : createSHA256();
}

/** Lower-case hex digest (`crc32`: 8 digits) of `blob[start, end)`. */
export async function digestOfRange(
  algorithm: ChecksumName,
  blob: Blob,
  start: number,
  end: number,
  signal?: AbortSignal,
): Promise<string> {
  const hasher = await hasherFor(algorithm);
  hasher.init();
  for (let position = start; position < end; position += CHUNK_BYTES) {
    if (signal?.aborted) throw abortedError();
    const chunk = await blob.slice(position, Math.min(end, position + CHUNK_BYTES)).arrayBuffer();
    hasher.update(new Uint8Array(chunk));
  }
  return hasher.digest("hex");
}
