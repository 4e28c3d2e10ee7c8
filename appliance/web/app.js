// The appliance page: press Start, talk, hear the answer, interrupt it by talking over it.
//
// app.js holds the session logic (start/stop, reconnect with backoff, events → state);
// ui.js draws; audio.js captures and plays; transport-ws.js, transport-webrtc.js and
// transport-livekit.js (through a LiveKit room) talk to the orchestrator. URL options:
// ?transport=websocket|webrtc|livekit, ?test=1 (microphone DSP off, for a fake microphone file).
// Test drivers use window.applianceTest (see the bottom of this file).

import { Microphone, FramePlayer, StreamTap, Recording, createContext, captureRate, REPLY_RATE } from "./audio.js";
import { WsTransport, TransportError, closeText } from "./transport-ws.js";
import { WebRtcTransport } from "./transport-webrtc.js";
import { LiveKitTransport } from "./transport-livekit.js";
import { Ui } from "./ui.js";

const params = new URLSearchParams(location.search);
const TEST_MODE = params.get("test") === "1";
const WANT_RATE = Number(params.get("rate")) || 0; // ?rate=16000: send the microphone at 16 kHz
const VOICE = params.get("voice") || ""; // ?voice=MODEL_ID: the TTS model (WebSocket hello)
const TRANSPORTS = ["webrtc", "websocket", "livekit"];
const TRANSPORT_LABELS = { webrtc: "WebRTC", websocket: "WebSocket", livekit: "LiveKit" };
const BACKOFF_MS = [1000, 2000, 4000, 8000, 10000];
const STABLE_MS = 10000; // a connection that lasted this long resets the backoff
// Close codes after which reconnecting would not help (docs/protocol.md; transport/protocol.py CloseCode).
const FINAL_CLOSE = new Set([1000, 1008, 4001, 4002, 4003, 4009, 4100, 4101, 4102, 4401, 4403]);
const FINAL_ERRORS = new Set(["idle_timeout", "max_duration", "max_turns", "unauthorized", "unsupported_sample_rate"]);
const DEVICE_KEY = "appliance.microphone";

const ui = new Ui();
const recording = new Recording();

const app = {
  transportName: TRANSPORTS.includes(params.get("transport")) ? params.get("transport") : "webrtc",
  running: false, // the user wants a session (reconnects while true)
  transport: null, // the connected transport, or null
  pending: null, // the transport being connected
  connecting: false,
  mic: null,
  captureCtx: null,
  playbackCtx: null,
  player: null,
  tap: null,
  attempt: 0,
  connectedAt: 0,
  retryTimer: null,
  countdownTimer: null,
  rawState: "OFF",
  phase: "off",
  thinking: false,
  replyText: [],
  lastError: null,
  sawTerminated: false,
  sessionId: null,
  generation: 0, // bumps on every start/stop/switch, so stale async work can tell
};

const test = {
  events: [], // every JSON event received: {...event, t: performance.now() at arrival}
  frameArrivals: [], // performance.now() of each binary reply frame (WebSocket)
  notices: [], // {t, kind, text} of the notices shown (connection, errors)
};

// --- state ---------------------------------------------------------------------------------------

function setPhase(phase, raw = app.rawState, hint = "") {
  app.phase = phase;
  app.rawState = raw;
  ui.setPhase(phase, raw, hint);
}

function phaseFromState(state) {
  switch (state) {
    case "LISTENING":
      return ["listening", ""];
    case "WAITING_FOR_INPUT":
      return ["listening", "ready"];
    case "SPEAKING":
      return ["speaking", ""];
    case "BARGED_IN":
      return ["interrupted", ""];
    case "IDLE":
      return ["idle", ""];
    case "TERMINATED":
      return ["ended", ""];
    default:
      return [String(state).toLowerCase(), ""];
  }
}

