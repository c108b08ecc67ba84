// A Guacamole.Tunnel over an RTCDataChannel.
//
// ztproxy speaks the Guacamole protocol on one reliable, ordered data channel: instructions
// (`LEN.VALUE,LEN.VALUE;`, lengths in Unicode code points) may span messages and a message
// may hold several. guacd's clients leave the handshake to a server-side tunnel (the web
// application's); here the tunnel performs the client's half itself — `select`, then `size`,
// `audio`, `video`, `image`, `timezone`, `name` and `connect` answering ztproxy's `args` —
// and opens when ztproxy sends `ready`. After that it hands every instruction to
// Guacamole.Client.

import Guacamole from "./guac";
import { encode, InstructionParser } from "./parser";

/** What the client tells ztproxy during the handshake. */
export interface Handshake {
  /** Display width and height in pixels, and resolution in DPI. */
  width: number;
  height: number;
  dpi: number;
  /** Image mimetypes the browser can decode. */
  image: string[];
  /** Audio mimetypes the browser can play. */
  audio: string[];
  /** IANA time zone, if the browser knows it. */
  timezone: string | null;
  /** The user's name, for ztproxy's logs (the gateway's is authoritative). */
  name: string;
}

/** How long the handshake may take before the tunnel gives up. */
export const HANDSHAKE_TIMEOUT_MS = 30_000;

const State = Guacamole.Tunnel.State;
const Code = Guacamole.Status.Code;

/** A Guacamole.Tunnel whose transport is an RTCDataChannel to ztproxy. */
export class DataChannelTunnel extends Guacamole.Tunnel {
  private readonly channel: RTCDataChannel;
  private readonly handshake: Handshake;
  private readonly parser = new InstructionParser();
  private readonly decoder = new TextDecoder("utf-8", { fatal: true });
  private handshakeTimer: number | undefined;
  private ready = false;

  constructor(channel: RTCDataChannel, handshake: Handshake) {
    super();
    this.channel = channel;
    this.handshake = handshake;
    this.channel.binaryType = "arraybuffer";
    this.parser.oninstruction = (opcode, args) => this.instruction(opcode, args);
    // Guacamole.Tunnel's constructor sets these on the instance, so they are replaced here
    // rather than overridden on the prototype.
    this.connect = () => this.start();
    this.sendMessage = (...elements: unknown[]) => {
      if (this.isConnected() && elements.length > 0) this.send(elements);
    };
    this.disconnect = () => this.close(new Guacamole.Status(Code.SUCCESS, "Manually closed."));
  }

  private start(): void {
    this.changeState(State.CONNECTING);
    this.handshakeTimer = window.setTimeout(
      () => this.fail(Code.UPSTREAM_TIMEOUT, "ztproxy did not complete the handshake"),
      HANDSHAKE_TIMEOUT_MS,
    );
    this.channel.onmessage = (event: MessageEvent) => this.message(event.data);
    this.channel.onclose = () => this.fail(Code.UPSTREAM_UNAVAILABLE, "The connection to ztproxy was closed");
    this.channel.onerror = () => this.fail(Code.UPSTREAM_ERROR, "The connection to ztproxy failed");
    const start = () => this.send(["select", "ztproxy"]);
    if (this.channel.readyState === "open") start();
    else this.channel.onopen = start;
  }

  private changeState(state: Guacamole.Tunnel.State): void {
    if (state === this.state) return;
    this.state = state;
    this.onstatechange?.(state);
  }

  private send(elements: readonly unknown[]): void {
    if (this.channel.readyState === "open") this.channel.send(encode(elements));
  }

  private message(data: unknown): void {
    try {
      if (typeof data === "string") this.parser.receive(data);
      else if (data instanceof ArrayBuffer) this.parser.receive(this.decoder.decode(data, { stream: true }));
    } catch (error) {
      this.fail(Code.SERVER_ERROR, `ztproxy sent a malformed instruction (${String(error)})`);
    }
  }

  private instruction(opcode: string, args: string[]): void {
    if (this.ready) {
      this.oninstruction?.(opcode, args);
      return;
    }
    switch (opcode) {
      case "args":
        this.answerArgs(args);
        break;
      case "ready":
        this.ready = true;
        window.clearTimeout(this.handshakeTimer);
        this.uuid = args[0] ?? "";
        this.onuuid?.(this.uuid);
        this.changeState(State.OPEN);
        break;
      case "error": {
        const code = Number(args[1]);
        this.fail(Number.isInteger(code) ? (code as Guacamole.Status.Code) : Code.SERVER_ERROR, args[0] ?? "");
        break;
      }
      case "disconnect":
        this.fail(Code.SERVER_ERROR, "ztproxy ended the connection during the handshake");
        break;
      default:
        // guacd may send instructions before `ready` (`cursor`, `size`): keep them for the
        // client, which is listening already.
        this.oninstruction?.(opcode, args);
    }
  }

  private answerArgs(args: string[]): void {
    const h = this.handshake;
    const [version, ...names] = args;
    this.send(["size", Math.round(h.width), Math.round(h.height), Math.round(h.dpi)]);
    this.send(["audio", ...h.audio]);
    this.send(["video"]);
    this.send(["image", ...h.image]);
    if (h.timezone) this.send(["timezone", h.timezone]);
    this.send(["name", h.name]);
    // Connection parameters come from the gateway, never from the page: every value empty.
    this.send(["connect", version?.startsWith("VERSION_") ? version : "VERSION_1_5_0", ...names.map(() => "")]);
  }

  private fail(code: Guacamole.Status.Code, message: string): void {
    this.close(new Guacamole.Status(code, message));
  }

  private close(status: Guacamole.Status): void {
    window.clearTimeout(this.handshakeTimer);
    if (this.state === State.CLOSED) return;
    if (status.code !== Code.SUCCESS) this.onerror?.(status);
    this.changeState(State.CLOSED);
    this.channel.onmessage = null;
    this.channel.onclose = null;
    if (this.channel.readyState === "open" || this.channel.readyState === "connecting") this.channel.close();
  }
}
