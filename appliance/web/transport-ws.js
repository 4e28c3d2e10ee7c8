// The WebSocket transport (docs/protocol.md): hello, then PCM16LE mono frames up; JSON
// events and 1920-byte reply frames (48 kHz PCM16 mono, 20 ms) down.

const READY_TIMEOUT_MS = 10000;
const MAX_BUFFERED = 256 * 1024; // do not queue more than ~2.5 s of 48 kHz audio behind a stalled socket

export class TransportError extends Error {
  constructor(message, { code = "transport", retry = true, fallback = false } = {}) {
    super(message);
    this.code = code;
    this.retry = retry; // worth reconnecting
    this.fallback = fallback; // the server lacks this transport: try the other one
  }
}

export function wsUrl(loc = window.location) {
  return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/ws`;
}

/**
 * callbacks: onEvent(obj), onAudio(ArrayBuffer), onClose({code, reason, clean})
 */
export class WsTransport {
  constructor({ sampleRate, voice = "", onEvent, onAudio, onClose, url = wsUrl() }) {
    this.name = "websocket";
    this.voice = voice;
    this.url = url;
    this.sampleRate = sampleRate;
    this.onEvent = onEvent;
    this.onAudio = onAudio;
    this.onClose = onClose;
    this.ws = null;
    this.ready = false;
    this.closedByUs = false;
    this.framesSent = 0;
    this.framesDropped = 0;
  }

  /** Resolves at the server's `ready`; rejects with a TransportError. */
  connect() {
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(err);
      };
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (e) {
        fail(new TransportError(`cannot open ${this.url}: ${e.message}`));
        return;
      }
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      const timer = setTimeout(() => {
        fail(new TransportError("the appliance did not answer within 10 s"));
        try {
          ws.close(4000, "no ready");
        } catch (_) { /* closing anyway */ }
      }, READY_TIMEOUT_MS);

      ws.onopen = () => {
        const hello = { type: "hello", sample_rate: this.sampleRate };
        if (this.voice) hello.voice = this.voice;
        ws.send(JSON.stringify(hello));
      };
      ws.onmessage = (e) => {
        if (typeof e.data !== "string") {
          if (this.onAudio) this.onAudio(e.data);
          return;
        }
        let msg;
        try {
          msg = JSON.parse(e.data);
        } catch (_) {
          console.warn("ignoring a message that is not JSON", e.data);
          return;
        }
        if (msg.type === "ready" && !settled) {
          settled = true;
          clearTimeout(timer);
          this.ready = true;
          if (this.onEvent) this.onEvent(msg);
          resolve(msg);
          return;
        }
        if (this.onEvent) this.onEvent(msg);
      };
      ws.onerror = () => {
        /* the close event follows with the code */
      };
      ws.onclose = (e) => {
        const info = { code: e.code, reason: e.reason, clean: e.wasClean, byUs: this.closedByUs };
        if (!settled) {
          // 4401 (not paired) and 4403 (a foreign Origin) will not change by trying again.
          const refused = e.code === 4401 || e.code === 4403;
          const retry = !refused && !(e.code >= 4000 && e.code < 4100 && e.code !== 4008 && e.code !== 4029);
          fail(new TransportError(closeText(e.code, e.reason), { code: `close_${e.code}`, retry }));
          return;
        }
        if (this.ready && this.onClose) this.onClose(info);
      };
    });
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  send(obj) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  /** Start sending the microphone's 20 ms frames. */
  async attachMic(mic) {
    this.mic = mic;
    this.sendFrame = (buf) => {
      if (!this.open || !this.ready) return;
      if (this.ws.bufferedAmount > MAX_BUFFERED) {
        this.framesDropped++;
        return;
      }
      this.ws.send(buf);
      this.framesSent++;
    };
    await mic.enableFrames(this.sendFrame);
  }

  /** The microphone changed device: frames keep flowing through the same capture node. */
  async micChanged() {}

  close(bye = true) {
    this.closedByUs = true;
    if (this.mic) {
      if (this.mic.onFrame === this.sendFrame) this.mic.disableFrames();
      this.mic = null;
    }
    const ws = this.ws;
    if (!ws) return;
    if (ws.readyState === WebSocket.OPEN) {
      if (bye) {
        try {
          ws.send(JSON.stringify({ type: "bye" }));
        } catch (_) { /* closing anyway */ }
      }
      ws.close(1000, "bye");
    } else if (ws.readyState === WebSocket.CONNECTING) {
      ws.close();
    }
  }
}

export function closeText(code, reason) {
  const why = reason ? `: ${reason}` : "";
  if (code === 1006) return "the connection to the appliance was lost";
  if (code === 4401) return "this device is not paired with the appliance: pair it at /trust";
  if (code === 4403) return `the appliance refused this page's origin${why}`;
  if (code === 1001) return `the appliance went away${why}`;
  return `the connection closed (code ${code})${why}`;
}
