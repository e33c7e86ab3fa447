"""Calls in real rooms: response latency, cold start, sessions per machine; ours against a bare agent.

N simulated app users, each a ``livekit`` rtc client in a room of its own, get a token from ``gocare
token-server`` over HTTP and make a scripted call: wait for the greeting, say the registered number
(espeak-ng audio), wait for the answer, ask one question, wait for the answer, hang up. The same calls go to
``gocare worker start`` and to bench/bare_agent.py (a plain livekit ``Agent`` with the same providers and
turn handling), alternating at each N, in one run. Everything runs inside a private network namespace (as
the room tests do; needs root), against a real ``livekit-server --dev`` and the scripted providers on
loopback with a fixed latency (``--llm-latency``, ``--tts-latency``).

Measured at the client: response latency per turn (end of the user's audio -> first agent audio frame above
silence), cold start (``connect()`` -> first agent audio), token requests; at the worker: CPU and memory of
the whole process tree (PSS and USS from /proc/<pid>/smaps_rollup), sampled while all N calls are live.

Each turn is also broken down by stage (``STAGES``), on one clock: the worker's per-turn latency log line (ours:
worker/latency.py; the bare agent writes the same fields), the scripted providers' own clocks, the client's.
Each app user runs in a process of its own. ``--rounds K`` repeats each level's N calls K times (more turns per
percentile); ``--variant LABEL:KEY=VALUE,...`` adds a worker of ours with other settings (or, with
``PYTHONPATH=<checkout>/src``, another checkout's worker) to the same run.

    sudo .venv/bin/python bench/bench_rooms.py --sessions 1,5,10,25,40
    sudo .venv/bin/python bench/bench_rooms.py --sessions 1,5 --rounds 3 --idle-processes 5

Prints markdown tables and writes bench/results/rooms-<time>.json. Stops early at an N where calls fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import signal
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "room"))

SPOKEN_NUMBER = "nine eight seven six five four three two one zero"
WRITTEN_NUMBER = "98765 43210"
QUESTION = "when is my next appointment"
QUESTION_TRANSCRIPT = "When is my next appointment?"
NUMBER_MIN_SECONDS = 2.5
"""The scripted STT tells the two utterances apart by length (espeak says the number in ~4 s, the question in
~1.5 s): calls run concurrently, so a queued script could hand one call's question another call's number."""

STAGES = ("vad_end", "stt_final_sent", "transcript", "end_of_turn", "llm_first_token", "tts_first_byte",
          "first_audio_published", "first_audio_at_client")
"""A turn's stages, each in seconds after the client sent the last of the user's audio:
the end of speech as the agent's VAD placed it, the scripted Deepgram's final result, the transcript and the
end-of-turn decision at the agent, the scripted LLM's first token, the scripted TTS's answer, the agent's first
audio frame pushed to the room, and that audio arriving at the client. The provider stages (stt_final_sent,
llm_first_token, tts_first_byte) come from the shared scripted servers, so they are only told apart by room at
N=1 and are left out above it."""


def transcribe_by_length(seconds: float) -> str:
    return WRITTEN_NUMBER if seconds >= NUMBER_MIN_SECONDS else QUESTION_TRANSCRIPT


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


@dataclass
class TurnTimes:
    """One turn at the client, in epoch seconds (time.time(), the clock the worker's metrics use)."""

    kind: str  # "number" | "question"
    room: str
    audio_end: float
    first_audio: float


@dataclass
class CallResult:
    ok: bool
    cold_start: float | None = None
    turns: list[float] = field(default_factory=list)
    turn_times: list[TurnTimes] = field(default_factory=list)
    token_seconds: float | None = None
    error: str | None = None
    seconds: float | None = None
    """From ``connect()`` to hanging up: the call's minutes, for CPU per call-minute (bench_capacity.py)."""


def tree_memory(pgid: int) -> tuple[float, float, int]:
    """(PSS MiB, USS MiB, processes) of every live process in the process group ``pgid``."""
    from harness.processes import group_members

    pss = uss = 0
    count = 0
    for pid, fields in group_members(pgid):
        if fields[0] == "Z":
            continue
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                values = {line.split(":")[0]: int(line.split()[1]) for line in rollup if line.endswith("kB\n")}
        except (OSError, ValueError, IndexError):
            continue
        pss += values.get("Pss", 0)
        uss += values.get("Private_Clean", 0) + values.get("Private_Dirty", 0)
        count += 1
    return pss / 1024, uss / 1024, count


def tree_cpu_seconds(pgid: int) -> float:
    from harness.processes import group_members

    ticks = sum(int(fields[11]) + int(fields[12]) for _pid, fields in group_members(pgid))
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy(interval: float = 1.0) -> float:
    """The share of all CPUs in use over ``interval`` seconds (/proc/stat)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    busy0, total0 = sample()
    time.sleep(interval)
    busy1, total1 = sample()
    return (busy1 - busy0) / max(1, total1 - total0)


async def settle(*, below: float = 0.35, limit: float = 45.0) -> float:
    """Wait until the machine is quiet again (the last calls' jobs ended, their rooms closed): the next worker
    or round must not pay for the previous one's leftovers. Returns the seconds waited (at most ``limit``)."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if await asyncio.to_thread(machine_busy) < below:
            break
    return time.monotonic() - started


def call_in_process(service_url: str, room: str, arrived: Any, hold: Any, questions: int = 1) -> CallResult:
    """One app user in a process of its own (a spawned pool process): N clients decoding audio in one Python
    process, beside the scripted providers' threads, starved each other of the GIL at N=5 (the users' audio
    reached the agents seconds late, for ours and the bare agent alike). ``arrived``: a queue told when the
    turns are done; ``hold``: an event the call waits for before hanging up (the memory sample)."""
    return asyncio.run(one_call(service_url, room, hold=hold, arrived=arrived, questions=questions))


def warm_process(seconds: float) -> int:
    """Import the client in a pool process before the calls start, so no call's timings include it."""
    from harness.app_client import AppClient  # noqa: F401

    time.sleep(seconds)  # keep this process busy, so each warm-up lands on a process of its own
    return os.getpid()


async def one_call(service_url: str, room: str, *, hold: Any, arrived: Any, questions: int = 1) -> CallResult:
    """One scripted call; ``arrived.put(room)`` when its turns are done (or it failed); it then stays in the
    room until ``hold`` is set, so the worker's memory is sampled with every call live. ``questions``: how many
    times the user asks the question after the number turn (bench_capacity.py asks several: longer calls)."""
    from harness.app_client import AppClient, fetch_token

    result = CallResult(ok=False)
    app = None
    connect_at = time.monotonic()
    try:
        started = time.monotonic()
        joined = await fetch_token(service_url, body={"room_name": room, "participant_identity": "user-42",
                                                      "participant_name": "John Doe", "room_config": {}})
        result.token_seconds = time.monotonic() - started
        app = AppClient(joined)
        connect_at = time.monotonic()
        await app.connect()
        first = await app.wait_agent_speech(since=connect_at, seconds=0.05, timeout=60)
        result.cold_start = first - connect_at
        await app.wait_agent_says(r"^Welcome John", timeout=60)
        await asyncio.sleep(1.0)  # the greeting's audio plays out
        wall_offset = time.time() - time.monotonic()
        for kind, spoken in (("number", SPOKEN_NUMBER), *[("question", QUESTION)] * questions):
            await app.say(spoken)
            ended = time.monotonic()
            answered = await app.wait_agent_speech(since=ended, seconds=0.05, timeout=60)
            result.turns.append(answered - ended)
            result.turn_times.append(TurnTimes(kind, room, ended + wall_offset, answered + wall_offset))
            await app.wait_for(lambda e=ended: [t for t in app.agent_transcripts(since=e)], timeout=60,
                               what="the answer's transcript")
            await asyncio.sleep(2.5)  # the answer plays out before the user speaks again
        result.ok = True
    except Exception as error:  # noqa: BLE001 - a failed call is a result, not a crash of the benchmark
        result.error = f"{type(error).__name__}: {str(error)[:160]}"
    try:
        arrived.put(room)
        await asyncio.to_thread(hold.wait)
    finally:
        if app is not None:
            await app.leave()
            result.seconds = time.monotonic() - connect_at
    return result


def read_turn_records(path: Path) -> list[dict[str, float | str]]:
    """The worker's per-turn latency records: ours logs them (JSON logs, field ``turn_latency``, worker/latency.py),
    bench/bare_agent.py writes the same fields to ``BENCH_TURN_LOG``."""
    records: list[dict[str, float | str]] = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return records
    for line in lines:
        if "turn_latency" not in line and '"stopped_speaking_at"' not in line:
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        turn = data.get("turn_latency", data)
        if isinstance(turn, dict) and "stopped_speaking_at" in turn:
            records.append({**turn, "room": str(data.get("room", ""))})
    return records


def turn_stages(turn: TurnTimes, records: list[dict[str, float | str]], providers: object | None) -> dict[str, float]:
    """``STAGES`` of one turn (seconds after the client's end of audio), from the worker's record of that room's
    turn and, with ``providers`` (N=1 only), the scripted servers' own clocks."""
    stages: dict[str, float] = {"first_audio_at_client": turn.first_audio - turn.audio_end}
    mine = [r for r in records if r["room"] == turn.room
            and turn.audio_end - 5 <= float(r["stopped_speaking_at"]) <= turn.audio_end + 3
            and float(r["first_audio_at"]) <= turn.first_audio + 0.5]
    record = min(mine, key=lambda r: abs(float(r["first_audio_at"]) - turn.first_audio), default=None)
    published = turn.first_audio
    if record is not None:
        vad_end = float(record["stopped_speaking_at"]) - turn.audio_end
        stages["vad_end"] = vad_end
        for name in ("transcript", "end_of_turn"):
            if name in record:
                stages[name] = vad_end + float(record[name])
        published = float(record["first_audio_at"])
        stages["first_audio_published"] = published - turn.audio_end
    if providers is not None:
        low = turn.audio_end
        finals = [u.ended_at for u in providers.deepgram.live_utterances() if low - 1 <= u.ended_at <= published]
        if finals:
            stages["stt_final_sent"] = min(finals) - low
        llm = [t for t in providers.llm.answered_at if low - 3 <= t <= published]
        if llm:
            stages["llm_first_token"] = max(llm) - low
            stages["llm_calls"] = float(len(llm))
        tts = [t for t in providers.speech.answered_at if low - 1 <= t <= published]
        if tts:
            stages["tts_first_byte"] = max(tts) - low
    return stages


def stage_summary(turns: list[TurnTimes], records: list[dict[str, float | str]],
                  providers: object | None) -> dict[str, dict[str, float]]:
    """Per turn kind, the p50 of each stage over the turns that have it."""
    summary: dict[str, dict[str, float]] = {}
    for kind in ("question", "number"):
        per_turn = [turn_stages(t, records, providers) for t in turns if t.kind == kind]
        names = [*STAGES, "llm_calls"]
        summary[kind] = {name: pct([st[name] for st in per_turn if name in st], 0.5)
                         for name in names if any(name in st for st in per_turn)}
    return summary


@dataclass
class LiveRound:
    """The calls of one round, each through its turns and waiting on ``hold`` to hang up."""

    hold: Any
    calls: list[asyncio.Future[CallResult]]

    async def hang_up(self) -> list[CallResult]:
        self.hold.set()
        return list(await asyncio.gather(*self.calls))


@dataclass
class CallerPool:
    """App users, one spawned process each (``call_in_process``): see ``caller_pool``."""

    manager: Any
    pool: ProcessPoolExecutor

    async def start(self, calls: list[Callable[..., CallResult]]) -> LiveRound:
        """Each of ``calls`` (a picklable callable taking ``arrived`` and ``hold``) in a pool process; returns once
        every call said its turns are done, with the calls still in their rooms (the samples are taken then)."""
        hold, arrived = self.manager.Event(), self.manager.Queue()
        loop = asyncio.get_running_loop()
        running = [loop.run_in_executor(self.pool, functools.partial(call, arrived=arrived, hold=hold))
                   for call in calls]
        for _ in calls:
            await asyncio.to_thread(arrived.get)
        return LiveRound(hold, running)


@contextlib.asynccontextmanager
async def caller_pool(n: int) -> AsyncIterator[CallerPool]:
    """``n`` caller processes (spawned and warmed up before any call: their start-up is not the agents' latency)
    and the manager whose events and queues they share. Shared by bench_capacity.py."""
    spawn = multiprocessing.get_context("spawn")
    with spawn.Manager() as manager, ProcessPoolExecutor(max_workers=n, mp_context=spawn) as pool:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(pool, warm_process, 1.0) for _ in range(n)))
        yield CallerPool(manager, pool)


