"""Creates and removes the local stack's network: a bridge in the main namespace and one
namespace per Ray node, joined by veth pairs. Needs root (CAP_NET_ADMIN)."""

from __future__ import annotations

import subprocess

from local.topology import BRIDGE, BRIDGE_IP, NODES, SUBNET, RayNode


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
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
