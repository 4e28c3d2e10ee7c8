// The page's DOM: state, notices, conversation, latency waterfall, level meter, pickers.
// No logic about sessions here; app.js decides, this module shows.

const $ = (id) => document.getElementById(id);

const PHASE_TEXT = {
  off: "off",
  connecting: "connecting…",
  reconnecting: "reconnecting…",
  idle: "idle",
  listening: "listening",
  thinking: "thinking",
  speaking: "speaking",
  interrupted: "interrupted",
  ended: "ended",
};

const STEPS = ["endpoint_ms", "asr_ms", "responder_ms", "tts_first_frame_ms"];

function fmtMs(v) {
  return typeof v === "number" && Number.isFinite(v) ? `${Math.round(v)} ms` : "—";
}

export class Ui {
  constructor() {
    this.el = {
      start: $("start"),
      stop: $("stop"),
      interrupt: $("interrupt"),
      state: $("state"),
      stateHint: $("state-hint"),
      conn: $("conn"),
      level: $("level"),
      levelBar: $("level-bar"),
      vad: $("vad"),
      device: $("device"),
      transport: $("transport"),
      transcript: $("transcript"),
      partial: $("partial"),
      reply: $("reply"),
      history: $("history"),
      textForm: $("text-form"),
      textInput: $("text-input"),
      textSend: $("text-send"),
      metrics: $("metrics"),
      metricsHistory: $("metrics-history"),
      insecure: $("insecure"),
      httpsLink: $("https-link"),
      micError: $("mic-error"),
      connNotice: $("conn-notice"),
      error: $("error"),
      remoteAudio: $("remote-audio"),
      session: $("session"),
    };
    this.replyItem = null;
    this.v2vHistory = [];
    this.errorTimer = null;
  }

  // --- controls ------------------------------------------------------------------------------

  setRunning(running) {
    this.el.start.disabled = running;
    this.el.stop.disabled = !running;
    document.body.dataset.running = running ? "1" : "0";
  }

  setConnected(connected) {
    this.el.interrupt.disabled = !connected;
    this.el.textInput.disabled = !connected;
    this.el.textSend.disabled = !connected;
  }

  setPhase(phase, rawState, hint = "") {
    const s = this.el.state;
    s.textContent = PHASE_TEXT[phase] || phase;
    s.dataset.phase = phase;
    s.dataset.state = rawState;
    this.el.stateHint.textContent = hint;
  }

  setConnection(kind, text) {
    this.el.conn.dataset.conn = kind;
    this.el.conn.textContent = text;
  }

  setSession(text) {
    this.el.session.textContent = text;
  }

  // --- notices -------------------------------------------------------------------------------

  showInsecure() {
    const https = `https://${location.hostname}/`;
    this.el.httpsLink.href = https;
    this.el.httpsLink.textContent = https;
    // /trust is served by the TLS front, not by a bare orchestrator on plain http.
    this.el.insecure.querySelector('[data-testid="trust-link"]').href = `${https}trust`;
    this.el.insecure.hidden = false;
  }

  showMicError(title, body) {
    const box = this.el.micError;
    box.replaceChildren();
    const h = document.createElement("h2");
    h.textContent = title;
    box.append(h);
    for (const line of body) {
      const p = document.createElement("p");
      p.textContent = line;
      box.append(p);
    }
    box.hidden = false;
  }

  hideMicError() {
    this.el.micError.hidden = true;
  }

  showConnNotice(text) {
    this.el.connNotice.textContent = text;
    this.el.connNotice.hidden = !text;
  }

  /** An error line; `sticky` ones stay until replaced, others fade after 12 s. */
  showError(text, sticky = false) {
    clearTimeout(this.errorTimer);
    this.el.error.textContent = text;
    this.el.error.hidden = !text;
    if (text && !sticky) this.errorTimer = setTimeout(() => this.showError(""), 12000);
  }

  // --- meter and VAD -------------------------------------------------------------------------

  setLevel(db) {
    const clamped = Math.max(-60, Math.min(0, db));
    const pct = ((clamped + 60) / 60) * 100;
    this.el.levelBar.style.width = `${pct.toFixed(1)}%`;
    const m = this.el.level;
    const rounded = String(Math.round(clamped));
    if (m.getAttribute("aria-valuenow") !== rounded) {
      m.setAttribute("aria-valuenow", rounded);
      m.setAttribute("aria-valuetext", db <= -60 ? "silent" : `${rounded} dB`);
    }
  }

  setVad(event) {
    const v = this.el.vad;
    if (event === "speech_start") {
      v.dataset.vad = "speech";
      v.textContent = "hearing you";
    } else if (event === "speech_end") {
      v.dataset.vad = "idle";
      v.textContent = "—";
    } else {
      v.dataset.vad = "idle";
      v.textContent = event || "—";
    }
  }

