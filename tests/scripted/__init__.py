"""Scripted stand-ins for the cloud APIs (OpenAI-compatible chat, later Deepgram and speech), real HTTP on
127.0.0.1 so the real livekit plugins talk to them unchanged."""
