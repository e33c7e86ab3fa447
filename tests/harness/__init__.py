"""The room harness: a real livekit-server, the real worker and token service as subprocesses, and the
``livekit`` rtc SDK as the app. See docs/testing.md."""
