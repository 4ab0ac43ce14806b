"""Wayland capture: the wire protocol in pure Python, the outputs, and wlroots screencopy into the ring."""
