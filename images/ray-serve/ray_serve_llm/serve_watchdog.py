"""`python -m ray_serve_llm.serve_watchdog watch`: keeps Serve's control plane answering.

It runs beside the Ray head: a container of the head pod on Kubernetes (charts/rayservice.py),
a process in the head's network namespace in the local stack. Both ask only the head's
dashboard, on the pod's own loopback, with the cluster's Ray token.

Why it exists (Ray 2.60, read from the GCS sources: gcs_node_manager.cc, gcs_actor_manager.cc,
gcs_server.cc). When the GCS declares a node dead it writes the node's DEAD record to Redis
from the node manager, and only afterwards, on another io_context, the actor manager
restarts the node's actors and writes each one's RESTARTING record. A GCS killed between
the two writes (a second head crash while the first restart is still declaring the old head
dead) leaves Redis holding the node DEAD and the actors on it ALIVE. The next GCS loads the
node as dead, so no health check and no node-death callback ever runs for it, and loads the
actor as ALIVE on that node: Serve's detached controller stays "alive" at an address that
refuses connections, callers retry it forever, and every later GCS restart reloads the same
records. Requests keep flowing (proxies and replicas are alive), but nothing can replace a
replica, scale or take a new config; KubeRay's probes (raylet and GCS health) pass.

What it does, every `--period` seconds:

- the GCS must be healthy (the dashboard's /api/gcs_healthz, KubeRay's own check), or there
  is nothing to judge yet;
- Serve must have a controller (the SERVE_CONTROLLER_ACTOR in the actor table), or Serve is
  not started and there is nothing to watch;
- the controller must answer: the dashboard's Serve API (what KubeRay polls) returns its
  status within `--answer-timeout`.

When it has not answered for `--unanswered-bound` seconds while the GCS was healthy, or
sooner (`--dead-node-bound`) when the actor table shows it ALIVE on a node the GCS has
declared dead (the state above, conclusive), it takes the remedy that recovers:

1. kill the controller actor for good (`ray.kill(no_restart=True)`) from a Ray job on the
   head: restarting it cannot work (the GCS would never learn its worker died), and another
   head restart reloads the same records;
2. the cluster now has no Serve application, and the Serve config is submitted again through
   the dashboard. KubeRay does exactly that for a RayService whose cluster reports no
   application (rayservice_controller.go, checkIfNeedSubmitServeApplications); where there
   is no KubeRay (the local stack) the watchdog submits the config it was given
   (`--serve-config`);
3. the new controller, started by the dashboard as the first one was, recovers the
   applications from Serve's checkpoint in the GCS and finds the running replicas and
   proxies by name: none is restarted, and no request fails.

The watch loop uses the standard library only; `kill-controller` (the job's entrypoint)
imports Ray. One line per change goes to stdout; `--status-file` gets the latest state.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SERVE_CONTROLLER_NAME = "SERVE_CONTROLLER_ACTOR"
SERVE_NAMESPACE = "serve"
DEFAULT_DASHBOARD = "http://127.0.0.1:8265"
PERIOD_S = 5.0
ANSWER_TIMEOUT_S = 10.0
# Longer than a healthy recovery takes: after a head restart the controller is restarted
# only once the old head is declared dead and the new head's agents have started (about
# 30 s from a healthy GCS on a loaded 2-core machine, see README).
UNANSWERED_BOUND_S = 90.0
# The GCS restarts a dead node's actors within milliseconds of declaring it dead: an actor
# still ALIVE on a dead node this long later will never be restarted.
DEAD_NODE_BOUND_S = 15.0
# After a remedy, give the new controller time to come up before judging again.
COOLDOWN_S = 120.0
JOB_TIMEOUT_S = 180.0


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} serve-watchdog: {message}", flush=True)


# ---- what one check sees, and what the watchdog decides --------------------------------------


@dataclass(frozen=True)
class Controller:
    actor_id: str
    state: str
    node_id: str
    node_alive: bool


@dataclass(frozen=True)
class Observation:
    at: float  # time.monotonic()
    gcs_healthy: bool
    controller: Controller | None  # None: Serve has no controller (not started)
    answered: bool
    detail: str = ""


@dataclass(frozen=True)
class Bounds:
    unanswered_s: float = UNANSWERED_BOUND_S
    dead_node_s: float = DEAD_NODE_BOUND_S
    cooldown_s: float = COOLDOWN_S


@dataclass
class Judge:
    """Decides from a stream of observations when to act. Pure: no I/O, no clock of its own."""

    bounds: Bounds = field(default_factory=Bounds)
    unanswered_since: float | None = None
    on_dead_node_since: float | None = None
    last_remedy_at: float | None = None

    def observe(self, seen: Observation) -> str | None:
        """Returns why to take the remedy now, or None."""
        if not seen.gcs_healthy or seen.controller is None or seen.answered:
            # Nothing to judge (the GCS is the head's own business; no controller: Serve is
            # not started), or all is well: every clock starts again.
            self.unanswered_since = self.on_dead_node_since = None
            return None
        if self.unanswered_since is None:
            self.unanswered_since = seen.at
        controller = seen.controller
        if controller.state == "ALIVE" and not controller.node_alive:
            if self.on_dead_node_since is None:
                self.on_dead_node_since = seen.at
        else:
            self.on_dead_node_since = None
        if self.last_remedy_at is not None and seen.at - self.last_remedy_at < self.bounds.cooldown_s:
            return None
        if self.on_dead_node_since is not None and seen.at - self.on_dead_node_since >= self.bounds.dead_node_s:
            return (f"the controller {controller.actor_id} has been ALIVE on node {controller.node_id}, which the "
                    f"GCS declared dead, for {seen.at - self.on_dead_node_since:.0f} s")
        if seen.at - self.unanswered_since >= self.bounds.unanswered_s:
            return (f"the controller {controller.actor_id} ({controller.state}) has not answered for "
                    f"{seen.at - self.unanswered_since:.0f} s while the GCS was healthy")
        return None

    def acted(self, at: float) -> None:
        self.last_remedy_at = at
        self.unanswered_since = self.on_dead_node_since = None


# ---- talking to the head's dashboard ---------------------------------------------------------


class Dashboard:
    def __init__(self, url: str, token: str | None):
        self.url = url.rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers=self.headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
        return json.loads(raw) if raw.strip() else None

    def text(self, path: str, timeout: float) -> str:
        request = urllib.request.Request(f"{self.url}{path}", headers=self.headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return str(response.read(4096).decode(errors="replace"))

    def _state(self, path: str) -> list[dict[str, Any]]:
        body = self.call("GET", path, timeout=ANSWER_TIMEOUT_S)
        return list(body["data"]["result"]["result"])

    def observe(self, now: float) -> Observation:
        try:
            gcs_healthy = "success" in self.text("/api/gcs_healthz", timeout=5)
        except (OSError, ValueError):
            gcs_healthy = False
        if not gcs_healthy:
            return Observation(now, False, None, False, "the GCS is not healthy")
        try:
            query = urllib.parse.urlencode({"filter_keys": "name", "filter_predicates": "=",
                                            "filter_values": SERVE_CONTROLLER_NAME, "detail": "1"})
            actors = [a for a in self._state(f"/api/v0/actors?{query}")
                      if a.get("ray_namespace") == SERVE_NAMESPACE and a.get("state") != "DEAD"]
            nodes = {n["node_id"]: n.get("state") for n in self._state("/api/v0/nodes?detail=1")}
        except (OSError, ValueError, KeyError, TypeError) as error:
            return Observation(now, True, None, False, f"the actor table did not answer: {type(error).__name__}")
        if not actors:
            return Observation(now, True, None, False, "Serve is not started")
        actor = actors[0]
        node_id = actor.get("node_id") or ""
        controller = Controller(actor["actor_id"], actor.get("state", "?"), node_id, nodes.get(node_id) == "ALIVE")
        try:
            status = self.call("GET", "/api/serve/applications/", timeout=ANSWER_TIMEOUT_S)
            answered = bool(status.get("controller_info"))
            detail = "the controller answered" if answered else "the Serve API answered without a controller"
        except (OSError, ValueError, AttributeError) as error:
            answered, detail = False, f"the Serve API did not answer: {type(error).__name__}"
        return Observation(now, True, controller, answered, detail)

    def run_job(self, entrypoint: str, timeout_s: float = JOB_TIMEOUT_S) -> tuple[str, str]:
        """Runs `entrypoint` as a Ray job on the head; returns (final status, log tail)."""
        submitted = self.call("POST", "/api/jobs/", {"entrypoint": entrypoint, "entrypoint_num_cpus": 0}, timeout=30)
        job_id = submitted["submission_id"]
        deadline = time.monotonic() + timeout_s
        status = "PENDING"
        while time.monotonic() < deadline:
            status = self.call("GET", f"/api/jobs/{job_id}", timeout=10)["status"]
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                break
            time.sleep(1)
        try:
            logs = str(self.call("GET", f"/api/jobs/{job_id}/logs", timeout=10).get("logs", ""))
        except (OSError, ValueError, AttributeError):
            logs = ""
        return status, logs[-1000:]


def read_token() -> str | None:
    """The cluster's Ray token: RAY_AUTH_TOKEN, else the file RAY_AUTH_TOKEN_PATH names (the
    head container hands it to this one through a shared in-memory volume)."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        try:
            return Path(path).read_text().strip() or None
        except OSError:
            return None
    return None