async def run_level(n: int, *, label: str, service_url: str, worker_pgid: int, prefix: str,
                    turn_log: Path | None = None, providers: object | None = None, rounds: int = 1) -> dict[str, object]:
    """``rounds`` times N concurrent calls (one round after the other): more turns per percentile; the memory
    figures are the largest of the rounds, each sampled while all N calls of the round were live."""
    cpu_before, wall_before = tree_cpu_seconds(worker_pgid), time.monotonic()
    idle_pss, idle_uss, _ = tree_memory(worker_pgid)
    results: list[CallResult] = []
    peak_pss = peak_uss = 0.0
    procs = 0
    async with caller_pool(n) as callers:
        for round_ in range(rounds):
            live = await callers.start(
                [functools.partial(call_in_process, service_url, f"{prefix}-{label}-{n}-{round_}-{i}") for i in range(n)])
            await asyncio.sleep(1.0)
            pss, uss, count = tree_memory(worker_pgid)  # every call of the round still in its room
            if pss > peak_pss:
                peak_pss, peak_uss, procs = pss, uss, count
            results += await live.hang_up()
            if round_ + 1 < rounds:
                await asyncio.sleep(3.0)  # the jobs end (reconnect grace 2 s), the pool refills
                await settle()
    cpu = tree_cpu_seconds(worker_pgid) - cpu_before
    wall = time.monotonic() - wall_before
    turns = [t for r in results for t in r.turns]
    number_turns = [r.turns[0] for r in results if len(r.turns) > 0]
    question_turns = [r.turns[1] for r in results if len(r.turns) > 1]
    cold = [r.cold_start for r in results if r.cold_start is not None]
    tokens = [r.token_seconds for r in results if r.token_seconds is not None]
    failures = [r.error for r in results if not r.ok]
    turn_times = [t for r in results for t in r.turn_times]
    await asyncio.sleep(0.5)  # the worker's last log lines reach the file
    stages = stage_summary(turn_times, read_turn_records(turn_log) if turn_log else [],
                           providers if n == 1 else None)
    return {
        "stages": stages,
        "worker": label, "sessions": n, "failed": len(failures), "errors": failures[:3],
        "turn_p50": pct(turns, 0.5), "turn_p95": pct(turns, 0.95), "turn_max": max(turns) if turns else None,
        "number_p50": pct(number_turns, 0.5), "number_p95": pct(number_turns, 0.95),
        "question_p50": pct(question_turns, 0.5), "question_p95": pct(question_turns, 0.95),
        "raw_turns": [r.turns for r in results], "raw_cold": cold,
        "cold_p50": pct(cold, 0.5), "cold_max": max(cold) if cold else None,
        "token_p50_ms": pct(tokens, 0.5) * 1000, "token_max_ms": (max(tokens) * 1000) if tokens else None,
        "pss_mib": peak_pss, "uss_mib": peak_uss, "idle_pss_mib": idle_pss, "idle_uss_mib": idle_uss,
        "processes": procs, "cpu_cores": cpu / wall if wall else None,
        "pss_per_session_mib": (peak_pss - idle_pss) / n, "uss_per_session_mib": (peak_uss - idle_uss) / n,
    }