function onEvent(transport, msg) {
  if (transport !== app.transport && transport !== app.pending) return; // a stale connection
  test.events.push({ ...msg, t: performance.now() });
  if (test.events.length > 20000) test.events.splice(0, 10000);
  switch (msg.type) {
    case "ready":
      app.sessionId = msg.session_id || null;
      app.sawTerminated = false;
      ui.setSession((app.sessionId ? `session ${app.sessionId} · ${transport.name}` : transport.name) +
        (msg.responder ? ` · answers: ${msg.responder}` : ""));
      break;
    case "state": {
      app.thinking = false;
      if (msg.state === "TERMINATED") app.sawTerminated = true;
      const [phase, hint] = phaseFromState(msg.state);
      setPhase(phase, msg.state, hint);
      break;
    }
    case "vad":
      ui.setVad(msg.event);
      break;
    case "transcript":
      if (!msg.final) {
        ui.partial(msg.text || "");
        break;
      }
      if (msg.text && msg.text.trim()) {
        app.replyText = [];
        ui.userTurn(msg.text.trim());
        if (app.rawState !== "SPEAKING") {
          app.thinking = true;
          setPhase("thinking", app.rawState);
        }
      } else {
        ui.partial("");
        ui.setVad("didn't catch that");
      }
      break;
    case "reply":
      if (msg.text) {
        app.replyText.push(msg.text);
        ui.reply(app.replyText.join(" "));
      }
      break;
    case "reply_end":
      ui.replyDone();
      break;
    case "barge_in":
      if (app.player) app.player.flush();
      ui.replyCut();
      break;
    case "metrics":
      ui.setMetrics(msg);
      break;
    case "error":
      app.lastError = msg.code || "error";
      notice("error", msg.message || msg.code || "the appliance reported an error");
      break;
    default:
      break;
  }
}

function notice(kind, text) {
  test.notices.push({ t: performance.now(), kind, text });
  if (kind === "error") ui.showError(text);
  else if (kind === "sticky-error") ui.showError(text, true);
  else ui.showConnNotice(text);
}

// --- audio ---------------------------------------------------------------------------------------

/** Create (or re-use) the audio contexts; call synchronously from the click, before any await,
 * so the browser lets them run. */
function ensureContexts() {
  if (!app.captureCtx || app.captureCtx.state === "closed") app.captureCtx = createContext();
  if (!app.playbackCtx || app.playbackCtx.state === "closed") app.playbackCtx = createContext(REPLY_RATE);
  app.captureCtx.resume().catch(() => {});
  app.playbackCtx.resume().catch(() => {});
}

async function openMic() {
  const mic = new Microphone(app.captureCtx, { processing: !TEST_MODE, frameRate: WANT_RATE });
  const saved = ui.el.device.value || localStorage.getItem(DEVICE_KEY) || "";
  await mic.open(saved);
  mic.onEnded = () => {
    if (app.mic === mic && app.running) notice("error", "The microphone stopped (unplugged?). Pick another one above.");
  };
  ui.hideMicError();
  await refreshDevices(mic.deviceId);
  return mic;
}

function micErrorMessage(e) {
  switch (e && e.name) {
    case "NotAllowedError":
    case "PermissionDeniedError":
      return ["Microphone access was refused", [
        "The appliance needs your microphone to hear you.",
        "To allow it: click the microphone or lock icon at the left of the address bar, set Microphone to Allow for this site, and press Start talking again.",
        "If the browser does not ask any more, look in its site settings (Chromium: Settings → Privacy and security → Site settings → Microphone; Firefox: Settings → Privacy & Security → Permissions → Microphone).",
      ]];
    case "NotFoundError":
    case "DevicesNotFoundError":
      return ["No microphone found", ["Plug in or enable a microphone, then press Start talking again."]];
    case "NotReadableError":
    case "TrackStartError":
      return ["The microphone is busy", ["Another application (or tab) is using it. Close that, then press Start talking again."]];
    case "SecurityError":
      return ["The microphone is blocked here", ["Open this page over https:// or on http://localhost."]];
    default:
      return ["The microphone could not be opened", [`${(e && e.name) || "Error"}: ${(e && e.message) || e}`]];
  }
}

async function refreshDevices(selected) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  try {
    const all = await navigator.mediaDevices.enumerateDevices();
    ui.setDevices(all.filter((d) => d.kind === "audioinput"), selected);
  } catch (e) {
    console.warn("enumerateDevices failed", e);
  }
}

