// The Uppy adapter's test page: Uppy's own Core, Dashboard, AwsS3 and Golden Retriever, with
// clients/uppy as the S3 plugin's signing backend, driven by the tests through window.uppyHarness.
import "@uppy/core/css/style.min.css";
import "@uppy/dashboard/css/style.min.css";
import AwsS3 from "@uppy/aws-s3";
import Uppy from "@uppy/core";
import Dashboard from "@uppy/dashboard";
import GoldenRetriever from "@uppy/golden-retriever";

import { filestoreUppy } from "../../../clients/uppy/src/index.ts";
import { createFilestore, FileStatus } from "../../../clients/web/src/index.ts";

window.uppyHarness = {
  /** Mounts Uppy on the page, signing through the face at `baseUrl` with `token`. After a reload the
   * same call restores the files and uploads Golden Retriever kept; `restored` settles then. */
  start(baseUrl, token, adapterOptions, limit = 4) {
    this.fs = createFilestore({ baseUrl, token });
    this.adapter = filestoreUppy(this.fs, adapterOptions);
    // The part numbers storage listed when the S3 plugin resumed an upload (GetUpload's uploaded_parts).
    const listParts = this.adapter.options.listParts;
    this.adapter.options.listParts = async (...args) => {
      const parts = await listParts(...args);
      this.listed = parts.map((part) => part.PartNumber).sort((a, b) => a - b);
      return parts;
    };
    // Settles once the plugin has asked the adapter to abort an upload (a file removed mid-upload).
    const abortMultipartUpload = this.adapter.options.abortMultipartUpload;
    this.aborted = new Promise((resolve) => {
      this.adapter.options.abortMultipartUpload = async (...args) => {
        await abortMultipartUpload(...args);
        resolve(args[1].uploadId);
      };
    });
    this.partsUploaded = [];
    this.restored = new Promise((resolve) => {
      this.uppy = new Uppy({ autoProceed: false })
        .use(Dashboard, { inline: true, target: "#dashboard", hideUploadButton: false })
        // Golden Retriever keeps files up to 10 MiB in IndexedDB unless told otherwise (an option its
        // type definitions leave out): enough here for the multipart test files.
        .use(GoldenRetriever, { indexedDB: { maxFileSize: 128 * 1024 * 1024, maxTotalSize: 512 * 1024 * 1024 } })
        .use(AwsS3, { ...this.adapter.options, limit });
      this.uppy.on("restored", () => resolve(true));
    });
    this.uppy.on("s3-multipart:part-uploaded", (_file, part) => {
      this.partsUploaded.push(part.PartNumber);
      if (this.partsUploaded.length === this.pauseAfterParts) this.onPartsReached?.();
    });
  },

  /** Adds the file the test server holds at `path` to Uppy, as a page's file picker would. */
  async addFile(path, name) {
    const blob = await (await fetch(path)).blob();
    return this.uppy.addFile({ name, type: "application/octet-stream", data: blob, source: "test" });
  },

  /** Answers a promise that settles once `count` parts are uploaded, pausing file `fileId` in that
   * part's event first when `pause` (not later, however fast storage is). */
  whenParts(count, fileId, pause) {
    this.pauseAfterParts = count;
    return new Promise((resolve) => {
      this.onPartsReached = () => {
        if (pause) this.uppy.pauseResume(fileId);
        resolve(this.partsUploaded.length);
      };
    });
  },

  /** Uploads the files added (or restored); answers each file's outcome. */
  async upload() {
    const result = await this.uppy.upload();
    return this.outcome(result);
  },

  /** Confirms Golden Retriever's restored uploads (the Dashboard's button) and waits for them. */
  async resumeRestored() {
    const done = new Promise((resolve) => this.uppy.once("complete", resolve));
    this.uppy.emit("restore-confirmed");
    return this.outcome(await done);
  },

  outcome(result) {
    return {
      successful: (result?.successful ?? []).map((file) => ({ name: file.name, fileId: this.adapter.fileIdOf(file) })),
      failed: (result?.failed ?? []).map((file) => ({ name: file.name, error: String(file.error) })),
    };
  },

  /** Waits for the file to settle; answers its status and the SHA-256 of what its download URL serves. */
  async settle(fileId) {
    const file = await this.fs.watchFile(fileId, { intervalMs: 200 });
    const status = FileStatus[file.status];
    if (status !== "READY") return { status };
    const { url } = await this.fs.downloadUrl(fileId);
    const bytes = await (await fetch(url)).arrayBuffer();
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    return { status, sha256: Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("") };
  },
};
document.getElementById("state").textContent = "ready";
