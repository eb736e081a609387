"""Each batch job's arguments, declared once: their names, defaults and lower bounds.

The RayJob chart (batch_jobs.py) writes a job's command line from its spec, and the job
script (batch/<job>_benchmark.py) parses that command line with a parser made from the
same spec, so a RayJob, `python -m batch.submit` and a run by hand share one set of
defaults. The team charts ship this file to the Ray heads beside the scripts, at its own
import path (batch.py: `job_files`): standard library only.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Arguments whose value the chart takes from where the job runs (the team's worker pods),
# not from the job's own arguments.
PLACEMENT = ("workers", "cpus_per_worker", "use_gpu")


@dataclass(frozen=True)
class Option:
    """One argument: `--<name with dashes>`. A bool is a flag (off by default); a number
    must be at least `minimum` (None: any)."""

    name: str
    default: int | float | bool
    help: str = ""
    minimum: int | float | None = 1

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class JobArguments:
    """A job's script (a file of batch/) and its options."""

    job: str
    script: str
    description: str
    options: tuple[Option, ...]

    def option(self, name: str) -> Option:
        by_name = {option.name: option for option in self.options}
        if name not in by_name:
            raise KeyError(f"job {self.job!r} has no option {name!r}")
        return by_name[name]

    def default(self, name: str) -> Any:
        return self.option(name).default

    def parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(description=self.description)
        for option in self.options:
            if isinstance(option.default, bool):
                parser.add_argument(option.flag, action="store_true", help=option.help or None)
            else:
                parser.add_argument(
                    option.flag, type=type(option.default), default=option.default, help=option.help or None
                )
        return parser

    def parse(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
        """The script's arguments; a value below its bound, or fewer rows than Ray Train
        workers, ends the run with argparse's usage error (exit status 2)."""
        parser = self.parser()
        args = parser.parse_args(argv)
        for option in self.options:
            bounded = option.minimum is not None and not isinstance(option.default, bool)
            if bounded and getattr(args, option.name) < option.minimum:
                parser.error(f"{option.flag} must be at least {option.minimum}")
        if args.rows < args.workers:
            parser.error(f"--rows {args.rows} is fewer than --workers {args.workers}: every worker needs rows")
        return args

    def command_line(self, values: Mapping[str, Any]) -> list[str]:
        """`values` (option name -> value) as the script's arguments, in the spec's order; a
        true flag is written bare, a false one left out."""
        unknown = sorted(set(values) - {option.name for option in self.options})
        if unknown:
            raise ValueError(f"job {self.job!r} has no option(s) {', '.join(unknown)}")
        args: list[str] = []
        for option in self.options:
            if option.name not in values:
                continue
            value = values[option.name]
            if isinstance(option.default, bool):
                args += [option.flag] if value else []
            else:
                args += [option.flag, str(value)]
        return args


_ROWS = Option("rows", 100_000, "training rows, over all workers")
_FEATURES = Option("features", 20)
_WORKERS = Option("workers", 2, "Ray Train workers")
_CPUS_PER_WORKER = Option("cpus_per_worker", 1)
_MIN_ACCURACY = Option("min_accuracy", 0.0, "fail below this test accuracy", minimum=None)

XGBOOST = JobArguments(
    job="xgboost",
    script="xgboost_benchmark.py",
    description="XGBoost benchmark: data-parallel training with Ray Train, then prediction on held-out rows.",
    options=(
        _ROWS,
        _FEATURES,
        Option("rounds", 50, "boosting rounds"),
        _WORKERS,
        _CPUS_PER_WORKER,
        Option("max_depth", 6),
        _MIN_ACCURACY,
    ),
)
PYTORCH = JobArguments(
    job="pytorch",
    script="pytorch_benchmark.py",
    description="PyTorch benchmark: a small MLP trained data-parallel (DDP) with Ray Train, then prediction.",
    options=(
        _ROWS,
        _FEATURES,
        Option("epochs", 5),
        Option("batch_size", 256, "per worker"),
        _WORKERS,
        _CPUS_PER_WORKER,
        Option("hidden", 64, "width of the two hidden layers"),
        Option("use_gpu", False, "one GPU per worker (NVIDIA workers)"),
        _MIN_ACCURACY,
    ),
)
# Job name -> its arguments (and script): the registry of batch jobs.
JOB_ARGUMENTS: dict[str, JobArguments] = {spec.job: spec for spec in (XGBOOST, PYTORCH)}