async function changeDevice() {
  const id = ui.el.device.value;
  localStorage.setItem(DEVICE_KEY, id);
  if (!app.mic) return;
  try {
    await app.mic.open(id);
    if (app.transport) await app.transport.micChanged(app.mic);
    ui.setSession(`${app.sessionId ? `session ${app.sessionId} · ` : ""}${app.transportName} · ${app.mic.label}`);
  } catch (e) {
    const [title, body] = micErrorMessage(e);
    ui.showMicError(title, body);
  }
}

function meterLoop() {
  ui.setLevel(app.mic ? app.mic.levelDb() : -100);
  requestAnimationFrame(meterLoop);
}

function onRemoteStream(transport, stream) {
  if (transport !== app.pending && transport !== app.transport) return;
  const el = ui.el.remoteAudio;
  el.srcObject = stream; // the known trap: without an element the remote audio is silent
  el.play().catch((e) => console.warn("remote audio play()", e));
  if (!app.tap) app.tap = new StreamTap(recording);
  app.tap.attach(stream, app.playbackCtx, app.captureCtx).catch((e) => console.warn("reply tap failed", e));
}

// --- connection ----------------------------------------------------------------------------------

function makeTransport() {
  const handlers = {};
  let t;
  handlers.onEvent = (msg) => onEvent(t, msg);
  handlers.onClose = (info) => onDropped(t, info);
  if (app.transportName === "websocket") {
    handlers.sampleRate = captureRate(app.captureCtx, WANT_RATE);
    handlers.voice = VOICE;
    handlers.onAudio = (buf) => {
      if (t !== app.transport && t !== app.pending) return;
      test.frameArrivals.push(performance.now());
      if (test.frameArrivals.length > 60000) test.frameArrivals.splice(0, 30000);
      if (app.player) app.player.push(buf);
    };
    t = new WsTransport(handlers);
  } else {
    handlers.onRemoteStream = (stream) => onRemoteStream(t, stream);
    t = app.transportName === "livekit" ? new LiveKitTransport(handlers) : new WebRtcTransport(handlers);
  }
  return t;
}

async function connect() {
  const gen = app.generation;
  clearTimeout(app.retryTimer);
  clearInterval(app.countdownTimer);
  app.connecting = true;
  const again = app.attempt > 0;
  setPhase(again ? "reconnecting" : "connecting", again ? "RECONNECTING" : "CONNECTING");
  ui.setConnection(again ? "reconnecting" : "connecting", again ? "reconnecting…" : "connecting…");
  const t = makeTransport();
  app.pending = t;
  try {
    await t.connect();
  } catch (e) {
    app.pending = null;
    app.connecting = false;
    if (gen !== app.generation) return;
    const err = e instanceof TransportError ? e : new TransportError(String(e.message || e));
    if (err.fallback && app.transportName !== "websocket") {
      notice("error", `${err.message}; using WebSocket instead.`);
      app.transportName = "websocket";
      ui.setTransport("websocket");
      return connect();
    }
    if (!err.retry) {
      notice("sticky-error", `Could not connect: ${err.message}.`);
      stop({ keepNotice: true });
      return;
    }
    scheduleReconnect(`Could not connect: ${err.message}.`);
    return;
  }
  if (gen !== app.generation) {
    t.close();
    return;
  }
  app.pending = null;
  app.transport = t;
  app.connecting = false;
  app.connectedAt = performance.now();
  app.lastError = null;
  if (t.name === "websocket") {
    if (app.player) app.player.close();
    app.player = new FramePlayer(app.playbackCtx, recording);
  }
  ui.setConnection("connected", `connected (${TRANSPORT_LABELS[t.name]})`);
  ui.showConnNotice("");
  ui.setConnected(true);
  if (app.rawState === "CONNECTING" || app.rawState === "RECONNECTING") {
    // Connected, and the server has not said its state yet: it listens from the start.
    setPhase("listening", "CONNECTED");
  }
  // The microphone comes after the connection: nothing said is lost while it is set up, and on
  // WebRTC the track joins the transceiver only now that the connection is up.
  if (!app.mic) {
    try {
      app.mic = await openMic();
    } catch (e) {
      if (gen !== app.generation) return;
      const [title, body] = micErrorMessage(e);
      ui.showMicError(title, body);
      stop({ keepNotice: true });
      return;
    }
    if (gen !== app.generation) {
      return;
    }
  }
  try {
    await t.attachMic(app.mic);
  } catch (e) {
    console.error("attaching the microphone failed", e);
    notice("error", `The microphone could not be connected: ${e.message || e}`);
  }
  if (app.mic && app.mic.startedAt === null && t.name !== "websocket") app.mic.startedAt = performance.now();
  ui.setSession(`${app.sessionId ? `session ${app.sessionId} · ` : ""}${t.name} · ${app.mic ? app.mic.label : ""}`);
}

