"""A plain clone runs every test: the CRD schemas are the project's own, and nothing in the
project reads from outside the repository."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import ROOT
from tests.crd_schemas import CRD_FILES

OUTSIDE = re.compile(r"\.\./shared|parent\s*/\s*[\"']shared[\"']")


def test_every_crd_schema_the_tests_use_is_in_the_project_with_its_source():
    for relative in CRD_FILES.values():
        schema = ROOT / "schemas" / relative
        assert schema.is_file(), f"{schema} missing"
        source = (schema.parent / "SOURCE.md").read_text()
        # An upstream repository, and the version: a tag, or a commit where it has no tags.
        pinned = "tag " in source or re.search(r"commit [0-9a-f]{40}\b", source)
        assert "github.com/" in source and pinned, f"{schema.parent}/SOURCE.md names no upstream"


def test_no_tracked_file_refers_outside_the_repository():
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    offenders = []
    for name in tracked:
        path = ROOT / name
        if name.startswith("schemas/") or not path.is_file() or path.suffix in {".png", ".json", ".yaml"}:
            continue
        if name == "tests/test_self_contained.py":
            continue
        if OUTSIDE.search(path.read_text(errors="ignore")):
            offenders.append(name)
    assert offenders == []
