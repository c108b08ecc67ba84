// Signalling through the local helper (`ztproxy connect web`), which plays the gateway: the
// page's offer goes to ztproxy's control API as a connection session, the answer comes back.
// Every request carries the per-run token in its path; the helper checks it and the Origin.

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
  /** The page watches another user's session (live sharing). */
  viewer: boolean;
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

/**
 * Offers `pc` (its data channels already created) to ztproxy through the helper and applies
 * the answer; the browser's candidates follow as they are gathered (trickle ICE), so the
 * offer does not wait for gathering. Returns the session's id.
 */
export async function negotiate(pc: RTCPeerConnection): Promise<string> {
  const pending: RTCIceCandidateInit[] = [];
  let session: string | null = null;
  let sending: Promise<void> = Promise.resolve();
  const flush = () => {
    if (session === null || pending.length === 0) return;
    const batch = pending.splice(0);
    const id = session;
    sending = sending
      .then(() => call<unknown>("POST", "candidates", { session: id, candidates: batch }))
      .then(() => undefined)
      .catch(() => {
        // ztproxy reaches the browser through its own candidates anyway (the browser's are
        // mDNS names it cannot always resolve); a lost candidate costs nothing.
      });
  };
  pc.addEventListener("icecandidate", (event) => {
    const init = event.candidate ? event.candidate.toJSON() : { candidate: "" };
    pending.push({
      candidate: init.candidate ?? "",
      sdpMid: init.sdpMid ?? null,
      sdpMLineIndex: init.sdpMLineIndex ?? null,
      ...(init.usernameFragment ? { usernameFragment: init.usernameFragment } : {}),
    });
    flush();
  });
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  performance.mark("zt-offer");
  const sdp = pc.localDescription?.sdp ?? offer.sdp;
  if (!sdp) throw new SignallingError("the browser produced no offer");
  const answer = await call<{ session: string; sdp: string }>("POST", "offer", { sdp });
  await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
  session = answer.session;
  flush();
  return answer.session;
}
