"""The conversation's agents and how the session moves between them.

    AuthenticationAgent --verify_mobile_number ok--> GreetingAgent --welcome spoken--> MainAgent
            | max failed attempts: goodbye, session closed          (assistant | attorney | click_to_talk,
                                                                      switched by the app via switch_mode)

Every agent gets its collaborators injected (``state``, ``settings``, ``directory``; keyword-only), and the
same ``SessionState`` is the session's ``userdata``, so a tool sees it through ``RunContext[SessionState]``.
Handoffs are tools (or ``on_enter`` steps) that return / install the next agent; the app's mode switches go
through :func:`switch_mode`, which refuses before the number is verified.

Directory queries run in a worker thread (``UserDirectory.averify`` -> ``asyncio.to_thread``): sub-millisecond
on SQLite, but a network round trip on PostgreSQL, and the event loop must keep audio flowing meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from livekit.agents import Agent, AgentSession, ChatContext, RunContext, function_tool
from livekit.agents.llm import ToolResult

from ..redact import mask_phone
from . import prompts
from .identity import greeting_text
from .phone import parse_phone_number
from ..protocol import normalize_mode
from .state import MODES, Mode, SessionState

if TYPE_CHECKING:
    from ..settings import Settings
    from .directory import UserDirectory

logger = logging.getLogger("gocare.agents")

GOODBYE_TEXT = (
    "I'm sorry, I couldn't verify your mobile number, so I can't continue this call. "
    "Please check the number registered with GoCare and try again later. Goodbye."
)
MISMATCH_TEXT = "That number did not match our records."
ATTORNEY_INTRO = "You're now talking with the GoCare legal assistant. Go ahead, I'm listening."
CLICK_TO_TALK_INTRO = "Push to talk is on. Hold the button while you speak and release it when you're done."
ASSISTANT_INTRO = "You're back with the GoCare assistant."


class ModeSwitchError(Exception):
    """A mode switch the app asked for and we refuse; ``code`` is stable for the app protocol."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


def personal_welcome(state: SessionState) -> str:
    """The words after a successful check."""
    name = state.first_name
    if name:
        return f"Thank you, {name}, you're verified. How can I help you today?"
    return "Thank you, you're verified. How can I help you today?"


def _bind_state(session: AgentSession[Any], state: SessionState) -> SessionState:
    """Make ``state`` the session's userdata when the caller did not, so tools and agents share one
    object; when the session already has a SessionState, that one wins (the worker created it)."""
    try:
        current = session.userdata
    except ValueError:
        session.userdata = state
        return state
    if isinstance(current, SessionState):
        return current
    logger.warning("session userdata is %s, not SessionState; using the agent's state", type(current).__name__)
    return state


class _GoCareAgent(Agent):
    """Shared wiring: injected collaborators and one log line per agent entered."""

    def __init__(
        self,
        *,
        instructions: str,
        state: SessionState,
        settings: Settings,
        directory: UserDirectory,
        chat_ctx: ChatContext | None = None,
        **agent_options: Any,
    ) -> None:
        super().__init__(instructions=instructions, chat_ctx=chat_ctx, **agent_options)
        self._state = state
        self._settings = settings
        self._directory = directory

    @property
    def state(self) -> SessionState:
        return self._state

    def _entered(self) -> SessionState:
        self._state = _bind_state(self.session, self._state)
        self._state.handoffs.append(self.id)
        logger.info(
            "agent entered: %s (user_id=%s authenticated=%s mode=%s)",
            self.id, self._state.user_id, self._state.authenticated, self._state.mode,
        )
        return self._state


