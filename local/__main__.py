"""`python -m local up|down|status`: the whole serving topology on this machine.

    up      start everything, print the URLs, stay in the foreground; Ctrl-C stops it all
    down    stop a stack started earlier (by PID) and remove its namespaces
    status  each node's process and liveness, Redis, the GCS, Serve; exit 1 unless all healthy
    batch   run a batch benchmark (xgboost or pytorch) on the running stack's Ray cluster
    api-key print the user's API key (the stack's keys: local/api_keys.py)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time

from local import cgroups, processes, prometheus
from local.api_keys import CONSUMERS, USER, ApiKeyError, key_of
from local.cluster_view import HEAD_DASHBOARD, serve_status_healthy
from local.stack import LocalStack, check_platform, running_state
from local.state import (
    REDIS_DIR,
    REDIS_UNIT,
    WATCHDOG_STATUS_FILE,
    WATCHDOG_UNIT,
    NodeRecord,
    StackError,
    StackState,
    held,
)
from local.topology import (
    API_URL,
    DASHBOARD_PORT,
    GRADIO_URL,
    HEAD,
    NODES,
    PROMETHEUS_URL,
    STATE_DIR,
    WORKERS,
)


def _up(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stack = LocalStack.up(fault_tolerance=not args.no_ft, ui=not args.no_ui,
                          owner_pid=None if args.detach else os.getpid(), cpu_weights=not args.no_cpu_weights)
    print(
        "\nThe local stack is up"
        + ("" if stack.state.fault_tolerance else " WITHOUT GCS fault tolerance (--no-ft)")
        + f":\n  Chat UI           {GRADIO_URL}\n"
        f"  OpenAI API        {API_URL}/v1  (model \"{stack.serving.served_model_name}\"; "
        "your key: `python -m local api-key`)\n"
        f"  Ray dashboard     port {DASHBOARD_PORT} inside namespace {HEAD.namespace}"
        f" (token: {stack.state.auth_token_path})\n"
        f"  Worker proxies    {', '.join(w.proxy_url for w in WORKERS)}\n"
        f"  Prometheus        {PROMETHEUS_URL}  (every Ray node's metrics; Serve's are ray_serve_*)\n"
        f"  Logs              {STATE_DIR / 'logs'}\n"
        "Run the HA drill in another terminal: `make drill`. Ctrl-C here (or `make demo-down`) stops everything."
    )
    if args.detach:
        return 0
    stop.wait()
    print("\nStopping the local stack ...")
    current = StackState.load()
    LocalStack(current or stack.state).down()
    print("Stopped; nothing left behind.")
    return 0


def _down(_: argparse.Namespace) -> int:
    check_platform()
    state = StackState.load()
    if state is None:
        LocalStack.clean_leftovers()
        print("No local stack is running.")
        return 0
    LocalStack(state).down()
    print("Stopped the local stack; nothing left behind.")
    return 0


def _status(_: argparse.Namespace) -> int:
    """Prints what is true now, part by part; exit 0 only when every part is healthy."""
    check_platform()
    state = running_state()
    if state is None:
        print("No local stack is running.")
        return 1
    stack = LocalStack(state)
    problems: list[str] = []

    def line(name: str, ok: bool, text: str) -> None:
        print(f"  {name:<11} {'ok ' if ok else 'BAD'}  {text}")
        if not ok:
            problems.append(name)

    print(f"local stack (fault tolerance {'on' if state.fault_tolerance else 'OFF'}), state in {STATE_DIR}")
    supervised = bool(state.supervisor_pid and processes.alive(state.supervisor_pid))
    line("supervisor", supervised, f"pid {state.supervisor_pid}" + ("" if supervised else " not running"))
    if state.fault_tolerance:
        record = stack.record(REDIS_UNIT)
        ok, text = _unit_line(record)
        if record is not None and record.generation > 1:
            text += f"; restarted from its append-only file ({_aof_kib()} KiB)"
        line("redis", ok, text)
    for node in NODES:
        ok, text = _unit_line(stack.node_record(node))
        line(node.name, ok, text)
    ok, text = _watchdog_line(stack.record(WATCHDOG_UNIT))
    line("watchdog", ok, text)
    line("cpu", True, _cpu_weights_line(state.cpu_weights))
    gcs = stack.gcs_reachable()
    line("GCS", gcs, "reachable" if gcs else "NOT reachable")
    serve = stack.serve_status()
    if serve is None:
        line("Serve", False, "status unknown: the dashboard does not answer")
    else:
        deployments = ", ".join(f"{name} {d.get('status')}" for name, d in serve.get("deployments", {}).items())
        line("Serve", serve_status_healthy(serve), f"application {serve.get('status')} ({deployments})")
    proxies = {worker.name: stack.proxy_health(worker) for worker in WORKERS}
    line("proxies", all(ok for ok, _ in proxies.values()),
         ", ".join(f"{name} {detail}" for name, (_, detail) in proxies.items()))
    line("prometheus", *_prometheus_line())
    print("healthy" if not problems else f"NOT healthy: {', '.join(problems)}")
    return 0 if not problems else 1


def _prometheus_line() -> tuple[bool, str]:
    if not prometheus.ready():
        return False, f"{PROMETHEUS_URL} does not answer"
    health = prometheus.targets()
    up = sorted(t for t, h in health.items() if h == "up")
    return len(up) == len(NODES), f"{PROMETHEUS_URL}: {len(up)} of {len(NODES)} Ray nodes scraped"


def _unit_line(record: NodeRecord | None) -> tuple[bool, str]:
    """A supervised unit's line: is its process alive, its state, its probe, its restarts."""
    if record is None:
        return False, "never started"
    alive = bool(record.pid and processes.alive(record.pid))
    probe = "liveness " + ("not yet probed" if record.probe_ok is None else record.probe_detail)
    state = record.state
    if state == "backoff":
        state += f" (next start in {max(0.0, record.next_start_at - time.monotonic()):.1f} s)"
    if not alive and state == "live":
        # Between its exit and the supervisor's next look, the record still says live.
        state = "exited, not yet seen by the supervisor"
    if held(record.name) and record.state != "held":
        state += ", held (kept down until the drill releases it)"
    text = (f"process {'alive' if alive else 'NOT running'} (pid {record.pid}), {state}, "
            f"generation {record.generation}; {probe}")
    if record.last_exit:
        text += f"; last restart: {record.last_exit}"
    return alive and record.state == "live" and bool(record.probe_ok), text


