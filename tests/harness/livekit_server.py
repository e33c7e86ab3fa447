"""Finding and running a real ``livekit-server --dev`` for the room tests.

The binary comes from ``scripts/livekit-dev-server --path`` (the pinned Go build in the cache folder, or a
``livekit-server`` on PATH, or ``$LIVEKIT_SERVER_BIN``); the tests never build it themselves (minutes):
``scripts/livekit-dev-server --install`` and ``.ci/run`` do. ``GOCARE_TEST_LIVEKIT_URL`` points the tests at
a server that is already running instead.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.netns import PrivateNetwork
from harness.processes import ManagedProcess, free_port

REPO = Path(__file__).resolve().parents[2]
DEV_SERVER_SCRIPT = REPO / "scripts" / "livekit-dev-server"
DEV_API_KEY = "devkey"
DEV_API_SECRET = "secret"


@dataclass
class LiveKitServer:
    url: str
    """What the worker, the token service and the clients use (``ws://127.0.0.1:<port>``)."""
    api_key: str
    api_secret: str
    process: ManagedProcess | None = None
    """None for a server the tests did not start (``GOCARE_TEST_LIVEKIT_URL``)."""
    version: str = "external"
    ports: tuple[int, int, int] | None = None
    """(HTTP/signal, ICE/TCP, ICE/UDP) of a server the tests started: a restart reuses them."""

    @property
    def http_url(self) -> str:
        return "http://" + self.url.removeprefix("ws://") if self.url.startswith("ws://") else self.url.replace("wss://", "https://", 1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def locate_server() -> tuple[str | None, str]:
    """(path, "") when a binary is there, else (None, the one-line reason saying how to get one)."""
    try:
        found = subprocess.run([str(DEV_SERVER_SCRIPT), "--path"], capture_output=True, text=True, timeout=10)
    except OSError as error:
        return None, f"cannot run {DEV_SERVER_SCRIPT.name}: {error}"
    if found.returncode == 0 and found.stdout.strip():
        return found.stdout.strip(), ""
    return None, (found.stderr.strip().splitlines() or ["no livekit-server"])[-1]


def server_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "unknown"
    return out.strip().rsplit(" ", 1)[-1] or "unknown"


def dev_config(*, port: int, tcp_port: int, udp_port: int, network: PrivateNetwork | None,
               redis: str | None = None, redis_db: int = 0) -> str:
    """The server's YAML. In the private network the node IP is the namespace's veth address (clients'
    ICE candidates live there, never on the host's addresses) and the only STUN server is an address in the
    namespace, so nothing looks outward (the server would otherwise hand clients Google's STUN servers).

    ``redis`` (``host:port``): a node of a multi-node deployment. Nodes sharing one Redis register there,
    each room is placed on one of them (``room_node_map``), signalling and agent jobs travel between nodes
    over it. Nodes on one machine share the node IP and differ in their ports."""
    lines = [
        f"port: {port}",
        "bind_addresses: [\"127.0.0.1\"]",
        "rtc:",
        f"  tcp_port: {tcp_port}",
        f"  udp_port: {udp_port}",
        "  use_external_ip: false",
    ]
    if network is not None:
        lines += [f"  node_ip: {network.node_ip}", f"  stun_servers: [\"{network.peer_ip}:3478\"]"]
    lines += [
        "keys:",
        f"  {DEV_API_KEY}: {DEV_API_SECRET}",
        # the server dispatches a job only to a worker whose reported CPU load is under target_load (0.7 by
        # default); the tests run server, worker and clients on 2 busy cores, where that would decide by luck
        "agents:",
        "  target_load: 2.0",
        "room:",
        "  empty_timeout: 30",
        "  departure_timeout: 5",
        "logging:",
        "  level: info",
    ]
    if redis is not None:
        lines += ["redis:", f"  address: {redis}", f"  db: {redis_db}"]
    return "\n".join(lines) + "\n"


def start_server(binary: str, *, log_dir: Path, network: PrivateNetwork | None, timeout: float = 30.0,
                 ports: tuple[int, int, int] | None = None, name: str = "livekit-server",
                 redis: str | None = None, redis_db: int = 0) -> LiveKitServer:
    """One server; ``name`` names its log and config files (``livekit-server.log``, ``livekit.yaml`` for the
    default), so several nodes can share a log folder; ``redis`` makes it a node of a multi-node cluster."""
    port, tcp_port, udp_port = ports or (free_port(), free_port(), free_port(kind=2))  # 2 = SOCK_DGRAM
    log_dir.mkdir(parents=True, exist_ok=True)
    config = log_dir / ("livekit.yaml" if name == "livekit-server" else f"{name}.yaml")
    config.write_text(dev_config(port=port, tcp_port=tcp_port, udp_port=udp_port, network=network, redis=redis,
                                 redis_db=redis_db))
    process = ManagedProcess(
        name, [binary, "--dev", "--config", str(config)], log_path=log_dir / f"{name}.log",
        env={**os.environ},
    )
    server = LiveKitServer(
        url=f"ws://127.0.0.1:{port}", api_key=DEV_API_KEY, api_secret=DEV_API_SECRET, process=process,
        version=server_version(binary), ports=(port, tcp_port, udp_port),
    )
    try:
        process.wait_http(server.http_url, timeout=timeout)
    except Exception:
        process.stop()
        raise
    return server