function onDropped(t, info) {
  if (t !== app.transport) return;
  app.transport = null;
  ui.setConnected(false);
  if (app.player) app.player.flush();
  if (!app.running || info.byUs) return;
  if (performance.now() - app.connectedAt > STABLE_MS) app.attempt = 0;
  const code = info.code;
  const final = FINAL_CLOSE.has(code) || (app.sawTerminated && FINAL_ERRORS.has(app.lastError));
  const why = typeof code === "number" ? closeText(code, info.reason) : info.reason || "the connection was lost";
  if (final) {
    notice("sticky-error", `The session ended: ${why}. Press Start talking to begin a new one.`);
    stop({ keepNotice: true });
    setPhase("ended", "TERMINATED");
    return;
  }
  scheduleReconnect(`Connection dropped: ${why}.`);
}

function scheduleReconnect(why) {
  const delay = BACKOFF_MS[Math.min(app.attempt, BACKOFF_MS.length - 1)];
  app.attempt++;
  setPhase("reconnecting", "RECONNECTING");
  ui.setConnection("reconnecting", "reconnecting…");
  const until = performance.now() + delay;
  const tick = () => {
    const s = Math.max(1, Math.round((until - performance.now()) / 1000));
    ui.showConnNotice(`${why} Reconnecting in ${s} s…`);
  };
  notice("conn", `${why} Reconnecting in ${delay / 1000} s…`);
  clearInterval(app.countdownTimer);
  app.countdownTimer = setInterval(tick, 1000);
  clearTimeout(app.retryTimer);
  app.retryTimer = setTimeout(() => {
    clearInterval(app.countdownTimer);
    if (app.running) {
      ui.showConnNotice(`${why} Reconnecting…`);
      connect();
    }
  }, delay);
}

// --- start / stop --------------------------------------------------------------------------------

async function start() {
  if (app.running) return;
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    ui.showInsecure();
    throw new Error("not a secure context: open the page over https:// or on http://localhost");
  }
  app.generation++;
  app.running = true;
  app.attempt = 0;
  ui.hideMicError();
  ui.showError("");
  ui.showConnNotice("");
  ui.setRunning(true);
  ensureContexts(); // synchronously, inside the click
  await connect();
}

function stop({ keepNotice = false } = {}) {
  app.generation++;
  app.running = false;
  clearTimeout(app.retryTimer);
  clearInterval(app.countdownTimer);
  for (const t of [app.transport, app.pending]) if (t) t.close(true);
  app.transport = null;
  app.pending = null;
  app.connecting = false;
  if (app.mic) app.mic.close();
  app.mic = null;
  if (app.player) app.player.close();
  app.player = null;
  if (app.tap) app.tap.detach();
  const el = ui.el.remoteAudio;
  el.srcObject = null;
  ui.setRunning(false);
  ui.setConnected(false);
  ui.setVad("");
  ui.setConnection("off", "not connected");
  ui.setSession("");
  app.sessionId = null;
  ui.showConnNotice("");
  if (!keepNotice) ui.showError("");
  for (const ctx of [app.captureCtx, app.playbackCtx]) if (ctx && ctx.state === "running") ctx.suspend().catch(() => {});
  setPhase("off", "OFF");
}

async function switchTransport(name) {
  if (!TRANSPORTS.includes(name) || name === app.transportName) return;
  app.transportName = name;
  const url = new URL(location.href);
  url.searchParams.set("transport", name);
  history.replaceState(null, "", url);
  if (!app.running) return;
  app.generation++;
  for (const t of [app.transport, app.pending]) if (t) t.close(true);
  app.transport = null;
  app.pending = null;
  if (app.player) app.player.flush();
  ui.setConnected(false);
  app.attempt = 0;
  await connect();
}

