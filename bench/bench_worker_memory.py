"""Resident memory of a prewarmed worker process, and what each added AgentSession costs.

Stages, measured in this (fresh) process from /proc/self/status (VmRSS) and /proc/self/smaps_rollup
(Pss, which splits pages shared with other processes, e.g. the forkserver's copy-on-write images):

1. Python + ``gocare_voice`` settings only;
2. livekit-agents, the plugins and our worker imported (``build_server``);
3. ``prewarm``: the Silero VAD built (``providers.build_vad``: livekit-local-inference), the local end-of-turn model initialised, openai SDK resources imported
   (what every job process holds before its first job);
4. N ``AgentSession``s started with our providers (OpenAI LLM and TTS pointed at a closed loopback port,
   the shared VAD, the local turn detector) and our ``AuthenticationAgent``, no room. Without STT: a
   started session opens its Deepgram WebSocket at once, and there is no Deepgram to talk to here; a
   live call adds that stream, the room connection and its audio buffers.

livekit-agents runs each job in its own process by default, so a worker's footprint is roughly
"stage 3 per idle/busy process"; stage 4 is the in-process cost of a session's objects and activity,
without the room connection and audio buffers a live call adds.

    .venv/bin/python bench/bench_worker_memory.py [--sessions 20]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import sys
import tempfile
from pathlib import Path


def memory_mb() -> tuple[float, float]:
    rss = pss = 0.0
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    try:
        with open("/proc/self/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) / 1024
    except OSError:
        pass
    return rss, pss


def row(label: str, previous: tuple[float, float] | None = None) -> tuple[float, float]:
    gc.collect()
    rss, pss = memory_mb()
    delta = f"{rss - previous[0]:>+10.1f}" if previous else f"{'':>10}"
    print(f"{label:<52}{rss:>9.1f}{pss:>9.1f}{delta}")
    return rss, pss


async def sessions_stage(count: int, settings: object, vad: object, base: tuple[float, float]) -> None:
    from gocare_voice.conversation.agents import build_entry_agent
    from gocare_voice.conversation.directory import UserDirectory
    from gocare_voice.conversation.state import SessionState
    from livekit.agents import AgentSession
    from livekit.agents.utils import http_context

    from gocare_voice import providers

    directory = UserDirectory.from_settings(settings)
    sessions = []
    context = http_context.open()
    await context.__aenter__()
    marks = {1, 5, 10, 20, 50, 100, count}
    previous = base
    first_session = base[0]
    for i in range(1, count + 1):
        state = SessionState(user_id=f"user-{i}", user_name="John Doe")
        session = AgentSession(
            llm=providers.build_llm(settings), tts=providers.build_tts(settings), vad=vad,  # type: ignore[arg-type]  # the plugins' concrete types, as the worker passes them
            turn_handling={"turn_detection": providers.build_turn_detection(settings)}, userdata=state,  # type: ignore[arg-type]  # the plugins' concrete types, as the worker passes them
        )
        await session.start(build_entry_agent(state=state, settings=settings, directory=directory,  # type: ignore[arg-type]  # the plugins' concrete types, as the worker passes them
                                              greet_on_enter=False))
        sessions.append(session)
        if i == 1:
            await asyncio.sleep(0.05)
            first_session = memory_mb()[0]
        if i in marks:
            await asyncio.sleep(0.05)
            now = memory_mb()
            per = (now[0] - base[0]) / i
            previous = row(f"4. {i:>3} session(s) started (avg {per:5.2f} MB/session)", previous)
    if count >= 10:
        print(f"marginal cost per session after the first: {(previous[0] - first_session) / (count - 1):.2f} MB RSS")
    for session in sessions:
        await session.aclose()
    await context.__aexit__(None, None, None)
    directory.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20, help="sessions to add (default 20)")
    args = parser.parse_args()
    if not 1 <= args.sessions <= 200:
        parser.error("--sessions must be 1..200")

    print(f"# worker memory, {platform.processor() or platform.machine()} / Python {platform.python_version()}")
    print(f"{'stage':<52}{'RSS MB':>9}{'PSS MB':>9}{'delta MB':>10}")
    first = row("1. python + gocare_voice settings")

    import logging

    logging.disable(logging.WARNING)
    from gocare_voice.settings import Settings
    from gocare_voice.worker.server import build_server

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            deepgram_api_key="bench", llm_api_key="bench", deepgram_base_url="http://127.0.0.1:9",
            llm_base_url="http://127.0.0.1:9/v1", database_url=f"sqlite:///{Path(tmp) / 'users.db'}",
        )
        build_server(settings)
        imported = row("2. livekit-agents + plugins + worker imported", first)

        from gocare_voice.worker.entrypoint import VAD_KEY, prewarm

        class Proc:
            userdata: dict[str, object] = {}

        # the parts of prewarm one by one, then prewarm itself (which then finds them loaded)
        from gocare_voice.providers import build_vad

        build_vad()  # Silero run by livekit-local-inference, as prewarm builds it
        vad_loaded = row("3a. Silero VAD built (livekit-local-inference)", imported)
        import livekit.local_inference as local_inference

        local_inference.init_eot()
        eot_loaded = row("3b. local end-of-turn model initialised", vad_loaded)
        import openai.resources.chat.completions  # noqa: F401 - imported for its side effect: loaded in prewarm, not in the first call

        sdk_loaded = row("3c. openai SDK chat resources imported", eot_loaded)
        proc = Proc()
        prewarm(proc)
        prewarmed = row("3. prewarm() (all of the above)", sdk_loaded)
        print(f"{'   = one idle job process, before its first job':<52}{prewarmed[0]:>9.1f}{prewarmed[1]:>9.1f}")
        asyncio.run(sessions_stage(args.sessions, settings, proc.userdata[VAD_KEY], prewarmed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
