"""Turn taking in real rooms: does the agent answer half a sentence? Ours against the stock livekit agent, one run.

The corpus is bench/turn_corpus.py: sentences whose first half is plainly unfinished, said with one pause of 0.4 to
1.0 s at the cut ("I wanted to ask about" ... "my appointment"), complete questions, and the registered number said
in groups with pauses during the number check; espeak-ng and flite voices at several speeds.

Each worker under test (``gocare worker start``, any ``--variant`` of it, and bench/bare_agent.py: livekit's
defaults) gets a *lane*: a process of its own playing one app user (the ``livekit`` rtc SDK, real WebRTC through a
real ``livekit-server --dev``) and a scripted Deepgram of its own, so every part of every sentence is transcribed
exactly as said (``script_live``): a misrecognition can never be counted as an early reply, and a trial whose
utterances did not come out as scripted is reported invalid, not counted. The lanes run in lockstep: every lane
plays the same trial at the same moment (a barrier before each turn), so the machine's load hits them alike.

A call: join, hear the greeting, the number turn (ours: the number check; the stock agent has none and answers
with its LLM), then ``--turns-per-call`` turns from the corpus, then hang up. Per turn, at the client:

- **early reply**: agent audio, or the agent's state ``speaking`` (``lk.agent.state``), between the end of the first
  part and the end of the last (the agent talked while the caller had not finished);
- **committed in the pause**: the agent's state went to ``thinking`` (a turn committed, a reply being generated)
  before the caller finished, even if no audio followed;
- **answered twice**: the agent entered ``speaking`` two or more times for one turn (a turn cut in two);
- **latency**: the caller's last audio sample sent -> the agent's first audio frame above silence at the client.
- the worker's own log lines of the turn that match ``--decision-pattern`` (ours: the per-turn decision and
  ``turn latency`` lines), so each early reply can be traced to the signal that ended the turn.

What the scripted Deepgram emits (tests/scripted/deepgram_server.py; the plugin asks for ``interim_results``,
``vad_events``, ``endpointing=25``, no ``utterance_end_ms`` unless the worker sets it): per stretch of speech (an
utterance ends after ``--stt-endpointing`` seconds of silence, default 0.3, shorter than every gap of the corpus, so
each part is a final of its own, as real Deepgram's 25 ms endpointing gives at such a pause): ``SpeechStarted`` at
its first loud 20 ms window; one interim ``Results`` (``is_final`` false, the first word) 0.3 s in; at its end one
``Results`` with ``is_final`` and ``speech_final`` true and the part's exact words (first letter capitalised, an end
mark on the sentence's last part only); ``UtteranceEnd`` only when the worker asks for ``utterance_end_ms`` and that
much audio passed after the last word with no new speech (so never inside a pause shorter than it).

    sudo .venv/bin/python bench/bench_turn_taking.py --quick            # 28 pauses, 10 questions: ~7 minutes
    sudo .venv/bin/python bench/bench_turn_taking.py                    # the whole corpus: ~30 minutes
    sudo .venv/bin/python bench/bench_turn_taking.py --quick --variant no-grammar:GOCARE_X=false

Needs root (a private network namespace, as the room tests), livekit-server (scripts/livekit-dev-server), espeak-ng
and flite (Debian: ``apt-get install espeak-ng flite``). Prints markdown tables, the command, the machine and a
``SUMMARY`` line; writes bench/results/turn-taking-<time>.json with every trial.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "room"))
sys.path.insert(0, str(ROOT / "bench"))

import turn_corpus  # noqa: E402
from turn_corpus import Trial  # noqa: E402

DEFAULT_REPLY = "Sure, I can help with that."
WELCOME = "you're verified"
GREETING = r"^Welcome"
DECISION_PATTERN = r"turn decision|turn ended|turn part|eot prediction|end of turn|end-of-turn|turn latency|stopped_speaking_at"
AGENT_WORDS_PER_MINUTE = 280  # the agent's scripted voice, as the room tests (tests/room/conftest.py)
TARGET_EARLY = 0.01
TARGET_QUESTION = 0.55
TARGET_NUMBER = 0.6


# --- the plan ----------------------------------------------------------------------------------------


def plan_calls(*, quick: bool, turns_per_call: int, calls: int | None) -> list[list[Trial]]:
    """Calls, each its number turn then ``turns_per_call`` corpus turns (pauses and questions mixed in a fixed
    shuffled order, the same in every run)."""
    pauses, questions = turn_corpus.corpus(quick=quick)
    turns = pauses + questions
    random.Random(27).shuffle(turns)
    chunks = [turns[i:i + turns_per_call] for i in range(0, len(turns), turns_per_call)]
    if calls is not None:
        chunks = chunks[:calls]
    return [[turn_corpus.number_trial(c), *chunk] for c, chunk in enumerate(chunks)]


# --- a lane: one worker's app user, in a process of its own --------------------------------------------


def lane_process(label: str, plan: list[list[Trial]], conn: Any, barrier: Any, options: dict[str, Any]) -> None:
    """Start this lane's scripted Deepgram, tell the parent its URL, wait for the worker's token service, play
    the plan in lockstep with the other lanes, send back every turn's result."""
    import asyncio

    from scripted.deepgram_server import ScriptedDeepgramServer

    deepgram = ScriptedDeepgramServer(api_key=options["deepgram_key"], endpoint_silence=options["stt_endpointing"],
                                      speak_words_per_minute=AGENT_WORDS_PER_MINUTE).start()
    try:
        conn.send(deepgram.url)
        setup = conn.recv()
        if setup is None:
            return
        import pickle

        with open(setup.pop("audio"), "rb") as audio:  # rendered once by the parent, while the workers started
            options = {**options, "audio": pickle.load(audio)}  # our own file, written moments ago
        results = asyncio.run(run_lane(label, plan, deepgram, barrier, options, **setup))
        conn.send(results)
    finally:
        deepgram.stop()


