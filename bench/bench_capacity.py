"""Capacity: how many concurrent calls one worker core carries, ours against the stock agent, in one run.

bench_rooms.py ran the LiveKit server, the workers and every simulated caller on the same two cores, so at ten
calls it measured the queue for the CPU, not the worker. Here the worker's whole process tree (main process,
forkserver, job processes, anything they start) is pinned to its own core(s) (``--worker-cpus``, default 1) and
everything else (this script, livekit-server, the scripted providers, the token services, the callers) to the
other(s) (``--caller-cpus``, default 0). Affinity is inherited, so the pinning is set once on this process at start
and once on each worker's process group (every thread of every member) before each level.

Each worker (ours = ``gocare worker start``, bare = bench/bare_agent.py, and any ``--variant``) takes N concurrent
calls, N rising through ``--levels``; the calls are bench_rooms.py's (token over HTTP, a real rtc client per caller
process, the greeting, the registered number, then ``--questions`` questions), started ``--stagger`` seconds apart
in total so their turns do not all land at the same instant. A worker stops rising at the first N where a call
fails or the p95 turn latency (every turn of the level: end of the caller's audio -> first agent audio at the
client) passes ``--bound`` (1.25) x its own p95 at N=1 (``--baseline-rounds`` rounds of one call); its capacity is
the last N before that. Per N and worker it records:

- turn latency p50 / p95 (all turns) and the question turns' p50;
- CPU-seconds of the worker's process tree per call-minute (utime + stime of every member, plus the reaped
  children's cutime + cstime, so a job process that ended during the level still counts), the calls' minutes
  being connect -> hang-up at the clients;
- the same CPU by process kind: ``main`` (the worker process), ``job`` (the forkserver's forks: warm and busy job
  processes, and the ones already reaped), ``forkserver``, ``inference`` (livekit-agents' inference process, when
  one runs) and ``other`` (e.g. the resource tracker); ``scripts/cpu-accounting`` counts the same kinds from the
  kernel's accounting over a whole run, as a cross-check;
- PSS of the tree with every call live, minus the idle tree's (per call);
- the busy share of the worker core(s) and of the callers' core(s) while the calls ran: when the callers' cores
  saturate before the latency bound is passed, the worker was not the limit and its capacity is a lower bound;
  the table says so.

    sudo .venv/bin/python bench/bench_capacity.py                                  # ours and bare
    sudo .venv/bin/python bench/bench_capacity.py --levels 1,2 --questions 2       # a quick check
    sudo .venv/bin/python bench/bench_capacity.py --variant thread:GOCARE_WORKER_JOB_EXECUTOR=thread

Prints a markdown table, then ``capacity: ours N calls per worker core, bare M``, the PSS per added call and the idle
workers' PSS; writes bench/results/capacity-<time>.json. Needs root (a private network namespace, as the room tests).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_rooms import (ROOT, CallResult, Worker, call_in_process, caller_pool, pct, run_until_stopped, settle,
                         start_stack, tree_memory)

SATURATED = 0.95
"""Busy share of the callers' core(s) from which the callers, not the worker, may have been the limit."""

KINDS = ("main", "job", "forkserver", "inference", "other")


def staggered_call(delay: float, service_url: str, room: str, arrived: Any, hold: Any, questions: int) -> CallResult:
    """bench_rooms.call_in_process after ``delay`` seconds (in a pool process)."""
    time.sleep(delay)
    return call_in_process(service_url, room, arrived, hold, questions)


def core_ticks() -> dict[int, tuple[int, int]]:
    """Per CPU, (busy, total) ticks since boot (/proc/stat)."""
    ticks: dict[int, tuple[int, int]] = {}
    with open("/proc/stat") as stat:
        for line in stat:
            name, *values = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                numbers = [int(v) for v in values]
                idle = numbers[3] + numbers[4]  # idle + iowait
                ticks[int(name[3:])] = (sum(numbers) - idle, sum(numbers))
    return ticks


def busy_share(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], cpus: set[int]) -> float:
    busy = sum(after[c][0] - before[c][0] for c in cpus)
    total = sum(after[c][1] - before[c][1] for c in cpus)
    return busy / total if total else float("nan")