class AuthenticationAgent(_GoCareAgent):
    """Greets, asks for the registered mobile number and checks it; nothing else happens before that."""

    def __init__(
        self,
        *,
        state: SessionState,
        settings: Settings,
        directory: UserDirectory,
        greet_on_enter: bool = True,
        chat_ctx: ChatContext | None = None,
    ) -> None:
        super().__init__(
            instructions=prompts.authentication_instructions(
                first_name=state.first_name, max_attempts=settings.max_auth_attempts
            ),
            state=state,
            settings=settings,
            directory=directory,
            chat_ctx=chat_ctx,
        )
        self._greet_on_enter = greet_on_enter
        self._verify_lock = asyncio.Lock()

    async def on_enter(self) -> None:
        self._entered()
        if self._greet_on_enter:
            self.greet()

    def greet(self) -> Any:
        """Say the greeting once per session (with the first name when known); returns the SpeechHandle, or
        None when this session has already been greeted. The worker calls it itself when it waits for
        late metadata (``greet_on_enter=False``)."""
        state = self._state
        if state.greeted:
            return None
        state.greeted = True
        text = greeting_text(state.identity)
        logger.info("greeting used: %s (user_id=%s)", "with name" if state.first_name else "without name", state.user_id)
        return self.session.say(text)

    async def refresh_identity(self) -> None:
        """The metadata changed (name arrived late): let the instructions use the new name."""
        await self.update_instructions(
            prompts.authentication_instructions(
                first_name=self._state.first_name, max_attempts=self._settings.max_auth_attempts
            )
        )

    @function_tool
    async def verify_mobile_number(self, context: RunContext[SessionState], mobile_number: str) -> Any:
        """Check the caller's registered mobile number. Call this with exactly what the caller said as
        soon as they say a phone number, in digits or in words.

        Args:
            mobile_number: The number as the caller said it, e.g. "98765 43210", "+91 98765 43210" or
                "nine eight seven six five double four three two one".
        """
        state = context.userdata if isinstance(context.userdata, SessionState) else self._state
        async with self._verify_lock:
            if state.authenticated:
                return GreetingAgent(state=state, settings=self._settings, directory=self._directory)
            limit = self._settings.max_auth_attempts
            if state.attempts >= limit:
                return ToolResult("The session is ending: too many failed attempts.", reply_required=False)

            parsed = parse_phone_number(mobile_number, region=self._settings.phone_region)
            record = None
            if parsed.e164 is not None:
                try:
                    record = await self._directory.averify(state.user_id, parsed.e164)
                except Exception as error:  # noqa: BLE001 - a broken database must not look like a wrong number (below)
                    # a broken database must not look like a wrong number, nor cost an attempt; the class
                    # name only: a driver's error text and traceback can carry the query's parameters
                    logger.error(
                        "directory lookup failed (user_id=%s): %s", state.user_id, type(error).__name__
                    )
                    state.record_verification("directory_error")
                    return (
                        "The number could not be checked right now because of a technical problem. "
                        "Apologise and ask the caller to try again in a moment."
                    )

            if record is not None and parsed.e164 is not None:
                state.authenticated = True
                state.masked_phone = mask_phone(parsed.e164)
                state.user_id = record.user_id
                if not state.user_name and record.name:
                    state.user_name = record.name
                logger.info(
                    "authenticated: user_id=%s phone=%s after %d failed attempt(s)",
                    record.user_id, state.masked_phone, state.attempts,
                )
                state.record_verification("verified")
                return GreetingAgent(state=state, settings=self._settings, directory=self._directory)

            state.attempts += 1
            remaining = limit - state.attempts
            logger.info(
                "authentication failed: user_id=%s phone=%s reason=%s attempt=%d/%d",
                state.user_id,
                mask_phone(parsed.e164) if parsed.e164 else "<unreadable>",
                parsed.reason or "no match",
                state.attempts,
                limit,
            )
            state.record_verification("unreadable" if parsed.e164 is None else "mismatch")
            if remaining <= 0:
                state.record_verification("locked_out")
                self._end_session(context.session)
                return ToolResult("Verification failed too many times; the call is ending.", reply_required=False)
            if parsed.e164 is None:
                heard = (
                    f"That did not sound like a complete phone number ({parsed.reason})."
                )
            else:
                heard = MISMATCH_TEXT
            return (
                f"{heard} {remaining} attempt(s) left. Tell the caller, without repeating any number, and ask "
                "them to say their registered mobile number again, slowly, digit by digit."
            )

    def _end_session(self, session: AgentSession[Any]) -> None:
        """Say goodbye (not interruptible), then close the session once it has been said."""
        logger.info("ending session: too many failed verification attempts (user_id=%s)", self._state.user_id)
        handle = session.say(GOODBYE_TEXT, allow_interruptions=False)

        def _close(_: Any) -> None:
            session.shutdown(drain=True)

        handle.add_done_callback(_close)