async def sync(barrier: Any) -> None:
    """Wait for every lane (the same trial starts at the same moment in all of them); a lane that died breaks the
    barrier and the others go on unsynchronised rather than hang."""
    import asyncio

    try:
        await asyncio.to_thread(barrier.wait, 900)
    except threading.BrokenBarrierError:
        pass


async def run_lane(label: str, plan: list[list[Trial]], deepgram: Any, barrier: Any, options: dict[str, Any], *,
                   service_url: str, worker_log: str, checks_number: bool) -> list[dict[str, Any]]:
    import asyncio

    from harness.app_client import AppClient, fetch_token

    results: list[dict[str, Any]] = []
    log_path = Path(worker_log)
    for c, call in enumerate(plan):
        await sync(barrier)
        app: AppClient | None = None
        states: list[tuple[float, str]] = []
        problem: str | None = None
        for attempt in range(3):  # a call whose agent never came (a loaded machine) is tried again, in a new room
            try:
                joined = await fetch_token(service_url, body={
                    "room_name": f"tt-{label}-{int(time.time())}-{c}-{attempt}", "participant_identity": "user-42",
                    "participant_name": "John Doe", "room_config": {}})
                app = AppClient(joined)

                def on_attributes(changed: dict[str, str], _participant: Any,
                                  states: list[tuple[float, str]] = states) -> None:
                    if "lk.agent.state" in changed:
                        states.append((time.monotonic(), changed["lk.agent.state"]))

                app.room.on("participant_attributes_changed", on_attributes)
                await app.connect()
                await app.wait_agent(timeout=25)
                await app.wait_agent_says(GREETING, timeout=45)
                await app.wait_agent_listening(timeout=30)
                await asyncio.sleep(0.5)
                problem = None
                break
            except Exception as error:  # noqa: BLE001 - a failed call is a result, not the end of the run
                problem = f"call setup: {type(error).__name__}: {str(error)[:160]}"
                print(f"[{label}] call {c} attempt {attempt + 1}: {problem}", flush=True)
                if app is not None:
                    with contextlib.suppress(Exception):
                        await app.leave()
                    app = None
                states.clear()
        for trial in call:
            await sync(barrier)
            if problem is not None or app is None:
                results.append(skipped(label, c, trial, problem or "no call"))
                continue
            try:
                result = await run_turn(app, states, trial, deepgram, log_path, options)
            except Exception as error:  # noqa: BLE001
                problem = f"{trial.id}: {type(error).__name__}: {str(error)[:160]}"
                results.append(skipped(label, c, trial, problem))
                continue
            result.update(lane=label, call=c)
            if trial.kind == "number" and checks_number:
                result["verified"] = any(WELCOME in t.text for t in app.agent_transcripts(since=result["_started"]))
                if not result["verified"]:
                    problem = await recover_number(app, deepgram)
            results.append(result)
            print(f"[{label}] {describe(result)}", flush=True)
        if app is not None:
            with contextlib.suppress(Exception):
                await app.leave()
        await asyncio.sleep(2.5)  # the job ends (reconnect grace 2 s) before the next call asks for one
    for r in results:
        r.pop("_started", None)
    return results