# ---- the loop ---------------------------------------------------------------------------------


@dataclass
class Status:
    """What `--status-file` holds (the local stack's `status` reads it)."""

    pid: int
    state: str = "starting"  # starting | idle | ok | waiting | unanswered | remedy
    detail: str = ""
    last_check_wall: float | None = None
    last_answer_wall: float | None = None
    unanswered_for_s: float | None = None
    remedies: list[dict[str, Any]] = field(default_factory=list)

    def save(self, path: Path | None) -> None:
        if path is None:
            return
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=1))
        os.replace(temporary, path)


def remedy(dashboard: Dashboard, controller: Controller, why: str, serve_config: Path | None) -> dict[str, Any]:
    started = time.monotonic()
    record: dict[str, Any] = {"at_wall": time.time(), "why": why, "controller": controller.actor_id}
    log(f"remedy: {why}; killing the controller for good from a Ray job on the head")
    status, logs = dashboard.run_job(
        f"python -m ray_serve_llm.serve_watchdog kill-controller --actor-id {controller.actor_id}")
    record["kill_job"] = status
    if status != "SUCCEEDED":
        log(f"remedy: the kill job ended {status}: {logs.strip()[-300:]}")
        record["result"] = f"kill job {status}"
        return record
    if serve_config is None:
        log("remedy: controller killed; KubeRay submits the Serve config again (the cluster has no application)")
        record["result"] = "killed; the config is submitted again by KubeRay"
    else:
        # The dashboard creates the new controller (as it created the first one, so it reads the
        # same checkpoint) and applies the same config: nothing is redeployed.
        config = json.loads(serve_config.read_text())
        deadline = time.monotonic() + 60
        while True:
            try:
                dashboard.call("PUT", "/api/serve/applications/", config, timeout=60)
                break
            except (OSError, ValueError) as error:
                if time.monotonic() > deadline:
                    record["result"] = f"killed; submitting the config failed: {error}"
                    log(f"remedy: {record['result']}")
                    return record
                time.sleep(2)
        log("remedy: controller killed and the Serve config submitted again")
        record["result"] = "killed; config submitted again"
    record["took_s"] = round(time.monotonic() - started, 1)
    return record


