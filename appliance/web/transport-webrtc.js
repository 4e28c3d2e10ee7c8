// The WebRTC transport: one audio transceiver (sendrecv) and a data channel "events" that carries
// the JSON events of the WebSocket protocol (minus hello and binary audio). Offer/answer over
// POST /webrtc/offer, no trickle ICE, no ICE servers (a LAN appliance has no STUN).
//
// Known traps handled here:
//  - the transceiver is added first and the microphone track is put on it with replaceTrack()
//    once the connection is up; adding the track up front loses the first ~150 ms;
//  - the remote stream must play through an <audio> element or it is silent (the page does that
//    with onRemoteStream).

import { TransportError } from "./transport-ws.js";

const OFFER_URL = "/webrtc/offer";
const GATHER_TIMEOUT_MS = 3000;
const CONNECT_TIMEOUT_MS = 15000;
const DISCONNECTED_GRACE_MS = 4000;

function waitGathering(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      pc.removeEventListener("icecandidate", onCandidate);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    const onCandidate = (e) => {
      if (!e.candidate) done();
    };
    const timer = setTimeout(done, ms);
    pc.addEventListener("icegatheringstatechange", check);
    pc.addEventListener("icecandidate", onCandidate);
  });
}

function connState(pc) {
  return pc.connectionState || pc.iceConnectionState;
}

/**
 * callbacks: onEvent(obj), onRemoteStream(MediaStream), onClose({code, reason})
 */
export class WebRtcTransport {
  constructor({ onEvent, onRemoteStream, onClose, offerUrl = OFFER_URL }) {
    this.name = "webrtc";
    this.offerUrl = offerUrl;
    this.onEvent = onEvent;
    this.onRemoteStream = onRemoteStream;
    this.onClose = onClose;
    this.pc = null;
    this.dc = null;
    this.transceiver = null;
    this.ready = false;
    this.closedByUs = false;
    this.dropped = false;
    this.graceTimer = null;
  }

