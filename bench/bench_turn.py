"""Turn overhead of our MainAgent against a bare livekit ``Agent`` with the same instructions.

Both run in real ``AgentSession``s in one process, one after the other in alternating order, each turn
``session.run(user_input=...)`` until the reply is complete; the LLM is the real ``openai.LLM`` plugin
talking HTTP to the scripted OpenAI-compatible server on 127.0.0.1, which answers instantly. So the
time measured is livekit-agents' turn machinery plus whatever our agent adds (state, tools, hooks).
Target: median(ours) / median(bare) <= 1.10.

    .venv/bin/python bench/bench_turn.py [--turns 150] [--warmup 20]

Exit code 1 when the ratio misses the target.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

TARGET_RATIO = 1.10


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered) * 1000,
        "mean": statistics.fmean(ordered) * 1000,
        "p90": ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))] * 1000,
        "min": ordered[0] * 1000,
    }


async def run(turns: int, warmup: int) -> int:
    import logging

    logging.getLogger("livekit").setLevel(logging.WARNING)
    logging.getLogger("gocare").setLevel(logging.WARNING)

    from livekit.agents import Agent, AgentSession
    from livekit.plugins import openai

    from gocare_voice.conversation.agents import MainAgent
    from gocare_voice.conversation.directory import UserDirectory
    from gocare_voice.conversation.state import SessionState
    from gocare_voice.settings import Settings
    from scripted.openai_server import Reply, ScriptedOpenAIServer

    with tempfile.TemporaryDirectory() as tmp, ScriptedOpenAIServer(
        default_reply=Reply(text="Sure, John. Here is a short answer to that.")
    ) as server:
        settings = Settings(database_url=f"sqlite:///{Path(tmp) / 'users.db'}")
        directory = UserDirectory.from_settings(settings)
        state = SessionState(user_id="user-123", user_name="John Doe", authenticated=True, greeted=True)

        def make_llm() -> openai.LLM:
            return openai.LLM(model="gpt-4o-mini", base_url=server.base_url, api_key="bench")

        ours_agent = MainAgent(state=state, settings=settings, directory=directory, announce=False)
        bare_agent = Agent(instructions=ours_agent.instructions)
        ours = AgentSession(llm=make_llm(), userdata=state)
        bare = AgentSession(llm=make_llm())
        await ours.start(ours_agent)
        await bare.start(bare_agent)

        times: dict[str, list[float]] = {"ours": [], "bare": []}
        sessions = {"ours": ours, "bare": bare}
        for i in range(warmup + turns):
            order = ("ours", "bare") if i % 2 == 0 else ("bare", "ours")
            for name in order:
                started = time.perf_counter()
                result = await sessions[name].run(user_input=f"Question number {i}: what should I do next?")
                elapsed = time.perf_counter() - started
                result.expect.contains_message(role="assistant")
                if i >= warmup:
                    times[name].append(elapsed)
        await ours.aclose()
        await bare.aclose()
        directory.close()

    s_ours, s_bare = summary(times["ours"]), summary(times["bare"])
    ratio = s_ours["median"] / s_bare["median"]
    print(f"# turn time, user input -> complete reply, scripted LLM on loopback; {turns} turns each "
          f"(+{warmup} warm-up), alternating")
    print(f"# {platform.processor() or platform.machine()} / Python {platform.python_version()}")
    print(f"{'agent':<22}{'median ms':>10}{'mean ms':>10}{'p90 ms':>9}{'min ms':>9}")
    for label, stats in (("MainAgent (ours)", s_ours), ("livekit Agent (bare)", s_bare)):
        print(f"{label:<22}{stats['median']:>10.2f}{stats['mean']:>10.2f}{stats['p90']:>9.2f}{stats['min']:>9.2f}")
    print(f"ratio ours/bare (median): {ratio:.3f}  (target <= {TARGET_RATIO:.2f})")
    return 0 if ratio <= TARGET_RATIO else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=150, help="measured turns per agent (default 150)")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured turns per agent first (default 20)")
    args = parser.parse_args()
    if not 1 <= args.turns <= 5000 or not 0 <= args.warmup <= 1000:
        parser.error("--turns must be 1..5000 and --warmup 0..1000")
    return asyncio.run(run(args.turns, args.warmup))


if __name__ == "__main__":
    sys.exit(main())
