// File transfers as Guacamole file streams: what the session sends becomes a download,
// files dropped on the display are uploaded. Each transfer shows in the file panel.
// ztproxy enforces the transfer policy whatever the page does; the page only hides what it
// knows to be refused.

import Guacamole from "./guac";

/** The file panel: one row per transfer. */
export class FilePanel {
  private readonly element: HTMLElement;

  constructor(element: HTMLElement) {
    this.element = element;
  }

  /** Adds a row; returns a function that updates its text. */
  row(name: string): (text: string, failed?: boolean) => void {
    const row = document.createElement("div");
    row.className = "transfer";
    const label = document.createElement("span");
    label.textContent = name;
    const state = document.createElement("span");
    state.className = "state";
    row.append(label, state);
    this.element.append(row);
    this.element.hidden = false;
    return (text, failed = false) => {
      state.textContent = text;
      row.classList.toggle("failed", failed);
    };
  }
}

function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** Saves a file the session sends. */
export function download(panel: FilePanel, stream: Guacamole.InputStream, mimetype: string, name: string): void {
  const update = panel.row(name);
  const reader = new Guacamole.BlobReader(stream, mimetype);
  reader.onprogress = (length: number) => update(`${size(length)} received`);
  reader.onend = () => {
    const url = URL.createObjectURL(reader.getBlob());
    const link = document.createElement("a");
    link.href = url;
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    window.setTimeout(() => URL.revokeObjectURL(url), 60_000);
    update(`${size(reader.getLength())} saved`);
  };
  // The stream was opened by the session: acknowledge it so data starts to flow.
  stream.sendAck("OK", Guacamole.Status.Code.SUCCESS);
}

/** Uploads `file` as a Guacamole file stream. */
export function upload(panel: FilePanel, client: Guacamole.Client, file: File): void {
  const update = panel.row(file.name);
  const stream = client.createFileStream(file.type || "application/octet-stream", file.name);
  const writer = new Guacamole.BlobWriter(stream);
  // Data goes only once the session has accepted the stream (guacd's "OK (STREAM BEGIN)"):
  // guacamole-common-js 1.5.0's BlobWriter reads the next chunk on every ack with one
  // FileReader, so the stream's own ack arriving while the first chunk is in flight makes it
  // read twice at once, and the upload stalls for good.
  let started = false;
  writer.onack = (status: Guacamole.Status) => {
    if (status.isError()) {
      update(`refused: ${status.message || "upload not allowed"}`, true);
    } else if (!started) {
      started = true;
      writer.sendBlob(file);
    }
  };
  writer.onprogress = (_blob: Blob, offset: number) => update(`${size(offset)} of ${size(file.size)} sent`);
  writer.oncomplete = () => {
    writer.sendEnd();
    update(`${size(file.size)} sent`);
  };
  writer.onerror = (_blob: Blob, _offset: number, error: { name: string }) =>
    update(`failed: ${error.name}`, true);
  update("waiting for the session to accept it");
}

/** Uploads whatever is dropped on `target`. */
export function acceptDrops(target: HTMLElement, panel: FilePanel, client: Guacamole.Client): void {
  target.addEventListener("dragover", (event) => {
    event.preventDefault();
    if (event.dataTransfer) event.dataTransfer.dropEffect = "copy";
  });
  target.addEventListener("drop", (event) => {
    event.preventDefault();
    for (const file of Array.from(event.dataTransfer?.files ?? [])) upload(panel, client, file);
  });
}
