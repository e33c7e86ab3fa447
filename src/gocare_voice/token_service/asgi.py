"""Entry point for ``uvicorn --factory`` (multi-worker or reload mode): each process reads the settings
once, from the environment and the env file the CLI was given."""

from __future__ import annotations

import os

from fastapi import FastAPI


def app_from_env() -> FastAPI:
    import logging

    from gocare_voice.logging_setup import setup_logging
    from gocare_voice.settings import load_settings
    from gocare_voice.token_service.app import create_app

    settings = load_settings(env_file=os.environ.get("GOCARE_ENV_FILE", ".env"))
    setup_logging(getattr(logging, settings.log_level))
    return create_app(settings)
