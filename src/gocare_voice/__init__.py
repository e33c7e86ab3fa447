"""gocare-voice: the backend of the GoCare voice assistant."""

from __future__ import annotations

__version__ = "0.1.0"
