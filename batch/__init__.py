"""Batch benchmark jobs for the teams' Ray clusters, and a client that submits them.

`xgboost_benchmark.py` and `pytorch_benchmark.py` are plain scripts: they run as Ray jobs
(from this folder as the job's working directory, or from a ConfigMap on a team's head pod)
and import only `job_runner.py`, which ships beside them. This module stays free of Ray imports: the charts
read the script table from it.
"""

from __future__ import annotations

from pathlib import Path

BATCH_DIR = Path(__file__).resolve().parent
# Job name -> script in this folder.
JOB_SCRIPTS: dict[str, str] = {"xgboost": "xgboost_benchmark.py", "pytorch": "pytorch_benchmark.py"}
# Modules the scripts import, shipped beside them.
SHARED_MODULES: tuple[str, ...] = ("job_runner.py",)
