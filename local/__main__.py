"""`python -m local up|down|status`: the whole serving topology on this machine.

    up      start everything, print the URLs, stay in the foreground; Ctrl-C stops it all
    down    stop a stack started earlier (by PID) and remove its namespaces
    status  each node's process and liveness, Redis, the GCS, Serve; exit 1 unless all healthy
    batch   run a batch benchmark (xgboost or pytorch) on the running stack's Ray cluster
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from local import processes
from local.stack import (
    HEAD_DASHBOARD,
    LocalStack,
    StackError,
    StackState,
    check_platform,
    running_state,
    serve_status_healthy,
)
from local.topology import (
    API_URL,
    DASHBOARD_PORT,
    GRADIO_URL,
    HEAD,
    NODES,
    STATE_DIR,
    WORKERS,
)


def _up(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stack = LocalStack.up(fault_tolerance=not args.no_ft, ui=not args.no_ui,
                          owner_pid=None if args.detach else os.getpid())
    print(
        "\nThe local stack is up"
        + ("" if stack.state.fault_tolerance else " WITHOUT GCS fault tolerance (--no-ft)")
        + f":\n  Chat UI           {GRADIO_URL}\n"
        f"  OpenAI API        {API_URL}/v1  (model \"{stack.serving.served_model_name}\")\n"
        f"  Ray dashboard     port {DASHBOARD_PORT} inside namespace {HEAD.namespace}"
        f" (token: {stack.state.auth_token_path})\n"
        f"  Worker proxies    {', '.join(w.proxy_url for w in WORKERS)}\n"
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
        redis_up = bool(state.redis_pid and processes.alive(state.redis_pid))
        line("redis", redis_up, f"pid {state.redis_pid}" + ("" if redis_up else " not running"))
    for node in NODES:
        record = stack.node_record(node)
        if record is None:
            line(node.name, False, "never started")
            continue
        alive = bool(record.pid and processes.alive(record.pid))
        probe = "liveness " + ("not yet probed" if record.probe_ok is None else record.probe_detail)
        text = (f"process {'alive' if alive else 'NOT running'} (pid {record.pid}), {record.state}, "
                f"generation {record.generation}; {probe}")
        if record.last_exit:
            text += f"; last restart: {record.last_exit}"
        line(node.name, alive and record.state == "live" and bool(record.probe_ok), text)
    gcs = stack.gcs_reachable()
    line("GCS", gcs, "reachable" if gcs else "NOT reachable")
    serve = stack.serve_status()
    if serve is None:
        line("Serve", False, "status unknown: the dashboard does not answer")
    else:
        deployments = ", ".join(f"{name} {d.get('status')}" for name, d in serve.get("deployments", {}).items())
        line("Serve", serve_status_healthy(serve), f"application {serve.get('status')} ({deployments})")
    print("healthy" if not problems else f"NOT healthy: {', '.join(problems)}")
    return 0 if not problems else 1


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the local stack")
    up.add_argument("--no-ft", action="store_true", help="no Redis: show what GCS fault tolerance buys")
    up.add_argument("--no-ui", action="store_true", help="skip the Gradio UI")
    up.add_argument("--detach", action="store_true", help="return once up (stop with `down`)")
    commands.add_parser("down", help="stop the local stack")
    commands.add_parser("status", help="each part's health; exit 1 unless all are healthy")
    batch = commands.add_parser("batch", help="run a benchmark job on the local Ray cluster")
    batch.add_argument("job", choices=("xgboost", "pytorch"))
    batch.add_argument("job_args", nargs=argparse.REMAINDER, help="passed to the job script, e.g. --rows 2000")
    args = parser.parse_args(argv)
    try:
        return {"up": _up, "down": _down, "status": _status, "batch": _batch}[args.command](args)
    except StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