@dataclass
class Worker:
    """One worker under test: its label, its token service's URL, its process group, where its turn records go."""

    label: str
    service_url: str
    pgid: int
    turn_log: Path
    log: Path | None = None


@dataclass
class Stack:
    server: Any
    providers: Any
    ours: Worker
    variants: list[Worker]
    bare: Worker


def start_stack(cleanup: contextlib.ExitStack, *, binary: str, network: Any, logs: Path, llm_latency: float,
                tts_latency: float, idle_processes: str, variant_specs: list[str]) -> Stack:
    """livekit-server, the scripted providers, our worker, one worker per ``LABEL:KEY=VALUE,...`` spec and the bare
    agent, each with a token service of its own; everything stopped by ``cleanup``. Shared by bench_capacity.py."""
    from conftest import Providers
    from harness.livekit_server import start_server
    from scripted.deepgram_server import ScriptedDeepgramServer
    from scripted.openai_server import Reply, ScriptedOpenAIServer
    from scripted.speech_server import ScriptedSpeechServer
    from scripted.openai_server import Rule, ToolCall

    server = start_server(binary, log_dir=logs, network=network)
    cleanup.callback(server.stop)
    llm = ScriptedOpenAIServer(default_reply=Reply(text="Your next appointment is on Monday at nine.",
                                                   delay=llm_latency)).start()
    cleanup.callback(llm.stop)
    llm.script(
        Rule(user=WRITTEN_NUMBER, system="security check", reply=Reply(
            tool_calls=[ToolCall("verify_mobile_number", {"mobile_number": WRITTEN_NUMBER})],
            delay=llm_latency)),
        Rule(system="has just been verified", reply=Reply(text="Thank you, John, you're verified. How can I help?",
                                                          delay=llm_latency)),
    )
    speech = ScriptedSpeechServer(api_key="tts-room-tests", delay=tts_latency).start()
    cleanup.callback(speech.stop)
    deepgram = ScriptedDeepgramServer(api_key="dg-room-tests", live_transcriber=transcribe_by_length).start()
    cleanup.callback(deepgram.stop)
    providers = Providers(llm=llm, speech=speech, deepgram=deepgram)
    db = add_bench_user(logs)
    # a call the bench hung up on ends 2 s later (not the default 15 s): the next round gets the pool back
    extra = {"GOCARE_WORKER_IDLE_PROCESSES": idle_processes, "LOG_LEVEL": "INFO",
             "GOCARE_RECONNECT_GRACE": "2"}
    lane = {"server": server, "providers": providers, "users_db": db, "logs": logs}
    ours = start_our_lane(cleanup, label="ours", names="", agent="multi-assistant", extra=extra, **lane)
    variants = []
    for spec in variant_specs:
        label, _, pairs = spec.partition(":")
        env = dict(pair.split("=", 1) for pair in pairs.split(",") if pair)
        variants.append(start_our_lane(cleanup, label=label, names=f"-{label}", agent=f"multi-assistant-{label}",
                                       extra={**extra, **env}, **lane))
    bare = start_bare_lane(cleanup, label="bare", server=server, providers=providers, logs=logs, extra=extra,
                           turn_log=logs / "bare-turns.jsonl")
    return Stack(server=server, providers=providers, ours=ours, variants=variants, bare=bare)


