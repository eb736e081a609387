"""Sends chat completions to the serve Service one at a time and counts the failures.

The kind profile runs this as a Job (from a ConfigMap, on a plain Python image, standard
library only): start it, delete the Ray head pod, and `num_fail` should stay 0. It prints
the `req_index : N, num_fail: M` lines of KubeRay's HA sample (query.py) and exits 1 if
any request failed, so the Job's status is the drill's verdict.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request


def ask(url: str, model: str, timeout_s: float) -> None:
    """One chat completion; raises on anything but a 200 with a choice in it."""
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}
    ).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        json.load(response)["choices"][0]["message"]


def main() -> int:
    url = os.environ["OPENAI_BASE_URL"].rstrip("/") + "/chat/completions"
    model = os.environ["MODEL_ID"]
    count = int(os.environ.get("REQUEST_COUNT", "3000"))
    timeout_s = float(os.environ.get("REQUEST_TIMEOUT_S", "30"))
    num_fail = 0
    for req_index in range(count):
        print(f"req_index : {req_index}, num_fail: {num_fail}", flush=True)
        try:
            ask(url, model, timeout_s)
        except Exception as error:  # any failure counts, whatever its kind
            num_fail += 1
            print(f"request {req_index} failed: {error!r}", flush=True)
    print(f"requests: {count}, num_fail: {num_fail}", flush=True)
    return 1 if num_fail else 0


if __name__ == "__main__":
    sys.exit(main())
