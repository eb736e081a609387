"""The Serve application running for real, in-process, for the tests that talk to it.

One local Ray instance and one Serve application (transformers engine, the tiny model made
in a temporary folder) per pytest session: `test_serve_app` and `test_gradio_ui` share it
through `shared_backend(request)`, so Ray starts once (it is the slow part, ~20 s on 2
cores). Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

# A user turn the API tests send.
USER = [{"role": "user", "content": "What is the capital of France?"}]

ROOT = Path(__file__).resolve().parent.parent
SERVE_IMAGE = ROOT / "images" / "ray-serve"
GRADIO_IMAGE = ROOT / "images" / "gradio"
for _path in (SERVE_IMAGE, GRADIO_IMAGE):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

# The tiny model is a local folder: nothing may ask the model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# While the local Ray instance starts (its processes inherit this environment): every Ray
# process on the loopback address (Ray's default is the machine's outward IP), no auth
# token file written to $HOME (nothing but this process can reach 127.0.0.1 here), no
# usage stats. Restored afterwards, so other tests' subprocesses do not inherit it.
RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}

LOOPBACK = "127.0.0.1"
SERVED_MODEL = "tiny-mistral"
APP_NAME = "llm"
MAX_MODEL_LEN = 256
MAX_TOKENS_LIMIT = 64


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@dataclass
class Backend:
    model_dir: Path
    port: int
    args: dict
    ray_dir: Path

    @property
    def logs(self) -> Path:
        """Ray's log folder of this session's instance."""
        return self.ray_dir / "session_latest" / "logs"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def openai_url(self) -> str:
        return f"{self.url}/v1"


def _start() -> tuple[Backend, Callable[[], None]]:
    import ray
    from ray import serve
    from ray._private import ray_constants

    from ray_serve_llm.app import build_app
    from ray_serve_llm.tiny_model import save_tiny_model

    workdir = Path(tempfile.mkdtemp(prefix="ray-serve-llm-test-"))
    # Short: Ray's socket paths under it must stay within the 107-byte limit.
    ray_dir = Path(tempfile.mkdtemp(prefix="rsl-"))
    model_dir = save_tiny_model(workdir / "tiny-mistral")
    args = {
        "model_id": str(model_dir),
        "served_model_name": SERVED_MODEL,
        "engine": "transformers",
        "max_model_len": MAX_MODEL_LEN,
        "max_tokens_limit": MAX_TOKENS_LIMIT,
    }
    saved_env = {name: os.environ.get(name) for name in RAY_ENV}
    saved_cluster_flag = ray_constants.ENABLE_RAY_CLUSTER
    os.environ.update(RAY_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False  # read by the driver; the env var, by the rest
    try:
        ray.init(
            # A new local instance, never one that `ray start` left running on this machine.
            address="local",
            _temp_dir=str(ray_dir),
            num_cpus=2,
            include_dashboard=False,
            # Replica and raylet logs stay in Ray's log files: printed here they would land
            # after pytest's summary line (e.g. at shutdown).
            log_to_driver=False,
            object_store_memory=100 * 1024**2,
            # The replicas import the package the way a serve config's working_dir would.
            runtime_env={
                "working_dir": str(SERVE_IMAGE),
                "env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
            },
        )
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_cluster_flag
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def stop() -> None:
        # ray.shutdown() ends every process of this local instance, Serve's included
        # (serve.shutdown() first would only add a noisy retry warning at exit).
        ray.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(ray_dir, ignore_errors=True)

    port = free_port()
    try:
        node_ip = ray.nodes()[0]["NodeManagerAddress"]
        assert node_ip == LOOPBACK, f"Ray listens on {node_ip}, not on the loopback address"
        serve.start(http_options={"host": LOOPBACK, "port": port})
        serve.run(build_app(args), name=APP_NAME, route_prefix="/")
    except BaseException:
        stop()
        raise
    return Backend(model_dir=model_dir, port=port, args=args, ray_dir=ray_dir), stop


_KEY = pytest.StashKey[Backend]()


def shared_backend(request: pytest.FixtureRequest) -> Backend:
    """The session's Serve application, started on first use, stopped at session end."""
    stash = request.config.stash
    if _KEY not in stash:
        started = time.monotonic()
        backend, stop = _start()
        request.config.add_cleanup(stop)
        stash[_KEY] = backend
        print(f"\nServe app ready in {time.monotonic() - started:.1f} s at {backend.url}")
    return stash[_KEY]


def serve_actor_pid(name_prefix: str) -> int:
    """The process id of the one Serve actor whose name starts with `name_prefix`, asked of
    the actor itself (so it is this session's Ray instance, whatever else runs here)."""
    import ray

    (actor,) = [
        actor for actor in ray.util.list_named_actors(all_namespaces=True) if actor["name"].startswith(name_prefix)
    ]
    handle = ray.get_actor(actor["name"], namespace=actor["namespace"])
    return ray.get(handle.__ray_call__.remote(lambda _: os.getpid()))


def replica_pid() -> int:
    from ray_serve_llm.app import DEPLOYMENT_NAME

    return serve_actor_pid(f"SERVE_REPLICA::{APP_NAME}#{DEPLOYMENT_NAME}#")


def proxy_pid() -> int:
    return serve_actor_pid("SERVE_PROXY_ACTOR-")


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from the kernel (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")
