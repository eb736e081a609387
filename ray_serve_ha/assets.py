"""Where the files the library ships lie: the Lambda handler sources its constructs package
as assets (`lambda/<handler>/`) and the batch job scripts its team charts mount on the Ray
heads (`batch/`).

In a checkout they are the repository's top-level folders, beside this package. `pip
install` puts them inside the package instead (`ray_serve_ha/_assets/`, mapped in
pyproject.toml), so that the installed library is one top-level name and still finds them.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
# Where `pip install` puts them (pyproject.toml: [tool.setuptools.package-dir]).
INSTALLED = PACKAGE / "_assets"
# A checkout: the repository root.
CHECKOUT = PACKAGE.parent
# The folders, by their name in the repository.
FOLDERS = ("lambda", "batch")


def asset_path(folder: str) -> Path:
    """The folder `folder` (one of FOLDERS) of the installed package, or else of the checkout."""
    if folder not in FOLDERS:
        raise ValueError(f"{folder!r} is not a folder the library ships; it ships: {', '.join(FOLDERS)}")
    for candidate in (INSTALLED / folder, CHECKOUT / folder):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"{folder}/ is neither in {INSTALLED} (installed) nor in {CHECKOUT} (a checkout)")
