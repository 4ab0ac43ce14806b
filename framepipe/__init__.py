"""framepipe: a screen recorder that keeps every frame, and the tools that check it."""
