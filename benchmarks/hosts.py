"""Several hosts on one machine: network namespaces (``ip netns``) joined by veth pairs to a bridge in the first
host, each with its own address, so a distributed run crosses a real network link (the distributed benchmark
and tests/test_distributed.py use it; root and iproute2 needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator


class HostsUnavailable(RuntimeError):
    """This machine cannot make network namespaces (not root, no iproute2, or the kernel refused)."""


@dataclass(frozen=True)
class NetworkHost:
    namespace: str
    address: str
    interface: str

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside this host's network namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]


def _ip(*argv: str) -> None:
    finished = subprocess.run(["ip", *argv], capture_output=True, text=True)
    if finished.returncode != 0:
        raise HostsUnavailable(f"ip {' '.join(argv)}: {finished.stderr.strip()}")


@contextmanager
def network_hosts(count: int = 2) -> Iterator[tuple[NetworkHost, ...]]:
    """``count`` hosts on 10.<n>.0.1, .2, ...: host 0 holds a bridge, every other host a veth pair to it."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        raise HostsUnavailable("network namespaces need root and iproute2's ip")
    tag = f"{os.getpid() % 10_000:04d}"
    subnet = 100 + os.getpid() % 100
    hosts = tuple(
        NetworkHost(f"recpipe-{tag}-{index}", f"10.{subnet}.0.{index + 1}", f"rp{tag}h{index}")
        for index in range(count)
    )
    made: list[str] = []
    try:
        for host in hosts:
            _ip("netns", "add", host.namespace)
            made.append(host.namespace)
            _ip("-n", host.namespace, "link", "set", "lo", "up")
        first = hosts[0]
        bridge = f"rp{tag}br"
        _ip("-n", first.namespace, "link", "add", bridge, "type", "bridge")
        _ip("-n", first.namespace, "addr", "add", f"{first.address}/24", "dev", bridge)
        _ip("-n", first.namespace, "link", "set", bridge, "up")
        for index, host in enumerate(hosts[1:], start=1):
            near = f"rp{tag}p{index}"  # host 0's end, on the bridge
            _ip("link", "add", near, "type", "veth", "peer", "name", host.interface)
            _ip("link", "set", near, "netns", first.namespace)
            _ip("link", "set", host.interface, "netns", host.namespace)
            _ip("-n", first.namespace, "link", "set", near, "master", bridge, "up")
            _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", host.interface)
            _ip("-n", host.namespace, "link", "set", host.interface, "up")
        hosts = (NetworkHost(first.namespace, first.address, bridge), *hosts[1:])
        yield hosts
    finally:
        for namespace in made:  # deleting a namespace deletes the links in it, and so each veth pair
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)
