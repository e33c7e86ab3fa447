"""A private network namespace for the whole test run, so WebRTC media never touches the host's network.

Why: libwebrtc (inside the ``livekit`` rtc SDK) gathers no ICE candidates on loopback interfaces, so with
loopback settings alone the media of a room test would flow through the host's own address. Instead the test
process moves itself, before it starts any thread, into a namespace it creates: ``lo`` up and a veth pair
with private addresses (the LiveKit server's ``node_ip`` is one end). Everything started afterwards (the
server, the worker, the token service, PostgreSQL, the scripted providers) inherits it, so "127.0.0.1" means
the namespace's own loopback and no packet can leave: the namespace has no route anywhere else.

The host's own network settings are never changed: the veth pair is created inside the namespace. The
namespace's name is removed right after the process entered it, so it disappears with the last process in
it, even when the run is killed.

Linux only, as root (CAP_SYS_ADMIN), with iproute2's ``ip``. Python 3.11 has no ``os.setns``: libc's.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"


class NetnsUnavailable(Exception):
    """The namespace cannot be made here; ``str()`` is the one-line reason."""


@dataclass(frozen=True)
class PrivateNetwork:
    name: str
    node_ip: str
    """The server's address: one end of the veth pair."""
    peer_ip: str
    """The other end (a harmless STUN address for clients: nothing listens there)."""


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise NetnsUnavailable(f"`ip {' '.join(args)}` failed: {result.stderr.strip() or result.returncode}")


def unavailable_reason() -> str | None:
    """Why this process cannot make and enter a namespace, or None when it can."""
    if not os.path.isdir("/proc/self/ns"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (Debian package iproute2)"
    return None


def enter_private_network(*, subnet: str = "10.213.0.0/30") -> PrivateNetwork:
    """Create the namespace, move this process into it, return its addresses.

    A namespace switch applies to the calling thread and the threads and processes it starts afterwards:
    so this runs on the main thread, before the tests start any (the only threads older than it are native
    libraries' compute pools, OpenBLAS's for numpy, which open no sockets)."""
    reason = unavailable_reason()
    if reason:
        raise NetnsUnavailable(reason)
    if threading.current_thread() is not threading.main_thread():
        raise NetnsUnavailable("the namespace must be entered from the main thread")
    hosts = list(ipaddress.ip_network(subnet).hosts())
    node_ip, peer_ip = str(hosts[0]), str(hosts[1])
    prefix = ipaddress.ip_network(subnet).prefixlen
    name = f"gocare-test-{os.getpid()}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "add", "gct0", "type", "veth", "peer", "name", "gct1")
        _ip("-n", name, "addr", "add", f"{node_ip}/{prefix}", "dev", "gct0")
        _ip("-n", name, "addr", "add", f"{peer_ip}/{prefix}", "dev", "gct1")
        _ip("-n", name, "link", "set", "gct0", "up")
        _ip("-n", name, "link", "set", "gct1", "up")
        fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(fd, CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                raise NetnsUnavailable(f"setns failed: {os.strerror(errno)}")
        finally:
            os.close(fd)
    finally:
        # we are inside (or failed): the name is no longer needed; the namespace lives as long as we do
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=10)
    return PrivateNetwork(name=name, node_ip=node_ip, peer_ip=peer_ip)
