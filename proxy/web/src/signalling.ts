// Signalling through the local helper (`ztproxy connect web`), which plays the gateway: the
// page's offer goes to ztproxy's control API as a connection session, the answer comes back.
// Every request carries the per-run token in its path; the helper checks it and the Origin.

/** How long ICE candidate gathering may take before the offer is sent with what there is. */
export const GATHER_TIMEOUT_MS = 3_000;

/** What the helper tells the page about the session (nothing secret). */
export interface SessionConfig {
  /** The protocol, for the page's title. */
  protocol: string;
  /** The target's name as the gateway shows it. */
  target: string;
  /** The user's name. */
  user: string;
  /** Policy the page mirrors (ztproxy enforces it whatever the page does). */
  copy: boolean;
  paste: boolean;
  upload: boolean;
  download: boolean;
  readOnly: boolean;
}

/** An error the helper or ztproxy reported, in words. */
export class SignallingError extends Error {}

/** The base URL of this run's endpoints: the page's own directory. */
export function baseUrl(): string {
  const path = window.location.pathname;
  return path.endsWith("/") ? path : path.slice(0, path.lastIndexOf("/") + 1);
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const init: RequestInit = { method, cache: "no-store", credentials: "same-origin" };
  if (body !== undefined) {
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify(body);
  }
  const response = await fetch(baseUrl() + path, init);
  const text = await response.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    // Reported below.
  }
  if (!response.ok) {
    const message = (json as { error?: { message?: string } } | null)?.error?.message;
    throw new SignallingError(message ?? `the local helper answered ${response.status}`);
  }
  if (json === null) throw new SignallingError("the local helper sent no JSON");
  return json as T;
}

/** The session's settings. */
export function config(): Promise<SessionConfig> {
  return call<SessionConfig>("GET", "config");
}

function gathered(pc: RTCPeerConnection): Promise<void> {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = window.setTimeout(done, GATHER_TIMEOUT_MS);
    function done(): void {
      window.clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    }
    function check(): void {
      if (pc.iceGatheringState === "complete") done();
    }
    pc.addEventListener("icegatheringstatechange", check);
  });
}

/**
 * Offers `pc` (its data channels already created) to ztproxy through the helper and applies
 * the answer. Returns the session's id.
 */
export async function negotiate(pc: RTCPeerConnection): Promise<string> {
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  await gathered(pc);
  const sdp = pc.localDescription?.sdp;
  if (!sdp) throw new SignallingError("the browser produced no offer");
  const answer = await call<{ session: string; sdp: string }>("POST", "offer", { sdp });
  await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
  return answer.session;
}
