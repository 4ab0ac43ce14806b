#!/usr/bin/env bash
# The live line as a person sees it: a 120-column tmux pane, an 8 s 1080p60 recording of the numbered test
# screen on a private Xvfb (:77), the pane read every second; then the frames the file holds (ffprobe).
# Usage: bash benchmarks/live_line.sh   (needs tmux, Xvfb, ffprobe and install.sh's .venv)
set -u
root="$(cd "$(dirname "$0")/.." && pwd)"
py="$root/.venv/bin/python"
out="$(mktemp -d)/live.mkv"
Xvfb :77 -screen 0 1920x1080x24 -nolisten tcp >/dev/null 2>&1 & xvfb=$!
sleep 1
"$py" -m framepipe.proof.testscreen --display :77 --fps 60 >/dev/null 2>&1 & painter=$!
sleep 1
tmux -L framepipe-live new-session -d -s live -x 120 -y 20 \
    "DISPLAY=:77 '$root/.venv/bin/framepipe' record '$out' --duration 8 --no-audio; sleep 3"
for i in $(seq 1 11); do
    sleep 1
    echo "--- ${i} s"
    tmux -L framepipe-live capture-pane -p -t live | grep -v '^$'
done
tmux -L framepipe-live kill-server 2>/dev/null
kill "$painter" "$xvfb"
echo "frames in the file: $(ffprobe -v error -count_frames -select_streams v -show_entries stream=nb_read_frames -of csv=p=0 "$out")"
