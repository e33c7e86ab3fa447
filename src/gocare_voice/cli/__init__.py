"""The ``gocare`` command line: ``app`` (the root command, ``cli/app.py``) with the ``users`` and ``worker``
sub-commands (``cli/users.py``, ``cli/worker.py``), which share ``cli/common.py`` (settings loading with
``--env-file``, error lines) and never import the root back.

Only Typer, rich and our settings are imported at module level: every heavy import (uvicorn, FastAPI,
livekit.agents, SQLAlchemy) happens inside the command that needs it, so ``gocare --help`` stays instant
(``tests/test_cli.py`` checks it).
"""

from gocare_voice.cli.app import app, main

__all__ = ["app", "main"]
