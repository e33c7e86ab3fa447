"""The peer of bench_rooms.py: a plain livekit-agents voice agent (agent-starter shape) with the same
providers and turn handling as ours, and nothing of ours: no number check, no state, no handlers.

    python bench/bare_agent.py start        # env: LIVEKIT_*, LLM_*, DEEPGRAM_*, GOCARE_TTS_*, BARE_AGENT_NAME

It greets like ours (``session.say``) and answers every turn with the LLM.
"""

from __future__ import annotations

import json
import os

from livekit.agents import (Agent, AgentServer, AgentSession, ConversationItemAddedEvent, JobContext, JobProcess, cli,
                            inference)
from livekit.agents.llm import ChatMessage
from livekit.plugins import deepgram, openai, silero

GREETING = "Welcome John! Please say your registered mobile number."



def load_below_full(server: AgentServer) -> float:
    """livekit's own CPU load figure, capped at 0.99 as our worker caps it (gocare_voice/worker/server.py): on the
    benchmarks' saturated 2-core machine the uncapped 1.0 makes livekit-server send the stock agent no job at all
    ("no workers with sufficient capacity"), and a benchmark measures calls, not dispatch. Turn handling untouched."""
    from livekit.agents import worker

    return min(0.99, float(worker._DefaultLoadCalc.get_load(server)))  # noqa: SLF001 - no public way (as ours)


def prewarm(proc: JobProcess) -> None:
    proc.userdata["vad"] = silero.VAD.load()


server = AgentServer(
    ws_url=os.environ["LIVEKIT_URL"], api_key=os.environ["LIVEKIT_API_KEY"],
    api_secret=os.environ["LIVEKIT_API_SECRET"], port=int(os.environ.get("BARE_AGENT_PORT", "0")),
    num_idle_processes=int(os.environ.get("GOCARE_WORKER_IDLE_PROCESSES", "1")),
    load_threshold=float(os.environ.get("GOCARE_WORKER_LOAD_THRESHOLD", "inf")),
    setup_fnc=prewarm,
    load_fnc=load_below_full,
)


@server.rtc_session(agent_name=os.environ.get("BARE_AGENT_NAME", "bare-assistant"))
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    session = AgentSession(
        stt=deepgram.STT(model="nova-3", language="en-US", api_key=os.environ["DEEPGRAM_API_KEY"],
                         base_url=os.environ["GOCARE_DEEPGRAM_BASE_URL"] + "/v1/listen"),
        llm=openai.LLM(model="gpt-4o-mini", api_key=os.environ["LLM_API_KEY"], base_url=os.environ["LLM_BASE_URL"]),
        tts=openai.TTS(model="gpt-4o-mini-tts", voice="alloy", api_key=os.environ["GOCARE_TTS_API_KEY"],
                       base_url=os.environ["GOCARE_TTS_BASE_URL"]),
        vad=ctx.proc.userdata["vad"],
        turn_handling={"turn_detection": inference.TurnDetector(version="v1-mini")},
    )
    if os.environ.get("BENCH_TURN_LOG"):
        log_turns(session, ctx.room.name, os.environ["BENCH_TURN_LOG"])
    await session.start(agent=Agent(instructions="You are a friendly voice assistant."), room=ctx.room)
    session.say(GREETING)


def log_turns(session: AgentSession, room: str, path: str) -> None:
    """For bench_rooms.py's stage table: each answered turn's livekit metrics (ChatMessage.metrics), as one JSON
    line with the fields ours logs (gocare_voice/worker/latency.py), written here so the peer runs none of our code."""
    last_user: dict = {}

    def on_item(ev: ConversationItemAddedEvent) -> None:
        nonlocal last_user
        if not isinstance(ev.item, ChatMessage) or not ev.item.metrics:
            return
        m = ev.item.metrics
        if ev.item.role == "user" and "stopped_speaking_at" in m:
            last_user = dict(m)
        elif ev.item.role == "assistant" and last_user and "started_speaking_at" in m:
            record = {"room": room, "stopped_speaking_at": last_user["stopped_speaking_at"],
                      "first_audio_at": m["started_speaking_at"],
                      "transcript": last_user.get("transcription_delay"), "end_of_turn": last_user.get("end_of_turn_delay"),
                      "llm_ttft": m.get("llm_node_ttft"), "tts_ttfb": m.get("tts_node_ttfb")}
            last_user = {}
            with open(path, "a") as out:
                out.write(json.dumps({k: v for k, v in record.items() if v is not None}) + "\n")

    session.on("conversation_item_added", on_item)


if __name__ == "__main__":
    cli.run_app(server)
