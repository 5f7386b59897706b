"""Load a server implementation's module (``app.py``, or a helper file beside it) for in-process tests.

Every server's module is called ``app.py``; each is loaded under a unique name so servers never collide, once per
test session. ``on_path`` puts the server's folder on ``sys.path`` first, as the launcher's PYTHONPATH does, for
servers that import their own helper modules (``import math_check``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["load_server_module"]


def load_server_module(server_dir: Path, filename: str = "app.py", *, on_path: bool = False) -> ModuleType:
    name = f"gymfleet_test_{server_dir.name}_{Path(filename).stem}"
    if name in sys.modules:
        return sys.modules[name]
    if on_path and str(server_dir) not in sys.path:
        sys.path.insert(0, str(server_dir))
    spec = importlib.util.spec_from_file_location(name, server_dir / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
