"""The `appliance` command: the services, the tools, the benchmarks (docs/configuration.md)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import sys
from pathlib import Path

import grpc

from appliance import certs, redis_acl
from appliance.config import SERVICE_KINDS, ConfigError, WorkerSettings, guess_kind, load_settings
from appliance.discovery import host_port_arg
from appliance.interop import commands as interop_commands
from appliance.modelstore import commands as models_commands
from appliance.orchestrator.access import commands as access_commands
from appliance.tts import say as say_command


def _worker_settings(args: argparse.Namespace) -> WorkerSettings:
    return load_settings(
        WorkerSettings,
        args.config,
        host=args.host,
        port=args.port,
        name=args.name,
        redis_url=args.redis_url,
        metrics_port=args.metrics_port,
    )


def cmd_tts_worker(args: argparse.Namespace) -> int:
    from appliance.logs import setup_logging
    from appliance.tts.worker import TTSWorker

    settings = _worker_settings(args)
    setup_logging(settings.log_level)

    async def serve() -> None:
        await TTSWorker(settings).serve_forever()

    asyncio.run(serve())
    return 0


def cmd_orchestrator(args: argparse.Namespace) -> int:
    from appliance.config import OrchestratorSettings
    from appliance.interop.openai_api import OpenAiApi
    from appliance.logs import setup_logging
    from appliance.orchestrator.server import Orchestrator

    settings = load_settings(
        OrchestratorSettings,
        args.config,
        host=args.host,
        port=args.port,
        redis_url=args.redis_url,
        workers=args.worker,
    )
    setup_logging(settings.log_level)

    async def serve() -> None:  # gRPC channels bind to the loop they are made in
        orchestrator = Orchestrator(settings)
        OpenAiApi.mount(orchestrator)  # the OpenAI audio API under /v1
        await orchestrator.serve_forever()

    asyncio.run(serve())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from appliance.embedded import run_embedded
    from appliance.logs import setup_logging

    setup_logging("info")
    asyncio.run(run_embedded(port=args.port, host=args.host, livekit_url=args.livekit_url))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from appliance.chat import chat

    token = args.token or os.environ.get("APPLIANCE_ACCESS_TOKEN")
    return asyncio.run(chat(args.wav, args.url, args.out, timeout=args.timeout, token=token))


def cmd_check_config(args: argparse.Namespace) -> int:
    kind = args.kind or guess_kind(args.file)
    settings = load_settings(SERVICE_KINDS[kind], args.file)
    print(f"{args.file}: valid {kind} configuration")
    if args.show:
        print(json.dumps(settings.model_dump(mode="json"), indent=2))
    return 0


def _report(result: dict, out: str | None) -> int:
    """A benchmark's JSON on stdout, and in ``out`` when given."""
    text = json.dumps(result, indent=2)
    if out:
        Path(out).write_text(text + "\n")
    print(text)
    return 0


def cmd_bench_tts(args: argparse.Namespace) -> int:
    from appliance.bench.tts import run_bench

    result = asyncio.run(
        run_bench(trials=args.trials, concurrency=args.concurrency, worker=args.worker, model=args.model)
    )
    return _report(result, args.out)


def cmd_bench_conversation(args: argparse.Namespace) -> int:
    if args.transport != "websocket":
        from appliance.bench.transports import run_bench as run_transports

        transports = [t.strip() for t in args.transport.split(",") if t.strip()]
        return _report(asyncio.run(run_transports(transports, turns=args.turns)), args.out)
    from appliance.bench.conversation import run_bench

    result = asyncio.run(run_bench(turns=args.turns, url=args.url))
    return _report(result, args.out)


def cmd_bench_responder(args: argparse.Namespace) -> int:
    from appliance.bench.responder import run_bench

    result = asyncio.run(
        run_bench(
            prompts=args.prompts,
            model=args.model,
            threads=args.threads,
            n_gpu_layers=args.n_gpu_layers,
            max_tokens=args.max_tokens,
            cancel_trials=args.cancel_trials,
        )
    )
    return _report(result, args.out)