async def recover_number(app: Any, deepgram: Any) -> str | None:
    """The number check failed (the agent answered a group): say the number in one go, so the call's other turns
    are made by a verified caller. Not measured. Returns a problem when even that failed."""
    import asyncio

    await asyncio.sleep(1.0)
    try:
        await app.wait_agent_listening(timeout=30)
        deepgram.reset()
        deepgram.script_live(turn_corpus.REGISTERED_NUMBER)
        said = time.monotonic()
        await app.say("nine eight seven six five four three two one zero")
        await app.wait_agent_says(WELCOME, since=said, timeout=30)
        await app.wait_agent_listening(timeout=30)
        await asyncio.sleep(0.5)
        return None
    except Exception as error:  # noqa: BLE001
        return f"number check not passed: {type(error).__name__}"


def skipped(label: str, call: int, trial: Trial, problem: str) -> dict[str, Any]:
    return {**trial_fields(trial), "lane": label, "call": call, "valid": False, "problem": problem}


def trial_fields(trial: Trial) -> dict[str, Any]:
    return {"trial": trial.id, "kind": trial.kind, "shape": trial.shape, "gap": trial.gap,
            "voice": trial.voice.name, "text": " | ".join(trial.transcripts)}


async def run_turn(app: Any, states: list[tuple[float, str]], trial: Trial, deepgram: Any, log_path: Path,
                   options: dict[str, Any]) -> dict[str, Any]:
    from harness.app_client import ClientError

    rendered = options["audio"].get(trial.id) or turn_corpus.render(trial)
    deepgram.reset()
    deepgram.script_live(*trial.transcripts)
    log_mark = log_path.stat().st_size if log_path.exists() else 0
    load = os.getloadavg()[0]
    wall_offset = time.time() - time.monotonic()
    started = time.monotonic()
    assert app.microphone is not None
    await app.microphone.play(rendered.pcm)
    ended = time.monotonic()
    total = len(rendered.pcm) / 2 / turn_corpus.RATE
    ends = [ended - (total - e) for e in rendered.part_ends]
    first_end, last_end = ends[0], ends[-1]
    latency: float | None
    try:
        latency = await app.wait_agent_speech(since=last_end, seconds=0.1, timeout=options["reply_timeout"]) - last_end
    except ClientError:
        latency = None
    await settle(app, states)
    done = time.monotonic()
    early_frames = [t for t, _ in app.agent_audio.loud_since(first_end) if t <= last_end]
    in_pause = [(t, s) for t, s in states if first_end <= t <= last_end]
    speaking = [t for t, s in states if started <= t <= done and s == "speaking"]
    utterances = deepgram.live_utterances()
    heard = [u.transcript for u in utterances]
    replies = [t.text for t in app.agent_transcripts(since=started) if t.final]
    lines = read_log(log_path, log_mark, options["decision_pattern"])
    part_seconds = part_lengths(rendered, trial.gap)
    valid = stt_matches(heard, trial.transcripts, [u.duration for u in utterances], part_seconds)
    early = len(early_frames) >= 2 or any(s == "speaking" for _, s in in_pause)
    return {
        **trial_fields(trial), "_started": started, "valid": valid,
        "problem": None if valid else f"STT heard {heard}", "heard": heard, "part_seconds": part_seconds,
        "stt_utterances": [(u.transcript, round(u.start, 2), round(u.duration, 2), round(u.rms)) for u in utterances],
        "early": early, "early_audio_s": round(len(early_frames) * 0.02, 2),
        "committed_in_pause": any(s == "thinking" for _, s in in_pause) or early,
        "answered_twice": len(speaking) >= 2, "speaking_entries": len(speaking),
        "first_reply_after_end": None if latency is None else round(latency, 3),
        "no_reply": latency is None and not early,
        "answered_after_end": any(t > last_end and s == "speaking" for t, s in states if t <= done),
        "replies": replies, "log": lines, "load1": round(load, 2), "end_wall": round(last_end + wall_offset, 4),
        "at": time.time(),
    }


def part_lengths(rendered: turn_corpus.Rendered, gap: float) -> list[float]:
    """Seconds of speech of each part, as sent."""
    ends = rendered.part_ends
    return [round(end - (ends[k - 1] + gap if k else 0.0), 3) for k, end in enumerate(ends)]