def add_bench_user(logs: Path) -> str:
    """John (the room tests' user) in a fresh SQLite directory under ``logs``; its database URL."""
    import subprocess

    from conftest import USERS, _clean_env

    db = f"sqlite:///{logs / 'users.db'}"
    user_id, name, _spoken, written = USERS["john"]
    subprocess.run([sys.executable, "-m", "gocare_voice", "users", "add", user_id, name, written,
                    "--database-url", db], check=True, capture_output=True, env=_clean_env({}))
    return db


def start_our_lane(cleanup: contextlib.ExitStack, *, label: str, names: str, agent: str, server: Any,
                   providers: Any, users_db: str, logs: Path, extra: dict[str, str]) -> Worker:
    """``gocare worker start`` (settings ``extra``) and a token service dispatching its ``agent``, their processes
    named ``worker<names>`` / ``token-service<names>``; stopped by ``cleanup``. Shared by bench_turn_taking.py."""
    from conftest import start_token_service, start_worker

    worker = start_worker(name=f"worker{names}", livekit=server, providers=providers, users_db=users_db, logs=logs,
                          extra={**extra, "GOCARE_AGENT_NAME": agent})
    cleanup.callback(worker.process.stop)
    service = start_token_service(name=f"token-service{names}", livekit=server, logs=logs, providers=providers,
                                  extra={"GOCARE_AGENT_NAME": agent, "GOCARE_RATE_LIMIT": "off"})
    cleanup.callback(service.process.stop)
    log = logs / f"worker{names}.log"
    return Worker(label, service.url, worker.process.pid, log, log)


