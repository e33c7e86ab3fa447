"""The root ``gocare`` command: ``--env-file``, ``--version``, ``token-server``, ``token``, ``test-metadata``,
``check``; ``users`` and ``worker`` are sub-apps of their own modules.

Only Typer, rich and our settings are imported at module level: every heavy import (uvicorn, FastAPI,
livekit.agents, SQLAlchemy) happens inside the command that needs it, so ``gocare --help`` stays instant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Optional

import typer
from rich.markup import escape

from gocare_voice import __version__
from gocare_voice.cli.common import (
    CliState,
    cli_state,
    configure_logging,
    console,
    err_console,
    load_cli_settings,
    new_app,
    print_error,
    visible,
)
from gocare_voice.cli.calls import calls_app
from gocare_voice.cli.users import users_app
from gocare_voice.cli.worker import worker_app

if TYPE_CHECKING:
    from gocare_voice.settings import Settings
    from gocare_voice.token_service.metrics import ServiceMetrics


def _hide_flag_placeholder() -> None:
    """Typer 0.2x prints a type next to every option, ``--version <bool>`` included, which reads as if the
    flag took a value. A flag takes none: show no placeholder for it (the ``--help`` option too)."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: object) -> str | None:
        if self.is_flag and self.metavar is None:
            return None
        return shown(self, ctx)  # type: ignore[arg-type]  # ctx is Typer's own Context, passed through

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]  # the patch is the point


_hide_flag_placeholder()

app = new_app(name="gocare", help="GoCare voice backend: LiveKit token service, agent worker and tools.")


def _version(value: bool) -> None:
    if value:
        console.print(f"gocare-voice {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
    env_file: Optional[Path] = typer.Option(
        None, "--env-file", help="Read settings from this file (default: .env in this folder, if there is one)."
    ),
) -> None:
    if env_file is not None and (not env_file.exists() or env_file.is_dir()):
        # a typo here would otherwise run with no settings at all, silently
        print_error(f"--env-file {env_file}: no such file")
        raise typer.Exit(2)
    ctx.obj = CliState(env_file=env_file if env_file is not None else Path(".env"))


