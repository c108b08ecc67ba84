// The session page: connect, show the display, carry input, clipboard and files, and say
// how the session ended.
//
// The page holds nothing secret. It asks the local helper for the session's (non-secret)
// settings, offers a peer connection through it, and from then on talks only to ztproxy:
// the Guacamole conversation on one data channel, ztproxy's end notice on the control
// channel.

import Guacamole from "./guac";
import { acceptDrops, download, FileBrowser, FilePanel } from "./files";
import { config, negotiate, type SessionConfig } from "./signalling";
import { endReason, statusText } from "./status";
import { DataChannelTunnel, type Handshake } from "./tunnel";

/** Label ztproxy gives the channel that carries its end notice. */
const CONTROL_CHANNEL = "ztproxy-control";
/** How long the page waits after the window stops changing size before resizing. */
const RESIZE_DEBOUNCE_MS = 150;
/** How long the peer connection may take to connect. */
const CONNECT_TIMEOUT_MS = 30_000;

type PageState = "connecting" | "connected" | "ended";

const statusElement = element("status");
const displayHost = element("display");
const addressForm = element("address") as HTMLFormElement;
const addressInput = element("url") as HTMLInputElement;
const panel = new FilePanel(element("files"));
let state: PageState = "connecting";

function element(id: string): HTMLElement {
  const found = document.getElementById(id);
  if (!found) throw new Error(`the page has no #${id}`);
  return found;
}

/** Shows the page's state; the first ending's words stay. */
function show(next: PageState, text: string): void {
  if (state === "ended") return;
  state = next;
  document.body.dataset.state = next;
  statusElement.textContent = text;
  statusElement.hidden = next === "connected";
}

/** The browser's image types, best first. */
function imageTypes(): string[] {
  const types = ["image/png", "image/jpeg"];
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 1;
  if (canvas.toDataURL("image/webp").startsWith("data:image/webp")) types.push("image/webp");
  return types;
}

/** The display's size in CSS pixels: the window, less the address bar when there is one. */
function viewport(): { width: number; height: number } {
  return { width: displayHost.clientWidth || window.innerWidth, height: displayHost.clientHeight || window.innerHeight };
}

function handshake(user: string): Handshake {
  const density = window.devicePixelRatio || 1;
  const { width, height } = viewport();
  return {
    width: Math.max(1, Math.floor(width * density)),
    height: Math.max(1, Math.floor(height * density)),
    dpi: Math.round(96 * density),
    image: imageTypes(),
    audio: Guacamole.AudioPlayer.getSupportedTypes(),
    timezone: Intl.DateTimeFormat().resolvedOptions().timeZone ?? null,
    name: user,
  };
}

/** Keeps input in order around clipboard reads (a paste chord waits for the clipboard). */
class InputQueue {
  private tail: Promise<void> = Promise.resolve();

  push(step: () => void | Promise<void>): void {
    this.tail = this.tail.then(step).catch(() => {});
  }
}

/** Sends the browser's clipboard text to the session if it changed. */
async function sendClipboard(client: Guacamole.Client, last: { text: string | null }): Promise<void> {
  let text: string;
  try {
    text = await navigator.clipboard.readText();
  } catch {
    return; // Not allowed, or the page has no focus: the session keeps its clipboard.
  }
  if (text === last.text) return;
  last.text = text;
  const stream = client.createClipboardStream("text/plain");
  const writer = new Guacamole.StringWriter(stream);
  writer.sendText(text);
  writer.sendEnd();
}

function isPasteChord(keysym: number, pressed: Set<number>): boolean {
  const ctrl = pressed.has(0xffe3) || pressed.has(0xffe4);
  const shift = pressed.has(0xffe1) || pressed.has(0xffe2);
  const v = keysym === 0x56 || keysym === 0x76;
  return (ctrl && v) || (shift && keysym === 0xff63 /* Insert */);
}

