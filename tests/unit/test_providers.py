"""The onnxruntime provider each model gets, and the TensorRT engine cache key (no GPU needed)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from appliance.tts.adapters.providers import CPU, CUDA, TRT, Host, choose, engine_cache_key, open_session

SHA = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
GPU_HOST = Host((TRT, CUDA, CPU), trt_version="10", gpu_name="NVIDIA H200")


def names(choice) -> list[str]:
    return [p[0] if isinstance(p, tuple) else p for p in choice.providers]


def test_auto_and_tensorrt_take_tensorrt_then_cuda_then_cpu_on_a_gpu_host(tmp_path):
    for device in ("auto", "tensorrt"):
        choice = choose(device, GPU_HOST, model_sha256=SHA, cache_root=tmp_path)
        assert names(choice) == [TRT, CUDA, CPU] and choice.device == "tensorrt" and not choice.skipped
        options = choice.providers[0][1]
        assert options["trt_fp16_enable"] is True and options["trt_engine_cache_enable"] is True
        assert options["trt_engine_cache_path"] == str(tmp_path / "6e742170d309016e-nvidia-h200-trt10")


def test_cuda_skips_tensorrt_and_cpu_takes_only_the_cpu():
    assert names(choose("cuda", GPU_HOST)) == [CUDA, CPU]
    choice = choose("cpu", GPU_HOST)
    assert names(choice) == [CPU] and choice.device == "cpu" and not choice.skipped


def test_without_tensorrt_libraries_auto_says_why_and_takes_cuda():
    host = Host((TRT, CUDA, CPU), trt_version=None, gpu_name="NVIDIA L4")
    choice = choose("auto", host)
    assert names(choice) == [CUDA, CPU] and choice.device == "cuda"
    assert "libnvinfer" in choice.skipped[TRT]
    assert "CUDAExecutionProvider" in choice.describe("m") and "libnvinfer" in choice.describe("m")


def test_the_cpu_wheel_says_why_both_gpu_providers_are_skipped():
    choice = choose("auto", Host((CPU,)))
    assert names(choice) == [CPU] and choice.device == "cpu"
    assert set(choice.skipped) == {TRT, CUDA} and "onnxruntime-gpu" in choice.skipped[TRT]
    line = choice.describe("kokoro-ja-jf_alpha")
    assert line.startswith("kokoro-ja-jf_alpha: onnxruntime provider CPUExecutionProvider (")


def test_an_unknown_device_is_refused():
    with pytest.raises(ValueError, match="auto, cpu, cuda, tensorrt"):
        choose("metal", GPU_HOST)


def test_the_cache_key_changes_with_the_model_the_gpu_and_the_tensorrt_version():
    key = engine_cache_key(SHA, "NVIDIA H200", "10")
    assert key == "6e742170d309016e-nvidia-h200-trt10"
    assert engine_cache_key("0" * 64, "NVIDIA H200", "10") != key
    assert engine_cache_key(SHA, "NVIDIA L4", "10") != key
    assert engine_cache_key(SHA, "NVIDIA H200", "11") != key
    assert "/" not in engine_cache_key(SHA, "A/B  C", "10")


def test_a_provider_that_fails_to_initialise_falls_through_to_the_cpu(caplog, tmp_path):
    """A host that claims CUDA (as onnxruntime-gpu does on a machine without a usable GPU):
    the session still opens, on the CPU, and the log line says what happened."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = Path(tmp_path) / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with caplog.at_level(logging.INFO, logger="appliance.tts.adapters.providers"):
        session, device = open_session(path, "cuda", 1, label="identity", host=Host((CUDA, CPU)))
    assert device == "cpu" and session.get_providers()[0] == CPU
    assert "identity: onnxruntime provider CPUExecutionProvider (CUDAExecutionProvider" in caplog.text


def test_build_engines_without_tensorrt_builds_nothing_and_says_why(capsys):
    from appliance.cli import main

    if TRT in __import__("onnxruntime").get_available_providers():
        pytest.skip("this host has TensorRT: the gpu tests build engines")
    assert main(["models", "build-engines"]) == 0
    assert "no TensorRT engines built: onnxruntime has no TensorRT provider" in capsys.readouterr().out
    assert main(["models", "build-engines", "--require"]) == 1