function send(obj) {
  return app.transport ? app.transport.send(obj) : false;
}

function interrupt() {
  if (app.player) app.player.flush();
  return send({ type: "interrupt" });
}

// --- wiring --------------------------------------------------------------------------------------

function wire() {
  ui.setTransport(app.transportName);
  ui.setRunning(false);
  ui.setConnected(false);
  setPhase("off", "OFF");
  if (!window.isSecureContext || !navigator.mediaDevices) {
    ui.showInsecure();
    ui.el.start.disabled = true;
    ui.el.device.disabled = true;
  }
  ui.el.start.addEventListener("click", () => {
    start().catch((e) => console.warn(e.message || e));
  });
  ui.el.stop.addEventListener("click", () => stop());
  ui.el.interrupt.addEventListener("click", () => interrupt());
  ui.el.transport.addEventListener("change", () => {
    if (app.running) ensureContexts();
    switchTransport(ui.el.transport.value);
  });
  ui.el.device.addEventListener("change", () => changeDevice());
  ui.el.textForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = ui.el.textInput.value.trim();
    if (!text) return;
    if (send({ type: "text", text })) ui.el.textInput.value = "";
  });
  if (navigator.mediaDevices) {
    navigator.mediaDevices.addEventListener("devicechange", () => refreshDevices(app.mic ? app.mic.deviceId : undefined));
    refreshDevices(localStorage.getItem(DEVICE_KEY) || "");
  }
  window.addEventListener("pagehide", () => {
    if (app.running) stop();
  });
  requestAnimationFrame(meterLoop);
}

// --- the test hook -------------------------------------------------------------------------------

window.applianceTest = {
  /** Every JSON event received, in order, each with `t` = performance.now() at arrival. */
  events: test.events,
  /** performance.now() of each binary reply frame received (WebSocket only). */
  frameArrivals: test.frameArrivals,
  notices: test.notices,
  get state() { return app.rawState; },
  get phase() { return app.phase; },
  get transport() { return app.transportName; },
  get connected() { return app.transport !== null; },
  get sessionId() { return app.sessionId; },
  get testMode() { return TEST_MODE; },
  /** The rate the microphone is sent at over WebSocket (the hello's sample_rate). */
  get captureRate() { return app.captureCtx ? captureRate(app.captureCtx, WANT_RATE) : null; },
  /** performance.now() when the microphone's first audio was captured (WebSocket) or put on the
   * WebRTC sender. */
  get micStartedAt() { return app.mic ? app.mic.startedAt : null; },
  get framesSent() { return app.transport && app.transport.framesSent !== undefined ? app.transport.framesSent : null; },
  /** The reply audio as played: a 48 kHz Float32Array timeline (silence between replies,
   * audio dropped at barge-in cut out). Sample i played at recordingOriginMs + i / 48. */
  recordedSamples: () => recording.samples(),
  /** The same as base64 PCM16LE mono 48 kHz (cheaper to carry out of the page). */
  recordedPcm16Base64: () => recording.pcm16Base64(),
  get recordingOriginMs() { return recording.originMs; },
  get recordedSeconds() { return recording.length / recording.rate; },
  clearRecording: () => recording.clear(),
  start: () => start(),
  stop: () => stop(),
  sendText: (text) => send({ type: "text", text }),
  say: (text) => send({ type: "say", text }),
  interrupt: () => interrupt(),
  setTransport: (name) => {
    ui.setTransport(name);
    return switchTransport(name);
  },
  /** Resolves with the first event of `type` (matching `pred`) that arrives after `since`
   * (a performance.now() time; default: now). */
  waitForEvent(type, { since = performance.now(), pred = () => true, timeoutMs = 30000 } = {}) {
    return new Promise((resolve, reject) => {
      const t0 = performance.now();
      const poll = () => {
        const hit = test.events.find((e) => e.type === type && e.t >= since && pred(e));
        if (hit) resolve(hit);
        else if (performance.now() - t0 > timeoutMs) reject(new Error(`no ${type} event within ${timeoutMs} ms`));
        else setTimeout(poll, 20);
      };
      poll();
    });
  },
};

wire();
