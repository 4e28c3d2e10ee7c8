"""`appliance say`: text → WAV through a TTS worker (a running one, or one started in-process)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

import grpc

from appliance.audio import OUTPUT_RATE
from appliance.audio.wavio import write_wav
from appliance.config import WorkerSettings, load_settings
from appliance.discovery import host_port_arg
from appliance.rpc.tls import TlsFileError, channel_credentials
from appliance.tts.client import TTSClient


@asynccontextmanager
async def worker_address(worker: str | None, model: str = ""):
    """Yield the address of ``worker``, or of a worker started here on a free loopback port."""
    if worker:
        yield worker
        return
    from appliance.tts.worker import TTSWorker

    overrides = {"port": 0, "metrics_port": None, "name": "say"}
    if model:
        overrides["models"] = {"default": model}
    settings = load_settings(WorkerSettings, None, **overrides)
    local = TTSWorker(settings)
    await local.start()
    try:
        yield local.address
    finally:
        await local.stop(grace=0)


async def say(
    text: str,
    out: Path,
    *,
    worker: str | None = None,
    model: str = "",
    credentials: grpc.ChannelCredentials | None = None,
) -> dict:
    """``credentials``: TLS to ``worker`` (``appliance.rpc.tls.channel_credentials``)."""
    async with (
        worker_address(worker, model) as address,
        TTSClient(address, credentials=credentials) as client,
    ):
        await client.wait_ready(15 if worker else 60)  # a running worker answers at once
        sid = f"say-{uuid.uuid4().hex[:8]}"
        await client.start_session(sid, model)
        try:
            t0 = time.perf_counter()
            pcm, frames = await client.synthesize_all(sid, text)
            took = time.perf_counter() - t0
        finally:
            await client.end_session(sid)
    write_wav(out, pcm, OUTPUT_RATE)
    return {
        "out": str(out),
        "frames": len(frames) - 1,
        "audio_s": round(len(pcm) / 2 / OUTPUT_RATE, 3),
        "synth_s": round(took, 3),
    }


def add_parser(sub) -> None:
    p = sub.add_parser("say", help="synthesise text to a WAV file (48 kHz mono)")
    p.add_argument("text")
    p.add_argument("--out", required=True, help="WAV file to write")
    p.add_argument(
        "--worker",
        type=host_port_arg,
        help="HOST:PORT of a running worker (absent: start one in this process)",
    )
    p.add_argument("--model", help="model id (absent: the worker's default)")
    p.add_argument("--ca", help="--worker over TLS: the CA certificate that signed the worker's (PEM)")
    p.add_argument("--cert", help="with --ca, for a worker that wants mutual TLS: this client's certificate")
    p.add_argument("--key", help="with --cert: its private key")
    p.set_defaults(func=cmd_say)


def _credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    if (args.ca or args.cert or args.key) and not args.worker:
        raise ValueError("--ca, --cert and --key are for a running worker (--worker HOST:PORT)")
    if (args.cert or args.key) and not (args.ca and args.cert and args.key):
        raise ValueError("mutual TLS needs all three of --ca, --cert and --key")
    if not args.ca:
        return None
    return channel_credentials(*(Path(f) if f else None for f in (args.ca, args.cert, args.key)))


def cmd_say(args: argparse.Namespace) -> int:
    try:
        creds = _credentials(args)
    except (ValueError, TlsFileError) as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(
            say(args.text, Path(args.out), worker=args.worker, model=args.model or "", credentials=creds)
        )
    except TimeoutError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0
