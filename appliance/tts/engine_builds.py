"""``appliance models build-engines``: build the TensorRT engines of the ONNX models ahead of time,
so the first session on a GPU host never waits minutes for a build.

Only models whose adapter runs its ONNX graph through the provider choice (Kokoro) have engines;
a host without onnxruntime's TensorRT provider or the TensorRT libraries builds nothing and says
why (exit 0: nothing to do), unless ``--require`` makes that a failure (exit 1).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from appliance.tts.adapters.kokoro import assembled_from_parts
from appliance.tts.adapters.providers import TRT, detect_host, open_session, trt_cache_root
from appliance.tts.catalog import Catalog

log = logging.getLogger(__name__)

ENGINES_WITH_TRT = ("kokoro",)


def build_engines(args: argparse.Namespace) -> int:
    host = detect_host()
    reason = ""
    if TRT not in host.available:
        reason = "onnxruntime has no TensorRT provider here (it needs onnxruntime-gpu and a GPU)"
    elif host.trt_version is None:
        reason = "the TensorRT 10 libraries (libnvinfer) are not installed"
    if reason:
        print(f"no TensorRT engines built: {reason}")
        return 1 if args.require else 0
    catalog = Catalog(models_dir=Path(args.dir) if args.dir else None)
    specs = [s for s in catalog.specs() if s.engine in ENGINES_WITH_TRT]
    if args.model:
        specs = [catalog.get(m) for m in args.model]
    failed = 0
    for spec in specs:
        files = spec.locate(catalog.models_dir)
        model = files.get("onnx")
        if model is None:
            model = Path(assembled_from_parts())
        t0 = time.perf_counter()
        _session, device = open_session(model, "tensorrt", 0, label=spec.model_id, host=host)
        took = time.perf_counter() - t0
        if device != "tensorrt":
            print(f"{spec.model_id}: FAILED, onnxruntime gave it {device} (see the log line above)")
            failed += 1
            continue
        print(f"{spec.model_id}: engine ready in {took:.0f} s under {trt_cache_root()}")
    return 1 if failed else 0
