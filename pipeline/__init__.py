"""framepipe's framework: rings, messages, clock, supervisor and config."""