class GreetingAgent(_GoCareAgent):
    """The personal welcome right after verification (``personal_welcome``, said without asking the LLM), then
    the assistant takes over."""

    def __init__(self, *, state: SessionState, settings: Settings, directory: UserDirectory) -> None:
        super().__init__(
            instructions=prompts.greeting_instructions(first_name=state.first_name),
            state=state,
            settings=settings,
            directory=directory,
        )

    async def on_enter(self) -> None:
        state = self._entered()
        mode_on_entry = state.mode
        # said from the template, not written by the LLM: a second LLM round trip here was the slowest part of
        # the number turn (docs/benchmarks.md), and the words are the same every time. Awaited here (not in a
        # callback) so a test's RunResult, which watches on_enter, sees the handoff
        await self.session.say(personal_welcome(state))
        # the app may have switched modes while the welcome played (``switch_mode`` sets the mode and
        # ``update_agent`` makes the new agent current at once): that choice stands
        if self.session.current_agent is not self or state.mode != mode_on_entry:
            logger.info("welcome done; the app already switched to %s, no handoff to the assistant", state.mode)
            return
        state.mode = "assistant"
        # the assistant starts from what was said here (the welcome, and a voice upload that arrived while
        # it played); the number check before it stays behind with the authentication agent
        self.session.update_agent(
            MainAgent(state=state, settings=self._settings, directory=self._directory, announce=False,
                      chat_ctx=carried_context(self))
        )


class _VerifiedAgent(_GoCareAgent):
    """Agents that only ever run after verification; entering one unverified sends the caller back to the
    number check instead (defence in depth behind ``switch_mode``)."""

    intro: str | None = None
    instructions_for: Callable[..., str]
    """``prompts.<mode>_instructions``; called with the caller's first name."""
    agent_options: dict[str, Any] = {}

    def __init__(
        self,
        *,
        state: SessionState,
        settings: Settings,
        directory: UserDirectory,
        chat_ctx: ChatContext | None = None,
        announce: bool = True,
    ) -> None:
        super().__init__(
            instructions=prompts.with_memory(type(self).instructions_for(first_name=state.first_name), state.memory),
            state=state, settings=settings, directory=directory, chat_ctx=chat_ctx, **self.agent_options,
        )
        self._announce = announce

    async def on_enter(self) -> None:
        state = self._entered()
        if not state.authenticated:
            logger.error("%s entered before verification; back to the number check", self.id)
            self.session.update_agent(
                AuthenticationAgent(state=state, settings=self._settings, directory=self._directory)
            )
            return
        if self._announce and self.intro:
            self.session.say(self.intro)


class MainAgent(_VerifiedAgent):
    """The assistant proper; knows the caller's name."""

    intro = ASSISTANT_INTRO
    instructions_for = staticmethod(prompts.assistant_instructions)


class AttorneyAgent(_VerifiedAgent):
    """Continuous conversation on legal questions (normal automatic turn detection)."""

    intro = ATTORNEY_INTRO
    instructions_for = staticmethod(prompts.attorney_instructions)


class ClickToTalkAgent(_VerifiedAgent):
    """Push-to-talk: the app decides when a turn starts and ends (``turn_detection="manual"``), so long
    input with pauses is never cut off by endpointing. The worker maps the app's start_turn / end_turn /
    cancel_turn onto ``session.clear_user_turn`` / ``commit_user_turn`` / audio input enable."""

    intro = CLICK_TO_TALK_INTRO
    instructions_for = staticmethod(prompts.click_to_talk_instructions)
    agent_options = {"turn_handling": {"turn_detection": "manual"}}


