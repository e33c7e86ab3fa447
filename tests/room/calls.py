"""Steps of a call that several room tests share: joining as a known user, the LLM's script for the number
check, and saying the number out loud until the agent has verified it."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from harness.app_client import AppClient
from scripted.openai_server import Reply, Rule, ToolCall

if TYPE_CHECKING:
    from conftest import Providers

WELCOME_BACK = "Thank you, John, you're verified. How can I help you today?"
MISMATCH_REPLY = "That number did not match our records. Please say it again, slowly, digit by digit."
GREETING_JOHN = "Welcome John! Please say your registered mobile number."
GREETING_ANONYMOUS = "Welcome. Please say your registered mobile number."


def script_number_check(providers: Providers, *numbers: str) -> None:
    """The LLM of the number check, as a real model would behave with our instructions: it calls
    ``verify_mobile_number`` with what the caller said, welcomes a verified caller, and relays a mismatch
    without repeating the number."""
    rules = [
        Rule(user=re.escape(n), reply=Reply(tool_calls=[ToolCall("verify_mobile_number", {"mobile_number": n})]))
        for n in numbers
    ]
    rules += [
        Rule(system="has just been verified", reply=Reply(text=WELCOME_BACK)),
        Rule(tool_output="did not match", reply=Reply(text=MISMATCH_REPLY)),
    ]
    providers.llm.script(*rules)


async def join_as_john(token_service_url: str, room: str, **body: object) -> AppClient:
    payload: dict[str, object] = {"room_name": room, "participant_identity": "user-42",
                                  "participant_name": "John Doe", "room_config": {}}
    payload.update(body)
    return await AppClient.join(token_service_url, body=payload)


async def say_number(app: AppClient, providers: Providers, *, spoken: str, written: str) -> float:
    """Say a number into the microphone; the scripted STT writes it as ``written``. Returns when the
    speech ended (monotonic)."""
    providers.deepgram.script_live(written)
    await app.say(spoken)
    return time.monotonic()


async def verified_call(token_service_url: str, room: str, providers: Providers) -> AppClient:
    """John joins, hears the greeting, says his registered number and hears the personal welcome."""
    script_number_check(providers, "98765 43210")
    app = await join_as_john(token_service_url, room)
    try:
        await app.wait_agent_says(re.escape(GREETING_JOHN), timeout=30)
        said_at = await say_number(app, providers, spoken="nine eight seven six five four three two one zero",
                                   written="98765 43210")
        await app.wait_agent_says(re.escape(WELCOME_BACK), since=said_at, timeout=40)
    except BaseException:
        await app.leave()
        raise
    return app