@app.command("token-server")
def token_server(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 for all)."),
    port: Optional[int] = typer.Option(None, help="Port (default: PORT, else 8080)."),
    workers: int = typer.Option(1, min=1, max=64, help="Worker processes."),
    reload: bool = typer.Option(False, help="Reload on code changes (development)."),
    log_level: Optional[str] = typer.Option(None, help="Log level (default: LOG_LEVEL)."),
    access_log: bool = typer.Option(True, help="Log one line per request (paths only, never tokens)."),
    max_header_bytes: Optional[int] = typer.Option(None, help="Largest request headers (default GOCARE_HTTP_MAX_HEADER_BYTES)."),
    header_timeout: Optional[float] = typer.Option(None, help="Seconds to receive headers (GOCARE_HTTP_HEADER_TIMEOUT)."),
    body_timeout: Optional[float] = typer.Option(None, help="Seconds a body may stall (GOCARE_HTTP_BODY_TIMEOUT)."),
    idle_timeout: Optional[float] = typer.Option(None, help="Keep-alive idle seconds (GOCARE_HTTP_IDLE_TIMEOUT)."),
    max_connections: Optional[int] = typer.Option(None, help="Open connections (GOCARE_HTTP_MAX_CONNECTIONS)."),
    forwarded_allow_ips: Optional[str] = typer.Option(
        None, help="Proxies whose X-Forwarded-For/-Proto are believed: IPs/CIDRs, comma-separated "
        "(default GOCARE_TRUSTED_PROXIES; none: the headers are ignored)."),
) -> None:
    """Run the token service: POST /getToken, POST /api/token, POST /voice/upload, GET /health."""
    import os

    limit_options = {
        "http_max_header_bytes": max_header_bytes, "http_header_timeout": header_timeout,
        "http_body_timeout": body_timeout, "http_idle_timeout": idle_timeout,
        "http_max_connections": max_connections,
    }
    overrides: dict[str, object] = {k: v for k, v in limit_options.items() if v is not None}
    if log_level:
        overrides["log_level"] = log_level
    if forwarded_allow_ips is not None:
        overrides["trusted_proxies"] = forwarded_allow_ips
    elif os.environ.get("FORWARDED_ALLOW_IPS") and not os.environ.get("GOCARE_TRUSTED_PROXIES"):
        overrides["trusted_proxies"] = os.environ["FORWARDED_ALLOW_IPS"]  # uvicorn's own name, still read
    settings = load_cli_settings(ctx, **overrides)
    configure_logging(settings.log_level, settings.log_format.value)
    import uvicorn

    from gocare_voice.settings import Settings as _Settings
    from gocare_voice.token_service.serving import ConnectionLimits, fit_to_descriptors, uvicorn_options

    listen_port = port or settings.port
    busy = _port_problem(host, listen_port)
    if busy:
        print_error(f"cannot listen on {host}:{listen_port}: {busy}")
        raise typer.Exit(1)
    env_file = cli_state(ctx).env_file
    if env_file is not None:
        os.environ.setdefault("GOCARE_ENV_FILE", str(env_file))
    if log_level:
        os.environ["LOG_LEVEL"] = settings.log_level
    for field in [*limit_options, "trusted_proxies"]:  # worker processes (--workers, --reload) read the settings themselves
        if field in overrides:
            os.environ[str(_Settings.model_fields[field].validation_alias)] = str(overrides[field])
    several = workers > 1 or reload
    metrics_dir = _prepare_metrics(settings, several=several)
    limits, lowered = fit_to_descriptors(ConnectionLimits.from_settings(settings))
    if lowered:
        _say(settings, f"warning: {lowered}", warning=True)
        os.environ["GOCARE_HTTP_MAX_CONNECTIONS"] = str(limits.max_connections)
    options = uvicorn_options(limits, settings.trusted_proxy_list)
    _say(settings, f"gocare token service on http://{host}:{listen_port}  (LiveKit {settings.livekit_url}, "
                   f"agent '{settings.agent_name}', auth {settings.auth_mode.value})")
    try:
        if several:
            _serve_metrics_port(settings, host, None)
            uvicorn.run("gocare_voice.token_service.asgi:app_from_env", factory=True, host=host, port=listen_port,
                        workers=workers, reload=reload, log_level=settings.log_level.lower(),
                        access_log=access_log, log_config=None, **options)
        else:
            from gocare_voice.token_service.app import create_app

            service = create_app(settings)
            _serve_metrics_port(settings, host, service.state.services.metrics)
            uvicorn.run(service, host=host, port=listen_port, log_level=settings.log_level.lower(),
                        access_log=access_log, log_config=None, **options)
    except KeyboardInterrupt:
        # uvicorn shuts down gracefully on Ctrl+C, then re-raises the signal: that is the expected way out
        pass
    finally:
        from gocare_voice.audio import shared_audio_workers

        shared_audio_workers().close()
        if metrics_dir is not None:
            import shutil

            shutil.rmtree(metrics_dir, ignore_errors=True)
    _say(settings, "gocare token service stopped")


def _say(settings: Settings, line: str, *, warning: bool = False) -> None:
    """A line of the token-server's own: on the console, or a log record when the logs are JSON (every
    line of stderr is then one JSON object)."""
    if settings.log_format.value == "json":
        import logging

        logging.getLogger("gocare.cli").log(logging.WARNING if warning else logging.INFO, "%s", line)
    else:
        err_console.print(line, highlight=False)


def _prepare_metrics(settings: Settings, *, several: bool) -> str | None:
    """Several processes (--workers, --reload): prometheus-client's multiprocess mode, in a folder emptied
    now (``PROMETHEUS_MULTIPROC_DIR`` when set, else a temporary one). Set before any process imports
    prometheus-client. Returns the folder to remove at exit (ours only)."""
    import os

    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not settings.metrics or not (several or given):
        return None
    from gocare_voice.token_service.metrics import prepare_multiprocess_dir

    folder, ours = prepare_multiprocess_dir(given)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    return folder if ours else None