def stt_matches(heard: list[str], expected: tuple[str, ...] | list[str], durations: list[float] | None = None,
                expected_durations: list[float] | None = None) -> bool:
    """The agent got exactly the scripted parts, in order, each at the end of its own stretch of speech.

    Empty finals *after* the last part are allowed: under load the caller's track sometimes carries a short loud
    blip (WebRTC concealing late packets at the worker), which the scripted STT hears as an utterance with no
    words. A blip *before* a part takes that part's words (the transcripts are a queue), and then the words reach
    the agent at the wrong moment (at the end of a blip, or of the first half with the second half's words), which
    is a misrecognition, not a decision: the utterances' loud lengths must each match their part's (within 0.3 s
    and a quarter of the part), so such a turn is invalid."""
    trimmed = list(heard)
    while trimmed and trimmed[-1] == "" and len(trimmed) > len(expected):
        trimmed.pop()
    if trimmed != list(expected):
        return False
    if durations is None or expected_durations is None:
        return True
    return all(abs(got - want) <= 0.3 + 0.25 * want for got, want in zip(durations, expected_durations, strict=False))


def revalidate(results: list[dict[str, Any]]) -> None:
    """Judge a saved run's turns by ``stt_matches`` as it is now (a run saved by an earlier, different rule; the
    parts' lengths are rendered again when the run did not keep them)."""
    import ast

    trials = {t.id: t for quick in (False, True) for call in plan_calls(quick=quick, turns_per_call=1, calls=None)
              for t in call}
    trials.update({f"n{i:02d}": turn_corpus.number_trial(i) for i in range(100)})
    for r in results:
        heard = r.get("heard")
        if heard is None and str(r.get("problem") or "").startswith("STT heard "):
            with contextlib.suppress(ValueError, SyntaxError):
                heard = ast.literal_eval(r["problem"].removeprefix("STT heard "))
        if heard is None or "early" not in r:
            continue  # a skipped turn: nothing was measured
        durations = [u[2] for u in r["stt_utterances"]] if r.get("stt_utterances") else None
        expected = r.get("part_seconds")
        if durations is not None and expected is None and r["trial"] in trials:
            trial = trials[r["trial"]]
            expected = r["part_seconds"] = part_lengths(turn_corpus.render(trial), trial.gap)
        valid = stt_matches(heard, r["text"].split(" | "), durations, expected)
        r["valid"], r["heard"] = valid, heard
        r["problem"] = None if valid else f"STT heard {heard} (loud seconds {durations}, sent {expected})"


async def settle(app: Any, states: list[tuple[float, str]], quiet: float = 0.8, timeout: float = 40.0) -> None:
    """Until the agent has been listening, silent and unchanged for ``quiet`` seconds: a second answer to the same
    turn (a turn cut in two) is seen before the next turn starts."""
    import asyncio

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.monotonic()
        last_change = states[-1][0] if states else 0.0
        if app.agent_state() == "listening" and now - last_change >= quiet \
                and not app.agent_audio.loud_since(now - quiet):
            return
        await asyncio.sleep(0.1)


def read_log(path: Path, mark: int, pattern: str) -> list[str]:
    try:
        with path.open("rb") as log:
            log.seek(mark)
            text = log.read().decode(errors="replace")
    except OSError:
        return []
    regex = re.compile(pattern, re.I)
    return [line.strip()[:4000] for line in text.splitlines() if regex.search(line)]


STANDARD_FIELDS = {"message", "level", "name", "pid", "job_id", "room_id", "agent_name", "timestamp", "room",
                   "turn_latency", "deployment", "id"}


def log_line_text(line: str) -> str:
    """A worker log line for the report: a JSON line's message and its own extra fields (what the decision logged),
    a text line as it is."""
    try:
        data = json.loads(line)
    except ValueError:
        return line[:300]
    if not isinstance(data, dict) or "message" not in data:
        return line[:300]
    extra = {k: v for k, v in data.items() if k not in STANDARD_FIELDS and not k.startswith("code.")}
    return (str(data["message"]) + (f" {json.dumps(extra)}" if extra else ""))[:500]


def describe(r: dict[str, Any]) -> str:
    if not r.get("valid"):
        return f"{r['trial']} {r['kind']} INVALID: {r.get('problem')}"
    latency = r.get("first_reply_after_end")
    flags = [f for f in ("early", "committed_in_pause", "answered_twice", "no_reply") if r.get(f)]
    return (f"{r['trial']} {r['kind']} {r['shape']} gap={r['gap']} {r['voice']}: "
            f"{'reply %.2f s' % latency if latency is not None else 'no reply'} {' '.join(flags)}")


