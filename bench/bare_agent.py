"""The peer of bench_rooms.py: a plain livekit-agents voice agent (agent-starter shape) with the same
providers and turn handling as ours, and nothing of ours: no number check, no state, no handlers.

    python bench/bare_agent.py start        # env: LIVEKIT_*, LLM_*, DEEPGRAM_*, GOCARE_TTS_*, BARE_AGENT_NAME

It greets like ours (``session.say``) and answers every turn with the LLM.
"""

from __future__ import annotations

import os

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, JobProcess, cli, inference
from livekit.plugins import deepgram, openai, silero

GREETING = "Welcome John! Please say your registered mobile number."



def prewarm(proc: JobProcess) -> None:
    proc.userdata["vad"] = silero.VAD.load()


server = AgentServer(
    ws_url=os.environ["LIVEKIT_URL"], api_key=os.environ["LIVEKIT_API_KEY"],
    api_secret=os.environ["LIVEKIT_API_SECRET"], port=int(os.environ.get("BARE_AGENT_PORT", "0")),
    num_idle_processes=int(os.environ.get("GOCARE_WORKER_IDLE_PROCESSES", "1")),
    load_threshold=float(os.environ.get("GOCARE_WORKER_LOAD_THRESHOLD", "inf")),
    setup_fnc=prewarm,
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
    await session.start(agent=Agent(instructions="You are a friendly voice assistant."), room=ctx.room)
    session.say(GREETING)


if __name__ == "__main__":
    cli.run_app(server)