def _members(pgid: int) -> list[tuple[int, list[str], str]]:
    """(pid, /proc/<pid>/stat fields after the name, command line) of the live members of group ``pgid``."""
    from harness.processes import group_members

    members = []
    for pid, fields in group_members(pgid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        members.append((pid, fields, command))
    return members


def inference_pids(log: Path | None) -> set[int]:
    """livekit-agents' inference process(es) (started for registered ``_InferenceRunner``s, before the job pool): a
    fork of the same forkserver as the job processes, told apart only by the worker's log line ``initializing
    process`` with ``"inference": true`` and its pid (livekit-agents' ``InferenceProcExecutor.logging_extra``)."""
    pids: set[int] = set()
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines() if log else []:
            if "initializing process" in line and '"inference": true' in line:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    pids.add(int(json.loads(line)["pid"]))
    return pids


def cpu_by_kind(pgid: int, inference: set[int]) -> dict[str, float]:
    """CPU-seconds so far of the worker's tree by process kind (see the module docstring). Fields (after the
    name): 11 utime, 12 stime, 13 cutime, 14 cstime (of the reaped children), 0 the state, 1 the parent."""
    hz = os.sysconf("SC_CLK_TCK")
    members = _members(pgid)
    # the forkserver's forks keep its command line: the forkserver is the one the main process started
    forkservers = {pid for pid, fields, command in members
                   if "multiprocessing.forkserver" in command and int(fields[1]) == pgid}
    totals = dict.fromkeys(KINDS, 0.0)
    for pid, fields, _command in members:
        own = (int(fields[11]) + int(fields[12])) / hz
        reaped = (int(fields[13]) + int(fields[14])) / hz
        if pid == pgid:
            kind = "main"
            totals["other"] += reaped  # the main process reaps only its helpers before it exits
        elif pid in forkservers:
            kind = "forkserver"
            totals["job"] += reaped  # the job processes that ended: the forkserver is their parent
        elif pid in inference:
            kind = "inference"
        elif int(fields[1]) in forkservers:
            kind = "job"
        else:
            kind = "other"
        totals[kind] += own
    return totals


def pss_by_kind(pgid: int) -> dict[str, float]:
    """PSS (MiB) of the worker's tree by process kind, as ``cpu_by_kind`` tells them apart (the idle worker's
    breakdown: the main process, the forkserver, each warm job process)."""
    members = _members(pgid)
    forkservers = {pid for pid, fields, command in members
                   if "multiprocessing.forkserver" in command and int(fields[1]) == pgid}
    totals: dict[str, float] = {}
    for pid, fields, _command in members:
        kind = ("main" if pid == pgid else "forkserver" if pid in forkservers
                else "job" if int(fields[1]) in forkservers else "other")
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                kb = next(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))
            totals[kind] = totals.get(kind, 0.0) + kb / 1024
            totals[f"{kind} processes"] = totals.get(f"{kind} processes", 0) + 1
    return totals


def pin_group(pgid: int, cpus: set[int]) -> int:
    """Pin every thread of every process of group ``pgid`` to ``cpus``; returns the threads pinned. Processes and
    threads started later inherit it from their parent (the forkserver, the main process)."""
    pinned = 0
    for pid, _fields, _command in _members(pgid):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(tid), cpus)
                    pinned += 1
    return pinned


@dataclass
class Level:
    worker: str
    n: int
    calls: int  # n x rounds
    failed: int
    errors: list[str]
    turns: list[float]
    question_turns: list[float]
    call_minutes: float
    cpu: dict[str, float]
    wall: float
    pss: float
    idle_pss: float
    processes: int
    worker_busy: float
    callers_busy: float
    tree_cores: float
    bound: float | None = None
    verdict: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_total(self) -> float:
        return sum(self.cpu.values())

    @property
    def cpu_per_call_minute(self) -> float:
        return self.cpu_total / self.call_minutes if self.call_minutes else float("nan")

    @property
    def pss_per_call(self) -> float:
        return (self.pss - self.idle_pss) / self.n


