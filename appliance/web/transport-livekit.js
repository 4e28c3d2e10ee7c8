// The LiveKit transport: POST /livekit/token gives a room, a token and livekit-server's URL; the
// page joins that room with livekit-client (vendor/livekit-client.esm.mjs, put there at install
// time from the pinned npm package, see web/livekit/), publishes the microphone, plays the agent's
// track and exchanges the WebSocket protocol's JSON events as data packets on the topic "events".
// The SDK is loaded only when this transport is chosen.

import { TransportError } from "./transport-ws.js";

const TOKEN_URL = "/livekit/token";
const SDK_URL = "./vendor/livekit-client.esm.mjs";
const TOPIC = "events";

/**
 * callbacks: onEvent(obj), onRemoteStream(MediaStream), onClose({code, reason})
 */
export class LiveKitTransport {
  constructor({ onEvent, onRemoteStream, onClose, tokenUrl = TOKEN_URL }) {
    this.name = "livekit";
    this.tokenUrl = tokenUrl;
    this.onEvent = onEvent;
    this.onRemoteStream = onRemoteStream;
    this.onClose = onClose;
    this.room = null;
    this.sdk = null;
    this.publication = null;
    this.ready = false;
    this.closedByUs = false;
    this.dropped = false;
  }

  async connect() {
    try {
      this.sdk = await import(SDK_URL);
    } catch (e) {
      throw new TransportError("the LiveKit client is not installed on this appliance (make web-livekit)", {
        retry: false, fallback: true, code: "livekit_client_missing",
      });
    }
    const { Room, RoomEvent, Track } = this.sdk;
    let resp;
    try {
      resp = await fetch(this.tokenUrl, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: "{}", cache: "no-store",
      });
    } catch (e) {
      throw new TransportError(`cannot reach the appliance (${e.message})`);
    }
    if (!resp.ok) throw await tokenError(resp);
    const grant = await resp.json();
    const room = new Room({ adaptiveStream: false, dynacast: false });
    this.room = room;
    const decoder = new TextDecoder();
    room.on(RoomEvent.DataReceived, (payload, participant, kind, topic) => {
      if (topic !== TOPIC) return;
      let msg;
      try {
        msg = JSON.parse(decoder.decode(payload));
      } catch (_) {
        console.warn("ignoring a data packet that is not JSON");
        return;
      }
      if (this.onEvent) this.onEvent(msg);
    });
    room.on(RoomEvent.TrackSubscribed, (track) => {
      if (track.kind !== Track.Kind.Audio) return;
      if (this.onRemoteStream) this.onRemoteStream(new MediaStream([track.mediaStreamTrack]));
    });
    room.on(RoomEvent.Disconnected, (reason) => this.drop("disconnected", `left the LiveKit room (${reason})`));
    try {
      await room.connect(grant.url, grant.token, { autoSubscribe: true });
    } catch (e) {
      this.teardown();
      throw new TransportError(`could not join the LiveKit room: ${e.message || e}`);
    }
    this.ready = true;
  }

  drop(code, reason) {
    if (this.dropped || this.closedByUs || !this.ready) return;
    this.dropped = true;
    this.teardown();
    if (this.onClose) this.onClose({ code, reason, clean: false, byUs: false });
  }

  get open() {
    return this.room !== null && this.room.state === "connected";
  }

  send(obj) {
    if (!this.open) return false;
    const data = new TextEncoder().encode(JSON.stringify(obj));
    this.room.localParticipant.publishData(data, { reliable: true, topic: TOPIC }).catch(() => {});
    return true;
  }

  /** Publish the microphone (call once the room is joined). */
  async attachMic(mic) {
    this.mic = mic;
    if (!this.room || !mic.track) return;
    const { Track } = this.sdk;
    if (this.publication && this.publication.track) {
      await this.publication.track.replaceTrack(mic.track);
      return;
    }
    this.publication = await this.room.localParticipant.publishTrack(mic.track, {
      source: Track.Source.Microphone, dtx: false, red: false,
    });
  }

  async micChanged(mic) {
    await this.attachMic(mic);
  }

  teardown() {
    const room = this.room;
    if (room) {
      room.removeAllListeners();
      room.disconnect(false).catch(() => {});
    }
  }

  close(bye = true) {
    if (this.closedByUs) return;
    this.closedByUs = true;
    if (bye) this.send({ type: "bye" });
    // Give the bye a moment on the wire before leaving the room.
    setTimeout(() => this.teardown(), bye ? 300 : 0);
  }
}

async function tokenError(resp) {
  let detail = "";
  try {
    const obj = await resp.json();
    detail = String(obj.error || "").slice(0, 200);
  } catch (_) { /* no JSON body */ }
  const why = detail ? `: ${detail}` : "";
  const s = resp.status;
  if (s === 404 || s === 405) {
    return new TransportError(`this appliance does not offer LiveKit (HTTP ${s})`, {
      code: "livekit_unavailable", retry: false, fallback: true,
    });
  }
  if (s === 400) return new TransportError(`the appliance refused the token request${why}`, { code: "http_400", retry: false });
  return new TransportError(`the appliance could not open a LiveKit room (HTTP ${s})${why}`, { code: `http_${s}` });
}
