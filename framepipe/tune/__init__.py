"""Tuning: probe the machine, try settings in short real recordings, keep a per-machine profile."""
