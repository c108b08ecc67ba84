// A tunnel client inside a real browser page: what a vault client running in Chromium does
// with ztproxy's tunnel framing (`zt_api::tunnel`): one `ztproxy-control` channel with the
// offer, then one channel per TCP connection with sub-protocol `ztproxy-tunnel/1`, binary
// messages for the bytes, `{"type":"eof"}` for a half-close. The browser tests and
// `browser-tunnel-bench` inject it into a page and call it through the driver's `eval`.
//
// Every figure is measured in the page (performance.now()), so the driver's own round trips
// are not in it.

(() => {
  const PROTOCOL = "ztproxy-tunnel/1";
  const EOF = JSON.stringify({ type: "eof" });
  const encoder = new TextEncoder();

  const hex = (buffer) => Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");

  async function sha256(chunks, length) {
    const all = new Uint8Array(length);
    let at = 0;
    for (const chunk of chunks) {
      all.set(new Uint8Array(chunk), at);
      at += chunk.byteLength;
    }
    return hex(await crypto.subtle.digest("SHA-256", all));
  }

  function withTimeout(promise, ms, what) {
    let timer;
    return Promise.race([
      promise.finally(() => clearTimeout(timer)),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
      }),
    ]);
  }

  const lab = {
    pc: null,
    control: null,
    /** Connection states and control messages, with their times. */
    log: [],
    channels: 0,

    /** Creates the peer connection and its offer (every candidate gathered). */
    async offer() {
      const pc = new RTCPeerConnection();
      this.pc = pc;
      this.log = [];
      const at = () => Math.round(performance.now());
      pc.addEventListener("connectionstatechange", () => this.log.push({ at: at(), state: pc.connectionState }));
      this.control = pc.createDataChannel("ztproxy-control");
      this.control.addEventListener("message", (event) => this.log.push({ at: at(), control: String(event.data) }));
      this.control.addEventListener("close", () => this.log.push({ at: at(), control: "closed" }));
      await pc.setLocalDescription(await pc.createOffer());
      await withTimeout(
        new Promise((resolve) => {
          if (pc.iceGatheringState === "complete") resolve();
          pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && resolve());
        }),
        5000,
        "ICE gathering",
      ).catch(() => {});
      return pc.localDescription.sdp;
    },

    /** Applies ztproxy's answer and waits until the control channel is open. */
    async answer(sdp) {
      const started = performance.now();
      await this.pc.setRemoteDescription({ type: "answer", sdp });
      if (this.control.readyState !== "open") {
        await withTimeout(
          new Promise((resolve, reject) => {
            this.control.addEventListener("open", resolve, { once: true });
            this.control.addEventListener("close", () => reject(new Error("the control channel closed")), { once: true });
          }),
          15000,
          "control channel open",
        );
      }
      return { ms: Math.round(performance.now() - started) };
    },

    /**
     * Opens a tunnel channel; resolves when it is open. `listen` is called with the channel
     * before it opens: Chromium may deliver the first message in the same task as `open`,
     * so a listener added after awaiting the opening can miss it.
     */
    async channel(listen = () => {}) {
      const dc = this.pc.createDataChannel(`lab-${this.channels++}`, { protocol: PROTOCOL });
      dc.binaryType = "arraybuffer";
      listen(dc);
      await withTimeout(
        new Promise((resolve, reject) => {
          dc.addEventListener("open", resolve, { once: true });
          dc.addEventListener("close", () => reject(new Error("the channel closed before it opened")), { once: true });
        }),
        15000,
        "channel open",
      );
      return dc;
    },

    /**
     * Receives one connection's bytes until the target's `eof`, answers with `eof`, and waits
     * until ztproxy closes the channel. Returns the byte count, the SHA-256, the time from
     * the channel's opening to the eof, the longest gap between two messages, and how long
     * after the eof the channel reached `closed`.
     */
    async receive(limitMs) {
      const chunks = [];
      let bytes = 0;
      let opened = null;
      let last = null;
      let maxGap = 0;
      let eofAt = null;
      let error = null;
      let closed;
      let eof;
      const dc = await this.channel((dc) => {
        closed = new Promise((resolve) => dc.addEventListener("close", () => resolve(performance.now()), { once: true }));
        eof = new Promise((resolve) => {
          dc.addEventListener("message", (event) => {
            const now = performance.now();
            if (last !== null) maxGap = Math.max(maxGap, now - last);
            last = now;
            if (typeof event.data === "string") {
              const control = JSON.parse(event.data);
              if (control.type === "eof") {
                eofAt = now;
                dc.send(EOF);
                dc.close();
                resolve();
              } else if (control.type === "error") {
                error = `${control.code}: ${control.message}`;
                resolve();
              }
              return;
            }
            chunks.push(event.data);
            bytes += event.data.byteLength;
          });
          dc.addEventListener("close", resolve, { once: true });
        });
      });
      opened = performance.now();
      if (last === null) last = opened;
      await withTimeout(eof, limitMs, `download (${bytes} bytes so far, longest gap ${Math.round(maxGap)} ms)`);
      if (error) throw new Error(error);
      if (eofAt === null) throw new Error(`the channel closed after ${bytes} bytes without eof`);
      const closedAt = await withTimeout(closed, 10000, "channel close after eof").catch(() => null);
      return {
        bytes,
        sha256: await sha256(chunks, bytes),
        ms: eofAt - opened,
        maxGapMs: Math.round(maxGap),
        closeMs: closedAt === null ? null : Math.round(closedAt - eofAt),
        state: dc.readyState,
      };
    },

    /** `count` downloads on parallel channels. */
    async receiveMany(count, limitMs) {
      const started = performance.now();
      const results = await Promise.all(Array.from({ length: count }, () => this.receive(limitMs)));
      return { results, ms: performance.now() - started };
    },

    /**
     * Sends `length` random bytes on a new channel in messages of `chunk` bytes (keeping
     * the channel's buffer under `buffer` bytes), then `eof`; the target answers with the
     * SHA-256 it computed, which must be ours. Returns the time until that answer.
     */
    async send(length, chunk = 65536, buffer = 1 << 20, limitMs = 120000) {
      const data = new Uint8Array(length);
      for (let at = 0; at < length; at += 65536) crypto.getRandomValues(data.subarray(at, Math.min(length, at + 65536)));
      const ours = hex(await crypto.subtle.digest("SHA-256", data));
      const answer = [];
      let peerEof = false;
      let answered;
      let closed;
      const dc = await this.channel((dc) => {
        closed = new Promise((resolve) => dc.addEventListener("close", () => resolve(performance.now()), { once: true }));
        answered = new Promise((resolve, reject) => {
          dc.addEventListener("message", (event) => {
            if (typeof event.data === "string") {
              const control = JSON.parse(event.data);
              if (control.type === "eof") {
                peerEof = true;
                dc.close();
                resolve();
              } else if (control.type === "error") reject(new Error(`${control.code}: ${control.message}`));
              return;
            }
            answer.push(new TextDecoder().decode(event.data));
          });
          dc.addEventListener("close", () => (peerEof ? resolve() : reject(new Error("closed before the answer"))), { once: true });
        });
        answered.catch(() => {});
      });
      dc.bufferedAmountLowThreshold = buffer / 2;
      const started = performance.now();
      const drained = () =>
        new Promise((resolve) => dc.addEventListener("bufferedamountlow", resolve, { once: true }));
      for (let at = 0; at < length; at += chunk) {
        if (dc.bufferedAmount > buffer) await withTimeout(drained(), limitMs, `upload at ${at} bytes`);
        dc.send(data.subarray(at, Math.min(length, at + chunk)));
      }
      dc.send(EOF);
      await withTimeout(answered, limitMs, "the target's digest");
      const done = performance.now();
      const closedAt = await withTimeout(closed, 10000, "channel close").catch(() => null);
      return {
        bytes: length,
        sha256: ours,
        theirs: answer.join("").trim(),
        ms: done - started,
        closeMs: closedAt === null ? null : Math.round(closedAt - done),
      };
    },

    /**
     * Chromium against itself: two peer connections in this page, `length` bytes from one
     * to the other in messages of `chunk` bytes. What the browser's own data channels carry
     * on this machine, for comparison.
     */
    async loopback(length, chunk = 65536, buffer = 1 << 20) {
      const a = new RTCPeerConnection();
      const b = new RTCPeerConnection();
      a.addEventListener("icecandidate", (e) => e.candidate && b.addIceCandidate(e.candidate));
      b.addEventListener("icecandidate", (e) => e.candidate && a.addIceCandidate(e.candidate));
      const sender = a.createDataChannel("loopback");
      sender.binaryType = "arraybuffer";
      let received = 0;
      const done = new Promise((resolve) => {
        b.addEventListener("datachannel", (event) => {
          event.channel.binaryType = "arraybuffer";
          event.channel.addEventListener("message", (m) => {
            received += m.data.byteLength;
            if (received >= length) resolve(performance.now());
          });
        });
      });
      await a.setLocalDescription(await a.createOffer());
      await b.setRemoteDescription(a.localDescription);
      await b.setLocalDescription(await b.createAnswer());
      await a.setRemoteDescription(b.localDescription);
      await withTimeout(new Promise((resolve) => sender.addEventListener("open", resolve, { once: true })), 15000, "loopback open");
      const data = new Uint8Array(chunk);
      sender.bufferedAmountLowThreshold = buffer / 2;
      const started = performance.now();
      for (let at = 0; at < length; at += chunk) {
        if (sender.bufferedAmount > buffer) {
          await new Promise((resolve) => sender.addEventListener("bufferedamountlow", resolve, { once: true }));
        }
        sender.send(data.subarray(0, Math.min(chunk, length - at)));
      }
      const end = await withTimeout(done, 120000, "loopback transfer");
      a.close();
      b.close();
      return { bytes: length, ms: end - started };
    },

    /** One line through an echo target. */
    async echo(text) {
      let got;
      const dc = await this.channel((dc) => {
        got = new Promise((resolve) =>
          dc.addEventListener("message", (event) => resolve(new TextDecoder().decode(event.data)), { once: true }),
        );
      });
      dc.send(encoder.encode(text));
      const line = await withTimeout(got, 10000, "echo");
      dc.close();
      return line;
    },

    /** Closes the peer connection as a page that is done would. */
    close() {
      this.pc.close();
      return { at: Math.round(performance.now()) };
    },

    state() {
      return { connection: this.pc?.connectionState ?? "none", control: this.control?.readyState ?? "none", log: this.log };
    },
  };

  window.ztLab = lab;
})();
