"""``gocare worker start | dev | console | connect | download-files``.

Each command runs livekit-agents' own CLI (``cli.run_app``) with our ``AgentServer``, passing every
option it does not know through untouched (``gocare worker start --log-level debug``,
``gocare worker console --text``, ``gocare worker connect --room demo``). ``--help`` after a command is
livekit-agents' help for it.

What we add in front of it, because livekit-agents does not do it:
- missing provider keys stop the worker before it starts, one line per setting;
- ``start``/``dev``/``connect`` check that the worker's ports are free (``GOCARE_WORKER_PORT``,
  ``GOCARE_WORKER_METRICS_PORT``) and that LiveKit is reachable and accepts the credentials
  (``GOCARE_LIVEKIT_CONNECT_RETRIES``) and exit 1 with one line when it is not, instead of retrying for
  minutes and exiting 0; a connection lost for good later also ends in exit 1;
- ``console`` binds none of those ports (``build_server(console=True)``), so it runs beside a worker.

Nothing heavy is imported at module level: ``gocare --help`` must not import livekit.agents.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import typer

from gocare_voice.cli.common import fail, load_cli_settings, new_app, print_error

if TYPE_CHECKING:
    from gocare_voice.settings import Settings

worker_app = new_app(name="worker", help="The LiveKit Agents worker (agent GOCARE_AGENT_NAME, default multi-assistant).")

_PASS_THROUGH: dict[str, Any] = {"allow_extra_args": True, "ignore_unknown_options": True}


_LIVEKIT_OPTIONS = {"--url": "livekit_url", "--api-key": "livekit_api_key", "--api-secret": "livekit_api_secret"}


def livekit_overrides(args: list[str]) -> dict[str, str]:
    """livekit-agents' own ``--url/--api-key/--api-secret`` win over the settings; read them so the
    pre-flight checks the server the worker will actually use."""
    found: dict[str, str] = {}
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in _LIVEKIT_OPTIONS:
            if not eq:
                value = args[i + 1] if i + 1 < len(args) else ""
            if value:
                found[_LIVEKIT_OPTIONS[name]] = value
    return found


def _settings(ctx: typer.Context, args: list[str] | None = None) -> Settings:
    return load_cli_settings(ctx, **livekit_overrides(args or []))


def _show_help(command: str, args: list[str]) -> None:
    """``gocare worker <command> --help``: livekit-agents' help for it, which needs an AgentServer but no
    configuration. The defaults, unvalidated and without reading the environment, build one: help must
    work before the provider keys are set, and with a broken .env."""
    from gocare_voice.settings import Settings

    _run_livekit_cli(Settings.model_construct(), command, args)


def _require_providers(settings: Settings, *, text_only: bool) -> None:
    from gocare_voice.providers import missing_llm_settings, missing_provider_settings

    missing = missing_llm_settings(settings) if text_only else missing_provider_settings(settings)
    if missing:
        for line in missing:
            print_error(line)
        raise typer.Exit(2)


def _preflight(settings: Settings) -> None:
    import asyncio
    import warnings

    from gocare_voice.worker.preflight import check_livekit

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT's short-key warning for the dev secret is not news here
        result = asyncio.run(check_livekit(settings))
    if not result.ok:
        fail(str(result.problem))


def _run_livekit_cli(
    settings: Settings, command: str, args: list[str], *, console_text: bool = False,
    console_metadata: str | None = None,
) -> None:
    """Hand over to livekit-agents' CLI with ``sys.argv`` rewritten (that is what ``run_app`` parses)."""
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"livekit\..*")
    warnings.filterwarnings("ignore", message=r".*HMAC key.*")
    # livekit-agents' console asks its worker loop to close a second time on Ctrl+C, after the loop has
    # stopped: that request's coroutine is never awaited. The first one did the work; the warning is noise.
    warnings.filterwarnings("ignore", message=r"coroutine 'AgentServer.aclose' was never awaited")
    _metrics_dir(settings)
    from livekit.agents import cli

    from gocare_voice.worker.server import build_server, use_loop_block_warn

    use_loop_block_warn(settings)

    server = build_server(settings, console=command == "console", console_text=console_text,
                          console_metadata=console_metadata)
    saved = sys.argv
    sys.argv = ["gocare worker", command, *args]
    code: Any = 0
    try:
        cli.run_app(server)
    except SystemExit as done:
        code = done.code
    finally:
        sys.argv = saved
    if server.connection_failed:
        fail(
            f"the worker could not (re)connect to LiveKit at {settings.livekit_url}; gave up after "
            f"{settings.livekit_connect_retries} retries (GOCARE_LIVEKIT_CONNECT_RETRIES)"
        )
    if server.run_error is not None:
        fail(run_error_line(server.run_error, settings))
    if code not in (0, None):
        raise typer.Exit(code if isinstance(code, int) else 1)


def run_error_line(error: BaseException, settings: Settings) -> str:
    """The one line for a worker that stopped on an error (livekit-agents logs it and returns; the process
    manager must see a failure, not exit 0)."""
    import errno

    if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
        from gocare_voice.worker.preflight import port_settings

        ports = ", ".join(f"{name}={port}" for name, port in port_settings(settings))
        return f"the worker could not listen: a port it serves is already in use ({ports}): {error}"
    return f"the worker stopped on an error: {type(error).__name__}: {error}"


def _metrics_dir(settings: Settings) -> None:
    """With GOCARE_WORKER_METRICS_PORT, the multiprocess directory must be in the environment before anything
    imports prometheus_client (livekit.agents does), or the worker's own metrics stay out of the scrape."""
    from gocare_voice.worker.metrics import use_multiprocess_dir

    use_multiprocess_dir(settings)


