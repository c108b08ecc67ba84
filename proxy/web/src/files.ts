// File transfers: what the session sends as a `file` stream becomes a download; files
// dropped on the display are uploaded as `file` streams (into the session's upload
// directory); a session that offers a filesystem object (SFTP) gets a browsable panel whose
// files download on a click and into whose shown directory files can be dropped (`put`).
// Each transfer shows in the panel with the session's verdict in words. ztproxy enforces the
// transfer policy whatever the page does; the page shows what ztproxy answers.

import Guacamole from "./guac";

/** Raw bytes per blob (guacamole-common-js's own size: 8,064 characters of base64, inside
 * the 8,192-character element limit guacd and ztproxy enforce). */
const BLOB = 6048;
/** Bytes sent ahead of the session's acknowledgements. guacamole-common-js's BlobWriter
 * waits for an ack after every blob: one blob per round trip. */
const WINDOW = 2 * 1024 * 1024;
/** Bytes read from the file at a time. */
const READ = 64 * BLOB;
/** How long a listing or download may take to start before the page says so (ztproxy,
 * like guacd, answers a refused `get` with nothing). */
const GET_PATIENCE_MS = 10_000;
/** ztproxy's acknowledgement of a finished upload. guacamole-common-js frees a stream's
 * index when the page ends it, so this ack may land on the next stream with that index: it
 * must never be taken for that stream's start. */
const END_ACK = "OK (STREAM END)";

/** The file panel: a browser for the session's filesystem, and one row per transfer. */
export class FilePanel {
  private readonly element: HTMLElement;
  private readonly transfers: HTMLElement;
  private readonly browser: HTMLElement;

  constructor(element: HTMLElement) {
    this.element = element;
    this.browser = document.createElement("div");
    this.browser.className = "browser";
    this.browser.hidden = true;
    this.transfers = document.createElement("div");
    this.transfers.className = "transfers";
    element.append(this.browser, this.transfers);
  }

  /** Adds a row; returns a function that updates its text. */
  row(name: string): (text: string, failed?: boolean) => void {
    const row = document.createElement("div");
    row.className = "transfer";
    row.dataset.name = name;
    const label = document.createElement("span");
    label.textContent = name;
    const state = document.createElement("span");
    state.className = "state";
    row.append(label, state);
    this.transfers.append(row);
    this.element.hidden = false;
    return (text, failed = false) => {
      state.textContent = text;
      row.classList.toggle("failed", failed);
      row.dataset.state = failed ? "failed" : text;
    };
  }

  /** The browser's element, shown. */
  browserElement(): HTMLElement {
    this.browser.hidden = false;
    this.element.hidden = false;
    return this.browser;
  }
}

function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** Saves what `stream` carries as `name`, shown in a new row of `panel` (or in the row
 * `update` writes to). The stream's first ack is the page's. */
