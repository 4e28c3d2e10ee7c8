"""The OpenAPI 3.1 document of the /v1 routes, served at /v1/openapi.json."""

from __future__ import annotations

from appliance.audio.encode import FORMATS
from appliance.interop.transcript_formats import RESPONSE_FORMATS

_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*statuses: int) -> dict:
    why = {
        400: "bad input",
        401: "no valid API key",
        404: "unknown model",
        413: "file too large",
        502: "the TTS worker failed",
        503: "no TTS worker available",
    }
    return {
        str(s): {"description": why[s], "content": {"application/json": {"schema": _ERROR}}} for s in statuses
    }


def document() -> dict:
    audio_types = sorted({f.content_type for f in FORMATS.values()})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "appliance OpenAI-compatible audio API",
            "version": "1.0.0",
            "description": "Speech and transcription on the appliance's TTS workers and Whisper.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {
            "/v1/models": {
                "get": {
                    "operationId": "listModels",
                    "summary": "The models the API accepts",
                    "responses": {
                        "200": {
                            "description": "the models",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/ModelList"}}
                            },
                        },
                        **_errors(401),
                    },
                }
            },
            "/v1/audio/voices": {
                "get": {
                    "operationId": "listVoices",
                    "summary": "The voices the TTS workers offer",
                    "responses": {
                        "200": {
                            "description": "the voices",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["voices"],
                                        "properties": {
                                            "voices": {
                                                "type": "array",
                                                "items": {
                                                    "type": "object",
                                                    "required": ["id", "name"],
                                                    "properties": {
                                                        "id": {"type": "string"},
                                                        "name": {"type": "string"},
                                                    },
                                                },
                                            }
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(401),
                    },
                }
            },
            "/v1/audio/speech": {
                "post": {
                    "operationId": "createSpeech",
                    "summary": "Speak the input; the audio streams as it is made",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/SpeechRequest"}}
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "the audio, chunked",
                            "content": {
                                t: {"schema": {"type": "string", "format": "binary"}} for t in audio_types
                            },
                        },
                        **_errors(400, 401, 404, 502, 503),
                    },
                }
            },
            "/v1/audio/transcriptions": {
                "post": {
                    "operationId": "createTranscription",
                    "summary": "Transcribe an audio file",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {"$ref": "#/components/schemas/TranscriptionRequest"}
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "the transcript",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "oneOf": [
                                            {"$ref": "#/components/schemas/Transcription"},
                                            {"$ref": "#/components/schemas/TranscriptionVerbose"},
                                        ]
                                    }
                                },
                                "text/plain": {"schema": {"type": "string"}},
                                "application/x-subrip": {"schema": {"type": "string"}},
                                "text/vtt": {"schema": {"type": "string"}},
                            },
                        },
                        **_errors(400, 401, 404, 413),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["message", "type", "code"],
                            "properties": {
                                "message": {"type": "string"},
                                "type": {"type": "string"},
                                "param": {"type": ["string", "null"]},
                                "code": {"type": ["string", "null"]},
                            },
                        }
                    },
                },
                "ModelList": {
                    "type": "object",
                    "required": ["object", "data"],
                    "properties": {
                        "object": {"const": "list"},
                        "data": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["id", "object", "owned_by"],
                                "properties": {
                                    "id": {"type": "string"},
                                    "object": {"const": "model"},
                                    "created": {"type": "integer"},
                                    "owned_by": {"type": "string"},
                                },
                            },
                        },
                    },
                },
                "SpeechRequest": {
                    "type": "object",
                    "required": ["model", "input", "voice"],
                    "properties": {
                        "model": {"type": "string", "examples": ["tts-1"]},
                        "input": {"type": "string", "minLength": 1},
                        "voice": {"type": "string", "description": 'a worker\'s voice id, or "default"'},
                        "response_format": {"enum": list(FORMATS), "default": "mp3"},
                        "speed": {"type": "number", "minimum": 0.25, "maximum": 4.0, "default": 1.0},
                        "stream_format": {"enum": ["audio"], "default": "audio"},
                    },
                },
                "TranscriptionRequest": {
                    "type": "object",
                    "required": ["file", "model"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "model": {"type": "string", "examples": ["whisper-1"]},
                        "language": {"type": "string"},
                        "prompt": {"type": "string"},
                        "response_format": {"enum": list(RESPONSE_FORMATS), "default": "json"},
                        "temperature": {"type": "number"},
                        "timestamp_granularities[]": {"type": "array", "items": {"enum": ["segment"]}},
                    },
                },
                "Transcription": {
                    "type": "object",
                    "required": ["text"],
                    "properties": {"text": {"type": "string"}},
                },
                "TranscriptionVerbose": {
                    "type": "object",
                    "required": ["task", "language", "duration", "text"],
                    "properties": {
                        "task": {"const": "transcribe"},
                        "language": {"type": "string"},
                        "duration": {"type": "number"},
                        "text": {"type": "string"},
                        "segments": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["id", "start", "end", "text"],
                                "properties": {
                                    "id": {"type": "integer"},
                                    "start": {"type": "number"},
                                    "end": {"type": "number"},
                                    "text": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        },
    }
