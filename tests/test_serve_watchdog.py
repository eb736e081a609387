"""The Serve control-plane watchdog (images/ray-serve/ray_serve_llm/serve_watchdog.py): when it
acts, and what it does, against a local HTTP server that answers as the head's dashboard
does while Serve's controller is stuck ALIVE on a dead node. The real failure, reproduced on
the local stack, is in tests/test_local_stack.py."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "images" / "ray-serve"))

from ray_serve_llm.serve_watchdog import (
    Bounds,
    Controller,
    Dashboard,
    Judge,
    Observation,
    main,
    read_token,
    remedy,
)

STUCK = Controller("c0ffee", "ALIVE", "deadbeef", node_alive=False)
RESTARTING = Controller("c0ffee", "RESTARTING", "", node_alive=False)
HEALTHY = Controller("c0ffee", "ALIVE", "n1", node_alive=True)


def seen(at: float, controller: Controller | None = STUCK, *, gcs: bool = True, answered: bool = False) -> Observation:
    return Observation(at, gcs, controller, answered)


@pytest.mark.parametrize(
    "story,acts_at",
    [
        # ALIVE on a node the GCS declared dead: conclusive after the dead-node bound (15 s).
        ([seen(t) for t in range(0, 30, 5)], 15),
        # Not answering for another reason (here RESTARTING forever): the general bound (90 s).
        ([seen(t, RESTARTING) for t in range(0, 120, 5)], 90),
        # An answer starts every clock again.
        ([seen(0), seen(10), seen(12, HEALTHY, answered=True), *(seen(t) for t in range(14, 40, 5))], 29),
        # An unhealthy GCS is the head's own business (KubeRay's probe): nothing to judge.
        ([seen(t, gcs=False) for t in range(0, 200, 5)], None),
        ([seen(0), seen(10), seen(12, gcs=False), *(seen(t) for t in range(14, 28, 5))], None),
        # No controller at all: Serve is not started, nothing to watch.
        ([seen(t, None) for t in range(0, 200, 5)], None),
        # A healthy controller that answers.
        ([seen(t, HEALTHY, answered=True) for t in range(0, 200, 5)], None),
        # ALIVE on a live node but slow: only the general bound.
        ([seen(t, HEALTHY) for t in range(0, 100, 5)], 90),
    ],
    ids=["dead-node", "unanswered", "answer-resets", "gcs-down", "gcs-down-resets", "no-serve", "healthy", "slow"],
)
def test_the_watchdog_acts_after_its_bound_and_only_then(story, acts_at):
    judge = Judge(Bounds(unanswered_s=90, dead_node_s=15, cooldown_s=120))
    decisions = [(o.at, judge.observe(o)) for o in story]
    first = next((at for at, why in decisions if why), None)
    assert first == acts_at, decisions


def test_after_a_remedy_it_waits_before_judging_again():
    judge = Judge(Bounds(unanswered_s=90, dead_node_s=15, cooldown_s=120))
    assert judge.observe(seen(0)) is None and judge.observe(seen(15)) is not None
    judge.acted(20)
    assert [judge.observe(seen(t)) for t in range(25, 140, 5)] == [None] * 23
    assert judge.observe(seen(140)) is not None  # stuck again after the cool-down: act again
    assert "declared dead" in (judge.observe(seen(145)) or "")


def test_the_reason_names_the_controller_and_the_dead_node():
    judge = Judge(Bounds(dead_node_s=15))
    judge.observe(seen(0))
    why = judge.observe(seen(15))
    assert why == "the controller c0ffee has been ALIVE on node deadbeef, which the GCS declared dead, for 15 s"


def test_the_token_comes_from_the_environment_or_the_handed_over_file(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "token"))
    assert read_token() is None  # not handed over yet: wait, do not fail
    (tmp_path / "token").write_text("t0ken\n")
    assert read_token() == "t0ken"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "env-token")
    assert read_token() == "env-token"


# ---- against a dashboard that answers as Ray 2.60's does when the controller is stuck --------


class FakeHead:
    """The parts of the head's dashboard the watchdog uses: GCS health, the state API (the
    controller ALIVE on a node listed DEAD), a Serve API that does not answer while the stuck
    controller is there, the Jobs API (the kill job) and the Serve config PUT."""

    def __init__(self):
        self.controller_alive = True
        self.jobs: list[str] = []
        self.puts: list[dict] = []
        self.authorizations: set[str] = set()
        self.job_status = "SUCCEEDED"


def _handler(head: FakeHead):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, status: int, body, content_type="application/json") -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            head.authorizations.add(self.headers.get("Authorization", ""))
            url = urlsplit(self.path)
            state = lambda rows: {"result": True, "data": {"result": {"result": rows}}}  # noqa: E731
            if url.path == "/api/gcs_healthz":
                return self._send(200, "success", "text/plain")
            if url.path == "/api/v0/actors":
                assert parse_qs(url.query)["filter_values"] == ["SERVE_CONTROLLER_ACTOR"]
                rows = [{"actor_id": "c0ffee", "state": "ALIVE" if head.controller_alive else "DEAD",
                         "node_id": "deadbeef", "ray_namespace": "serve"}]
                return self._send(200, state(rows))
            if url.path == "/api/v0/nodes":
                return self._send(200, state([{"node_id": "deadbeef", "state": "DEAD"},
                                              {"node_id": "n2", "state": "ALIVE"}]))
            if url.path == "/api/serve/applications/":
                if head.controller_alive:
                    return self._send(503, "Failed to get a response from the controller", "text/plain")
                return self._send(200, {"controller_info": {}, "applications": {}})
            if url.path.startswith("/api/jobs/") and url.path.endswith("/logs"):
                return self._send(200, {"logs": "killed the controller c0ffee\n"})
            if url.path.startswith("/api/jobs/"):
                return self._send(200, {"status": head.job_status})
            self._send(404, {})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert self.path == "/api/jobs/"
            head.jobs.append(body["entrypoint"])
            if head.job_status == "SUCCEEDED":
                head.controller_alive = False
            self._send(200, {"submission_id": "raysubmit_1", "job_id": "raysubmit_1"})

        def do_PUT(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            head.puts.append(body)
            self._send(200, {})

    return Handler


@pytest.fixture
def fake_head():
    head = FakeHead()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(head))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield head, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_it_sees_the_controller_alive_on_a_dead_node_and_unanswered(fake_head):
    head, url = fake_head
    observation = Dashboard(url, "tok").observe(now=1.0)
    assert observation.gcs_healthy and not observation.answered
    assert observation.controller == Controller("c0ffee", "ALIVE", "deadbeef", node_alive=False)
    assert head.authorizations == {"Bearer tok"}


def test_the_remedy_kills_the_controller_in_a_ray_job_and_submits_the_config_again(fake_head, tmp_path):
    head, url = fake_head
    config = tmp_path / "serve-config.json"
    config.write_text(json.dumps({"applications": [{"name": "llm"}]}))
    record = remedy(Dashboard(url, None), STUCK, "stuck", config)
    assert head.jobs == ["python -m ray_serve_llm.serve_watchdog kill-controller --actor-id c0ffee"]
    assert head.puts == [{"applications": [{"name": "llm"}]}]
    assert record["kill_job"] == "SUCCEEDED" and record["result"] == "killed; config submitted again"
    # After the kill the Serve API answers again (no controller): nothing is stuck.
    assert Dashboard(url, None).observe(2.0).controller is None


def test_without_a_config_kuberay_submits_it_again(fake_head):
    head, url = fake_head
    record = remedy(Dashboard(url, None), STUCK, "stuck", None)
    assert head.puts == [] and record["result"] == "killed; the config is submitted again by KubeRay"


def test_a_failed_kill_job_is_reported_and_nothing_is_submitted(fake_head, tmp_path):
    head, url = fake_head
    head.job_status = "FAILED"
    config = tmp_path / "c.json"
    config.write_text("{}")
    record = remedy(Dashboard(url, None), STUCK, "stuck", config)
    assert record["result"] == "kill job FAILED" and head.puts == []


@pytest.mark.parametrize("argv,message", [
    (["watch", "--period", "0"], "argument --period: 0 must be above 0 and at most 3600"),
    (["watch", "--unanswered-bound", "x"], "argument --unanswered-bound: 'x' is not a number"),
    (["kill-controller"], "the following arguments are required: --actor-id"),
    ([], "the following arguments are required: command"),
])
def test_bad_arguments_are_one_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2 and message in capsys.readouterr().err