function attachInput(client: Guacamole.Client, settings: SessionConfig): void {
  const display = client.getDisplay();
  const queue = new InputQueue();
  const lastClipboard = { text: null as string | null };
  const pressed = new Set<number>();

  const keyboard = new Guacamole.Keyboard(document);
  keyboard.onkeydown = (keysym: number) => {
    // Keys typed into the address bar are the page's own.
    if (state !== "connected" || document.activeElement === addressInput) return true;
    if (settings.paste && isPasteChord(keysym, pressed)) queue.push(() => sendClipboard(client, lastClipboard));
    pressed.add(keysym);
    queue.push(() => client.sendKeyEvent(1, keysym));
    return true;
  };
  keyboard.onkeyup = (keysym: number) => {
    pressed.delete(keysym);
    if (state !== "connected" || document.activeElement === addressInput) return;
    queue.push(() => client.sendKeyEvent(0, keysym));
  };
  window.addEventListener("blur", () => keyboard.reset());
  if (settings.paste) window.addEventListener("focus", () => queue.push(() => sendClipboard(client, lastClipboard)));

  const target = display.getElement();
  const send = (event: Guacamole.Mouse.Event) => {
    if (state !== "connected") return;
    const mouseState = event.state;
    // A middle click pastes in terminals: the session gets the clipboard first.
    if (settings.paste && mouseState.middle) queue.push(() => sendClipboard(client, lastClipboard));
    queue.push(() => client.sendMouseState(mouseState, true));
  };
  const mouse = new Guacamole.Mouse(target);
  mouse.onEach(["mousedown", "mousemove", "mouseup"], send as (event: Guacamole.Event) => void);
  const touch = new Guacamole.Mouse.Touchscreen(target);
  touch.onEach(["mousedown", "mousemove", "mouseup"], send as (event: Guacamole.Event) => void);

  // The remote cursor becomes the element's CSS cursor; the software cursor only if that fails.
  display.oncursor = (canvas: HTMLCanvasElement, x: number, y: number) => {
    display.showCursor(!mouse.setCursor(canvas, x, y));
  };
}

function attachClipboard(client: Guacamole.Client, settings: SessionConfig): void {
  client.onclipboard = (stream: Guacamole.InputStream, mimetype: string) => {
    if (!settings.copy || !mimetype.startsWith("text/")) {
      stream.sendAck("Ignored", Guacamole.Status.Code.CLIENT_FORBIDDEN);
      return;
    }
    const reader = new Guacamole.StringReader(stream);
    let text = "";
    reader.ontext = (chunk: string) => {
      text += chunk;
    };
    reader.onend = () => {
      navigator.clipboard.writeText(text).catch(() => {
        // The browser refused (no focus or no permission); nothing else to do.
      });
    };
  };
}

function attachDisplay(client: Guacamole.Client): void {
  const display = client.getDisplay();
  displayHost.append(display.getElement());
  const fit = () => {
    const width = display.getWidth();
    const height = display.getHeight();
    if (width > 0 && height > 0) {
      const room = viewport();
      display.scale(Math.min(room.width / width, room.height / height));
    }
  };
  display.onresize = fit;
  let timer: number | undefined;
  window.addEventListener("resize", () => {
    fit();
    window.clearTimeout(timer);
    timer = window.setTimeout(() => {
      if (state !== "connected") return;
      const density = window.devicePixelRatio || 1;
      const room = viewport();
      client.sendSize(Math.floor(room.width * density), Math.floor(room.height * density));
    }, RESIZE_DEBOUNCE_MS);
  });
}

/**
 * The remote browser's address bar: it shows each page's URL (ztproxy's `url` pipe), and a
 * URL typed into it goes to ztproxy as a `url` pipe, which refuses it unless the session has
 * `allow-url-manipulation` (and the URL passes the session's URL policy).
 */
function attachAddressBar(client: Guacamole.Client): void {
  document.body.classList.add("browser");
  addressForm.hidden = false;
  client.onpipe = (stream: Guacamole.InputStream, mimetype: string, name: string) => {
    if (name !== "url" || !mimetype.startsWith("text/")) {
      stream.sendAck("Ignored", Guacamole.Status.Code.CLIENT_BAD_TYPE);
      return;
    }
    const reader = new Guacamole.StringReader(stream);
    let url = "";
    reader.ontext = (chunk: string) => {
      url += chunk;
    };
    reader.onend = () => {
      // What the user is typing stays.
      if (document.activeElement !== addressInput) addressInput.value = url;
      addressForm.classList.remove("refused");
      addressForm.title = "";
    };
  };
  addressForm.addEventListener("submit", (event: SubmitEvent) => {
    event.preventDefault();
    const url = addressInput.value.trim();
    if (!url) return;
    const stream = client.createPipeStream("text/plain", "url");
    stream.onack = (status: Guacamole.Status) => {
      if (status.isError()) {
        addressForm.classList.add("refused");
        addressForm.title = status.message || "Refused";
      }
    };
    const writer = new Guacamole.StringWriter(stream);
    writer.sendText(url);
    writer.sendEnd();
    addressInput.blur();
  });
}

