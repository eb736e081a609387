"""A stand-in for the docker CLI where no Docker daemon exists (run as `docker`).

Records each call (argv, stdin, working directory) as a JSON line in $FAKE_DOCKER_LOG and
answers as a daemon that holds no image yet: `inspect` fails, `login`, `build`, `tag` and
`push` succeed. `build` first checks what a real build of the context would refuse: the
context or the Dockerfile missing, or a COPY/ADD source that the context lacks."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def instructions(dockerfile: Path) -> list[list[str]]:
    """The Dockerfile's instructions as words, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    return [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def copy_sources(dockerfile: Path) -> list[str]:
    """The context paths that the Dockerfile's COPY and ADD instructions read (not those
    copied from another build stage)."""
    sources: list[str] = []
    for words in instructions(dockerfile):
        if words[0].upper() not in ("COPY", "ADD") or any(w.startswith("--from=") for w in words[1:]):
            continue
        arguments = [word for word in words[1:] if not word.startswith("--")]
        if arguments[0].startswith("["):  # the JSON form
            arguments = json.loads(" ".join(arguments))
        sources.extend(arguments[:-1])
    return sources


def check_build(argv: list[str], cwd: Path) -> str | None:
    context = cwd / argv[-1]
    dockerfile = context / (_option(argv, "--file") or "Dockerfile")
    if not context.is_dir():
        return f"unable to prepare context: path {context} not found"
    if not dockerfile.is_file():
        return f"failed to read dockerfile: open {dockerfile}: no such file or directory"
    for source in copy_sources(dockerfile):
        if not list(context.glob(source)):
            return f'failed to compute cache key: "/{source}": not found'
    return None


def main(argv: list[str]) -> int:
    stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
        log.write(json.dumps({"argv": argv, "stdin": stdin, "cwd": os.getcwd()}) + "\n")
    if argv[:1] == ["inspect"]:
        print(f"Error: No such object: {argv[-1]}", file=sys.stderr)
        return 1
    if argv[:1] == ["build"]:
        problem = check_build(argv, Path.cwd())
        if problem:
            print(f"ERROR: {problem}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
