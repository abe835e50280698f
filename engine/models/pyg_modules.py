"""PyG's generated modules kept in a folder sessrec owns, written once and reused by every process.

PyG renders a Python module from a jinja template for each message-passing class it builds (the
fast `propagate` and `edge_updater`) and writes it with `tempfile.NamedTemporaryFile(delete=False)`
into the system temp folder, a new file per class in every process, never removed: a tuning study
of hundreds of trials leaves thousands. `install()` hands PyG a function with the same contract
that names the file after the module and a digest of its text, under the user's cache
(`engine.core.workspace.user_cache_dir()/pyg/`): the same module is the same file for every run.
When the cache cannot be written (a read-only home), PyG's own function is used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os.path as osp
import sys
from pathlib import Path
from typing import Any, Callable

from engine.core.atomic import write_text
from engine.core.workspace import user_cache_dir

_original: Callable[..., Any] | None = None
# the modules of PyG that call `module_from_template` by the name they imported
_CALLERS = ("torch_geometric.nn.conv.message_passing", "torch_geometric.nn.sequential")


def cache_dir() -> Path:
    return user_cache_dir() / "pyg"


def module_from_template(module_name: str, template_path: str, tmp_dirname: str, **kwargs: Any) -> Any:
    """PyG's `torch_geometric.template.module_from_template`, with the rendered file in our cache."""
    if module_name in sys.modules:
        return sys.modules[module_name]
    from jinja2 import Environment, FileSystemLoader
    env = Environment(loader=FileSystemLoader(osp.dirname(template_path)))
    text = env.get_template(osp.basename(template_path)).render(**kwargs)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = cache_dir() / tmp_dirname / f"{module_name}_{digest}.py"
    try:
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text(path, text, "PyG generated module")
    except OSError:
        assert _original is not None
        return _original(module_name, template_path, tmp_dirname, **kwargs)
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def install() -> None:
    """Route PyG's generated modules through `module_from_template` (idempotent; call it before
    the first conv is built)."""
    global _original
    import importlib

    import torch_geometric.template as template
    if _original is None:
        _original = template.module_from_template
    for name in _CALLERS:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(mod, "module_from_template", None) is not None:
            mod.module_from_template = module_from_template