  // --- pickers -------------------------------------------------------------------------------

  setDevices(devices, selected) {
    const sel = this.el.device;
    const keep = selected ?? sel.value;
    sel.replaceChildren();
    const def = document.createElement("option");
    def.value = "";
    def.textContent = "Default microphone";
    sel.append(def);
    devices.forEach((d, i) => {
      if (d.deviceId === "default" || d.deviceId === "") return;
      const o = document.createElement("option");
      o.value = d.deviceId;
      o.textContent = d.label || `Microphone ${i + 1}`;
      sel.append(o);
    });
    sel.value = [...sel.options].some((o) => o.value === keep) ? keep : "";
  }

  setTransport(name) {
    this.el.transport.value = name;
  }

  // --- conversation --------------------------------------------------------------------------

  userTurn(text) {
    this.el.transcript.textContent = text;
    this.el.partial.textContent = "";
    this.el.reply.textContent = "";
    this.replyItem = null;
    this.addHistory("You", text, "user");
  }

  partial(text) {
    this.el.partial.textContent = text;
  }

  /** The reply so far (its sentences joined). */
  reply(text) {
    this.el.reply.textContent = text;
    if (!this.replyItem) this.replyItem = this.addHistory("Assistant", text, "assistant");
    else this.replyItem.querySelector(".t").textContent = text;
  }

  replyCut() {
    if (this.replyItem) this.replyItem.classList.add("cut");
  }

  replyDone() {
    this.replyItem = null;
  }

  addHistory(who, text, cls) {
    const li = document.createElement("li");
    li.className = cls;
    const w = document.createElement("span");
    w.className = "who";
    w.textContent = who;
    const t = document.createElement("span");
    t.className = "t";
    t.textContent = text;
    li.append(w, t);
    const h = this.el.history;
    const atBottom = h.scrollHeight - h.scrollTop - h.clientHeight < 8;
    h.append(li);
    while (h.children.length > 200) h.firstElementChild.remove();
    if (atBottom) h.scrollTop = h.scrollHeight;
    return li;
  }

  // --- latency waterfall ---------------------------------------------------------------------

  setMetrics(m) {
    const root = this.el.metrics;
    const num = (k) => (typeof m[k] === "number" && Number.isFinite(m[k]) ? m[k] : null);
    const v = Object.fromEntries([...STEPS, "voice_to_voice_ms"].map((k) => [k, num(k)]));
    const v2v = v.voice_to_voice_ms;
    // Where each step sits on the turn's timeline (ms after the end of the user's speech).
    // With voice-to-voice known, the steps after the transcript are laid back from the first
    // reply frame, so an ASR run that started early (speculatively) shows overlapping the
    // endpoint wait; without it (typed turns), they are laid end to end.
    const span = {};
    if (v2v !== null) {
      const tts = v.tts_first_frame_ms || 0;
      const resp = v.responder_ms || 0;
      const asrEnd = Math.max(0, v2v - tts - resp);
      span.endpoint_ms = [0, v.endpoint_ms || 0];
      span.asr_ms = [Math.max(0, asrEnd - (v.asr_ms || 0)), asrEnd];
      span.responder_ms = [asrEnd, asrEnd + resp];
      span.tts_first_frame_ms = [asrEnd + resp, asrEnd + resp + tts];
    } else {
      let at = 0;
      for (const k of STEPS) {
        span[k] = [at, at + (v[k] || 0)];
        at += v[k] || 0;
      }
    }
    span.voice_to_voice_ms = [0, v2v || 0];
    const scale = Math.max(1, ...Object.values(span).map((s) => s[1]));
    for (const row of root.querySelectorAll(".wf-row")) {
      const key = row.dataset.metric;
      const [a, b] = span[key];
      const bar = row.querySelector(".wf-bar");
      bar.style.left = `${((a / scale) * 100).toFixed(2)}%`;
      bar.style.width = `${(((b - a) / scale) * 100).toFixed(2)}%`;
      row.querySelector(".wf-ms").textContent = fmtMs(v[key]);
      row.dataset.ms = v[key] === null ? "" : String(v[key]);
      row.setAttribute("aria-label", `${row.querySelector(".wf-label").textContent}: ${fmtMs(v[key])}`);
    }
    if (v2v === null) root.removeAttribute("data-voice-to-voice-ms");
    else root.dataset.voiceToVoiceMs = String(v2v);
    root.dataset.turns = String((Number(root.dataset.turns) || 0) + 1);
    if (v2v !== null) {
      this.v2vHistory.push(Math.round(v2v));
      if (this.v2vHistory.length > 8) this.v2vHistory.shift();
      this.el.metricsHistory.textContent = this.v2vHistory.map((x) => `${x} ms`).join(", ");
    }
  }
}
