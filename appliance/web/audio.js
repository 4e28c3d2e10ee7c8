// Audio on the page: the microphone (capture, level, 20 ms PCM16 frames), the WebSocket reply
// player (gapless scheduled 48 kHz buffers, flushed on barge-in), the WebRTC reply tap, and the
// recording of what was played (for tests).

const WORKLET_URL = "/static/audio-worklet.js";
export const REPLY_RATE = 48000;
const PLAYBACK_LEAD_S = 0.04; // jitter buffer when a reply starts (or after an underrun)
const SILENCE = 1e-4; // tap chunks quieter than this everywhere are not stored (about −80 dBFS)

const worklets = new WeakMap();

/** Load the processors into a context once. */
export function loadWorklet(ctx) {
  let p = worklets.get(ctx);
  if (!p) {
    p = ctx.audioWorklet.addModule(WORKLET_URL);
    worklets.set(ctx, p);
  }
  return p;
}

/** A context at 48 kHz where the browser allows it (Firefox cannot connect a microphone to a
 * context at a rate other than the device's, so the capture context keeps its default rate). */
export function createContext(rate) {
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (rate) {
    try {
      return new Ctx({ sampleRate: rate, latencyHint: "interactive" });
    } catch (e) {
      console.warn("AudioContext at", rate, "Hz refused; using the default rate", e);
    }
  }
  return new Ctx({ latencyHint: "interactive" });
}

function silentSink(ctx) {
  const g = ctx.createGain();
  g.gain.value = 0;
  g.connect(ctx.destination);
  return g;
}

// --- microphone ------------------------------------------------------------------------------

/** The rate microphone frames are sent at from this context: its own, at most 48 kHz (the protocol
 * accepts 8000–48000; a 96 kHz device is decimated), or a lower `want` (8000–48000). */
export function captureRate(ctx, want = 0) {
  const native = ctx ? Math.round(ctx.sampleRate) : 48000;
  const cap = want >= 8000 && want <= 48000 ? want : 48000;
  return Math.max(8000, Math.min(native, cap));
}

export class Microphone {
  /** @param {AudioContext} ctx  the capture context (default rate) */
  constructor(ctx, { processing = true, frameRate = 0 } = {}) {
    this.ctx = ctx;
    this.wantRate = frameRate;
    this.processing = processing;
    this.stream = null;
    this.source = null;
    this.analyser = ctx.createAnalyser();
    this.analyser.fftSize = 1024;
    this.buf = new Float32Array(this.analyser.fftSize);
    this.capture = null; // the pcm-capture worklet node, when frames are wanted
    this.onFrame = null;
    this.startedAt = null; // performance.now() of the first captured frame
  }

  /** The rate of the frames: the context's, at most 48 kHz (the protocol accepts 8000–48000),
   * or a lower one asked for with `frameRate` in the constructor's options. */
  get frameRate() {
    return captureRate(this.ctx, this.wantRate);
  }

  get track() {
    return this.stream ? this.stream.getAudioTracks()[0] : null;
  }

  get deviceId() {
    const t = this.track;
    return (t && t.getSettings && t.getSettings().deviceId) || "";
  }

  get label() {
    const t = this.track;
    return t ? t.label : "";
  }

  constraints(deviceId) {
    const p = this.processing;
    const audio = {
      echoCancellation: p,
      noiseSuppression: p,
      autoGainControl: p,
      channelCount: { ideal: 1 },
    };
    if (deviceId) audio.deviceId = { exact: deviceId };
    return { audio, video: false };
  }