def _run_server_command(ctx: typer.Context, command: str) -> None:
    """start / dev / connect: providers present, LiveKit reachable with these credentials, then livekit-agents."""
    if _asks_for_help(ctx.args):
        _show_help(command, list(ctx.args))
        return
    settings = _settings(ctx, ctx.args)
    _metrics_dir(settings)
    _require_providers(settings, text_only=False)
    _require_free_ports(settings)
    _preflight(settings)
    _prepare_call_records(settings)
    _run_livekit_cli(settings, command, list(ctx.args))


def _require_free_ports(settings: Settings) -> None:
    """A port the worker serves that is taken (another worker, a `gocare worker dev` left running): one line
    naming the setting now, before the LiveKit check, instead of livekit-agents' traceback after it. A port
    taken between this check and the bind still ends in one line (``run_error_line``)."""
    from gocare_voice.worker.preflight import taken_worker_port

    problem = taken_worker_port(settings)
    if problem:
        fail(problem)


def _prepare_call_records(settings: Settings) -> None:
    """Migrate the call records' schema, mark crashed jobs' records, enforce GOCARE_CALL_RETENTION_DAYS:
    once, before any job runs. A database that refuses is one line and exit 1, like a refused port."""
    import logging

    from gocare_voice.conversation.directory import DirectoryError
    from sqlalchemy.exc import SQLAlchemyError

    from gocare_voice.worker.recording import prepare_records

    try:
        line = prepare_records(settings)
    except (DirectoryError, SQLAlchemyError) as error:
        reason = getattr(error, "orig", None) or error
        fail(f"the call records could not be prepared: {reason}")
    logging.getLogger("gocare.worker").info("%s", line)


@worker_app.command("start", context_settings=_PASS_THROUGH, add_help_option=False)
def start(ctx: typer.Context) -> None:
    """Run the worker in production mode (options: livekit-agents' `start`, e.g. --log-level, --drain-timeout)."""
    _run_server_command(ctx, "start")


@worker_app.command("dev", context_settings=_PASS_THROUGH, add_help_option=False)
def dev(ctx: typer.Context) -> None:
    """Run the worker in development mode (debug logs, no idle process pool)."""
    _run_server_command(ctx, "dev")


@worker_app.command("console", context_settings=_PASS_THROUGH, add_help_option=False)
def console(ctx: typer.Context) -> None:
    """Talk to the agents in this terminal, no LiveKit server needed (--text: typed, no audio device;
    needs only the LLM settings; --metadata JSON: the participant metadata to pretend, e.g.
    '{"userId": "user-123", "userName": "John Doe"}')."""
    args = list(ctx.args)
    if _asks_for_help(args):
        _show_help("console", args)
        return
    args, metadata = _take_metadata(args)
    settings = _settings(ctx)
    text_only = "--text" in args
    _require_providers(settings, text_only=text_only)
    if not text_only:
        problem = audio_device_problem()
        if problem:
            fail(f"{problem}; `gocare worker console --text` needs no audio device", code=1)
    _run_livekit_cli(settings, "console", args, console_text=text_only, console_metadata=metadata)


def _take_metadata(args: list[str]) -> tuple[list[str], str | None]:
    """``--metadata JSON`` (ours, not livekit-agents'): taken out of the arguments and checked the way the
    worker reads it, so a typo is one line now, not a nameless greeting later."""
    rest: list[str] = []
    metadata: str | None = None
    i = 0
    while i < len(args):
        name, eq, value = args[i].partition("=")
        if name == "--metadata":
            if not eq:
                if i + 1 >= len(args):
                    fail("--metadata needs a JSON value, e.g. '{\"userId\": \"user-123\", \"userName\": \"John\"}'", 2)
                value = args[i + 1]
                i += 1
            metadata = value
        else:
            rest.append(args[i])
        i += 1
    if metadata is not None:
        from gocare_voice.conversation.identity import read_metadata

        reading = read_metadata(metadata, source="--metadata")
        if reading.problem:
            fail(f"--metadata: {reading.problem}", 2)
    return rest, metadata


def audio_device_problem() -> str | None:
    """Why the audio console cannot run here, or None. livekit-agents' console otherwise exits after a few
    seconds with no word about the missing PortAudio library or sound device."""
    try:
        import sounddevice
    except OSError:
        return "the audio console needs PortAudio (Debian: apt install libportaudio2), which is not installed"
    except ImportError:
        return "the audio console needs the sounddevice package, which is not installed"
    try:
        sounddevice.query_devices(kind="input")
        sounddevice.query_devices(kind="output")
    except Exception as error:  # noqa: BLE001 - PortAudioError or ValueError: no such device
        return f"no sound device for the audio console ({error})"
    return None


@worker_app.command("connect", context_settings=_PASS_THROUGH, add_help_option=False)
def connect(ctx: typer.Context) -> None:
    """Join one room directly, without dispatch (--room NAME required)."""
    _run_server_command(ctx, "connect")


@worker_app.command("download-files", context_settings=_PASS_THROUGH, add_help_option=False)
def download_files(ctx: typer.Context) -> None:
    """Fetch plugin model files ahead of time. Our VAD and turn detector ship inside their wheels, so this
    has nothing to do for the default configuration; kept for plugins added later."""
    settings = load_cli_settings(ctx)
    _run_livekit_cli(settings, "download-files", list(ctx.args))


def _asks_for_help(args: list[str]) -> bool:
    return "--help" in args or "-h" in args