def start_bare_lane(cleanup: contextlib.ExitStack, *, label: str, server: Any, providers: Any, logs: Path,
                    extra: dict[str, str], turn_log: Path) -> Worker:
    """The stock agent (bench/bare_agent.py, its turns recorded in ``turn_log``) and a token service dispatching
    it (``token-service-<label>``); stopped by ``cleanup``. Shared by bench_turn_taking.py."""
    from conftest import _clean_env, start_token_service
    from harness.processes import ManagedProcess, free_port

    env = _clean_env({"LIVEKIT_URL": server.url, "LIVEKIT_API_KEY": server.api_key,
                      "LIVEKIT_API_SECRET": server.api_secret, **providers.env(), **extra,
                      "GOCARE_WORKER_LOAD_THRESHOLD": "inf", "BARE_AGENT_PORT": str(free_port()),
                      "BENCH_TURN_LOG": str(turn_log)})
    bare = ManagedProcess("bare-agent", [sys.executable, str(ROOT / "bench" / "bare_agent.py"), "start"],
                          log_path=logs / "bare-agent.log", env=env, cwd=logs)
    cleanup.callback(bare.stop)
    bare.wait_for_log(r"registered worker", timeout=120)
    service = start_token_service(name=f"token-service-{label}", livekit=server, logs=logs, providers=providers,
                                  extra={"GOCARE_AGENT_NAME": "bare-assistant", "GOCARE_RATE_LIMIT": "off"})
    cleanup.callback(service.process.stop)
    return Worker(label, service.url, bare.pid, turn_log, logs / "bare-agent.log")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", default="1,5,10,25,40")
    parser.add_argument("--llm-latency", type=float, default=0.3, help="seconds before the scripted LLM answers")
    parser.add_argument("--tts-latency", type=float, default=0.1, help="seconds before the scripted TTS answers")
    parser.add_argument("--idle-processes", default="4")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat each level's N concurrent calls this many times, for more turns per percentile")
    parser.add_argument("--only", choices=("ours", "bare"), default=None)
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL:KEY=VALUE[,KEY=VALUE]",
                        help="one more worker of ours with these settings (its own agent name and token service), "
                             "e.g. ours-slow:GOCARE_NUMBER_ENDPOINTING=false,GOCARE_PREEMPTIVE_TTS=false; "
                             "PYTHONPATH=<checkout>/src runs another checkout's worker")
    parser.add_argument("--records-ab", action="store_true",
                        help="also run ours with GOCARE_CALL_RECORDS=off beside ours with records (transcript): "
                             "what writing call records costs a turn and a session")
    args = parser.parse_args()
    levels = [int(n) for n in args.sessions.split(",")]

    from harness.livekit_server import locate_server
    from harness.netns import enter_private_network

    network = enter_private_network() if os.environ.get("GOCARE_TEST_HOST_NETWORK") != "1" else None
    binary, reason = locate_server()
    if binary is None:
        print(reason, file=sys.stderr)
        return 2
    logs = Path(tempfile.mkdtemp(prefix="bench-rooms-"))
    rows: list[dict[str, object]] = []
    with contextlib.ExitStack() as cleanup:  # every process and server stopped, however the run ends
        # --records-ab is one variant: the same worker with no call records (ours keeps the development
        # default, transcript)
        specs = ["ours-norecords:GOCARE_CALL_RECORDS=off"] if args.records_ab else []
        stack = start_stack(cleanup, binary=binary, network=network, logs=logs, llm_latency=args.llm_latency,
                            tts_latency=args.tts_latency, idle_processes=args.idle_processes,
                            variant_specs=specs + args.variant)
        providers = stack.providers
        variants = [(v.label, v.service_url, v.pgid, v.turn_log) for v in stack.variants]
        await asyncio.sleep(5)  # warm processes ready
        for n in levels:
            order = [("ours", stack.ours.service_url, stack.ours.pgid, stack.ours.turn_log),
                     ("bare", stack.bare.service_url, stack.bare.pgid, stack.bare.turn_log)]
            order[1:1] = variants
            if n % 2:  # alternate who goes first, so neither always gets the fresher machine
                order.reverse()
            if args.only:
                order = [o for o in order if o[0].startswith(args.only)]
            failed = False
            for label, url, pgid, turn_log in order:
                row = await run_level(n, label=label, service_url=url, worker_pgid=pgid, prefix=f"b{int(time.time())}",
                                      turn_log=turn_log, providers=providers, rounds=args.rounds)
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if not k.startswith("raw_")}), flush=True)
                failed = failed or bool(row["failed"])
                await asyncio.sleep(3)  # the rooms close (reconnect grace), the pool refills
                await settle()
            if failed:
                print(f"calls failed at N={n}; stopping", flush=True)
                break
    print_report(rows, args)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"rooms-{int(time.time())}.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0