_MODE_AGENTS: dict[Mode, type[_VerifiedAgent]] = {
    "assistant": MainAgent,
    "attorney": AttorneyAgent,
    "click_to_talk": ClickToTalkAgent,
}
if set(_MODE_AGENTS) != set(MODES):  # the protocol's mode table and the agents must name the same modes
    raise ImportError(f"agent classes for {sorted(_MODE_AGENTS)} but protocol.MODES is {sorted(MODES)}")


def mode_of_agent(agent_id: str | None) -> Mode | None:
    """The app mode an agent id belongs to (``main_agent`` -> ``assistant``), None for the number check and
    the welcome. livekit-agents names an agent after its class unless told otherwise."""
    from livekit.agents.utils.misc import camel_to_snake_case

    for mode, cls in _MODE_AGENTS.items():
        if agent_id == camel_to_snake_case(cls.__name__):
            return mode
    return None


def carried_context(agent: Agent) -> ChatContext:
    """What the next agent inherits from ``agent``: the messages only (no tool calls, whose arguments can
    hold the spoken number; no instructions or handoff markers of the previous agent)."""
    return agent.chat_ctx.copy(
        exclude_function_call=True, exclude_instructions=True, exclude_handoff=True, exclude_config_update=True
    )


def build_entry_agent(
    *, state: SessionState, settings: Settings, directory: UserDirectory, greet_on_enter: bool = True
) -> AuthenticationAgent:
    """The first agent of every session."""
    return AuthenticationAgent(state=state, settings=settings, directory=directory, greet_on_enter=greet_on_enter)


def build_agent_for_mode(
    mode: str,
    *,
    state: SessionState,
    settings: Settings,
    directory: UserDirectory,
    chat_ctx: ChatContext | None = None,
    announce: bool = True,
) -> Agent:
    """``"assistant" | "attorney" | "click_to_talk"`` -> a new agent for that mode (ValueError otherwise).
    It does not check verification; :func:`switch_mode` does, and the agent re-checks on entry."""
    known = normalize_mode(mode) if mode in _MODE_AGENTS else None
    if known is None:
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    return _MODE_AGENTS[known](
        state=state, settings=settings, directory=directory, chat_ctx=chat_ctx, announce=announce
    )


def switch_mode(
    session: AgentSession[Any],
    mode: str,
    *,
    settings: Settings,
    directory: UserDirectory,
    state: SessionState | None = None,
) -> Agent:
    """Switch the running session to another mode (the app's ``switch_agent`` command).

    Raises ``ModeSwitchError`` (``code`` ``unknown_mode`` / ``not_authenticated``) instead of switching
    before the mobile number is verified. The conversation so far (messages only) goes along, so the new
    agent knows what was said. Switching to the current mode is a no-op returning the current agent.
    """
    target = normalize_mode(mode) if isinstance(mode, str) and mode in _MODE_AGENTS else None
    if target is None:
        raise ModeSwitchError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}", code="unknown_mode")
    if state is None:
        try:
            userdata = session.userdata
        except ValueError:
            userdata = None
        if not isinstance(userdata, SessionState):
            raise ModeSwitchError("the session has no state; cannot switch", code="not_authenticated")
        state = userdata
    if not state.authenticated:
        logger.info("mode switch to %s refused: not authenticated (user_id=%s)", mode, state.user_id)
        raise ModeSwitchError("switching modes needs a verified mobile number first", code="not_authenticated")
    current = session.current_agent
    if state.mode == target and isinstance(current, _MODE_AGENTS[target]):
        return current
    agent = build_agent_for_mode(
        target, state=state, settings=settings, directory=directory, chat_ctx=carried_context(current)
    )
    previous = state.mode
    state.mode = target
    logger.info("mode switch: %s -> %s (user_id=%s)", previous, mode, state.user_id)
    session.update_agent(agent)
    return agent
