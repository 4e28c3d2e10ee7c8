from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


from hang_watchdog import pytest_runtest_protocol  # noqa: F401 (a hook: pytest finds it by name)

# Importing ansible (the Ansible unit tests do) replaces sys.intern with a patch object, which
# torch's compiler refuses when it is imported later in the same process (the CSM tests): torch
# comes first where it is installed.
try:
    import torch._dynamo  # noqa: F401
except ImportError:
    pass
from redis_server import RedisServer
from services import OrchestratorProcess, WorkerProcess


@pytest.fixture(scope="session")
def piper_worker():
    worker = WorkerProcess()
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


def _has_cuda() -> bool:
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def _torch_has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skips = {}
    if not _has_cuda():
        skips["gpu"] = pytest.mark.skip(
            reason="needs an NVIDIA GPU with onnxruntime-gpu (CUDAExecutionProvider)"
        )
    if not _torch_has_cuda():
        skips["cuda_torch"] = pytest.mark.skip(reason="needs an NVIDIA GPU with torch's CUDA build")
    for item in items:
        for marker, skip in skips.items():
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def orchestrator(piper_worker):
    orch = OrchestratorProcess([piper_worker.address])
    try:
        orch.wait_ready()
        yield orch
    finally:
        orch.stop()


@pytest.fixture(scope="session")
def smart_turn_model():
    """The smart-turn ONNX file, from the model store (fetched once into ~/.cache/appliance/models
    from the pinned wheel); the test is skipped where it cannot be had."""
    from appliance.asr.turn_model import MODEL_FILE, MODEL_ID, locate_turn_model
    from appliance.modelstore import load_lock
    from appliance.modelstore.fetch import Fetcher

    found = locate_turn_model()
    if found is not None:
        return found
    root = Path.home() / ".cache" / "appliance" / "models"
    path = root / MODEL_ID / MODEL_FILE
    if not path.is_file():
        lock = load_lock()
        try:
            Fetcher(lock, root, strategies=["package", "pypi"], progress=False).fetch([lock.get(MODEL_ID)])
        except Exception as exc:  # noqa: BLE001 (no network, no pip: nothing to test with)
            pytest.skip(f"smart-turn model not available: {exc}")
    return path


@pytest.fixture
def redis_server():
    """A real redis-server on a free loopback port, with a password (new and empty for each test)."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def start_orchestrator():
    """Start in-process orchestrators (``settings`` as load_settings keywords; ``asr`` optional),
    stopped at the end of the test."""
    from appliance.config import OrchestratorSettings, load_settings
    from appliance.orchestrator.server import Orchestrator

    started = []

    async def start(asr=None, **settings):
        orch = Orchestrator(
            load_settings(OrchestratorSettings, None, host="127.0.0.1", port=0, **settings), asr=asr
        )
        await orch.start()
        started.append(orch)
        return orch

    yield start
    for orch in started:
        await orch.stop()