export function download(
  panel: FilePanel,
  stream: Guacamole.InputStream,
  mimetype: string,
  name: string,
  update: (text: string, failed?: boolean) => void = panel.row(name),
): void {
  const reader = new Guacamole.BlobReader(stream, mimetype);
  reader.onprogress = () => update(`${size(reader.getLength())} received`);
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

function base64(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

/** Sends `file` on `stream` once the session accepts it, at most [`WINDOW`] bytes ahead of
 * its acks; shows progress and the session's verdict. */
function send(stream: Guacamole.OutputStream, file: File, update: (text: string, failed?: boolean) => void): void {
  let started = false;
  let failed = false;
  let offset = 0;
  let acked = 0;
  let reading = false;
  const unacked: number[] = [];
  let unackedBytes = 0;
  const pump = async (): Promise<void> => {
    if (reading || failed) return;
    reading = true;
    try {
      while (!failed && offset < file.size && unackedBytes < WINDOW) {
        const end = Math.min(file.size, offset + READ);
        const bytes = new Uint8Array(await file.slice(offset, end).arrayBuffer());
        for (let at = 0; at < bytes.length && !failed; at += BLOB) {
          const piece = bytes.subarray(at, at + BLOB);
          stream.sendBlob(base64(piece));
          unacked.push(piece.length);
          unackedBytes += piece.length;
        }
        offset = end;
      }
      if (!failed && offset >= file.size && unacked.length === 0) {
        stream.sendEnd();
        update(`${size(file.size)} sent`);
        failed = true; // nothing more to do
      }
    } catch (error) {
      failed = true;
      update(`failed: ${(error as Error).name}`, true);
    } finally {
      reading = false;
    }
  };
  stream.onack = (status: Guacamole.Status) => {
    if (failed) return;
    if (status.isError()) {
      failed = true;
      update(`refused: ${status.message || "upload not allowed"}`, true);
      return;
    }
    if (!started) {
      if (status.message === END_ACK) return;
      started = true;
    } else {
      const n = unacked.shift() ?? 0;
      unackedBytes -= n;
      acked += n;
      update(`${size(acked)} of ${size(file.size)} sent`);
    }
    void pump();
  };
  update("waiting for the session to accept it");
}

/** Uploads `file` as a Guacamole `file` stream (into the session's upload directory). */
export function upload(panel: FilePanel, client: Guacamole.Client, file: File): void {
  const update = panel.row(file.name);
  send(client.createFileStream(file.type || "application/octet-stream", file.name), file, update);
}

/** Uploads whatever is dropped on `target` through `put` (a callback deciding where). */
function onDrop(target: HTMLElement, put: (file: File) => void): void {
  target.addEventListener("dragover", (event) => {
    event.preventDefault();
    event.stopPropagation();
    if (event.dataTransfer) event.dataTransfer.dropEffect = "copy";
  });
  target.addEventListener("drop", (event) => {
    event.preventDefault();
    event.stopPropagation();
    for (const file of Array.from(event.dataTransfer?.files ?? [])) put(file);
  });
}

/** Uploads whatever is dropped on `target` as `file` streams. */
export function acceptDrops(target: HTMLElement, panel: FilePanel, client: Guacamole.Client): void {
  onDrop(target, (file) => upload(panel, client, file));
}

/** The session's filesystem (SFTP), browsable in the panel. */
export class FileBrowser {
  private readonly object: Guacamole.Object;
  private readonly panel: FilePanel;
  private readonly element: HTMLElement;
  private readonly downloads: boolean;
  private path = "/";

  constructor(object: Guacamole.Object, name: string, panel: FilePanel, downloads: boolean) {
    this.object = object;
    this.panel = panel;
    this.downloads = downloads;
    this.element = panel.browserElement();
    this.element.dataset.root = name;
    // Files dropped on the panel go into the directory it shows.
    onDrop(this.element, (file) => this.put(file));
    this.open("/");
  }

  /** Shows the directory `path`. */
  open(path: string): void {
    this.path = path;
    this.element.dataset.state = "loading";
    const timer = window.setTimeout(() => this.say(`${path}: no answer from the session`), GET_PATIENCE_MS);
    this.object.requestInputStream(path, (stream: Guacamole.InputStream, mimetype: string) => {
      window.clearTimeout(timer);
      if (mimetype !== Guacamole.Object.STREAM_INDEX_MIMETYPE) {
        stream.sendAck("Not a directory", Guacamole.Status.Code.CLIENT_BAD_TYPE);
        return;
      }
      stream.sendAck("Ready", Guacamole.Status.Code.SUCCESS);
      const reader = new Guacamole.JSONReader(stream);
      reader.onprogress = () => stream.sendAck("Received", Guacamole.Status.Code.SUCCESS);
      reader.onend = () => {
        try {
          this.render(path, reader.getJSON() as Record<string, string>);
        } catch {
          this.say(`${path}: the listing could not be read`);
        }
      };
    });
  }

  private say(text: string): void {
    this.element.dataset.state = "error";
    const note = document.createElement("div");
    note.className = "note";
    note.textContent = text;
    this.element.replaceChildren(note);
  }

  private render(path: string, entries: Record<string, string>): void {
    const rows: HTMLElement[] = [];
    const heading = document.createElement("div");
    heading.className = "path";
    heading.textContent = path;
    rows.push(heading);
    if (path !== "/") {
      const up = document.createElement("button");
      up.className = "entry directory";
      up.textContent = "..";
      up.dataset.path = path.replace(/\/[^/]*$/, "") || "/";
      up.onclick = () => this.open(up.dataset.path ?? "/");
      rows.push(up);
    }
    const names = Object.keys(entries).sort();
    for (const entry of names) {
      const directory = entries[entry] === Guacamole.Object.STREAM_INDEX_MIMETYPE;
      const button = document.createElement("button");
      button.className = directory ? "entry directory" : "entry file";
      button.dataset.path = entry;
      button.textContent = entry.slice(entry.lastIndexOf("/") + 1) + (directory ? "/" : "");
      button.onclick = () => (directory ? this.open(entry) : this.fetch(entry));
      rows.push(button);
    }
    this.element.replaceChildren(...rows);
    this.element.dataset.state = "ready";
    this.element.dataset.path = path;
  }

  /** Downloads the file at `path`. */
  private fetch(path: string): void {
    const name = path.slice(path.lastIndexOf("/") + 1);
    if (!this.downloads) {
      this.panel.row(name)("refused: downloads are disabled for this session", true);
      return;
    }
    const update = this.panel.row(name);
    update("requested");
    const timer = window.setTimeout(() => update("refused: the session did not send it", true), GET_PATIENCE_MS);
    this.object.requestInputStream(path, (stream: Guacamole.InputStream, mimetype: string) => {
      window.clearTimeout(timer);
      update("receiving");
      download(this.panel, stream, mimetype, name, update);
    });
  }

  /** Uploads `file` into the directory shown, then shows it again. */
  private put(file: File): void {
    const target = `${this.path === "/" ? "" : this.path}/${file.name}`;
    const update = this.panel.row(file.name);
    const stream = this.object.createOutputStream(file.type || "application/octet-stream", target);
    send(stream, file, (text, failed) => {
      update(text, failed);
      if (!failed && text.endsWith(" sent") && !text.includes(" of ")) {
        window.setTimeout(() => this.open(this.path), 250);
      }
    });
  }
}