async def run_level(worker: Worker, n: int, *, rounds: int, questions: int, stagger: float,
                    worker_cpus: set[int], caller_cpus: set[int]) -> Level:
    """``rounds`` times N concurrent calls to ``worker``; CPU over the whole level (the jobs' teardown included),
    PSS the largest of the rounds with every call live, the cores' busy share while the calls ran."""
    pin_group(worker.pgid, worker_cpus)
    idle_pss, _uss, _count = tree_memory(worker.pgid)
    inference = inference_pids(worker.log)
    cpu_before = cpu_by_kind(worker.pgid, inference)
    started = time.monotonic()
    results: list[CallResult] = []
    peak_pss, procs = 0.0, 0
    busy_worker: list[float] = []
    busy_callers: list[float] = []
    tree_cores: list[float] = []  # the worker tree's own CPU while the calls ran, in cores
    async with caller_pool(n) as callers:
        for round_ in range(rounds):
            ticks, tree_before, window_start = core_ticks(), sum(cpu_by_kind(worker.pgid, inference).values()), \
                time.monotonic()
            prefix = f"c{int(time.time())}-{worker.label}-{n}-{round_}"
            live = await callers.start([functools.partial(staggered_call, stagger * i / n, worker.service_url,
                                                          f"{prefix}-{i}", questions=questions) for i in range(n)])
            after = core_ticks()
            tree_cores.append((sum(cpu_by_kind(worker.pgid, inference).values()) - tree_before)
                              / (time.monotonic() - window_start))
            busy_worker.append(busy_share(ticks, after, worker_cpus))
            busy_callers.append(busy_share(ticks, after, caller_cpus))
            await asyncio.sleep(1.0)
            pss, _uss, count = tree_memory(worker.pgid)  # every call of the round still in its room
            if pss > peak_pss:
                peak_pss, procs = pss, count
            results += await live.hang_up()
            await asyncio.sleep(4.0)  # the jobs end (reconnect grace 2 s) and their CPU is counted
    cpu_after = cpu_by_kind(worker.pgid, inference)
    failures = [r.error or "failed" for r in results if not r.ok]
    return Level(
        worker=worker.label, n=n, calls=len(results), failed=len(failures), errors=failures[:3],
        turns=[t for r in results for t in r.turns], question_turns=[t for r in results for t in r.turns[1:]],
        call_minutes=sum(r.seconds or 0.0 for r in results) / 60,
        cpu={k: max(0.0, cpu_after[k] - cpu_before[k]) for k in KINDS}, wall=time.monotonic() - started,
        pss=peak_pss, idle_pss=idle_pss, processes=procs,
        worker_busy=max(busy_worker), callers_busy=max(busy_callers), tree_cores=max(tree_cores),
    )