def _aof_kib() -> int:
    files = [p for p in REDIS_DIR.rglob("*.aof*") if p.is_file()]
    return sum(p.stat().st_size for p in files) // 1024


def _watchdog_line(record: NodeRecord | None) -> tuple[bool, str]:
    """The Serve watchdog: its process (a container of the head pod) and what it last saw."""
    if record is None or not record.pid or not processes.alive(record.pid):
        return False, f"NOT running ({record.state if record else 'never started'})"
    try:
        seen = json.loads(WATCHDOG_STATUS_FILE.read_text())
    except (OSError, ValueError):
        return True, f"pid {record.pid}, starting"
    text = f"pid {record.pid}, {seen.get('state')}: {seen.get('detail')}"
    if seen.get("unanswered_for_s") is not None:
        text += f" (unanswered for {seen['unanswered_for_s']:g} s)"
    remedies = seen.get("remedies") or []
    if remedies:
        last = remedies[-1]
        text += (f"; {len(remedies)} remed{'y' if len(remedies) == 1 else 'ies'}, last "
                 f"{time.time() - last['at_wall']:.0f} s ago: {last.get('result')}")
    return seen.get("state") in ("ok", "idle", "waiting", "starting"), text


def _cpu_weights_line(wanted: bool) -> str:
    if not wanted:
        return "CPU weights off (up --no-cpu-weights): the head runs at a higher CPU priority (nice) instead"
    hierarchy, why = cgroups.available()
    if hierarchy is None:
        return (f"no CPU weights: no cgroup can be written ({why}); the head runs at a higher CPU "
                "priority (nice) instead, and times after a head restart mean less than on EKS")
    weights = ", ".join(f"{node.name} {cgroups.read_weight(hierarchy, node.name)}" for node in NODES)
    return f"a cgroup per node with its pod's CPU request as weight ({hierarchy.describe()}): {weights}"


def _batch(args: argparse.Namespace) -> int:
    state = running_state()
    if state is None:
        raise StackError("no local stack is running: start it with `make demo` (or `python -m local up --detach`)")
    from batch.submit import submit

    stack = LocalStack(state)
    # The dashboard is closed to the main namespace: submit from inside the head's, with the token.
    status, _ = stack.in_head(
        lambda: submit(HEAD_DASHBOARD, args.job, args.job_args, headers=stack.auth_header(),
                       on_log=lambda line: print(line, end="")),
        timeout=3600,
    )
    print(f"\njob {args.job}: {status}")
    return 0 if str(status).endswith("SUCCEEDED") else 1


def _api_key(args: argparse.Namespace) -> int:
    print(key_of(args.name))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the local stack")
    up.add_argument("--no-ft", action="store_true", help="no Redis: show what GCS fault tolerance buys")
    up.add_argument("--no-ui", action="store_true", help="skip the Gradio UI")
    up.add_argument("--detach", action="store_true", help="return once up (stop with `down`)")
    up.add_argument("--no-cpu-weights", action="store_true",
                    help="no cgroup per node: the older stand-in (the head at a higher CPU priority), to compare")
    commands.add_parser("down", help="stop the local stack")
    commands.add_parser("status", help="each part's health; exit 1 unless all are healthy")
    batch = commands.add_parser("batch", help="run a benchmark job on the local Ray cluster")
    batch.add_argument("job", choices=("xgboost", "pytorch"))
    batch.add_argument("job_args", nargs=argparse.REMAINDER, help="passed to the job script, e.g. --rows 2000")
    api_key = commands.add_parser("api-key", help="print an API key of the local stack (yours by default)")
    api_key.add_argument("name", nargs="?", default=USER, help=f"whose key ({', '.join(CONSUMERS)}, or one you added)")
    args = parser.parse_args(argv)
    try:
        return {"up": _up, "down": _down, "status": _status, "batch": _batch, "api-key": _api_key}[args.command](args)
    except (StackError, ApiKeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
