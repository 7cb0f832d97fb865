"""Makes the tiny random MPNet of the unit tests and its reference outputs.

Writes tests/fixtures/tiny-mpnet/{config.json,model.safetensors} (2 layers, hidden 32, random
weights, every parameter non-trivial) and tests/fixtures/tiny_mpnet_reference.json: token ids
and masks of three rows of different lengths (140 tokens, past the relative-position clamp at
128; 17; 3, so padding is exercised), transformers' last_hidden_state on the real tokens, and
sentence-transformers' Pooling (mean, cls, max) of it.

Run from the repository root: bench/.venv/bin/python bench/tiny_mpnet.py
"""

import json

import torch
from sentence_transformers.sentence_transformer.modules import Pooling
from transformers import MPNetConfig, MPNetModel

OUT = "tests/fixtures"
LENGTHS = [140, 17, 3]
PAD, BOS, EOS = 1, 0, 2

torch.manual_seed(21)
config = MPNetConfig(
    vocab_size=64,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=160,
    relative_attention_num_buckets=32,
    layer_norm_eps=1e-5,
    hidden_act="gelu",
    pad_token_id=PAD,
)
model = MPNetModel(config, add_pooling_layer=False).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        if "LayerNorm.weight" in name:
            p.copy_(1.0 + 0.1 * torch.randn_like(p))
        elif "relative_attention_bias" in name:
            p.copy_(torch.randn_like(p))
        else:
            p.copy_(0.2 * torch.randn_like(p))
model.save_pretrained(f"{OUT}/tiny-mpnet", safe_serialization=True)

width = max(LENGTHS)
ids = torch.full((len(LENGTHS), width), PAD, dtype=torch.long)
mask = torch.zeros((len(LENGTHS), width), dtype=torch.long)
for row, n in enumerate(LENGTHS):
    ids[row, :n] = torch.randint(3, config.vocab_size, (n,))
    ids[row, 0], ids[row, n - 1] = BOS, EOS
    mask[row, :n] = 1
with torch.no_grad():
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    features = {"token_embeddings": hidden, "attention_mask": mask}
    pooled = {
        mode: Pooling(config.hidden_size, pooling_mode=mode)(dict(features))["sentence_embedding"]
        for mode in ["mean", "cls", "max"]
    }


def rounded(t):
    return [[round(float(x), 7) for x in row] for row in t]


reference = {
    "produced_with": f"transformers {__import__('transformers').__version__}, "
    f"sentence-transformers {__import__('sentence_transformers').__version__}, "
    f"torch {torch.__version__}, CPU, float32",
    "ids": ids.tolist(),
    "mask": mask.tolist(),
    "hidden": [rounded(hidden[row, :n]) for row, n in enumerate(LENGTHS)],
    "pooled": {mode: rounded(v) for mode, v in pooled.items()},
}
with open(f"{OUT}/tiny_mpnet_reference.json", "w") as f:
    json.dump(reference, f)
