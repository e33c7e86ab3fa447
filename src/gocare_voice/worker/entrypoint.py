"""The job: one room, one user, one AgentSession.

Thin on purpose: everything that decides something (identity, commands, greeting timing) lives in
``RoomHandlers``/``CommandExecutor``/the agents, which are tested without LiveKit. This module connects
them to a real ``JobContext``.

``prewarm`` and ``GoCareEntrypoint`` are module-level and picklable: livekit-agents hands them to job
processes through multiprocessing (forkserver on Linux).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from gocare_voice.settings import Settings

logger = logging.getLogger("gocare.worker")

METADATA_GRACE_SECONDS = 1.5
"""How long the agent waits for a name (the app's ``setMetadata`` after joining) before greeting without one."""

PROVIDER_APOLOGY = "Sorry, I'm having trouble answering right now. Could you say that again in a moment?"
"""Said when the language model failed after livekit-agents' retries; the session goes on."""
APOLOGY_WAIT_SECONDS = 4.0

ROOM_INPUT_SAMPLE_RATE = 16000
"""The caller's audio as the session receives it from the room. livekit-agents' default is 24 kHz, but everything
that listens takes 16 kHz: Deepgram's streaming STT (its default rate), the Silero VAD and the local end-of-turn
model (``livekit.agents.inference``). At 24 kHz each of the three resampled every 50 ms frame again, each a
round trip through livekit's FFI; at 16 kHz livekit-rtc resamples once, natively, as it decodes the track
(bench/bench_capacity.py measured the difference, docs/benchmarks.md). Nothing is lost: no consumer gets more
than 16 kHz either way."""

VAD_KEY = "vad"
DIRECTORY_KEY = "directory"


def prewarm(proc: Any) -> None:
    """Once per job process, before any job: the VAD weights and the local end-of-turn model, so the
    first session does not stall its event loop loading them."""
    from gocare_voice.providers import build_vad
    from gocare_voice.redact import install_pii_log_filter

    install_pii_log_filter()  # job processes are fresh interpreters (forkserver): install it here too
    from gocare_voice.logging_setup import quiet_livekit_noise

    quiet_livekit_noise()
    proc.userdata[VAD_KEY] = build_vad()
    try:
        import livekit.local_inference as local_inference

        local_inference.init_eot()  # no-op when the forkserver already preloaded it
    except Exception as error:  # noqa: BLE001 - turn detection falls back to VAD; say so, keep going
        logger.warning("local end-of-turn model not preloaded: %s: %s", type(error).__name__, error)
    # our heavy imports, the openai SDK's chat resources, anyio and the aiohttp TLS context: here
    # rather than inside the first job's event loop, where livekit-agents reports them as a blocked loop. A
    # no-op in a job process forked from the worker's forkserver, which imported it once for all of them
    # (``preload_modules`` in worker/server.py)
    import gocare_voice.worker.job_preload  # noqa: F401 - imported for its side effect


def _vad_for(ctx: Any) -> Any:
    vad = ctx.proc.userdata.get(VAD_KEY)
    if vad is None:  # a process that skipped prewarm (thread executor in tests): load it here, once
        from gocare_voice.providers import build_vad

        vad = ctx.proc.userdata[VAD_KEY] = build_vad()
    return vad


def _directory_for(ctx: Any, settings: Settings) -> Any:
    directory = ctx.proc.userdata.get(DIRECTORY_KEY)
    if directory is None:
        from gocare_voice.conversation.directory import UserDirectory

        directory = ctx.proc.userdata[DIRECTORY_KEY] = UserDirectory.from_settings(settings)
    return directory


def session_providers(settings: Settings, *, text_only: bool = False) -> dict[str, Any]:
    """STT/LLM/TTS/turn detection for one session. ``text_only`` (console --text) leaves out STT and TTS:
    typed chat needs only the LLM. Blocking (each HTTP client loads
    the CA bundle, ~150 ms): the job calls it in a thread."""
    from gocare_voice import providers

    parts: dict[str, Any] = {"llm": providers.build_llm(settings)}
    if not text_only:
        # typed chat builds neither, even when their keys are set: Deepgram's streaming STT would open its
        # websocket for a microphone that does not exist (and end the console at its first error)
        parts["stt"] = providers.build_stt(settings)
        parts["tts"] = providers.build_tts(settings)
    parts["turn_handling"] = providers.build_turn_handling(settings)
    return parts


def build_session(settings: Settings, *, vad: Any, state: Any, text_only: bool = False,
                  parts: dict[str, Any] | None = None) -> Any:
    """The AgentSession with our providers; the same one for console and rooms."""
    from livekit.agents import AgentSession, APIConnectOptions
    from livekit.agents.voice.agent_session import SessionConnectOptions

    if parts is None:
        parts = session_providers(settings, text_only=text_only)
    # a caller waits in silence while the LLM is retried: GOCARE_LLM_TIMEOUT x (GOCARE_LLM_RETRIES + 1) bounds
    # it before the apology (run_job's error handler)
    llm_options = APIConnectOptions(max_retry=settings.llm_retries, timeout=settings.llm_timeout)
    return AgentSession(**parts, vad=vad, userdata=state, conn_options=SessionConnectOptions(llm_conn_options=llm_options))


def show_in_console(text: str) -> None:
    """Print an agent line the way livekit-agents' text console prints replies. Its text mode prints only
    what a ``session.run`` (a typed turn) produced, so the greeting, said by ``session.say`` before any turn,
    would never appear and the developer would face an empty prompt."""
    try:
        from livekit.agents.cli._legacy import AgentsConsole
        from rich.text import Text
    except ImportError:  # a livekit-agents without this console: nothing to print to
        return
    console = AgentsConsole.get_instance().console
    console.print()
    console.print(Text.assemble(("  \u25cf ", "#6BCB77"), ("Agent", "bold #6BCB77")))
    for line in text.split("\n"):
        console.print(Text(f"    {line}"))


async def _start_recording(ctx: Any, settings: Settings, state: Any, room_name: str | None,
                           identity: str | None, metrics: Any = None) -> Any:
    """The call record of this job (None when GOCARE_CALL_RECORDS=off, or when the database refuses: the
    call goes on without a record, and the log says why). Its end runs as a shutdown callback, after the
    agent left the room: the summary, the analysis and the webhooks never hold up the call's teardown."""
    from gocare_voice.records.model import RecordLevel

    if settings.records_level is RecordLevel.off:
        return None
    from gocare_voice.worker.recording import CallRecording, store_for

    job_id = getattr(getattr(ctx, "job", None), "id", None)
    call_id = job_id if isinstance(job_id, str) and job_id else f"call-{uuid.uuid4().hex[:16]}"
    try:
        store = await asyncio.to_thread(store_for, ctx.proc.userdata, settings)
        recording = await CallRecording.start(settings=settings, store=store, state=state, call_id=call_id,
                                              room=room_name, identity=identity, metrics=metrics)
    except Exception as error:  # noqa: BLE001 - a call without its record beats no call
        logger.error("call record not started (room=%s): %s: %s", room_name, type(error).__name__, str(error)[:200])
        return None

    from gocare_voice.providers import ClosingLLMFactory

    build_llm = ClosingLLMFactory(settings)

    async def _end(reason: str = "") -> None:
        try:
            await recording.end(reason, llm_factory=build_llm)
        except Exception:
            logger.exception("call record not ended (room=%s)", room_name)
        finally:
            # the summary's and the analysis's HTTP clients: a job process takes them along when it exits, a
            # thread-executor job (one process, many calls) would keep one per call
            await build_llm.aclose()

    ctx.add_shutdown_callback(_end)
    return recording


class GoCareEntrypoint:
    """``async (JobContext) -> None`` carrying the settings into the job process (picklable)."""

    def __init__(self, *, settings: Settings, console_text: bool = False, console_metadata: str | None = None) -> None:
        self.settings = settings
        self.console_text = console_text
        self.console_metadata = console_metadata

    async def __call__(self, ctx: Any) -> None:
        await run_job(ctx, settings=self.settings, console_text=self.console_text,
                      console_metadata=self.console_metadata)


async def run_job(
    ctx: Any, *, settings: Settings, metadata_grace: float = METADATA_GRACE_SECONDS, console_text: bool = False,
    use_room_io: bool = True, console_metadata: str | None = None,
) -> Any:
    """Connect, find the user, start the session, greet; returns the running AgentSession (for tests:
    livekit-agents ignores it and keeps the job alive until the room closes).

    ``use_room_io=False`` starts the session without livekit's RoomIO (no audio tracks, no ``lk.*`` text
    streams), everything else as in a room: the one seam that lets a test drive the room path with plain
    objects standing in for ``rtc.Room``, which RoomIO needs for real (native audio sources, tracks)."""
    from livekit.agents import room_io

    from gocare_voice.conversation.agents import AuthenticationAgent, build_entry_agent, switch_mode
    from gocare_voice.conversation.executor import CommandExecutor
    from gocare_voice.conversation.identity import greeting_text
    from gocare_voice.conversation.state import SessionState
    from gocare_voice.settings import AuthMode
    from gocare_voice.redact import install_pii_log_filter
    from gocare_voice.worker.handlers import RoomHandlers
    from gocare_voice.worker.metrics import metrics_for
    from gocare_voice.worker.tasks import TaskScheduler

    install_pii_log_filter()  # console and thread executors run jobs in processes that skipped prewarm
    console = bool(ctx.is_fake_job())
    await ctx.connect()
    room = ctx.room
    room_name = room.name if isinstance(getattr(room, "name", None), str) else None
    ctx.log_context_fields = {"room": room_name}
    logger.info("room ready (room=%s console=%s agent=%s)", room_name, console, settings.agent_name)

    metrics = metrics_for(settings)
    state = SessionState(room_name=room_name, on_verification=metrics.verification)
    scheduler = TaskScheduler(room_name=room_name)
    # with caller authentication the token's identity is the verified user: the app cannot name another
    # user id through its own metadata (console has no participant, only the developer's dispatch metadata)
    handlers = RoomHandlers(
        room=room, state=state, scheduler=scheduler,
        # console has no dispatch of its own: `gocare worker console --metadata JSON` stands in for it
        job_metadata=console_metadata if console and console_metadata else ctx.job.metadata,
        bind_user_id_to_identity=not console and settings.auth_mode is AuthMode.jwt,
        metrics=metrics,
    )
    ctx.add_shutdown_callback(scheduler.aclose)

    participant = None
    if not console:
        # callbacks and RPC first: an app already in the room may call as soon as the agent appears
        # (it gets ``not_ready`` until the session runs, rather than UNSUPPORTED_METHOD)
        handlers.attach()
        handlers.register_rpc()
        participant = await ctx.wait_for_participant()
        handlers.link_user(participant)
        ctx.log_context_fields = {"room": room_name, "participant": handlers.user_identity}
    else:
        handlers.update_identity(None, why="console")  # dispatch metadata only

    # creating the engine parses the URL and loads the driver (~100 ms on the first call of a process)
    directory = await asyncio.to_thread(_directory_for, ctx, settings)
    from gocare_voice.providers import import_plugins

    import_plugins(settings)  # registered on this thread (a no-op when build_server already did it)
    parts = await asyncio.to_thread(session_providers, settings, text_only=console and console_text)
    session = build_session(settings, vad=_vad_for(ctx), state=state, parts=parts)
    recording = None if console else await _start_recording(ctx, settings, state, room_name, handlers.user_identity,
                                                              metrics)
    if recording is not None:
        recording.attach(session)
    from gocare_voice.worker import latency

    latency.attach(session, room=room_name, observe=lambda turn: metrics.turn_latency(turn.stages()))
    from gocare_voice.worker import turn_taking

    # each final transcript sets the turn's endpointing delays: the words (turn_decision) and, during the number
    # check, the phone parser (number_turn); one line per committed turn says why it ended when it did
    turn_taking.attach(
        session, policy=turn_taking.policy_from(settings), region=settings.phone_region, room=room_name,
        waiting_for_number=lambda: (settings.number_endpointing and isinstance(session.current_agent, AuthenticationAgent)
                                    and not state.authenticated),
    )

    def _switch(mode: str) -> Any:
        before = session.current_agent
        agent = switch_mode(session, mode, settings=settings, directory=directory, state=state)
        if agent is not before:  # switching to the current mode changes nothing
            metrics.mode_switch(mode)
        return agent

    started = False
    user_left = False


    async def _greet() -> None:
        agent = session.current_agent
        if isinstance(agent, AuthenticationAgent):
            await agent.refresh_identity()
            if agent.greet() is not None and console and console_text:
                show_in_console(greeting_text(state.identity))

    async def _refresh() -> None:
        agent = session.current_agent
        if isinstance(agent, AuthenticationAgent):
            await agent.refresh_identity()

    @session.on("close")
    def _on_close(ev: Any) -> None:
        # the session ends itself after too many wrong numbers (or an unrecoverable provider error):
        # the agent then leaves the room instead of sitting in it, deaf, until the user hangs up
        reason = getattr(getattr(ev, "reason", None), "value", None) or str(getattr(ev, "reason", ""))
        logger.info("session closed (room=%s reason=%s); ending the job", room_name, reason)
        if started:
            locked_out = state.verifications[-1:] == ["locked_out"]
            metrics.call_ended("locked_out" if locked_out else "user_left" if user_left else reason)
        if recording is not None:
            recording.closed(close_reason=reason, user_left=user_left)
        ctx.shutdown(reason=f"agent session closed: {reason}")
        if console and console_text:
            # the room's agent leaves after its goodbye; the text console's prompt would stay, for nobody
            from gocare_voice.worker.livekit_private import end_text_console

            end_text_console()

    @session.on("error")
    def _on_error(ev: Any) -> None:
        # livekit-agents retried already; what is left is the user waiting in silence. Say so (the TTS still
        # works: a failing TTS has its fallback, build_tts) and keep the session: speaking resets livekit's
        # count of consecutive failures, so a flaky LLM never hangs up on the user. The user's words stay in
        # the conversation; they can simply ask again.
        error = getattr(ev, "error", None)
        kind = getattr(error, "type", "error")
        metrics.provider_error(str(kind), recoverable=bool(getattr(error, "recoverable", True)))
        if getattr(error, "recoverable", True):
            return
        cause = getattr(error, "error", None)
        logger.warning("provider failed (room=%s stage=%s): %s", room_name, kind, type(cause).__name__)
        if kind == "llm_error":
            scheduler.spawn(_apologize(), what="apology")

    async def _apologize() -> None:
        # livekit-agents starts the reply (preemptively) on the final transcript, before the end-of-turn
        # model commits the user's turn, sometimes seconds later: a fast failure arrives first, and that
        # commit would interrupt an apology said at once (seen in the room tests), while a non-interruptible
        # one makes livekit drop the user's words from the conversation. So wait for the failed turn to end
        # (thinking -> listening), a few seconds at most, then apologise.
        turn_ended.clear()
        try:
            await asyncio.wait_for(turn_ended.wait(), timeout=APOLOGY_WAIT_SECONDS)
        except asyncio.TimeoutError:
            pass
        session.say(PROVIDER_APOLOGY, add_to_chat_ctx=False)

    turn_ended = asyncio.Event()

    @session.on("conversation_item_added")
    def _on_item(ev: Any) -> None:
        item = getattr(ev, "item", None)
        # the first agent's "handoff" is the session starting; the others are real handoffs
        if getattr(item, "type", None) == "agent_handoff" and getattr(item, "old_agent_id", None) is not None:
            metrics.handoff(str(getattr(item, "new_agent_id", "")))

    @session.on("agent_state_changed")
    def _on_agent_state(ev: Any) -> None:
        if ev.old_state == "thinking" and ev.new_state in ("listening", "idle"):
            turn_ended.set()
        logger.debug("agent state %s -> %s (room=%s)", ev.old_state, ev.new_state, room_name)

    entry = build_entry_agent(state=state, settings=settings, directory=directory, greet_on_enter=False)
    start_kwargs: dict[str, Any] = {"agent": entry}
    if not console and use_room_io:
        start_kwargs["room"] = room
        # a user who drops (a network change, the app backgrounded) comes back as a new participant with the
        # same identity, and the SDKs' full reconnect leaves with CLIENT_INITIATED, which livekit-agents would
        # take as a hang-up: the agent would leave and the user come back to a dead room. RoomHandlers ends
        # the call instead when the user has not returned within GOCARE_RECONNECT_GRACE seconds.
        start_kwargs["room_options"] = room_io.RoomOptions(
            participant_identity=handlers.user_identity, close_on_disconnect=settings.reconnect_grace <= 0,
            audio_input=room_io.AudioInputOptions(sample_rate=ROOM_INPUT_SAMPLE_RATE))
    await session.start(**start_kwargs)
    started = True
    metrics.call_started()
    logger.info("session started (room=%s participant=%s)", room_name, handlers.user_identity)

    def _end_call() -> None:
        nonlocal user_left
        user_left = True
        session.shutdown(drain=False)

    # commands are answered ``not_ready`` until here: the session methods they call need a running session
    executor = CommandExecutor(
        session=session, state=state, switch_mode=_switch,
        log_extra={"room": room_name, "participant": handlers.user_identity},
    )
    handlers.bind_session(
        executor=recording.observe(executor) if recording is not None else executor,
        greet=_greet, refresh=_refresh,
        end_call=_end_call if settings.reconnect_grace > 0 else None,
        reconnect_grace=settings.reconnect_grace if settings.reconnect_grace > 0 else None,
    )
    await handlers.greet_when_ready(grace=0.0 if console else metadata_grace, participant=participant)
    return session
