"""How far puzzlegen's token estimate (characters / 4, rounded up, at least 1 per text: the
estimate `plan`, the cost lines and `tokens_per_minute` use) is from real subword tokenizers.

    python3 -m venv /tmp/tok && /tmp/tok/bin/pip install tokenizers
    scripts/fetch-model.sh && scripts/fetch-model.sh all-mpnet-base-v2
    /tmp/tok/bin/python bench/tokens.py

The providers' own tokenizers are not available offline (OpenAI's tiktoken downloads its
tables from a blob store; Gemini's is not published), so the comparison is with the two
tokenizers in models/: all-MiniLM-L6-v2 (BERT WordPiece, 30,522 pieces) and all-mpnet-base-v2
(MPNet, 30,527). Tokenizers with larger vocabularies (OpenAI's 100k-200k BPE, Gemini's 256k
SentencePiece) split common words less, so these counts are an upper bound for short English
words, not a measurement of the bill.

Texts: every theme name and candidate of examples/ (what a run embeds), and every group name
and word of ../shared/eval/nyt_connections_dev.json. Special tokens ([CLS], [SEP]) are not
counted.
"""
import json
import math
import sys
from pathlib import Path

try:
    from tokenizers import Tokenizer
except ImportError:
    sys.exit("bench/tokens.py needs the tokenizers package: pip install tokenizers (in a venv)")

ROOT = Path(__file__).resolve().parent.parent


def estimate(text):
    return max(1, math.ceil(len(text) / 4))


def texts_of_examples():
    themes = json.loads((ROOT / "examples/selected_themes.json").read_text())["themes"]
    candidates = json.loads((ROOT / "examples/candidate_words.json").read_text())["candidates"]
    words = {w for c in candidates.values() for w in c["words"]}
    return sorted(set(themes) | words)


def texts_of_nyt():
    path = ROOT.parent / "shared/eval/nyt_connections_dev.json"
    puzzles = json.loads(path.read_text())
    return sorted({t for p in puzzles for g in p["groups"] for t in [g["name"], *g["words"]]})


def main():
    sets = {"examples": texts_of_examples(), "nyt_dev": texts_of_nyt()}
    for model in ["all-MiniLM-L6-v2", "all-mpnet-base-v2"]:
        path = ROOT / "models" / model / "tokenizer.json"
        if not path.is_file():
            sys.exit(f"{path} missing: run scripts/fetch-model.sh {model}")
        tok = Tokenizer.from_file(str(path))
        tok.no_padding()
        tok.no_truncation()
        for name, texts in sets.items():
            real = [len(tok.encode(t, add_special_tokens=False).ids) for t in texts]
            est = [estimate(t) for t in texts]
            within_one = sum(abs(a - b) <= 1 for a, b in zip(est, real)) / len(texts)
            under = sum(a < b for a, b in zip(est, real)) / len(texts)
            print(f"{model} {name} texts {len(texts)} estimated {sum(est)} real {sum(real)} "
                  f"ratio {sum(est) / sum(real):.3f} within_one_token {within_one:.3f} "
                  f"underestimated {under:.3f}")


main()