  /** Open (or re-open on another device). Throws the getUserMedia error (NotAllowedError …). */
  async open(deviceId = "") {
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia(this.constraints(deviceId));
    } catch (e) {
      if (deviceId && (e.name === "OverconstrainedError" || e.name === "NotFoundError")) {
        console.warn("microphone", deviceId, "is gone; using the default one");
        stream = await navigator.mediaDevices.getUserMedia(this.constraints(""));
      } else {
        throw e;
      }
    }
    const old = this.stream;
    const oldSource = this.source;
    this.stream = stream;
    this.source = this.ctx.createMediaStreamSource(stream);
    this.source.connect(this.analyser);
    if (this.capture) this.source.connect(this.capture);
    if (oldSource) oldSource.disconnect();
    if (old) old.getTracks().forEach((t) => t.stop());
    this.track.addEventListener("ended", () => this.onEnded && this.onEnded());
    return this.track;
  }

  /** Start posting 20 ms PCM16LE frames at ctx.sampleRate to `onFrame(ArrayBuffer)`. */
  async enableFrames(onFrame) {
    this.onFrame = onFrame;
    if (this.capture) return;
    await loadWorklet(this.ctx);
    const node = new AudioWorkletNode(this.ctx, "pcm-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      channelCount: 1,
      channelCountMode: "explicit",
      channelInterpretation: "speakers",
      processorOptions: { targetRate: this.frameRate },
    });
    node.port.onmessage = (e) => {
      if (this.startedAt === null) this.startedAt = performance.now() - 20;
      if (this.onFrame) this.onFrame(e.data);
    };
    node.connect(silentSink(this.ctx));
    if (this.source) this.source.connect(node);
    this.capture = node;
  }

  disableFrames() {
    this.onFrame = null;
    if (this.capture) {
      this.capture.port.postMessage("stop");
      this.capture.disconnect();
      if (this.source) {
        try {
          this.source.disconnect(this.capture);
        } catch (_) { /* not connected */ }
      }
      this.capture = null;
    }
  }

  /** Level in dBFS (RMS over the analyser's window), −100 when silent. */
  levelDb() {
    if (!this.source) return -100;
    this.analyser.getFloatTimeDomainData(this.buf);
    let sum = 0;
    for (let i = 0; i < this.buf.length; i++) sum += this.buf[i] * this.buf[i];
    const rms = Math.sqrt(sum / this.buf.length);
    return rms > 1e-5 ? 20 * Math.log10(rms) : -100;
  }

  close() {
    this.disableFrames();
    if (this.source) this.source.disconnect();
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    this.source = null;
    this.stream = null;
  }
}

// --- recording of what was played ------------------------------------------------------------

/** A timeline of played reply audio: segments placed at their sample position, silence between. */
export class Recording {
  constructor() {
    this.clear();
  }

  clear() {
    this.rate = REPLY_RATE;
    this.segments = []; // {at: sample index, data: Float32Array}
    this.originMs = null; // performance.now() of sample 0
    this.generation = (this.generation || 0) + 1;
  }

  /** Where a writer's clock lands on the timeline: returns a function clock → sample index.
   * `clock0` is the writer's first clock value, `ms0` the performance.now() it corresponds to. */
  anchor(clock0, ms0, rate, perClockUnit) {
    if (this.rate !== rate && this.segments.length) this.clear();
    this.rate = rate;
    if (this.originMs === null) this.originMs = ms0;
    const base = Math.round(((ms0 - this.originMs) * rate) / 1000);
    return (clock) => base + Math.round((clock - clock0) * perClockUnit);
  }

  add(at, data) {
    if (at < 0) {
      data = data.subarray(Math.min(data.length, -at));
      at = 0;
    }
    if (data.length) this.segments.push({ at, data });
  }

  /** Forget everything from sample `at` on (audio that was scheduled but never played). */
  cut(at) {
    at = Math.max(0, at);
    const kept = [];
    for (const s of this.segments) {
      if (s.at >= at) continue;
      if (s.at + s.data.length > at) kept.push({ at: s.at, data: s.data.slice(0, at - s.at) });
      else kept.push(s);
    }
    this.segments = kept;
  }

  get length() {
    let end = 0;
    for (const s of this.segments) end = Math.max(end, s.at + s.data.length);
    return end;
  }

  /** The timeline at this.rate. */
  raw() {
    const out = new Float32Array(this.length);
    for (const s of this.segments) out.set(s.data, s.at);
    return out;
  }

  /** The timeline at 48 kHz (linear interpolation when it was recorded at another rate). */
  samples() {
    const raw = this.raw();
    if (this.rate === REPLY_RATE || raw.length === 0) return raw;
    const ratio = this.rate / REPLY_RATE;
    const n = Math.floor(raw.length / ratio);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const x = i * ratio;
      const j = Math.floor(x);
      const f = x - j;
      const a = raw[j];
      const b = j + 1 < raw.length ? raw[j + 1] : a;
      out[i] = a + (b - a) * f;
    }
    return out;
  }

  /** The 48 kHz timeline as base64 PCM16LE (compact for test drivers). */
  pcm16Base64() {
    const f = this.samples();
    const bytes = new Uint8Array(f.length * 2);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < f.length; i++) {
      const s = Math.max(-1, Math.min(1, f[i]));
      view.setInt16(i * 2, s < 0 ? Math.round(s * 0x8000) : Math.round(s * 0x7fff), true);
    }
    let bin = "";
    const step = 0x8000;
    for (let i = 0; i < bytes.length; i += step) {
      bin += String.fromCharCode.apply(null, bytes.subarray(i, i + step));
    }
    return btoa(bin);
  }
}

