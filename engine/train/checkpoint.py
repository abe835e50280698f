"""Writing checkpoints `best.pt` and `last.pt` (read by `engine.models.checkpoint`): everything needed
to rebuild the model alone and to resume.

Contents: format version, the run's TrainConfig (with resolved model params), dataset name (resolved
in the workspace that holds the run, never by an absolute path), item count and item-map
fingerprint, model state,
optimizer and scheduler state, epoch / step / position inside the epoch, RNG states (torch, CUDA,
numpy, python), early-stopping state and library versions. Written atomically.
"""

from __future__ import annotations

import platform
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine import __version__
from engine.core.atomic import atomic_path
from engine.core.errors import StorageError
from engine.models.checkpoint import CKPT_FORMAT


def versions() -> dict:
    import torch_geometric
    return {"sessrec": __version__, "torch": torch.__version__, "torch_geometric": torch_geometric.__version__,
            "python": platform.python_version(), "numpy": np.__version__}


def rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically. Disk full or any OS error: StorageError naming the file."""
    payload = {"format": CKPT_FORMAT, "versions": versions(), **payload}
    try:
        with atomic_path(path, f"checkpoint {path.name}") as tmp:
            # a Python file object: a failed write raises OSError with its errno (disk full, file
            # too large), where torch's own writer only says "enforce fail at inline_container.cc"
            with open(tmp, "wb") as f:
                torch.save(payload, f)
    except StorageError:
        raise
    except OSError as e:
        raise StorageError(f"checkpoint {path.name}", path, e) from e
    except RuntimeError as e:          # torch's writer wraps the failed write
        cause = e.__cause__ or e.__context__
        if isinstance(cause, OSError):
            raise StorageError(f"checkpoint {path.name}", path, cause) from e
        raise