# --- the parent: server, providers, workers, lanes ------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="28 pauses (every shape and gap) and 10 questions: a few minutes")
    parser.add_argument("--calls", type=int, default=None, help="only the first N calls of the plan")
    parser.add_argument("--turns-per-call", type=int, default=12)
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL:KEY=VALUE[,KEY=VALUE]",
                        help="one more lane: a worker of ours with these settings (PYTHONPATH=<checkout>/src runs "
                             "another checkout's worker)")
    parser.add_argument("--no-stock", action="store_true", help="leave out bench/bare_agent.py")
    parser.add_argument("--no-ours", action="store_true", help="leave out ours at its defaults (variants only)")
    parser.add_argument("--llm-latency", type=float, default=0.3)
    parser.add_argument("--tts-latency", type=float, default=0.1)
    parser.add_argument("--stt-endpointing", type=float, default=turn_corpus.STT_SPLIT,
                        help="seconds of silence that end a scripted-STT utterance (speech_final)")
    parser.add_argument("--reply-timeout", type=float, default=10.0)
    parser.add_argument("--decision-pattern", default=DECISION_PATTERN,
                        help="regex: the worker log lines kept with each turn")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--idle-processes", default="2")
    parser.add_argument("--report", type=Path, default=None, metavar="RESULTS.json",
                        help="print the report of an earlier run's bench/results file and exit")
    args = parser.parse_args()
    if args.report is not None:
        try:
            saved = json.loads(args.report.read_text())
        except (OSError, ValueError) as error:
            parser.error(f"--report {args.report}: {error}")
        revalidate(saved["results"])
        print(build_report(saved["results"], saved["meta"]))
        return 0
    if args.turns_per_call < 1 or (args.calls is not None and args.calls < 1):
        parser.error("--turns-per-call and --calls must be at least 1")
    for spec in args.variant:
        label, _, pairs = spec.partition(":")
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", label) or label in ("ours", "stock") \
                or any("=" not in p for p in pairs.split(",") if p):
            parser.error(f"--variant {spec!r}: expected LABEL:KEY=VALUE[,KEY=VALUE], LABEL lowercase, not ours/stock")

    from harness.livekit_server import locate_server, start_server
    from harness.netns import enter_private_network

    network = enter_private_network() if os.environ.get("GOCARE_TEST_HOST_NETWORK") != "1" else None
    binary, reason = locate_server()
    if binary is None:
        print(reason, file=sys.stderr)
        return 2
    for tool in ("espeak-ng", "flite"):
        if not any((Path(d) / tool).exists() for d in os.environ.get("PATH", "").split(os.pathsep)):
            print(f"{tool} is not installed (apt-get install {tool}): the corpus speaks with it", file=sys.stderr)
            return 2

    from bench_rooms import add_bench_user, start_bare_lane, start_our_lane
    from conftest import DEEPGRAM_KEY, Providers
    from scripted.openai_server import Reply, Rule, ScriptedOpenAIServer, ToolCall
    from scripted.speech_server import ScriptedSpeechServer

    plan = plan_calls(quick=args.quick, turns_per_call=args.turns_per_call, calls=args.calls)
    lanes: list[tuple[str, dict[str, str]]] = [] if args.no_ours else [("ours", {})]
    for spec in args.variant:
        label, _, pairs = spec.partition(":")
        lanes.append((label, dict(pair.split("=", 1) for pair in pairs.split(",") if pair)))
    if not args.no_stock:
        lanes.append(("stock", {}))
    if not lanes:
        parser.error("nothing to run")
    started_at = time.time()
    load_before = os.getloadavg()
    logs = Path(tempfile.mkdtemp(prefix="bench-turn-taking-"))
    print(f"{len(plan)} calls, {sum(len(c) for c in plan)} turns per lane, lanes: {[label for label, _ in lanes]}; "
          f"logs in {logs}", flush=True)
    results: list[dict[str, Any]] = []
    spawn = multiprocessing.get_context("spawn")
    with contextlib.ExitStack() as cleanup, spawn.Manager() as manager:
        server = start_server(binary, log_dir=logs, network=network)
        cleanup.callback(server.stop)
        llm = ScriptedOpenAIServer(default_reply=Reply(text=DEFAULT_REPLY, delay=args.llm_latency)).start()
        cleanup.callback(llm.stop)
        numbers = {turn_corpus.REGISTERED_NUMBER} | {" ".join(w) for _, w in turn_corpus.NUMBER_GROUPINGS}
        llm.script(*[Rule(user=rf"^\W*{re.escape(n)}\W*$", system="security check", reply=Reply(
            tool_calls=[ToolCall("verify_mobile_number", {"mobile_number": n})], delay=args.llm_latency))
            for n in sorted(numbers)])
        speech = ScriptedSpeechServer(api_key="tts-room-tests", delay=args.tts_latency,
                                      words_per_minute=AGENT_WORDS_PER_MINUTE).start()
        cleanup.callback(speech.stop)
        db = add_bench_user(logs)
        audio_file = logs / "audio.pickle"
        renderer = threading.Thread(target=render_all, args=(plan, audio_file), name="render", daemon=True)
        renderer.start()
        barrier = manager.Barrier(len(lanes))
        options = {"deepgram_key": DEEPGRAM_KEY, "stt_endpointing": args.stt_endpointing,
                   "reply_timeout": args.reply_timeout, "decision_pattern": args.decision_pattern}
        procs = []
        for label, _env in lanes:
            parent, child = spawn.Pipe()
            proc = spawn.Process(target=lane_process, args=(label, plan, child, barrier, options), daemon=True,
                                 name=f"lane-{label}")
            proc.start()
            cleanup.callback(proc.terminate)
            procs.append((label, proc, parent))
        extra = {"GOCARE_WORKER_IDLE_PROCESSES": args.idle_processes, "LOG_LEVEL": args.log_level,
                 "GOCARE_RECONNECT_GRACE": "2"}
        setups = []
        for (label, env), (_label, _proc, conn) in zip(lanes, procs, strict=True):
            deepgram_url = conn.recv()
            providers = Providers(llm=llm, speech=speech, deepgram=_Url(deepgram_url))  # type: ignore[arg-type]
            if label == "stock":
                lane = start_bare_lane(cleanup, label="stock", server=server, providers=providers, logs=logs,
                                       extra=extra, turn_log=logs / "stock-turns.jsonl")
            else:
                agent = "multi-assistant" if label == "ours" else f"multi-assistant-{label}"
                lane = start_our_lane(cleanup, label=label, names=f"-{label}", agent=agent, server=server,
                                      providers=providers, users_db=db, logs=logs, extra={**extra, **env})
            setups.append({"service_url": lane.service_url, "worker_log": str(lane.turn_log),
                           "checks_number": label != "stock"})
        time.sleep(5)  # the workers' warm processes are ready
        renderer.join()
        if not audio_file.exists():
            print("rendering the corpus failed (see above)", file=sys.stderr)
            return 1
        for (_label, _proc, conn), setup in zip(procs, setups, strict=True):
            conn.send({**setup, "audio": str(audio_file)})
        for label, proc, conn in procs:
            try:
                results += conn.recv()
            except EOFError:
                print(f"lane {label} died (exit code {proc.exitcode})", file=sys.stderr)
    load_after = os.getloadavg()
    meta = {"command": command_line(), "machine": machine(), "started": time.strftime(
        "%Y-%m-%d %H:%M UTC", time.gmtime(started_at)), "minutes": round((time.time() - started_at) / 60, 1),
        "load_before": load_before, "load_after": load_after, "lanes": [label for label, _ in lanes],
        "commit": git_commit(), "stt_endpointing": args.stt_endpointing}
    report = build_report(results, meta)
    print(report, flush=True)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"turn-taking-{int(started_at)}.json"
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"\nevery trial: {path.relative_to(ROOT)}")
    return 0


