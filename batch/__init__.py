"""Batch benchmark jobs for the teams' Ray clusters, and a client that submits them.

`xgboost_benchmark.py` and `pytorch_benchmark.py` are plain scripts: they run as Ray jobs
(from a team head's ConfigMap mount, or from the working directory `submit.py` uploads) and
import only what ships beside them: `job_runner.py` and their argument spec
(`ray_serve_ha/charts/job_args.py`). The library (ray_serve_ha.charts.batch) lists and
ships them; the Dockerfiles here build the teams' Ray images.
"""
