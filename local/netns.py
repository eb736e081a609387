"""Creates and removes the local stack's network: a bridge in the main namespace and one
namespace per Ray node, joined by veth pairs. Needs root (CAP_NET_ADMIN)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from collections.abc import Callable
from typing import TypeVar

from local.topology import BRIDGE, BRIDGE_IP, METRICS_PORT, NODES, SERVE_PORT, SUBNET, RayNode


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def existing_namespaces() -> set[str]:
    out = _ip("netns", "list", check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def bridge_exists() -> bool:
    return _ip("link", "show", BRIDGE, check=False).returncode == 0


def create() -> None:
    prefix = SUBNET.prefixlen
    _ip("link", "add", BRIDGE, "type", "bridge")
    # The bridge's address gives the main namespace an on-link route to the subnet, and
    # nothing else: traffic to these addresses never reaches a gateway.
    _ip("addr", "add", f"{BRIDGE_IP}/{prefix}", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")
    for node in NODES:
        _add_node(node, prefix)


def _add_node(node: RayNode, prefix: int) -> None:
    inside = node.interface
    _ip("netns", "add", node.namespace)
    _ip("link", "add", node.veth, "type", "veth", "peer", "name", inside)
    _ip("link", "set", inside, "netns", node.namespace)
    _ip("link", "set", node.veth, "master", BRIDGE, "up")
    _ip("-n", node.namespace, "addr", "add", f"{node.ip}/{prefix}", "dev", inside)
    _ip("-n", node.namespace, "link", "set", inside, "up")
    _ip("-n", node.namespace, "link", "set", "lo", "up")
    _firewall(node)


def firewall_rules(node: RayNode) -> str:
    """What the main namespace may open in a node's namespace: the workers' Serve proxies
    (the API forwarder, like the serve Service) and every node's metrics export port (the
    demo's Prometheus, as the CloudWatch agent scrapes each pod), nothing else; the dashboard, the GCS and
    the raylets stay closed to the machine's other users, as Ray's ports are closed to the
    rest of a Kubernetes cluster. Replies to what the node opened (Redis) pass, and the
    nodes reach each other freely."""
    serve = f"        ip saddr {BRIDGE_IP} tcp dport {SERVE_PORT} accept\n" if not node.head else ""
    serve += f"        ip saddr {BRIDGE_IP} tcp dport {METRICS_PORT} accept\n"
    return (
        "table inet rsha {\n"
        "    chain input {\n"
        "        type filter hook input priority 0; policy accept;\n"
        '        iifname "lo" accept\n'
        "        ct state established,related accept\n"
        f"{serve}"
        f"        ip saddr {BRIDGE_IP} drop\n"
        "    }\n"
        "}\n"
    )


def _firewall(node: RayNode) -> None:
    subprocess.run(
        ["ip", "netns", "exec", node.namespace, "nft", "-f", "-"],
        input=firewall_rules(node), check=True, capture_output=True, text=True,
    )


def set_link(node: RayNode, *, up: bool) -> None:
    """The node's link on the bridge side, up or down (a network partition of the node)."""
    _ip("link", "set", node.veth, "up" if up else "down")


def destroy() -> None:
    """Removes whatever of the network exists; safe to call twice."""
    namespaces = existing_namespaces()
    for node in NODES:
        if node.namespace in namespaces:
            _ip("netns", "del", node.namespace, check=False)
        _ip("link", "del", node.veth, check=False)
    if bridge_exists():
        _ip("link", "del", BRIDGE, check=False)


def leftovers() -> list[str]:
    """What of the network still exists (empty after a clean teardown)."""
    found = [f"namespace {n.namespace}" for n in NODES if n.namespace in existing_namespaces()]
    if bridge_exists():
        found.append(f"bridge {BRIDGE}")
    return found


# ---- acting from inside a namespace --------------------------------------------------------

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def enter(namespace: str) -> None:
    """Moves the calling thread (only it: network namespaces are per thread) into
    `namespace`; sockets it opens from then on live there. Needs root."""
    fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns into {namespace}: {os.strerror(error)}")
    finally:
        os.close(fd)


T = TypeVar("T")


def run_in(namespace: str, call: Callable[[], T], timeout: float = 60) -> T:
    """Runs `call` on a thread inside `namespace` (as a probe inside a pod would run) and
    returns its result or raises its error. The Ray nodes' ports are closed to the main
    namespace; this is how the stack's own tools (root only) reach them."""
    result: dict[str, object] = {}

    def target() -> None:
        try:
            enter(namespace)
            result["value"] = call()
        except BaseException as error:  # handed to the caller
            result["error"] = error

    thread = threading.Thread(target=target, name=f"netns-{namespace}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no answer from inside {namespace} within {timeout:.0f} s")
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]  # type: ignore[return-value]