def render_all(plan: list[list[Trial]], path: Path) -> None:
    """Every turn's audio, synthesized once for all lanes (espeak-ng and flite take a few seconds for a call's
    turns on a busy machine; done here, while the workers start, not between the calls)."""
    import pickle

    audio = {trial.id: turn_corpus.render(trial) for call in plan for trial in call}
    path.write_bytes(pickle.dumps(audio))


class _Url:
    """What ``Providers.env()`` reads of a Deepgram server: its URL (the lane's server runs in the lane)."""

    def __init__(self, url: str) -> None:
        self.url = url


def command_line() -> str:
    return "python bench/bench_turn_taking.py " + " ".join(sys.argv[1:])


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    return f"{platform.node()}, {os.cpu_count()} CPUs ({model}), Python {platform.python_version()}"


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


# --- the report (pure: results in, markdown out) -----------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def _rate(rows: list[dict[str, Any]], flag: str) -> str:
    valid = [r for r in rows if r.get("valid")]
    hits = sum(1 for r in valid if r.get(flag))
    return f"{hits}/{len(valid)} ({100 * hits / len(valid):.1f} %)" if valid else "-"


def build_report(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lanes = meta["lanes"]
    out = [f"\n`sudo .venv/bin/{meta['command']}` at {meta['commit']}, {meta['started']}, {meta['minutes']} min",
           f"Machine: {meta['machine']}; load average (1/5/15 min) before {fmt_load(meta['load_before'])}, after "
           f"{fmt_load(meta['load_after'])}; scripted STT endpointing {meta['stt_endpointing']} s"]
    by_lane = {lane: [r for r in results if r["lane"] == lane] for lane in lanes}
    pauses = {lane: [r for r in rows if r["kind"] == "pause"] for lane, rows in by_lane.items()}
    loads = [r["load1"] for r in results if "load1" in r]
    if loads:
        out.append(f"Load average (1 min) during the turns: min {min(loads):.1f}, median {pct(loads, 0.5):.1f}, "
                   f"max {max(loads):.1f}")

    def table(title: str, key: str, rows_of: dict[str, list[dict[str, Any]]]) -> None:
        values = sorted({r[key] for rows in rows_of.values() for r in rows}, key=lambda v: (str(type(v)), v))
        out.append(f"\n{title}: early replies (agent audio or speaking before the caller finished) / committed in "
                   "the pause / answered twice, of the valid trials\n")
        out.append(f"| {key} | " + " | ".join(f"{lane} early | {lane} committed | {lane} twice" for lane in lanes) + " |")
        out.append("| --- |" + " ---: | ---: | ---: |" * len(lanes))
        for value in [*values, "all"]:
            cells = []
            for lane in lanes:
                rows = [r for r in rows_of[lane] if value == "all" or r[key] == value]
                cells += [_rate(rows, "early"), _rate(rows, "committed_in_pause"), _rate(rows, "answered_twice")]
            label = f"{int(value * 1000)} ms" if key == "gap" and value != "all" else str(value)
            out.append(f"| {label} | " + " | ".join(cells) + " |")

    table("Mid-sentence pauses by gap", "gap", pauses)
    table("Mid-sentence pauses by shape (the last word before the pause)", "shape", pauses)
    table("Mid-sentence pauses by voice", "voice", pauses)
    numbers = {lane: [r for r in rows if r["kind"] == "number"] for lane, rows in by_lane.items()}
    table("Number turns (the registered number in groups)", "shape", numbers)

    out.append("\nReply latency at the client (caller's last audio -> agent's first audio), seconds; turns without "
               "an early reply\n")
    out.append("| lane | question p50 / p95 (n) | number p50 / p95 (n) | after a pause p50 / p95 (n) | invalid | no reply "
               "| numbers verified | STT blips after the turn |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    stats: dict[str, dict[str, float]] = {}
    for lane, rows in by_lane.items():
        cells, stats[lane] = [], {}
        for kind in ("question", "number", "pause"):
            values = [r["first_reply_after_end"] for r in rows if r["kind"] == kind and r.get("valid")
                      and not r.get("early") and r.get("first_reply_after_end") is not None]
            stats[lane][kind] = pct(values, 0.5)
            cells.append(f"{pct(values, 0.5):.2f} / {pct(values, 0.95):.2f} ({len(values)})")
        invalid = sum(1 for r in rows if not r.get("valid"))
        no_reply = sum(1 for r in rows if r.get("valid") and r.get("no_reply"))
        checked = [r for r in rows if r["kind"] == "number" and "verified" in r]
        verified = f"{sum(1 for r in checked if r['verified'])}/{len(checked)}" if checked else "-"
        blips = sum(1 for r in rows if r.get("valid") and len(r.get("heard") or []) > len(r["text"].split(" | ")))
        out.append(f"| {lane} | " + " | ".join(cells) + f" | {invalid} | {no_reply} | {verified} | {blips} |")

    out += stage_table(by_lane)
    early_rows = [r for r in results if r.get("valid") and (r.get("early") or r.get("answered_twice"))]
    if early_rows:
        out.append("\nEarly replies and turns cut in two, with the worker's log lines of the turn\n")
        for r in sorted(early_rows, key=lambda r: (r["lane"], r["trial"])):
            flags = ", ".join(f for f in ("early", "answered_twice") if r.get(f))
            out.append(f"- {r['lane']} {r['trial']} ({flags}; {r['shape']}, {int(r['gap'] * 1000)} ms, {r['voice']}): "
                       f"\"{r['text']}\" -> {r['replies']}")
            for line in r.get("log", [])[:6]:
                out.append(f"    - `{log_line_text(line)}`")
    invalid_rows = [r for r in results if not r.get("valid")]
    if invalid_rows:
        out.append(f"\nInvalid or skipped turns ({len(invalid_rows)}), not counted:")
        for r in invalid_rows[:20]:
            out.append(f"- {r['lane']} {r['trial']}: {r.get('problem')}")
    out.append("")
    out += summary_lines(pauses, stats, lanes)
    return "\n".join(out)


STAGES = (("vad_end", "end of speech (the agent's VAD)"), ("transcript", "final transcript at the agent"),
          ("end_of_turn", "turn committed"), ("published", "first audio published by the agent"),
          ("client", "first audio at the client"))


def turn_stages(r: dict[str, Any]) -> dict[str, float]:
    """A turn's stages in seconds after the caller's last audio, on one clock (``time.time()``, one machine): the
    worker's own record of the turn (ours: the ``turn latency`` log line, worker/latency.py; the stock agent: the
    same fields in its BENCH_TURN_LOG) of the reply that came after the end."""
    end = r.get("end_wall")
    if end is None or r.get("first_reply_after_end") is None:
        return {}
    records = []
    for line in r.get("log", []):
        with contextlib.suppress(ValueError):
            data = json.loads(line)
            record = data.get("turn_latency", data) if isinstance(data, dict) else None
            if isinstance(record, dict) and "stopped_speaking_at" in record and "first_audio_at" in record:
                records.append(record)
    after = [x for x in records if float(x["first_audio_at"]) >= end - 0.2]
    if not after:
        return {"client": r["first_reply_after_end"]}
    record = after[0]
    vad_end = float(record["stopped_speaking_at"]) - end
    stages = {"vad_end": vad_end, "published": float(record["first_audio_at"]) - end,
              "client": r["first_reply_after_end"]}
    for name in ("transcript", "end_of_turn"):
        if record.get(name) is not None:
            stages[name] = vad_end + float(record[name])
    return stages


def stage_table(by_lane: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Where the time after a finished turn goes: each stage's p50 over the valid turns without an early reply."""
    columns = []
    for kind in ("question", "number"):
        for lane, rows in by_lane.items():
            per_turn = [turn_stages(r) for r in rows if r["kind"] == kind and r.get("valid") and not r.get("early")]
            columns.append((f"{lane} {kind}", per_turn))
    if not any(len(st) > 1 for _, per_turn in columns for st in per_turn):
        return []
    out = ["\nWhere the time after a finished turn goes: p50 seconds after the caller's last audio (the worker's own "
           "per-turn record, one clock)\n", "| stage | " + " | ".join(name for name, _ in columns) + " |",
           "| --- |" + " ---: |" * len(columns)]
    for key, title in STAGES:
        cells = []
        for _, per_turn in columns:
            values = [st[key] for st in per_turn if key in st]
            cells.append(f"{pct(values, 0.5):.2f}" if values else "")
        out.append(f"| {title} | " + " | ".join(cells) + " |")
    return out


def summary_lines(pauses: dict[str, list[dict[str, Any]]], stats: dict[str, dict[str, float]],
                  lanes: list[str]) -> list[str]:
    lines = []
    stock = "stock" if "stock" in lanes else None
    for lane in lanes:
        if lane == "stock":
            continue
        valid = [r for r in pauses[lane] if r.get("valid")]
        early = sum(1 for r in valid if r.get("early"))
        twice = sum(1 for r in valid if r.get("answered_twice"))
        rate = early / len(valid) if valid else float("nan")
        parts = [f"early replies {early}/{len(valid)} = {100 * rate:.1f} %"]
        ok = [rate <= TARGET_EARLY]
        if stock:
            stock_valid = [r for r in pauses[stock] if r.get("valid")]
            stock_early = sum(1 for r in stock_valid if r.get("early"))
            stock_rate = stock_early / len(stock_valid) if stock_valid else float("nan")
            ok.append(rate < stock_rate or early == 0)
            parts[0] += f" (stock {stock_early}/{len(stock_valid)} = {100 * stock_rate:.1f} %)"
            q = stats[lane]["question"] / stats[stock]["question"]
            n = stats[lane]["number"] / stats[stock]["number"]
            parts.append(f"question p50 {stats[lane]['question']:.2f} s vs {stats[stock]['question']:.2f} s = {q:.2f}x")
            parts.append(f"number p50 {stats[lane]['number']:.2f} s vs {stats[stock]['number']:.2f} s = {n:.2f}x")
            ok += [q <= TARGET_QUESTION, n <= TARGET_NUMBER]
        parts.append(f"turns cut in two {twice}")
        verdict = "MET" if all(ok) and stock else ("NOT MET" if stock else "no stock lane: ratios not measured")
        lines.append(f"SUMMARY {lane}: " + "; ".join(parts) + f" | targets: early <= {100 * TARGET_EARLY:.0f} % and "
                     f"fewer than stock, question <= {TARGET_QUESTION}x, number <= {TARGET_NUMBER}x: {verdict}")
    return lines


def fmt_load(load: Any) -> str:
    return "/".join(f"{v:.1f}" for v in load)


def _stop(*_args: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl+C: every process and server stopped


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