def watch(args: argparse.Namespace) -> int:
    judge = Judge(Bounds(args.unanswered_bound, args.dead_node_bound, args.cooldown))
    status = Status(pid=os.getpid())
    status_file = Path(args.status_file) if args.status_file else None
    serve_config = Path(args.serve_config) if args.serve_config else None
    last_line = ""
    log(f"watching Serve's control plane through {args.dashboard} every {args.period:g} s "
        f"(bounds: {args.unanswered_bound:g} s unanswered, {args.dead_node_bound:g} s on a dead node)")
    while True:
        token = read_token()
        dashboard = Dashboard(args.dashboard, token)
        now = time.monotonic()
        seen = dashboard.observe(now)
        why = judge.observe(seen)
        status.last_check_wall = time.time()
        if seen.answered:
            status.last_answer_wall = status.last_check_wall
        status.unanswered_for_s = None if judge.unanswered_since is None else round(now - judge.unanswered_since, 1)
        if not seen.gcs_healthy:
            status.state = "waiting"
        elif seen.controller is None:
            status.state = "idle"
        else:
            status.state = "ok" if seen.answered else "unanswered"
        status.detail = seen.detail
        if seen.controller is not None and not seen.controller.node_alive and seen.controller.state == "ALIVE":
            status.detail += f"; the controller is ALIVE on node {seen.controller.node_id}, which is dead"
        line = f"{status.state}: {status.detail}"
        if line != last_line:
            log(line)
            last_line = line
        if why is not None and seen.controller is not None:
            status.state, status.detail = "remedy", why
            status.save(status_file)
            status.remedies.append(remedy(dashboard, seen.controller, why, serve_config))
            judge.acted(time.monotonic())
        status.save(status_file)
        time.sleep(args.period)