def _serve_metrics_port(settings: Settings, host: str, metrics: ServiceMetrics | None) -> None:
    """``GOCARE_METRICS_PORT``: /metrics on that port, served by this process (in multiprocess mode the
    sum of every worker's files)."""
    if not settings.metrics or settings.metrics_port is None:
        return
    from gocare_voice.token_service.metrics import NoMetrics, scrape_registry, serve_metrics

    busy = _port_problem(host, settings.metrics_port)
    if busy:
        print_error(f"cannot listen on {host}:{settings.metrics_port} (GOCARE_METRICS_PORT): {busy}")
        raise typer.Exit(1)
    registry = scrape_registry(metrics if metrics is not None else NoMetrics())
    if registry is not None:
        serve_metrics(settings.metrics_port, host, registry)
        _say(settings, f"metrics on http://{host}:{settings.metrics_port}/metrics")


def _port_problem(host: str, port: int) -> str | None:
    """Try the address before uvicorn does: uvicorn reports a busy port as a log line and exit code 3,
    after the app (and the voice-upload workers) have started."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        return f"unknown host ({error.strerror})"
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            return error.strerror or str(error)
    return None


@app.command("token")
def token(
    ctx: typer.Context,
    room: str = typer.Option(..., help="Room to join."),
    identity: str = typer.Option(..., help="Participant identity."),
    name: Optional[str] = typer.Option(None, help="Display name (also userName in the metadata)."),
    ttl: Optional[str] = typer.Option(None, help="Lifetime, e.g. 900, 15m, 1h (default GOCARE_TOKEN_TTL)."),
    as_json: bool = typer.Option(False, "--json", help="Print {token, serverUrl, roomName, participantName}."),
) -> None:
    """Mint a participant token from the shell, with the same grants and agent dispatch as the service."""
    from gocare_voice.settings import parse_token_ttl

    overrides: dict[str, object] = {}
    if ttl is not None:
        try:
            overrides["token_ttl"] = parse_token_ttl(ttl)
        except ValueError as error:
            print_error(f"--ttl: {error}")  # the option the user typed, not the variable it overrides
            raise typer.Exit(2) from None
    settings = load_cli_settings(ctx, **overrides)
    from gocare_voice.conversation.identity import participant_metadata
    from gocare_voice.token_service.errors import ApiError
    from gocare_voice.token_service.minting import TokenMinter, TokenRequest
    from gocare_voice.token_service.validation import check_name

    try:
        room_ok = check_name(room, field="room")
        identity_ok = check_name(identity, field="identity")
        name_ok = check_name(name, field="name", required=False) or identity_ok
    except ApiError as error:
        print_error(error.detail)
        raise typer.Exit(2) from None
    assert room_ok and identity_ok and name_ok
    metadata = participant_metadata(user_id=identity_ok, user_name=name_ok)
    minted = TokenMinter.from_settings(settings).mint(
        TokenRequest(room=room_ok, identity=identity_ok, name=name_ok, metadata=metadata)
    )
    if as_json:
        sys.stdout.write(json.dumps({"token": minted, "serverUrl": settings.client_livekit_url, "roomName": room_ok,
                                     "participantName": name_ok}) + "\n")
    else:
        sys.stdout.write(minted + "\n")


@app.command("test-metadata")
def test_metadata(
    ctx: typer.Context,
    metadata: Optional[str] = typer.Argument(None, help="Participant metadata JSON (a sample when omitted)."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Read the metadata from this file."),
    strict: bool = typer.Option(False, help="Exit 1 when no identity comes out."),
    connect: bool = typer.Option(False, help="Join a real room and wait for the agent's welcome packet."),
    room: Optional[str] = typer.Option(None, help="Room for --connect (default: a new random one)."),
    timeout: float = typer.Option(20.0, min=1.0, max=300.0, help="Seconds to wait for --connect."),
) -> None:
    """Show what the worker extracts from a participant's metadata and how the agent would greet them."""
    from rich.table import Table

    from gocare_voice.conversation.identity import SAMPLE_METADATA, greeting_text, read_metadata

    if file is not None:
        try:
            raw: str | bytes = file.read_bytes()
        except OSError as error:
            print_error(f"cannot read {file}: {error.strerror or error}")
            raise typer.Exit(2) from None
        source = str(file)
    elif metadata is not None:
        raw, source = metadata, "argument"
    else:
        raw, source = SAMPLE_METADATA, "sample"
    reading = read_metadata(raw, source=source)
    identity = reading.identity
    table = Table(title="What the worker sees", show_header=False, title_justify="left")
    shown = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
    # everything from the input is escaped: "[/]" in a name is text, not rich markup, and an ESC byte is
    # shown as \x1b instead of reaching the terminal (a file can carry terminal control sequences)
    table.add_row("input", escape(visible((shown[:200] + "…") if len(shown) > 200 else shown)))
    table.add_row("userId", escape(visible(identity.user_id)) if identity.user_id else "[dim]none[/]")
    table.add_row("userName", escape(visible(identity.user_name)) if identity.user_name else "[dim]none[/]")
    table.add_row("greeting", escape(visible(greeting_text(identity))))
    if reading.problem:
        table.add_row("problem", f"[yellow]{reading.problem}[/]")
    console.print(table)
    code = 0
    if connect:
        settings = load_cli_settings(ctx)
        code = _probe(settings, metadata=shown, room=room, timeout=timeout)
    if strict and not identity.found:
        err_console.print("no identity in this metadata (--strict)")
        code = code or 1
    if connect:
        _end_after_probe(code)
    if code:
        raise typer.Exit(code)


