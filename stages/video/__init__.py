"""Video: screen capture (and its grab backends), the timestamper, the video encoder."""