def slope(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of PSS over N: the memory each added call costs."""
    if len(points) < 2:
        return float("nan")
    mean_n = sum(n for n, _ in points) / len(points)
    mean_p = sum(p for _, p in points) / len(points)
    den = sum((n - mean_n) ** 2 for n, _ in points)
    return sum((n - mean_n) * (p - mean_p) for n, p in points) / den if den else float("nan")


@dataclass
class Outcome:
    """One worker's result: the largest N within the bound, and why it stopped."""

    label: str
    capacity: int = 0
    stopped: str = "not reached"  # what ended its rise: "latency", "failed", or the last level was reached
    lower_bound: bool = False
    baseline_p95: float | None = None
    idle_pss: float = 0.0
    idle_processes: int = 0
    idle_by_kind: dict[str, float] = field(default_factory=dict)
    levels: list[Level] = field(default_factory=list)


def judge(outcome: Outcome, level: Level, bound: float) -> bool:
    """Record ``level`` in ``outcome``; True while the worker stays within the bound (it goes on rising)."""
    p95 = pct(level.turns, 0.95)
    if level.n == 1 and outcome.baseline_p95 is None:
        outcome.baseline_p95 = p95
    limit = (outcome.baseline_p95 or p95) * bound
    level.bound = limit
    outcome.levels.append(level)
    if level.failed:
        level.verdict = f"{level.failed} failed"
        outcome.stopped = f"a call failed at N={level.n}"
        return False
    if p95 > limit:
        level.verdict = f"p95 > {bound}x"
        outcome.stopped = f"p95 {p95:.2f} s > {limit:.2f} s at N={level.n}"
        return False
    outcome.capacity = level.n
    saturated = level.callers_busy >= SATURATED
    outcome.lower_bound = saturated  # the last level within the bound decides
    level.verdict = "within, callers saturated" if saturated else "within"
    return True


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,2,4,6,8,10,12,14,16,20,24,28,32")
    parser.add_argument("--questions", type=int, default=4, help="questions per call after the number turn")
    parser.add_argument("--baseline-rounds", type=int, default=3, help="rounds of one call at N=1 (the baseline p95)")
    parser.add_argument("--stagger", type=float, default=4.0, help="the calls of a level start over this many seconds")
    parser.add_argument("--bound", type=float, default=1.25, help="p95 turn latency limit, x the N=1 p95")
    parser.add_argument("--worker-cpus", default="1")
    parser.add_argument("--caller-cpus", default="0")
    parser.add_argument("--llm-latency", type=float, default=0.3)
    parser.add_argument("--tts-latency", type=float, default=0.1)
    parser.add_argument("--idle-processes", default="4")
    parser.add_argument("--only", choices=("ours", "bare"), default=None)
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL:KEY=VALUE[,KEY=VALUE]",
                        help="one more worker of ours with these settings (as bench_rooms.py)")
    parser.add_argument("--idle-only", action="append", default=[], metavar="LABEL",
                        help="only the idle PSS of this worker (a --variant's label), no calls: e.g. warm processes")
    args = parser.parse_args()
    levels = [int(n) for n in args.levels.split(",")]
    worker_cpus = {int(c) for c in args.worker_cpus.split(",")}
    caller_cpus = {int(c) for c in args.caller_cpus.split(",")}
    if worker_cpus & caller_cpus or not (worker_cpus | caller_cpus) <= set(os.sched_getaffinity(0)):
        parser.error("--worker-cpus and --caller-cpus must be disjoint CPUs this process may use")
    if levels[0] != 1:
        parser.error("--levels must start at 1 (the baseline)")
    # everything started from here on (server, providers' threads, token services, callers) inherits this
    os.sched_setaffinity(0, caller_cpus)

    from harness.livekit_server import locate_server
    from harness.netns import enter_private_network

    network = enter_private_network() if os.environ.get("GOCARE_TEST_HOST_NETWORK") != "1" else None
    binary, reason = locate_server()
    if binary is None:
        print(reason, file=sys.stderr)
        return 2
    logs = Path(tempfile.mkdtemp(prefix="bench-capacity-"))
    outcomes: dict[str, Outcome] = {}
    with contextlib.ExitStack() as cleanup:
        stack = start_stack(cleanup, binary=binary, network=network, logs=logs, llm_latency=args.llm_latency,
                            tts_latency=args.tts_latency, idle_processes=args.idle_processes,
                            variant_specs=args.variant)
        workers = [stack.ours, *stack.variants, stack.bare]
        if args.only:
            workers = [w for w in workers if w.label.startswith(args.only)]
        for worker in workers:
            pin_group(worker.pgid, worker_cpus)
        await asyncio.sleep(5)  # warm processes ready
        await settle()
        for worker in workers:
            pss, _uss, count = tree_memory(worker.pgid)
            outcomes[worker.label] = Outcome(worker.label, idle_pss=pss, idle_processes=count,
                                             idle_by_kind=pss_by_kind(worker.pgid))
        rising = [w for w in workers if w.label not in args.idle_only]
        for n in levels:
            if not rising:
                break
            order = rising if n % 2 else rising[::-1]  # neither always gets the fresher machine
            for worker in list(order):
                level = await run_level(worker, n, rounds=args.baseline_rounds if n == 1 else 1,
                                        questions=args.questions, stagger=args.stagger, worker_cpus=worker_cpus,
                                        caller_cpus=caller_cpus)
                within = judge(outcomes[worker.label], level, args.bound)
                print(json.dumps(row_json(level)), flush=True)
                if not within:
                    rising.remove(worker)
                await settle(limit=20.0)  # the last level's jobs gone; not longer: the run must fit its slot
        for label in args.idle_only:
            outcomes[label].stopped = "idle only (--idle-only)"
        for worker in rising:
            outcomes[worker.label].stopped = f"still within the bound at N={levels[-1]} (the last level)"
    print_report(outcomes, args, worker_cpus)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"capacity-{int(time.time())}.json").write_text(json.dumps(
        {"args": vars(args), "outcomes": {k: {**{f: v for f, v in vars(o).items() if f != "levels"},
                                               "levels": [row_json(lv) for lv in o.levels]}
                                           for k, o in outcomes.items()}}, indent=1))
    return 0


