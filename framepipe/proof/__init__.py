"""The proof tools and their virtual devices: a numbered test screen, a tone burst each second,
the judge that reads files back, Xvfb and PulseAudio."""
