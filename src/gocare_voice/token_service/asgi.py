"""Entry point for ``uvicorn --factory`` (multi-worker or reload mode): each process reads the settings
once, from the environment and the env file the CLI was given."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI


def app_from_env() -> FastAPI:
    import logging

    from gocare_voice.logging_setup import setup_logging
    from gocare_voice.settings import load_settings
    from gocare_voice.token_service.app import create_app

    settings = load_settings(env_file=os.environ.get("GOCARE_ENV_FILE", ".env"))
    setup_logging(getattr(logging, settings.log_level), log_format=settings.log_format.value)
    app = create_app(settings)
    _close_audio_workers_on_shutdown(app)
    return app


def _close_audio_workers_on_shutdown(app: FastAPI) -> None:
    """uvicorn ends a worker process by re-raising the stop signal after the app's shutdown, so no atexit
    handler runs there: the audio pool is shut down with the app instead, or Python's resource tracker
    reports its semaphores as leaked ("There appear to be 10 leaked semaphore objects")."""
    import asyncio
    from contextlib import asynccontextmanager

    from gocare_voice.audio import shared_audio_workers

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[Any]:
        async with inner(app_) as state:
            yield state
        await asyncio.to_thread(shared_audio_workers().close)

    app.router.lifespan_context = lifespan