def _probe(settings: Settings, *, metadata: str, room: Optional[str], timeout: float) -> int:
    """The ``--connect`` probe; its exit code (0, or 1 with the reason printed)."""
    import asyncio

    from gocare_voice.worker.probe import ProbeError, probe_room

    try:
        result = asyncio.run(probe_room(settings, metadata=metadata, room=room, timeout=timeout))
    except ProbeError as error:
        print_error(str(error))
        return 1
    console.print(result.describe(), markup=False, highlight=False)
    return 0


def _end_after_probe(code: int) -> NoReturn:
    """End the process with ``code`` without the interpreter's exit hooks. The probe's room is closed and
    everything is printed; what is left is livekit's rtc runtime, which tears itself down in an ``atexit``
    hook of ``livekit.rtc``, and that teardown can abort the process: once in the room tests, a probe that
    had printed its welcome exited with SIGABRT ("thread 'tokio-rt-worker' panicked ... panic in a function
    that cannot unwind"), so a script saw a failure after a success. The operating system reclaims the rest."""
    import logging
    import os

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say
            pass
    os._exit(code)


@app.command("check")
def check(
    ctx: typer.Context,
    livekit: bool = typer.Option(False, "--livekit", help="Also call the LiveKit server API (list rooms)."),
    timeout: float = typer.Option(5.0, min=0.5, max=60.0, help="Seconds for the --livekit call."),
) -> None:
    """Show what is configured (the facts /health reports); exit 1 when something required is missing."""
    from rich.table import Table

    from gocare_voice.check import configuration_rows

    settings = load_cli_settings(ctx)
    rows = configuration_rows(settings)
    table = Table(title="gocare configuration", title_justify="left")
    # variable names are what a user copies from this table: never cut one ("GOCARE_AUTH_JWT_S…"); the
    # hint column is at least as wide as its longest word and the other columns wrap instead
    import re

    names = [name for row in rows for name in re.findall(r"[A-Z][A-Z0-9_]{3,}(?:=[a-z]+)?", row.hint)]
    table.add_column("what", max_width=16)
    table.add_column("status", no_wrap=True)
    table.add_column("needed by", max_width=16)
    table.add_column("how to set", min_width=max(map(len, names), default=10), overflow="fold")
    missing = False
    for row in rows:
        if row.ok:
            status = "[green]configured[/]"
        elif row.required:
            status, missing = "[red]missing[/]", True
        else:
            status = "[dim]not set[/]"
        table.add_row(row.what, status, row.needed_by, escape(row.hint))
    console.print(table)
    if livekit:
        import asyncio

        from gocare_voice.worker.preflight import check_livekit

        result = asyncio.run(check_livekit(settings, attempts=1, attempt_timeout=timeout))
        if not result.ok:
            print_error(str(result.problem))
            raise typer.Exit(1)
        console.print(f"[green]ok:[/] LiveKit at {settings.livekit_url} accepted the credentials", highlight=False)
    if missing:
        print_error("required settings are missing (see the table)")
        raise typer.Exit(1)


# sub-apps live in their own modules; each imports its heavy parts inside its commands
app.add_typer(worker_app, name="worker")
app.add_typer(users_app, name="users")
app.add_typer(calls_app, name="calls")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
