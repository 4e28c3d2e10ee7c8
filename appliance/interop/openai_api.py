"""The OpenAI audio API on the orchestrator, under /v1: speech (streamed as the workers produce it,
encoded with PyAV), transcriptions (any file FFmpeg reads, the orchestrator's own Whisper), models,
voices, and the OpenAPI document (/v1/openapi.json). Errors have OpenAI's body:
``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import asyncio
import logging

import grpc
import numpy as np
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import BadHttpMessage

from appliance.audio import OUTPUT_RATE
from appliance.audio.encode import FORMATS, StreamEncoder, UndecodableAudio, decode_audio
from appliance.interop import openapi
from appliance.interop.api_keys import KeyCheck
from appliance.interop.speech import TtsUnavailable, speech_session
from appliance.interop.transcript_formats import RESPONSE_FORMATS, render
from appliance.interop.voices import DEFAULT_VOICE, VoiceCatalog

log = logging.getLogger(__name__)

TTS_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")  # any of them: the workers' voices
ASR_ALIASES = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
ASR_RATE = 16_000


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.type, self.param = status, message, code, type_, param

    def response(self) -> web.Response:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return web.json_response(body, status=self.status)


class OpenAiApi:
    """Mounted on an orchestrator (``mount``): uses its settings, worker pool and ASR engine."""

    def __init__(self, orchestrator) -> None:
        self.orchestrator = orchestrator
        self.settings = orchestrator.settings
        self.api = self.settings.api
        self.keys = KeyCheck(self.api)
        self.catalog = VoiceCatalog(orchestrator.pool)

    @classmethod
    def mount(cls, orchestrator) -> OpenAiApi:
        api = cls(orchestrator)
        orchestrator.mounts.append(api.register)
        return api

    def register(self, app: web.Application) -> None:
        if not self.api.enabled:
            return
        app.router.add_get("/v1/openapi.json", self.openapi)
        app.router.add_get("/v1/models", self._guarded(self.models))
        app.router.add_get("/v1/audio/voices", self._guarded(self.voices))
        app.router.add_post("/v1/audio/speech", self._guarded(self.speech))
        app.router.add_post("/v1/audio/transcriptions", self._guarded(self.transcriptions))
        app.on_cleanup.append(lambda _app: self.catalog.close())

    def _guarded(self, handler):
        async def guarded(request: web.Request) -> web.StreamResponse:
            refused = self._refused(request)
            if refused is not None:
                return refused
            try:
                return await handler(request)
            except ApiError as exc:
                return exc.response()

        return guarded

    def _refused(self, request: web.Request) -> web.Response | None:
        """A listed API key lets a request in as it always has; with access control on, so do the
        access secret as the Bearer token and a paired browser's cookie."""
        gate = self.orchestrator.access
        if not gate.off:
            lockout = gate.lockout(request)
            if lockout is not None:
                error = ApiError(429, lockout.message, lockout.code, "rate_limit_error").response()
                error.headers.update(lockout.headers())
                return error
        if self.keys.allows(request.remote, request.headers):
            return None
        bearer = gate.bearer(request)
        if not gate.off and (gate.has_cookie(request) or gate.secret_matches(bearer)):
            return None
        if not gate.off and bearer:
            gate.denied(request, presented=True)  # counts towards the lockout
        gate_note = " or the access secret" if not gate.off else ""
        return ApiError(
            401,
            f"a valid API key{gate_note} is needed: Authorization: Bearer <key>",
            "invalid_api_key",
            "authentication_error",
        ).response()

    # --- handlers ----------------------------------------------------------------------------

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi.document())

    async def models(self, request: web.Request) -> web.Response:
        ids = [*TTS_MODELS, *ASR_ALIASES, self.orchestrator.asr.name]
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": i, "object": "model", "created": 0, "owned_by": "appliance"} for i in ids],
            }
        )

    async def voices(self, request: web.Request) -> web.Response:
        voices = [{"id": DEFAULT_VOICE, "name": "the workers' default voice"}]
        voices += [
            {"id": v.name, "name": v.name, "language": v.language, "engine": v.engine}
            for v in await self.catalog.voices()
        ]
        return web.json_response({"voices": voices})

    async def speech(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        fmt, speed = body.get("response_format") or "mp3", body.get("speed", 1.0)
        text = _required_str(body, "input")
        if body.get("model") not in TTS_MODELS:
            raise ApiError(
                404,
                f"the model {body.get('model')!r} does not exist; one of {', '.join(TTS_MODELS)}",
                "model_not_found",
                param="model",
            )
        if len(text) > self.api.max_input_chars:
            raise ApiError(
                400,
                f"input is {len(text)} characters; at most {self.api.max_input_chars}",
                "string_above_max_length",
                param="input",
            )
        if not isinstance(fmt, str) or fmt not in FORMATS:
            raise ApiError(
                400,
                f"response_format {fmt!r} is not one of {', '.join(FORMATS)}",
                "unsupported_value",
                param="response_format",
            )
        if not isinstance(speed, int | float) or isinstance(speed, bool) or not 0.25 <= speed <= 4.0:
            raise ApiError(400, "speed must be a number from 0.25 to 4.0", "invalid_value", param="speed")
        if body.get("stream_format", "audio") != "audio":
            raise ApiError(
                400, 'only stream_format "audio" is served', "unsupported_value", param="stream_format"
            )
        voice = body.get("voice") or DEFAULT_VOICE
        model_id = await self.catalog.resolve(voice if isinstance(voice, str) else None)
        if model_id is None:
            raise ApiError(
                400,
                f"no worker offers the voice {voice!r} (GET /v1/audio/voices lists them)",
                "voice_not_found",
                param="voice",
            )
        try:
            async with speech_session(
                self.orchestrator.pool, self.settings, model_id, "openai", self.orchestrator.metrics
            ) as speech:
                speech.feed(text)
                speech.finish()
                return await self._stream(request, speech, StreamEncoder(fmt, OUTPUT_RATE, float(speed)))
        except TtsUnavailable as exc:
            raise ApiError(503, str(exc), "tts_unavailable", "server_error") from None
        except grpc.aio.AioRpcError as exc:  # the worker refused before any audio (e.g. its max_text_chars)
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise ApiError(
                    400,
                    f"the voice's worker refused the input: {exc.details()}",
                    "invalid_value",
                    param="input",
                ) from None
            raise ApiError(
                502,
                f"the TTS worker failed: {exc.code().name}: {exc.details()}",
                "tts_failed",
                "server_error",
            ) from None

    async def _stream(self, request: web.Request, speech, encoder: StreamEncoder) -> web.StreamResponse:
        frames = speech.frames()
        try:
            first = await anext(frames)  # a worker that fails before any audio still gets a 503
        except StopAsyncIteration:
            first = b""
        response = web.StreamResponse(headers={"Content-Type": encoder.content_type})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            await response.write(await asyncio.to_thread(encoder.feed, first))
            async for frame in frames:
                data = await asyncio.to_thread(encoder.feed, frame)
                if data:
                    await response.write(data)
            await response.write(await asyncio.to_thread(encoder.finish))
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            log.info("speech client gone mid-stream peer=%s", request.remote)
        except TtsUnavailable as exc:  # headers are out: all a client can be told is a cut stream
            log.warning("speech cut mid-stream: %s", exc)
            if request.transport is not None:
                request.transport.close()
        finally:
            await frames.aclose()
        return response

    async def transcriptions(self, request: web.Request) -> web.Response:
        fields, data = await self._form(request)
        model, fmt = fields.get("model", ""), fields.get("response_format", "json")
        asr = self.orchestrator.asr
        if model not in (*ASR_ALIASES, asr.name):
            raise ApiError(
                404,
                f"the model {model!r} does not exist; one of {', '.join((*ASR_ALIASES, asr.name))}",
                "model_not_found",
                param="model",
            )
        if fmt not in RESPONSE_FORMATS:
            raise ApiError(
                400,
                f"response_format {fmt!r} is not one of {', '.join(RESPONSE_FORMATS)}",
                "unsupported_value",
                param="response_format",
            )
        granularities = fields.get("timestamp_granularities", [])
        if "word" in granularities:
            raise ApiError(
                400,
                "this engine gives segment timestamps, not word timestamps",
                "unsupported_value",
                param="timestamp_granularities",
            )
        language = fields.get("language")
        if language and language != asr.language and getattr(asr, "requested_language", None) != "auto":
            raise ApiError(
                400,
                f"the ASR model transcribes {asr.language!r}, not {language!r}",
                "unsupported_value",
                param="language",
            )
        try:
            samples = await asyncio.to_thread(decode_audio, data, ASR_RATE)
        except UndecodableAudio as exc:
            raise ApiError(400, str(exc), "invalid_file", param="file") from None
        transcript = await asr.transcribe(samples.astype(np.float32) / 32768.0, sample_rate=ASR_RATE)
        body, content_type = render(transcript, fmt)
        if isinstance(body, dict):
            return web.json_response(body)
        return web.Response(text=body, content_type=content_type)

    async def _form(self, request: web.Request) -> tuple[dict, bytes]:
        if not request.content_type.startswith("multipart/"):
            raise ApiError(
                400, "send the audio as multipart/form-data with a 'file' field", "invalid_request"
            )
        try:
            return await self._read_form(request)
        except (ValueError, LookupError, BadHttpMessage) as exc:  # no boundary, a broken part, a bad charset
            raise ApiError(400, f"the multipart body cannot be read: {exc}", "invalid_request") from None

    async def _read_form(self, request: web.Request) -> tuple[dict, bytes]:
        limit = int(self.api.max_upload_mb * 1024 * 1024)
        fields: dict = {"timestamp_granularities": []}
        data: bytes | None = None
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                raise ApiError(
                    400, "a multipart inside the form: send each field as a plain part", "invalid_request"
                )
            if part.name == "file":
                chunks, size = [], 0
                while chunk := await part.read_chunk(1 << 16):
                    size += len(chunk)
                    if size > limit:  # refused before the rest is read into memory
                        raise ApiError(
                            413,
                            f"the file is over {self.api.max_upload_mb:g} MB",
                            "file_too_large",
                            param="file",
                        )
                    chunks.append(chunk)
                data = b"".join(chunks)
            elif part.name in ("timestamp_granularities[]", "timestamp_granularities"):
                fields["timestamp_granularities"].append(await part.text())
            elif part.name:
                fields[part.name] = await part.text()
        if data is None:
            raise ApiError(400, "the 'file' field is missing", "invalid_request", param="file")
        return fields, data


async def _json_body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (ValueError, LookupError, RecursionError):  # not JSON, an unknown charset, too deep
        raise ApiError(400, "the body is not JSON", "invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", "invalid_json")
    return body


def _required_str(body: dict, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"{name} must be a non-empty string", "invalid_value", param=name)
    return value