async function main(): Promise<void> {
  show("connecting", "Connecting…");
  // The settings and the peer connection are fetched and negotiated at once: the browser's
  // WebRTC stack takes about as long to start as the page's first request.
  const pc = new RTCPeerConnection({ iceServers: [] });
  const control = pc.createDataChannel(CONTROL_CHANNEL, { ordered: true });
  const channel = pc.createDataChannel("guacamole", { ordered: true, protocol: "ztproxy-tunnel/1" });
  channel.addEventListener("open", () => performance.mark("zt-channel-open"));
  const negotiation = negotiate(pc);
  // Reported below, once the page can show it.
  negotiation.catch(() => {});
  const settings = await config();
  performance.mark("zt-config");
  document.title = `${settings.user ? settings.user + " — " : ""}${settings.target} (${settings.protocol})`;

  let ended: string | null = null;
  control.onmessage = (event: MessageEvent) => {
    if (typeof event.data !== "string") return;
    try {
      const notice = JSON.parse(event.data) as { type?: string; reason?: string };
      if (notice.type === "session_ended" && notice.reason) ended = endReason(notice.reason);
    } catch {
      // Not a notice.
    }
  };
  const connectTimer = window.setTimeout(() => {
    if (state === "connecting") show("ended", "ztproxy could not be reached.");
  }, CONNECT_TIMEOUT_MS);
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === "failed" || pc.connectionState === "closed") {
      show("ended", ended ?? "The connection to ztproxy was lost.");
    }
  };

  const browser = settings.protocol === "http";
  if (browser) {
    document.body.classList.add("browser");
    addressForm.hidden = false;
  }
  if (settings.viewer) {
    // A viewer watches another user's session: marked as such, and read-only unless the
    // gateway let it type (ztproxy drops a read-only viewer's input whatever the page does).
    document.body.classList.add("viewer");
    const badge = document.getElementById("badge") as HTMLElement;
    badge.textContent = settings.readOnly ? "Viewing — read-only" : "Viewing — input shared";
    badge.hidden = false;
    document.title = `Viewing ${settings.target} (${settings.protocol})`;
  }
  const tunnel = new DataChannelTunnel(channel, handshake(settings.user));
  const client = new Guacamole.Client(tunnel);
  attachDisplay(client);
  if (!(settings.viewer && settings.readOnly)) attachInput(client, settings);
  attachClipboard(client, settings);
  if (browser) attachAddressBar(client);
  client.onfile = (stream: Guacamole.InputStream, mimetype: string, name: string) => {
    if (settings.download) download(panel, stream, mimetype, name);
    else stream.sendAck("Downloads are not allowed", Guacamole.Status.Code.CLIENT_FORBIDDEN);
  };
  // ztproxy answers every upload, allowed or not; the panel shows its verdict.
  acceptDrops(displayHost, panel, client);
  // A session with SFTP offers its filesystem: browse it, download, drop files into it.
  client.onfilesystem = (object: Guacamole.Object, name: string) => {
    new FileBrowser(object, name, panel, settings.download);
  };

  // Each drawn frame leaves a performance mark (for benchmarks: keystroke to screen), and
  // the first one its time since the page started loading.
  let marks = 0;
  client.onsync = () => {
    // Bounded: a long session must not keep every frame's mark.
    if (++marks % 256 === 0) performance.clearMarks("zt-frame");
    performance.mark("zt-frame");
    if (document.body.dataset.firstFrame === undefined) {
      document.body.dataset.firstFrame = performance.now().toFixed(1);
    }
  };
  let errorText: string | null = null;
  client.onerror = (status: Guacamole.Status) => {
    errorText = statusText(status);
    show("ended", errorText);
  };
  client.onstatechange = (clientState: number) => {
    if (clientState === Guacamole.Client.State.CONNECTED) {
      window.clearTimeout(connectTimer);
      show("connected", "Connected");
    } else if (clientState === Guacamole.Client.State.DISCONNECTED) {
      show("ended", errorText ?? ended ?? "The session ended.");
    }
  };
  control.onclose = () => {
    // ztproxy closes the control channel after its notice; the Guacamole error usually says
    // it first, in the session's own words.
    window.setTimeout(() => show("ended", errorText ?? ended ?? "The session ended."), 250);
  };
  window.addEventListener("beforeunload", () => {
    client.disconnect();
    pc.close();
  });

  tunnel.onuuid = () => performance.mark("zt-ready");
  await negotiation;
  performance.mark("zt-answer");
  client.connect();
}

main().catch((error: unknown) => {
  show("ended", `The session could not start: ${error instanceof Error ? error.message : String(error)}`);
});
