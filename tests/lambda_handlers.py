"""Loads a Lambda handler (lambda/<name>/index.py) as a module: `lambda` is a Python
keyword, so the folder cannot be imported as a package."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.conftest import ROOT


def load_handler(folder: str) -> ModuleType:
    name = f"{folder}_index"
    spec = importlib.util.spec_from_file_location(name, ROOT / "lambda" / folder / "index.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
