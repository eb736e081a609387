"""The mixed serve config (an on-demand floor, spot replicas above it, a router in front) run
for real on a local Ray cluster of three nodes: a head with no CPUs (as on EKS), an
"on-demand" worker and a "spot" worker, each advertising its capacity type's Ray resource as
the RayService's worker groups do. Then the spot worker is killed (an interruption with no
notice at all, worse than EC2's two minutes) and requests go on.

Run as a script (`python tests/spot_cluster.py`): it owns its Ray instance, apart from the
test session's, and prints one JSON report on its last line. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVE_IMAGE = ROOT / "images" / "ray-serve"
sys.path[:0] = [str(ROOT), str(SERVE_IMAGE)]

os.environ.update({
    "HF_HUB_OFFLINE": "1",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
})

APP = "llm"
REQUESTS_PER_PHASE = 20


def mixed_config(model_dir: str, port: int) -> dict:
    """The serve config the RayService carries with servingCapacityType=mixed, for the tiny
    model on the CPU engine (the floor and the spot deployment ask for one CPU each, plus
    their capacity type's resource)."""
    from ray_serve_ha.charts.serve_config import LlmServing, serve_config

    config = serve_config(LlmServing(
        model_id=model_dir, served_model_name="tiny-mistral", engine="transformers", max_tokens=16,
        min_replicas=2, max_replicas=2, on_demand_replicas=1,
    ))
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    # One proxy, on the head (all nodes share one address here).
    config["proxy_location"] = "HeadOnly"
    application = config["applications"][0]
    application["args"].update({"max_model_len": 256})
    return config


def replica_nodes(app: str, deployment: str) -> list[str]:
    """The node ids of a deployment's replica actors that answer, asked of each replica."""
    import ray

    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    found = []
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith(prefix):
            handle = ray.get_actor(actor["name"], namespace=actor["namespace"])
            # A replica dead with its node, or not placed, does not answer.
            with contextlib.suppress(ray.exceptions.RayError, TimeoutError):
                found.append(ray.get(
                    handle.__ray_call__.remote(lambda _: ray.get_runtime_context().get_node_id()), timeout=10
                ))
    return found


def main() -> None:
    import httpx
    import ray
    from ray import serve
    from ray._common.utils import get_default_ray_temp_dir
    from ray.cluster_utils import Cluster
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    from ray_serve_ha.charts.serve_config import CAPACITY_RESOURCES, DEPLOYMENT_NAME, SPOT_DEPLOYMENT_NAME
    from ray_serve_llm.tiny_model import save_tiny_model

    workdir = Path(tempfile.mkdtemp(prefix="spot-"))
    model_dir = str(save_tiny_model(workdir / "tiny-mistral"))
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    report: dict = {}
    # Ray's Cluster writes the head's address under the default temp dir (/tmp/ray), whatever
    # temp_dir the head has, and fails where that folder does not exist yet (a fresh machine).
    os.makedirs(get_default_ray_temp_dir(), exist_ok=True)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False,
        "object_store_memory": 80 * 2**20, "temp_dir": str(workdir / "r"),
    })
    try:
        nodes = {
            capacity: cluster.add_node(
                num_cpus=2, resources={resource: 1}, node_ip_address="127.0.0.1", object_store_memory=80 * 2**20,
            )
            for capacity, resource in CAPACITY_RESOURCES.items()
        }
        ray.init(address=cluster.address, log_to_driver=False, runtime_env={
            "working_dir": str(SERVE_IMAGE), "env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
        })
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        config = mixed_config(model_dir, port)
        _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config))
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            status = serve.status().applications.get(APP)
            if status is not None and str(status.status).endswith("RUNNING"):
                break
            if status is not None and str(status.status).endswith("FAILED"):
                raise SystemExit(f"the mixed application failed: {status.message}")
            time.sleep(1)
        else:
            raise SystemExit(f"the mixed application never ran: {serve.status()}")
        report["ready_s"] = round(time.monotonic() - deadline + 240, 1)
        node_ids = {capacity: node.node_id for capacity, node in nodes.items()}
        report["floor_nodes"] = [k for n in replica_nodes(APP, DEPLOYMENT_NAME) for k, v in node_ids.items() if v == n]
        report["spot_nodes"] = [
            k for n in replica_nodes(APP, SPOT_DEPLOYMENT_NAME) for k, v in node_ids.items() if v == n
        ]

        def ask(n: int) -> dict:
            ok, failed, streamed = 0, 0, 0
            served_by: dict[str, int] = {}
            for index in range(n):
                body = {"messages": [{"role": "user", "content": f"hello {index}"}], "max_tokens": 8,
                        "stream": index % 2 == 1}
                try:
                    answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=60)
                    good = answer.status_code == 200 and (
                        answer.text.rstrip().endswith("data: [DONE]") if body["stream"]
                        else answer.json()["object"] == "chat.completion"
                    )
                except httpx.HTTPError:
                    good = False
                ok += good
                failed += not good
                streamed += good and body["stream"]
                if good:
                    by = answer.headers.get("x-served-by", "?")
                    served_by[by] = served_by.get(by, 0) + 1
            return {"ok": ok, "failed": failed, "streamed": streamed, "served_by": served_by}

        report["before"] = ask(REQUESTS_PER_PHASE)
        report["models"] = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=30).json()["data"][0]["id"]
        # The spot worker goes, with no notice and no drain.
        cluster.remove_node(nodes["spot"], allow_graceful=False)
        # What the requests right after it got (the router on that node died with it).
        report["after_interruption"] = ask(REQUESTS_PER_PHASE)
        report["settled"] = ask(REQUESTS_PER_PHASE)
        report["floor_nodes_after"] = [
            k for n in replica_nodes(APP, DEPLOYMENT_NAME) for k, v in node_ids.items() if v == n
        ]
        # Serve replaces the lost spot replica; with no spot node left it can only wait.
        report["spot_nodes_after"] = [
            k for n in replica_nodes(APP, SPOT_DEPLOYMENT_NAME) for k, v in node_ids.items() if v == n
        ]
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
