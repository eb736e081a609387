"""Loads a Lambda handler (lambda/<name>/index.py) as a module: `lambda` is a Python
keyword, so the folder cannot be imported as a package. The folder goes on sys.path, as
the Lambda runtime puts the code's root there, so the handler's sibling modules import."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

from tests.conftest import ROOT


def _on_path(folder: str) -> None:
    directory = str(ROOT / "lambda" / folder)
    if directory not in sys.path:
        sys.path.insert(0, directory)


def load_handler(folder: str) -> ModuleType:
    _on_path(folder)
    name = f"{folder}_index"
    spec = importlib.util.spec_from_file_location(name, ROOT / "lambda" / folder / "index.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_module(folder: str, name: str) -> ModuleType:
    """A sibling module of a handler, e.g. `load_module("rayservice_ready", "kube_api")`."""
    _on_path(folder)
    return importlib.import_module(name)
