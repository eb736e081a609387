"""moto's server: a real HTTP server speaking the AWS APIs (S3, ECR, STS, CloudWatch, ...),
on loopback only, as a stand-in for AWS's endpoints."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def moto_server(account: str | None = None) -> Iterator[str]:
    """Starts moto's server on 127.0.0.1 and yields its endpoint URL. `account`: the account
    that static credentials act in (moto's MOTO_ACCOUNT_ID; roles assumed through its STS act
    in the account of their ARN)."""
    port = free_port()
    env = {**os.environ, **({"MOTO_ACCOUNT_ID": account} if account else {})}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"moto_server did not start on {endpoint}") from None
            time.sleep(0.1)
    try:
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)
