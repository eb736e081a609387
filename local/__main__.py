"""`python -m local up|down|status`: the whole serving topology on this machine.

    up      start everything, print the URLs, stay in the foreground; Ctrl-C stops it all
    down    stop a stack started earlier (by PID) and remove its namespaces
    status  say whether a stack is running and what it serves
    batch   run a batch benchmark (xgboost or pytorch) on the running stack's Ray cluster
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from local.stack import LocalStack, StackError, StackState, check_platform, running_state
from local.topology import API_URL, DASHBOARD_URL, GRADIO_URL, HEAD, STATE_DIR, WORKERS


def _up(args: argparse.Namespace) -> int:
    stack = LocalStack.up(fault_tolerance=not args.no_ft, ui=not args.no_ui)
    print(
        "\nThe local stack is up"
        + ("" if stack.state.fault_tolerance else " WITHOUT GCS fault tolerance (--no-ft)")
        + f":\n  Chat UI           {GRADIO_URL}\n"
        f"  OpenAI API        {API_URL}/v1  (model \"{stack.serving.served_model_name}\")\n"
        f"  Ray dashboard     {DASHBOARD_URL}\n"
        f"  Worker proxies    {', '.join(w.proxy_url for w in WORKERS)}\n"
        f"  Logs              {STATE_DIR / 'logs'}\n"
        "Run the HA drill in another terminal: `make drill`. Ctrl-C here stops everything."
    )
    if args.detach:
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
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
    state = running_state()
    if state is None:
        print("No local stack is running.")
        return 1
    stack = LocalStack(state)
    serve = stack.serve_status()
    print(
        f"running (fault tolerance {'on' if state.fault_tolerance else 'OFF'}); head generation "
        f"{state.head_generation} in namespace {HEAD.namespace}; Serve: "
        f"{serve.get('status') if serve else 'unreachable'}"
    )
    return 0


def _batch(args: argparse.Namespace) -> int:
    if running_state() is None:
        raise StackError("no local stack is running: start it with `make demo` (or `python -m local up --detach`)")
    from batch.submit import submit

    status, _ = submit(DASHBOARD_URL, args.job, args.job_args, on_log=lambda line: print(line, end=""))
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
    commands.add_parser("status", help="is a local stack running?")
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
