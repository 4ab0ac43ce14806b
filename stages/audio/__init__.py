"""Audio: capture, devices, the clock fit, the resampler onto the output timeline, the audio encoder."""
