#!/usr/bin/env bash
# Set up, then turn the bundled sample portrait and a sample line into a video (out.mp4).
# No token, no network: the embedded preview renderer does the work.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
LINE=${1:-"The girl smiles and says: 'You didn't really think I'd give up?'"}
.venv/bin/actorbot generate samples/portrait.jpg "$LINE" -o out.mp4
echo "Open out.mp4 to watch it. Your own photo: .venv/bin/actorbot generate PHOTO \"LINE\" -o my.mp4"
