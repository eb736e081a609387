"""A fake Kubernetes API for the drill's Kubernetes backend: one RayService and its head pod,
with KubeRay's behaviour of replacing a deleted head pod (ready after a few polls), and a
serve endpoint that answers chat completions. Served on 127.0.0.1 by tests/test_drill.py
and by the drill's staged CodeBuild project (tests/test_staged_drill.py).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit


class FakeCluster:
    """The state behind the fake API: one RayService, its head pod, and KubeRay's
    behaviour of replacing a deleted head pod (ready after a few polls)."""

    def __init__(self):
        self.head_uid = 1
        self.polls_until_ready = 0
        self.deletions: list[tuple[str, int | None]] = []
        self.authorizations: list[str] = []
        self.chat_status = 200
        self.never_ready = False
        self.lock = threading.Lock()
        # Worker pods: name -> polls left until Ready (a replacement starts not Ready).
        self.workers = {"ray-serve-llm-abcde-cpu-worker-a": 0, "ray-serve-llm-abcde-cpu-worker-b": 0}
        self.next_worker = "c"

    def worker_pods(self) -> list[dict]:
        with self.lock:
            pods = []
            for name, polls in list(self.workers.items()):
                self.workers[name] = polls - 1
                pods.append({
                    "metadata": {"name": name, "namespace": "ray-serving", "uid": f"uid-{name}",
                                 "labels": {"ray.io/cluster": "ray-serve-llm-abcde", "ray.io/node-type": "worker"}},
                    "status": {"conditions": [{"type": "Ready", "status": "True" if polls <= 0 else "False"}]},
                })
            return pods

    def delete_worker(self, name: str, grace: int | None) -> dict:
        with self.lock:
            self.deletions.append((name, grace))
            del self.workers[name]
            # The drained pod terminates; KubeRay creates a replacement that becomes Ready later.
            self.workers[f"ray-serve-llm-abcde-cpu-worker-{self.next_worker}"] = 3
            self.next_worker = chr(ord(self.next_worker) + 1)
            return {"metadata": {"name": name}}

    def head_pod(self) -> dict:
        with self.lock:
            ready = self.polls_until_ready <= 0 and not self.never_ready
            self.polls_until_ready -= 1
            return {
                "metadata": {"name": f"ray-serve-llm-abcde-head-{self.head_uid}", "namespace": "ray-serving",
                             "uid": f"uid-{self.head_uid}",
                             "labels": {"ray.io/cluster": "ray-serve-llm-abcde", "ray.io/node-type": "head"}},
                "status": {"phase": "Running" if ready else "Pending",
                           "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
            }

    def delete(self, name: str, grace: int | None) -> None:
        with self.lock:
            self.deletions.append((name, grace))
            self.head_uid += 1
            self.polls_until_ready = 3


def api_handler(cluster: FakeCluster):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            cluster.authorizations.append(self.headers.get("Authorization", ""))
            url = urlsplit(self.path)
            if url.path == "/apis/ray.io/v1/namespaces/ray-serving/rayservices/ray-serve-llm":
                return self._send(200, {
                    "apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "ray-serve-llm"},
                    "status": {"activeServiceStatus": {
                        "rayClusterName": "ray-serve-llm-abcde",
                        "applicationStatuses": {"llm": {"status": "RUNNING"}}}},
                })
            if url.path == "/api/v1/namespaces/ray-serving/pods":
                selector = set(parse_qs(url.query)["labelSelector"][0].split(","))
                node_type = "worker" if "ray.io/node-type=worker" in selector else "head"
                assert selector == {"ray.io/cluster=ray-serve-llm-abcde", f"ray.io/node-type={node_type}"}
                items = cluster.worker_pods() if node_type == "worker" else [cluster.head_pod()]
                return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
            if url.path == "/v1/models":
                return self._send(200, {"object": "list", "data": [{"id": "tiny", "object": "model"}]})
            self._send(404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404})

        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            self.rfile.read(length)
            if self.path == "/v1/chat/completions":
                answer = {"choices": [{"message": {"role": "assistant", "content": "hi"}}]}
                return self._send(cluster.chat_status, answer)
            self._send(404, {})

        def do_DELETE(self):
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            grace = body.get("gracePeriodSeconds")
            if grace is None and "gracePeriodSeconds" in parse_qs(url.query):
                grace = int(parse_qs(url.query)["gracePeriodSeconds"][0])
            name = url.path.rsplit("/", 1)[1]
            if "-worker-" in name:
                return self._send(200, {"kind": "Pod", "apiVersion": "v1", **cluster.delete_worker(name, grace)})
            deleted = cluster.head_pod()
            cluster.delete(url.path.rsplit("/", 1)[1], grace)
            # The API answers a pod delete with the pod, now terminating.
            self._send(200, {"kind": "Pod", "apiVersion": "v1", **deleted})

    return Handler
