"""The one agent/state module. Submodules that touch livekit are imported explicitly, never from here,
so pure helpers (identity, phone) stay cheap to import."""
