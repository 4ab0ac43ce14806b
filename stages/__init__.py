"""framepipe's concrete stages: screen capture, timestamper, encoder."""
