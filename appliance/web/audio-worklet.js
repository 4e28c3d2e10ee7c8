// AudioWorklet processors for the appliance page (loaded with audioWorklet.addModule).
//
//   pcm-capture   microphone → 20 ms frames of PCM16LE mono at the context's sample rate (or a
//                 lower processorOptions.targetRate, e.g. 48000 from a 96 kHz device), posted
//                 to the main thread as transferable ArrayBuffers (the WebSocket transport sends
//                 them as they come).
//   tap-recorder  any input → Float32 chunks with their position on the context's clock (the
//                 page records the reply audio it plays, for tests).

const FRAME_MS = 20;

/** Lowers the rate by a box filter over each output sample's span of input (enough against
 * aliasing for speech, which has little above 8 kHz). */
class Decimator {
  constructor(ratio) {
    this.ratio = ratio;
    this.half = ratio / 2;
    this.buf = new Float32Array(4096);
    this.len = 0;
    this.next = this.half; // centre of the next output sample, in input samples
  }

  push(x, emit) {
    if (this.len + x.length > this.buf.length) {
      const bigger = new Float32Array(2 * (this.len + x.length));
      bigger.set(this.buf.subarray(0, this.len));
      this.buf = bigger;
    }
    this.buf.set(x, this.len);
    this.len += x.length;
    while (this.next + this.half <= this.len) {
      const a = Math.max(0, Math.ceil(this.next - this.half));
      const b = Math.min(this.len, Math.ceil(this.next + this.half));
      let s = 0;
      for (let i = a; i < b; i++) s += this.buf[i];
      emit(b > a ? s / (b - a) : 0);
      this.next += this.ratio;
    }
    const drop = Math.max(0, Math.min(this.len, Math.floor(this.next - this.half)));
    if (drop) {
      this.buf.copyWithin(0, drop, this.len);
      this.len -= drop;
      this.next -= drop;
    }
  }
}

class PcmCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const want = options && options.processorOptions && options.processorOptions.targetRate;
    this.rate = want && want < sampleRate ? want : sampleRate;
    this.decimator = this.rate < sampleRate ? new Decimator(sampleRate / this.rate) : null;
    this.frameLength = Math.round((this.rate * FRAME_MS) / 1000);
    this.frame = new Int16Array(this.frameLength);
    this.filled = 0;
    this.mono = new Float32Array(128);
    this.running = true;
    this.emit = (s) => this.put(s);
    this.port.onmessage = (e) => {
      if (e.data === "stop") this.running = false;
    };
  }

  put(s) {
    s = s < -1 ? -1 : s > 1 ? 1 : s;
    this.frame[this.filled++] = s < 0 ? Math.round(s * 0x8000) : Math.round(s * 0x7fff);
    if (this.filled === this.frameLength) {
      const out = this.frame.buffer;
      this.port.postMessage(out, [out]);
      this.frame = new Int16Array(this.frameLength);
      this.filled = 0;
    }
  }

  process(inputs) {
    const input = inputs[0];
    if (!this.running) return false;
    if (!input || input.length === 0) return true; // no source connected (yet)
    const channels = input.length;
    const n = input[0].length;
    if (this.mono.length !== n) this.mono = new Float32Array(n);
    const mono = this.mono;
    for (let i = 0; i < n; i++) {
      let s = input[0][i];
      if (channels > 1) {
        for (let c = 1; c < channels; c++) s += input[c][i];
        s /= channels;
      }
      mono[i] = s;
    }
    if (this.decimator) this.decimator.push(mono, this.emit);
    else for (let i = 0; i < n; i++) this.put(mono[i]);
    return true;
  }
}

class TapRecorder extends AudioWorkletProcessor {
  constructor() {
    super();
    this.chunkLength = 2048;
    this.chunk = new Float32Array(this.chunkLength);
    this.filled = 0;
    this.chunkStart = 0; // currentFrame of the chunk's first sample
    this.running = true;
    this.port.onmessage = (e) => {
      if (e.data === "stop") this.running = false;
    };
  }

  process(inputs) {
    if (!this.running) return false;
    const input = inputs[0];
    const n = input && input.length ? input[0].length : 128;
    if (this.filled === 0) this.chunkStart = currentFrame;
    for (let i = 0; i < n; i++) {
      let s = 0;
      if (input && input.length) {
        for (let c = 0; c < input.length; c++) s += input[c][i];
        s /= input.length;
      }
      this.chunk[this.filled++] = s;
      if (this.filled === this.chunkLength) {
        const out = this.chunk;
        this.port.postMessage({ frame: this.chunkStart, samples: out }, [out.buffer]);
        this.chunk = new Float32Array(this.chunkLength);
        this.filled = 0;
        this.chunkStart = currentFrame + i + 1;
      }
    }
    return true;
  }
}

registerProcessor("pcm-capture", PcmCapture);
registerProcessor("tap-recorder", TapRecorder);