def cmd_workers(args: argparse.Namespace) -> int:
    from appliance.config import OrchestratorSettings
    from appliance.orchestrator.operator_view import fetch_orchestrator, format_table, read_redis

    settings = load_settings(OrchestratorSettings, args.config, redis_url=args.redis_url)
    try:
        if args.url or not settings.redis_url:
            url = args.url or f"http://{settings.host}:{settings.port}"
            view = fetch_orchestrator(url)
        else:
            view = asyncio.run(read_redis(settings))
    except OSError as exc:
        print(f"appliance: cannot read the worker registry: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(view, indent=2) if args.json else format_table(view))
    return 0


def cmd_bench_routing(args: argparse.Namespace) -> int:
    from appliance.bench.routing import run_bench

    result = asyncio.run(
        run_bench(
            workers=args.workers, trials=args.trials, spawn_trials=args.spawn_trials, redis_url=args.redis_url
        )
    )
    return _report(result, args.out)


def cmd_bench_failover(args: argparse.Namespace) -> int:
    from appliance.bench.failover import run_bench

    engines = ("mock", "piper") if args.engine == "both" else (args.engine,)
    result = asyncio.run(run_bench(trials=args.trials, engines=engines, stall_ms=args.stall_ms))
    return _report(result, args.out)


def cmd_bench_soak(args: argparse.Namespace) -> int:
    from appliance.bench.soak import run_bench

    if args.sessions < 1 or args.minutes <= 0:
        print("appliance: bench soak needs --sessions ≥ 1 and --minutes > 0", file=sys.stderr)
        return 2
    result = asyncio.run(run_bench(sessions=args.sessions, minutes=args.minutes, every_s=args.sample_s))
    return _report(result, args.out)


def cmd_bench_wyoming(args: argparse.Namespace) -> int:
    from appliance.bench.wyoming import run_bench

    return _report(asyncio.run(run_bench(trials=args.trials, peer_python=args.peer_python)), args.out)


def cmd_bench_openai(args: argparse.Namespace) -> int:
    from appliance.bench.openai_api import run_bench

    return _report(asyncio.run(run_bench(trials=args.trials)), args.out)


def _installed_version() -> str:
    try:
        return importlib.metadata.version("appliance")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description="Self-hosted full-duplex voice assistant")
    parser.add_argument("--version", action="version", version=f"appliance {_installed_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("tts-worker", help="run a TTS worker (gRPC)")
    p.add_argument("--config", help="TOML file, e.g. /etc/appliance/tts/piper.toml")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--name")
    p.add_argument("--redis-url", help="register in Redis for discovery (absent: no Redis)")
    p.add_argument("--metrics-port", type=int)
    p.set_defaults(func=cmd_tts_worker)

    p = sub.add_parser("orchestrator", help="run the orchestrator (HTTP + WebSocket)")
    p.add_argument("--config", help="TOML file, e.g. /etc/appliance/orchestrator.toml")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--redis-url", help="discover workers in Redis (absent: the static worker list)")
    p.add_argument(
        "--worker", action="append", metavar="HOST:PORT", help="a TTS worker (repeatable; replaces the list)"
    )
    p.set_defaults(func=cmd_orchestrator)

    p = sub.add_parser("run", help="the embedded default: orchestrator + one Piper worker, no Redis, no root")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument(
        "--livekit-url",
        help="also serve LiveKit rooms through this livekit-server, e.g. ws://127.0.0.1:7880 (key and secret: "
        "APPLIANCE_LIVEKIT__API_KEY and APPLIANCE_LIVEKIT__API_SECRET or APPLIANCE_LIVEKIT__API_SECRET_FILE)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("chat", help="stream a WAV to the appliance in real time and save the reply")
    p.add_argument("--wav", required=True, help="the question, a 16-bit PCM WAV (8-48 kHz)")
    p.add_argument("--url", default="ws://127.0.0.1:8080/ws")
    p.add_argument("--out", help="WAV file for the reply audio (48 kHz)")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument(
        "--token", help="the access secret, for an appliance beyond loopback (or $APPLIANCE_ACCESS_TOKEN)"
    )
    p.set_defaults(func=cmd_chat)

    say_command.add_parser(sub)  # appliance say

    p = sub.add_parser(
        "workers", help="the TTS worker registry: workers, addresses, models, load, last heartbeat"
    )
    p.add_argument(
        "--url", help="http://HOST:PORT of a running orchestrator (its view: down marks, routed counts)"
    )
    p.add_argument(
        "--config", help="orchestrator TOML: read its Redis (redis_url, password, key prefix) directly"
    )
    p.add_argument(
        "--redis-url", help="read this Redis directly (password: APPLIANCE_REDIS_PASSWORD or the URL)"
    )
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.set_defaults(func=cmd_workers)

    p = sub.add_parser("check-config", help="validate a service's TOML file")
    p.add_argument("file")
    p.add_argument(
        "--kind", choices=sorted(SERVICE_KINDS), help="which service it configures (guessed from the path)"
    )
    p.add_argument("--show", action="store_true", help="print the effective settings")
    p.set_defaults(func=cmd_check_config)

    models_commands.add_parser(sub)  # appliance models list|verify|fetch|bundle|lock
    interop_commands.add_parser(sub)  # appliance wyoming, appliance api-key
    access_commands.add_parser(sub)  # appliance access show|rotate
    certs.add_parser(sub)  # appliance certs init|issue
    redis_acl.add_parser(sub)  # appliance redis-acl

    p = sub.add_parser("bench", help="benchmarks (JSON out)")
    bsub = p.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    q = bsub.add_parser("tts", help="TTFA, RTF and control latency through a real gRPC worker")
    q.add_argument("--trials", type=int, default=24)
    q.add_argument("--concurrency", type=int, default=8)
    q.add_argument(
        "--worker",
        type=host_port_arg,
        help="HOST:PORT of a running worker (absent: start one as a subprocess)",
    )
    q.add_argument("--model", default="piper-en_US-joe-medium")
    q.add_argument("--out", help="also write the JSON here")
    q.set_defaults(func=cmd_bench_tts)
    q = bsub.add_parser(
        "conversation", help="voice-to-voice, barge-in and false barge-in over the real WebSocket"
    )
    q.add_argument("--turns", type=int, default=20)
    q.add_argument("--url", help="ws://HOST:PORT/ws of a running appliance (absent: start `appliance run`)")
    q.add_argument(
        "--transport",
        default="websocket",
        help="websocket (the full set above), or a comma list of websocket,webrtc,livekit: voice-to-voice "
        "and barge-in per transport in one run (livekit starts the livekit-server that "
        "scripts/build-livekit-server.sh built, or $LIVEKIT_SERVER)",
    )
    q.add_argument("--out", help="also write the JSON here")
    q.set_defaults(func=cmd_bench_conversation)
    q = bsub.add_parser(
        "routing", help="routing decision time with N workers; new worker usable after start (Redis)"
    )
    q.add_argument("--workers", type=int, default=100, help="registered workers for the decision timing")
    q.add_argument("--trials", type=int, default=200, help="routing decisions timed (≥ 20)")
    q.add_argument("--spawn-trials", type=int, default=20, help="real worker processes started (0: skip)")
    q.add_argument("--redis-url", help="a running Redis (absent: start a redis-server on a free port)")
    q.add_argument("--out", help="also write the JSON here")
    q.set_defaults(func=cmd_bench_routing)
    q = bsub.add_parser(
        "responder", help="the embedded LLM: first token/sentence, tokens/s, cancel, vs the raw runtime"
    )
    q.add_argument("--prompts", type=int, default=20)
    q.add_argument(
        "--model", default="local", help="a models.lock LLM id or a .gguf path (local: smollm2-135m-instruct)"
    )
    q.add_argument("--threads", type=int, default=0, help="llama.cpp CPU threads (0: half the cores)")
    q.add_argument("--n-gpu-layers", type=int, default=0)
    q.add_argument("--max-tokens", type=int, default=60)
    q.add_argument("--cancel-trials", type=int, default=20, help="generations interrupted (≥ 20)")
    q.add_argument("--out", help="also write the JSON here")
    q.set_defaults(func=cmd_bench_responder)
    q = bsub.add_parser("failover", help="the gap when the worker serving a reply is SIGKILLed or SIGSTOPped")
    q.add_argument("--trials", type=int, default=20)
    q.add_argument("--engine", choices=["mock", "piper", "both"], default="both")
    q.add_argument("--stall-ms", type=int, default=1200, help="the orchestrator's playback.tts_stall_ms")
    q.add_argument("--out", help="also write the JSON here")
    q.set_defaults(func=cmd_bench_failover)
    q = bsub.add_parser(
        "soak", help="N spoken conversations at once for M minutes: answers, dropouts, latency, leaks"
    )
    q.add_argument("--sessions", type=int, default=8)
    q.add_argument("--minutes", type=float, default=10.0)
    q.add_argument("--sample-s", type=float, default=30.0, help="how often the processes are sampled")
    q.add_argument("--out", help="also write the JSON here")
    q.set_defaults(func=cmd_bench_soak)
    q = bsub.add_parser(
        "wyoming", help="Wyoming TTS first audio and ASR latency against wyoming-piper/-faster-whisper"
    )
    q.add_argument("--trials", type=int, default=20)
    q.add_argument("--peer-python", help="the Python of a venv with wyoming-piper and wyoming-faster-whisper")
    q.add_argument("--out", help="also write the JSON here")
    q.set_defaults(func=cmd_bench_wyoming)
    q = bsub.add_parser(
        "openai", help="/v1/audio/speech time to first byte (streaming) and transcription latency"
    )
    q.add_argument("--trials", type=int, default=20)
    q.add_argument("--out", help="also write the JSON here")
    q.set_defaults(func=cmd_bench_openai)

    from appliance.offline_bundle import add_parser as add_bundle_parser  # stdlib only: cheap

    add_bundle_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"appliance: configuration error:\n{exc}", file=sys.stderr)
        return 2
    except grpc.aio.AioRpcError as exc:
        print(f"appliance: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