  async connect() {
    if (typeof RTCPeerConnection === "undefined") {
      throw new TransportError("this browser has no WebRTC", { retry: false, fallback: true, code: "no_webrtc" });
    }
    const pc = new RTCPeerConnection({ iceServers: [] });
    this.pc = pc;
    // The transceiver first; the microphone joins it on `connected` (see attachMic).
    this.transceiver = pc.addTransceiver("audio", { direction: "sendrecv" });
    const dc = pc.createDataChannel("events");
    this.dc = dc;
    dc.onmessage = (e) => {
      if (typeof e.data !== "string") return;
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch (_) {
        console.warn("ignoring a data channel message that is not JSON", e.data);
        return;
      }
      if (this.onEvent) this.onEvent(msg);
    };
    let remote = null;
    pc.ontrack = (e) => {
      if (e.track.kind !== "audio") return;
      remote = (e.streams && e.streams[0]) || new MediaStream([e.track]);
      if (this.onRemoteStream) this.onRemoteStream(remote);
    };

    try {
      await pc.setLocalDescription(await pc.createOffer());
      await waitGathering(pc, GATHER_TIMEOUT_MS);
      const local = pc.localDescription;
      let resp;
      try {
        resp = await fetch(this.offerUrl, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ sdp: local.sdp, type: local.type }),
          cache: "no-store",
        });
      } catch (e) {
        throw new TransportError(`cannot reach the appliance (${e.message})`);
      }
      if (!resp.ok) throw await offerError(resp);
      const answer = await resp.json();
      if (!answer || typeof answer.sdp !== "string") {
        throw new TransportError("the appliance sent an answer without SDP", { retry: false });
      }
      await pc.setRemoteDescription({ type: answer.type || "answer", sdp: answer.sdp });
      await this.waitUp(pc, dc);
    } catch (e) {
      this.teardown();
      if (e instanceof TransportError) throw e;
      throw new TransportError(`WebRTC setup failed: ${e.message || e}`);
    }
    this.ready = true;
    pc.addEventListener("connectionstatechange", () => this.watch());
    pc.addEventListener("iceconnectionstatechange", () => this.watch());
    dc.addEventListener("close", () => this.drop("closed", "the event channel closed"));
  }

  waitUp(pc, dc) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const s = connState(pc);
        if ((s === "connected" || s === "completed") && dc.readyState === "open") {
          finish();
          resolve();
        } else if (s === "failed" || s === "closed" || dc.readyState === "closed") {
          finish();
          reject(new TransportError(`the WebRTC connection ${s === "failed" ? "failed" : "closed"} while connecting`));
        }
      };
      const finish = () => {
        clearTimeout(timer);
        pc.removeEventListener("connectionstatechange", check);
        pc.removeEventListener("iceconnectionstatechange", check);
        dc.removeEventListener("open", check);
        dc.removeEventListener("close", check);
      };
      const timer = setTimeout(() => {
        finish();
        reject(new TransportError("the WebRTC connection did not come up within 15 s"));
      }, CONNECT_TIMEOUT_MS);
      pc.addEventListener("connectionstatechange", check);
      pc.addEventListener("iceconnectionstatechange", check);
      dc.addEventListener("open", check);
      dc.addEventListener("close", check);
      check();
    });
  }

  watch() {
    const s = connState(this.pc);
    if (s === "connected" || s === "completed") {
      clearTimeout(this.graceTimer);
      this.graceTimer = null;
    } else if (s === "disconnected") {
      if (!this.graceTimer) {
        this.graceTimer = setTimeout(() => this.drop("disconnected", "the WebRTC connection was lost"), DISCONNECTED_GRACE_MS);
      }
    } else if (s === "failed" || s === "closed") {
      this.drop(s, `the WebRTC connection ${s}`);
    }
  }

  drop(code, reason) {
    if (this.dropped || this.closedByUs || !this.ready) return;
    this.dropped = true;
    this.teardown();
    if (this.onClose) this.onClose({ code, reason, clean: false, byUs: false });
  }

  get open() {
    return this.dc !== null && this.dc.readyState === "open";
  }

  send(obj) {
    if (!this.open) return false;
    this.dc.send(JSON.stringify(obj));
    return true;
  }

  /** Put the microphone on the transceiver (call once the connection is up). */
  async attachMic(mic) {
    this.mic = mic;
    if (this.transceiver && mic.track) await this.transceiver.sender.replaceTrack(mic.track);
  }

  async micChanged(mic) {
    await this.attachMic(mic);
  }

  teardown() {
    clearTimeout(this.graceTimer);
    if (this.transceiver) {
      try {
        this.transceiver.sender.replaceTrack(null).catch(() => {});
      } catch (_) { /* closed */ }
    }
    if (this.dc) this.dc.onmessage = null;
    if (this.pc) {
      this.pc.ontrack = null;
      try {
        this.pc.close();
      } catch (_) { /* closed */ }
    }
  }

  close(bye = true) {
    if (this.closedByUs) return;
    this.closedByUs = true;
    const dc = this.dc;
    if (bye && dc && dc.readyState === "open") {
      try {
        dc.send(JSON.stringify({ type: "bye" }));
      } catch (_) { /* closing anyway */ }
      // Give the bye a moment on the wire before the peer connection goes.
      const deadline = performance.now() + 300;
      const later = () => {
        if (dc.bufferedAmount > 0 && performance.now() < deadline) setTimeout(later, 20);
        else this.teardown();
      };
      setTimeout(later, 20);
    } else {
      this.teardown();
    }
  }
}

async function offerError(resp) {
  let detail = "";
  try {
    const text = await resp.text();
    try {
      const obj = JSON.parse(text);
      detail = obj.message || (obj.error && obj.error.message) || obj.error || text;
    } catch (_) {
      detail = text;
    }
  } catch (_) { /* no body */ }
  detail = String(detail).slice(0, 200).trim();
  const why = detail ? `: ${detail}` : "";
  const s = resp.status;
  if (s === 404 || s === 405 || s === 501) {
    return new TransportError(`this appliance does not offer WebRTC (HTTP ${s})`, {
      code: "webrtc_unavailable", retry: false, fallback: true,
    });
  }
  if (s === 400 || s === 401 || s === 403 || s === 415) {
    return new TransportError(`the appliance refused the WebRTC offer (HTTP ${s})${why}`, { code: `http_${s}`, retry: false });
  }
  return new TransportError(`the appliance could not start a WebRTC session (HTTP ${s})${why}`, { code: `http_${s}` });
}