def kill_controller(actor_id: str) -> int:
    """The remedy's Ray job: kills the named controller for good if it is still `actor_id`."""
    import ray

    ray.init(address="auto", log_to_driver=False)
    try:
        handle = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        print("no Serve controller: nothing to kill")
        return 0
    if handle._actor_id.hex() != actor_id:
        print(f"the controller is now {handle._actor_id.hex()}, not {actor_id}: nothing to kill")
        return 0
    ray.kill(handle, no_restart=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        except ValueError:
            print(f"killed the controller {actor_id}")
            return 0
        time.sleep(0.2)
    print(f"the controller {actor_id} was killed but its name is still taken", file=sys.stderr)
    return 1


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text} must be above 0 and at most 3600")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_serve_llm.serve_watchdog",
                                     description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    watch_parser = commands.add_parser("watch", help="watch Serve's controller and take the remedy when it is stuck")
    watch_parser.add_argument("--dashboard", default=DEFAULT_DASHBOARD, help="the head's dashboard URL")
    watch_parser.add_argument("--period", type=_positive, default=PERIOD_S, help="seconds between checks")
    watch_parser.add_argument("--unanswered-bound", type=_positive, default=UNANSWERED_BOUND_S,
                              help="act after the controller has not answered this long while the GCS was healthy")
    watch_parser.add_argument("--dead-node-bound", type=_positive, default=DEAD_NODE_BOUND_S,
                              help="act after the controller has been ALIVE on a dead node this long")
    watch_parser.add_argument("--cooldown", type=_positive, default=COOLDOWN_S,
                              help="seconds after a remedy before judging again")
    watch_parser.add_argument("--serve-config", default=None,
                              help="a JSON Serve config to submit again after the remedy (no KubeRay)")
    watch_parser.add_argument("--status-file", default=None, help="where to write the latest state as JSON")
    kill_parser = commands.add_parser("kill-controller", help="(the remedy's Ray job) kill the stuck controller")
    kill_parser.add_argument("--actor-id", required=True)
    args = parser.parse_args(argv)
    if args.command == "kill-controller":
        return kill_controller(args.actor_id)
    try:
        return watch(args)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
