"""Benchmarks: recordings judged from their files, beside ffmpeg and a naive loop."""
