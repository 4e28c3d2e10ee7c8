"""Model files: ``models.lock`` (what each model is, its sha256, size, licence and sources), checking
installed files against it, and installing them into ``DIR/<model-id>/`` (default
/var/lib/appliance/models).

A bottom layer: it imports nothing from the services; ``tts`` and ``asr`` use it to find a
model's files in the models directory before falling back to the Python package that ships them.
"""

from appliance.modelstore.lock import Lock, LockedFile, LockedModel, LockError, default_lock_path, load_lock
from appliance.modelstore.verify import (
    DEFAULT_MODELS_DIR,
    MODELS_DIR_ENV,
    check_model,
    find_installed,
    installed_model_dir,
    models_dir,
    packaged_file,
)

__all__ = [
    "DEFAULT_MODELS_DIR",
    "MODELS_DIR_ENV",
    "Lock",
    "LockError",
    "LockedFile",
    "LockedModel",
    "check_model",
    "default_lock_path",
    "find_installed",
    "installed_model_dir",
    "load_lock",
    "models_dir",
    "packaged_file",
]
