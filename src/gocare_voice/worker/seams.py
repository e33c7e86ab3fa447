"""The parts of livekit's room objects the worker's handlers use, as ``typing.Protocol``s.

``livekit.rtc.Room``, ``RemoteParticipant``, ``DataPacket`` and ``RpcInvocationData`` satisfy them; the
tests' small Python objects do too, so every malformed input the network can produce is exercised without
a LiveKit server. The values are still checked where they come from the network (a metadata string can be
anything), but which attributes exist is the type's business, not ``getattr`` probing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from gocare_voice.protocol import Command, CommandError, VoiceUpload


class Participant(Protocol):
    @property
    def identity(self) -> str: ...

    @property
    def sid(self) -> str: ...

    @property
    def metadata(self) -> Any: ...

    @property
    def attributes(self) -> Any: ...


class LocalParticipant(Protocol):
    def publish_data(
        self, payload: bytes | str, *, reliable: bool = True, destination_identities: list[str] = ...,
        topic: str = ...,
    ) -> Awaitable[None]: ...

    def register_rpc_method(self, method_name: str, handler: Callable[[Any], Awaitable[str]]) -> Any: ...


class Room(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def local_participant(self) -> LocalParticipant: ...

    @property
    def remote_participants(self) -> Mapping[str, Participant]: ...

    def on(self, event: str, callback: Callable[..., Any]) -> Any: ...


class DataPacket(Protocol):
    @property
    def data(self) -> Any: ...

    @property
    def topic(self) -> Any: ...

    @property
    def participant(self) -> Participant | None: ...


class RpcInvocation(Protocol):
    @property
    def caller_identity(self) -> str: ...

    @property
    def method(self) -> Any: ...

    @property
    def payload(self) -> Any: ...


class CommandRunner(Protocol):
    """``conversation.executor.CommandExecutor``, as the handlers use it."""

    async def execute(self, command: Command | CommandError) -> dict[str, Any]: ...

    async def add_voice_upload(self, upload: VoiceUpload) -> dict[str, Any]: ...
