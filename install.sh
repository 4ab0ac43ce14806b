#!/usr/bin/env bash
# Installs what framepipe needs on Debian/Ubuntu: the system packages that are
# missing (Xvfb, ffmpeg, PulseAudio, PortAudio, libxcb-shm; nginx-rtmp, sway and
# xdotool for the tests), then the package
# itself with its test tools in a virtual environment at .venv.
set -euo pipefail
cd "$(dirname "$0")"

packages=(xvfb ffmpeg pulseaudio libportaudio2 libxcb1 libxcb-shm0 python3-venv nginx libnginx-mod-rtmp sway xwayland x11-xserver-utils xdotool)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# python3-venv is only needed for Debian's own python3; a python with a working venv module does without it.
if python3 -c "import ensurepip, venv" 2>/dev/null; then
  missing=("${missing[@]/python3-venv/}")
fi
# The recording bar (framepipe gui) is Tk: Debian's python3 keeps tkinter in python3-tk.
if ! python3 -c "import tkinter" 2>/dev/null && ! dpkg-query -W -f='${Status}' python3-tk 2>/dev/null | grep -q "install ok installed"; then
  missing+=(python3-tk)
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if ((${#missing[@]})); then
  echo "install.sh: installing system packages: ${missing[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# compat: the checkout's path in a .pth file, not an import hook that every stage process would load
.venv/bin/python -m pip install -q -e ".[dev]" --config-settings editable_mode=compat
.venv/bin/python -m compileall -q pipeline stages framepipe  # bytecode ready even where Python may not write it
# The bar in the desktop's menus: a .desktop file naming this checkout's framepipe-gui.
apps="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
mkdir -p "$apps"
sed "s|@EXEC@|$PWD/.venv/bin/framepipe-gui|" framepipe/gui/framepipe.desktop > "$apps/framepipe.desktop"
command -v update-desktop-database >/dev/null && update-desktop-database -q "$apps" || true
echo "install.sh: done; run .venv/bin/framepipe --help, or framepipe from the desktop's menu"
