"""Diagnostic intents that ship with the engine (tests, benchmarks, smoke checks)."""
