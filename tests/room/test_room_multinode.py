"""Multi-node on LiveKit's own engine: two ``livekit-server`` nodes sharing a real Redis, two
``gocare worker start`` processes, two ``gocare token-server``s (one pointing the app at each node).

LiveKit places each room on one node (``room_node_map`` in Redis; its default selector picks at random) and
relays the signalling of a client connected to the other node. Both workers register through node A, as
workers do behind one URL (LiveKit Cloud, a load balancer): a room on node B gets its agent from node A's
workers over Redis, and node A picks one of its workers at random, weighted by spare capacity. (With one
worker per node, the node whose workers claim the job with the most spare CPU wins; on one machine both
report the same CPU load and the first claim won every time here, so that placement says nothing.)
The tests check that calls really spread over both nodes and both workers, that a worker stopped with
SIGTERM finishes its call while new calls go to the other, and that the token services' rate limit is one
budget across both (``GOCARE_RATE_LIMIT_STORAGE`` in Redis).

Everything here is this module's own (the session's single server and worker are left alone); logs go to
``<room logs>/multinode/``.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from calls import GREETING_JOHN, join_as_john, say_number, script_number_check
from conftest import Providers, RunningWorker, TokenService, start_token_service, start_worker
from harness.livekit_server import LiveKitServer, start_server
from harness.plugin import PLAN

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(180)]

AGENT = "multi-assistant-multinode"
REDIS_DB = 2
"""LiveKit's keys in a database of their own: the rate-limit tests use the same redis-server."""


@dataclass
class Cluster:
    redis_port: int
    nodes: list[LiveKitServer]
    workers: dict[str, RunningWorker]
    token_services: list[TokenService]

    def redis(self, *args: str) -> str:
        cli = shutil.which("redis-cli")
        assert cli is not None, "redis-cli (Debian redis-tools, installed with redis-server) is missing"
        done = subprocess.run([cli, "-p", str(self.redis_port), "-n", str(REDIS_DB), *args],
                              capture_output=True, text=True, timeout=10, check=True)
        return done.stdout.strip()

    def node_ids(self) -> set[str]:
        return set(self.redis("HKEYS", "nodes").split())

    def node_of(self, room: str) -> str:
        """The node LiveKit placed the room on (only while the room exists)."""
        return self.redis("HGET", "room_node_map", room)

    def worker_of(self, room: str) -> list[str]:
        return [name for name, w in self.workers.items()
                if re.search(r"room ready \(room=%s " % re.escape(room), w.process.log_text())]


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, redis_server, providers: Providers, users_db: str,
            room_logs: Path) -> Iterator[Cluster]:
    plan = request.config.stash[PLAN]
    if plan.external_url:
        pytest.skip("starts LiveKit nodes of its own; GOCARE_TEST_LIVEKIT_URL points at a single server")
    logs = room_logs / "multinode"
    nodes: list[LiveKitServer] = []
    workers: dict[str, RunningWorker] = {}
    services: list[TokenService] = []
    try:
        cluster = Cluster(redis_port=redis_server.port, nodes=nodes, workers=workers, token_services=services)
        cluster.redis("FLUSHDB")
        for name in ("livekit-node-a", "livekit-node-b"):
            nodes.append(start_server(plan.binary, log_dir=logs, network=plan.network, name=name,
                                      redis=redis_server.address, redis_db=REDIS_DB))

        def worker_for(index: int) -> RunningWorker:
            return start_worker(name=f"worker-{'ab'[index]}", livekit=nodes[0], providers=providers,
                                users_db=users_db, logs=logs,
                                extra={"GOCARE_AGENT_NAME": AGENT, "GOCARE_RECONNECT_GRACE": "1",
                                       "GOCARE_WORKER_DRAIN_TIMEOUT": "60"})

        with ThreadPoolExecutor(2) as pool:  # the workers start in parallel: ~15 s each on this machine
            started = list(pool.map(worker_for, range(2)))
        workers.update({"worker-a": started[0], "worker-b": started[1]})
        for index, node in enumerate(nodes):
            services.append(start_token_service(name=f"token-service-{'ab'[index]}", livekit=node, logs=logs,
                                                providers=providers, extra={"GOCARE_AGENT_NAME": AGENT}))
        yield cluster
    finally:
        for service in services:
            service.process.stop()
        for worker in workers.values():
            worker.process.stop()
        for node in nodes:
            node.stop()