/** performance.now() that corresponds to context time `t` (seconds). */
function perfTimeOf(ctx, t) {
  if (ctx.getOutputTimestamp) {
    const ts = ctx.getOutputTimestamp();
    if (ts && ts.performanceTime) return ts.performanceTime + (t - ts.contextTime) * 1000;
  }
  return performance.now() + (t - ctx.currentTime) * 1000;
}

// --- WebSocket reply playback ----------------------------------------------------------------

/** Plays 1920-byte PCM16 frames (48 kHz mono, 20 ms) gaplessly; flush() drops what is queued. */
export class FramePlayer {
  constructor(ctx, recording) {
    this.ctx = ctx;
    this.recording = recording;
    this.next = 0;
    this.sources = new Set();
    this.out = ctx.createGain();
    this.out.connect(ctx.destination);
    this.framesPlayed = 0;
    this.toSample = null; // context seconds → recording sample index
    this.generation = null;
  }

  push(buffer) {
    const n = buffer.byteLength >> 1;
    if (n === 0) return;
    const view = new DataView(buffer);
    const f = new Float32Array(n);
    for (let i = 0; i < n; i++) f[i] = view.getInt16(i * 2, true) / 32768;
    const ctx = this.ctx;
    const audio = ctx.createBuffer(1, n, REPLY_RATE);
    audio.copyToChannel(f, 0);
    const now = ctx.currentTime;
    if (this.next < now + 0.005) this.next = now + PLAYBACK_LEAD_S; // start, or recover from an underrun
    const src = ctx.createBufferSource();
    src.buffer = audio;
    src.connect(this.out);
    src.onended = () => {
      this.sources.delete(src);
      src.disconnect();
    };
    src.start(this.next);
    this.sources.add(src);
    const rec = this.recording;
    if (!this.toSample || this.generation !== rec.generation) {
      this.toSample = rec.anchor(this.next, perfTimeOf(ctx, this.next), REPLY_RATE, REPLY_RATE);
      this.generation = rec.generation;
    }
    rec.add(this.toSample(this.next), f);
    this.next += audio.duration;
    this.framesPlayed++;
  }

  /** Seconds of reply audio still queued. */
  get queued() {
    return Math.max(0, this.next - this.ctx.currentTime);
  }

  /** Drop all scheduled audio now (barge-in). */
  flush() {
    const now = this.ctx.currentTime;
    for (const src of this.sources) {
      try {
        src.stop();
      } catch (_) { /* already stopped */ }
      src.disconnect();
    }
    this.sources.clear();
    if (this.next > now && this.toSample && this.generation === this.recording.generation) {
      this.recording.cut(this.toSample(now));
    }
    this.next = 0;
  }

  close() {
    this.flush();
    this.out.disconnect();
  }
}

// --- WebRTC reply tap ------------------------------------------------------------------------

/** Records a remote MediaStream (which must also play in an <audio> element, or Chromium gives
 * the tap silence) into a Recording. */
export class StreamTap {
  constructor(recording) {
    this.recording = recording;
    this.ctx = null;
    this.source = null;
    this.node = null;
  }

  /** Try the 48 kHz context first; fall back to `fallbackCtx` where the browser refuses. */
  async attach(stream, ctx48, fallbackCtx) {
    this.detach();
    let ctx = ctx48;
    let source;
    try {
      source = ctx.createMediaStreamSource(stream);
    } catch (e) {
      console.warn("tap at 48 kHz refused; recording at the default rate", e);
      ctx = fallbackCtx;
      source = ctx.createMediaStreamSource(stream);
    }
    await loadWorklet(ctx);
    const node = new AudioWorkletNode(ctx, "tap-recorder", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
    });
    const rec = this.recording;
    const rate = ctx.sampleRate;
    let toSample = null;
    let generation = null;
    node.port.onmessage = ({ data }) => {
      if (!toSample || generation !== rec.generation) {
        toSample = rec.anchor(data.frame, perfTimeOf(ctx, data.frame / rate), rate, 1);
        generation = rec.generation;
      }
      const s = data.samples;
      let peak = 0;
      for (let i = 0; i < s.length; i++) {
        const a = Math.abs(s[i]);
        if (a > peak) peak = a;
      }
      if (peak > SILENCE) rec.add(toSample(data.frame), s);
    };
    source.connect(node);
    node.connect(silentSink(ctx));
    this.ctx = ctx;
    this.source = source;
    this.node = node;
  }

  detach() {
    if (this.node) {
      this.node.port.postMessage("stop");
      this.node.disconnect();
    }
    if (this.source) this.source.disconnect();
    this.node = null;
    this.source = null;
  }
}