def row_json(level: Level) -> dict[str, Any]:
    return {"worker": level.worker, "n": level.n, "failed": level.failed, "errors": level.errors,
            "turn_p50": pct(level.turns, 0.5), "turn_p95": pct(level.turns, 0.95), "bound": level.bound,
            "question_p50": pct(level.question_turns, 0.5), "turns": len(level.turns),
            "cpu_per_call_minute": level.cpu_per_call_minute, "cpu": level.cpu, "cpu_total": level.cpu_total,
            "call_minutes": level.call_minutes, "cpu_per_call": level.cpu_total / level.calls, "wall": level.wall, "pss": level.pss, "idle_pss": level.idle_pss,
            "pss_per_call": level.pss_per_call, "processes": level.processes, "worker_busy": level.worker_busy,
            "callers_busy": level.callers_busy, "tree_cores": level.tree_cores, "verdict": level.verdict}


def print_report(outcomes: dict[str, Outcome], args: argparse.Namespace, worker_cpus: set[int]) -> None:
    print(f"\n`python bench/bench_capacity.py --levels {args.levels} --questions {args.questions} --baseline-rounds "
          f"{args.baseline_rounds} --stagger {args.stagger} --bound {args.bound} --worker-cpus {args.worker_cpus} "
          f"--caller-cpus {args.caller_cpus} --idle-processes {args.idle_processes}"
          f"{''.join(f' --variant {v}' for v in args.variant)}{''.join(f' --idle-only {v}' for v in args.idle_only)}` on {platform.node()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, 1-minute load at the end (this run's own) {os.getloadavg()[0]:.2f}\n")
    print("| worker | N | failed | turns | turn p50 / p95 s | bound s | question p50 s | CPU-s per call | CPU-s per call-min | "
          "CPU-s main / job / forkserver / inference / other | PSS MB | PSS per call MB | worker core busy | "
          "worker tree cores | callers' core busy | |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for outcome in outcomes.values():
        for lv in outcome.levels:
            kinds = " / ".join(f"{lv.cpu[k]:.1f}" for k in KINDS)
            print(f"| {lv.worker} | {lv.n} | {lv.failed} | {len(lv.turns)} | {pct(lv.turns, 0.5):.2f} / "
                  f"{pct(lv.turns, 0.95):.2f} | {lv.bound or float('nan'):.2f} | {pct(lv.question_turns, 0.5):.2f} | "
                  f"{lv.cpu_total / lv.calls:.1f} | {lv.cpu_per_call_minute:.2f} | {kinds} | {lv.pss:.0f} | {lv.pss_per_call:.0f} | "
                  f"{lv.worker_busy:.0%} | {lv.tree_cores:.2f} | {lv.callers_busy:.0%} | {lv.verdict} |")
    print()
    cores = len(worker_cpus)
    for outcome in outcomes.values():
        if not outcome.levels:
            continue
        flag = " (a lower bound: the callers' core saturated)" if outcome.lower_bound else ""
        print(f"{outcome.label}: {outcome.capacity / cores:g} calls per worker core{flag}; stopped: {outcome.stopped}")
    ours, bare = outcomes.get("ours"), outcomes.get("bare")
    if ours and bare:
        print(f"capacity: ours {ours.capacity / cores:g} calls per worker core, bare {bare.capacity / cores:g}")
    per_call = {o.label: slope([(lv.n, lv.pss) for lv in o.levels if not lv.failed]) for o in outcomes.values()
                if o.levels}
    print("PSS per added call (slope of the tree's PSS over N, every call live): "
          + ", ".join(f"{label} **{mb:.0f} MB**" for label, mb in per_call.items()))
    print("idle worker PSS (with its warm processes): "
          + ", ".join(f"{o.label} **{o.idle_pss:.0f} MB** ({o.idle_processes} processes)" for o in outcomes.values()))
    for o in outcomes.values():
        kinds = [k for k in ("main", "forkserver", "job", "other") if k in o.idle_by_kind]
        print(f"  {o.label} idle, PSS by kind: " + ", ".join(
            f"{k} {o.idle_by_kind[k]:.0f} MB ({o.idle_by_kind[k + ' processes']:.0f})" for k in kinds))


if __name__ == "__main__":
    run_until_stopped(main)