def print_report(rows: list[dict[str, object]], args: argparse.Namespace) -> None:
    print(f"\n`python bench/bench_rooms.py --sessions {args.sessions} --llm-latency {args.llm_latency} "
          f"--tts-latency {args.tts_latency} --idle-processes {args.idle_processes} --rounds {args.rounds}"
          f"{' --records-ab' if args.records_ab else ''}"
          f"{''.join(f' --variant {v}' for v in args.variant)}` on {platform.node()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}\n")
    print("| worker | N | failed | question turn p50 / p95 s | number turn p50 / p95 s | all turns max s | cold start p50 s | token p50 ms | CPU cores | PSS MiB | PSS/session | USS/session |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['worker']} | {r['sessions']} | {r['failed']} | {r['question_p50']:.2f} / {r['question_p95']:.2f} | "
              f"{r['number_p50']:.2f} / {r['number_p95']:.2f} | {r['turn_max'] or float('nan'):.2f} | "
              f"{r['cold_p50']:.2f} | {r['token_p50_ms']:.1f} | {r['cpu_cores'] or 0:.2f} | {r['pss_mib']:.0f} | "
              f"{r['pss_per_session_mib']:.0f} | {r['uss_per_session_mib']:.0f} |")
    print_stages(rows)
    by = {(r["worker"], r["sessions"]): r for r in rows}
    for (label, n), r in by.items():
        bare = by.get(("bare", n))
        if label == "ours" and bare:
            print(f"N={n}: ours/bare question turn p50 {r['question_p50'] / bare['question_p50']:.2f}x, "
                  f"p95 {r['question_p95'] / bare['question_p95']:.2f}x; all turns p50 "
                  f"{r['turn_p50'] / bare['turn_p50']:.2f}x, p95 {r['turn_p95'] / bare['turn_p95']:.2f}x")


def print_stages(rows: list[dict[str, object]]) -> None:
    """One table per N: each stage's p50, seconds after the end of the user's audio at the client."""
    for n in sorted({int(r["sessions"]) for r in rows}):
        level = [r for r in rows if r["sessions"] == n]
        columns = [(r["worker"], kind, r["stages"].get(kind, {})) for kind in ("question", "number") for r in level]
        print(f"\nStages at N={n}, p50 s after the end of the user's audio (provider stages at N=1 only):\n")
        print("| stage | " + " | ".join(f"{w} {k}" for w, k, _ in columns) + " |")
        print("| --- |" + " ---: |" * len(columns))
        for stage in (*STAGES, "llm_calls"):
            cells = [f"{c[stage]:.2f}" if stage in c else "" for _, _, c in columns]
            if any(cells):
                print(f"| {stage} | " + " | ".join(cells) + " |")


def run_until_stopped(main: Callable[[], Awaitable[int]]) -> None:
    """Run a bench's ``main`` and exit with its code; SIGTERM stops it as Ctrl+C does (cleaning up what it
    started), exit 130."""

    async def cancellable() -> int:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await main()

    try:
        sys.exit(asyncio.run(cancellable()))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit(130)


if __name__ == "__main__":
    run_until_stopped(main)