async def short_call(cluster: Cluster, service: TokenService, room: str) -> tuple[str, list[str]]:
    """Join through ``service`` (its node), hear the greeting, get an RPC answer; (room's node, its worker)."""
    app = await join_as_john(service.url, room)
    try:
        welcome = await app.wait_packet("welcome", timeout=40)
        assert welcome["message"] == GREETING_JOHN
        await app.wait_agent_speech(since=0.0, seconds=0.5, timeout=30)  # the greeting's audio, across nodes
        assert (await app.rpc("start_conversation"))["ok"] is True
        node = cluster.node_of(room)
    finally:
        await app.leave()
    return node, cluster.worker_of(room)


async def test_ten_calls_spread_over_both_nodes_and_both_workers(cluster, scripted, room_name):
    assert len(cluster.node_ids()) == 2  # both nodes registered in the shared Redis
    placed: dict[str, tuple[str, list[str]]] = {}
    for batch in range(5):  # two calls at a time: 10 at once do not fit on 2 shared cores
        rooms = [f"{room_name}-{batch}{i}" for i in range(2)]
        results = await asyncio.gather(*(
            short_call(cluster, cluster.token_services[i], room) for i, room in enumerate(rooms)))
        placed.update(zip(rooms, results, strict=True))
    nodes = [node for node, _ in placed.values()]
    workers = [w for _, found in placed.values() for w in found]
    assert all(len(found) == 1 for _, found in placed.values()), placed  # each call served by one worker
    # LiveKit places rooms at random and picks workers at random (weighted by spare capacity): all 10 on one
    # node, or on one worker, would each be a 1-in-512 event
    assert set(nodes) == cluster.node_ids(), placed
    assert set(workers) == {"worker-a", "worker-b"}, placed


async def test_a_worker_stopped_with_sigterm_finishes_its_call_and_new_calls_go_to_the_other(
    cluster, scripted, room_name
):
    """After the spread test: it stops one of the module's workers."""
    script_number_check(scripted, "98765 43210")
    app = await join_as_john(cluster.token_services[0].url, room_name)
    try:
        await app.wait_agent_says(r"^Welcome John", timeout=40)
        [name] = cluster.worker_of(room_name)
        stopping = cluster.workers[name]
        [other] = [n for n in cluster.workers if n != name]
        stopping.process.process.send_signal(signal.SIGTERM)
        stopping.process.wait_for_log(r"draining worker", timeout=10)
        # new calls, through either node, go to the other worker
        for i, service in enumerate(cluster.token_services):
            _node, served_by = await short_call(cluster, service, f"{room_name}-new{i}")
            assert served_by == [other]
        # the call in progress goes on: the number check still works
        said_at = await say_number(app, scripted, spoken="nine eight seven six five four three two one zero",
                                   written="98765 43210")
        await app.wait_agent_says(r"you're verified", since=said_at, timeout=40)
        assert stopping.process.process.poll() is None
    finally:
        left_at = time.monotonic()
        await app.leave()
    code = await asyncio.to_thread(stopping.process.process.wait, 45)
    assert code == 0 and time.monotonic() - left_at < 45


def test_the_rate_limit_is_one_budget_across_both_token_services(cluster, redis_server, room_logs):
    """Needs GOCARE_RATE_LIMIT_STORAGE (the shared rate limit, issue 12 part 1): each token service alone
    would allow 5 a minute, both together allow 5 in total."""
    db = f"{redis_server.url.rsplit('/', 1)[0]}/3"
    services = [
        start_token_service(name=f"token-service-limited-{'ab'[i]}", livekit=node, logs=room_logs / "multinode",
                            extra={"GOCARE_AGENT_NAME": AGENT, "GOCARE_RATE_LIMIT": "5/minute",
                                   "GOCARE_RATE_LIMIT_STORAGE": db})
        for i, node in enumerate(cluster.nodes)
    ]
    try:
        statuses = []
        for i in range(10):
            body = {"room": f"limit-{secrets.token_hex(3)}", "identity": f"user-{i}", "name": "Limit Test"}
            answer = httpx.post(services[i % 2].url + "/getToken", json=body, timeout=10)
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                assert int(answer.headers["Retry-After"]) >= 1
        assert statuses == [200] * 5 + [429] * 5, statuses
    finally:
        for service in services:
            service.process.stop()
