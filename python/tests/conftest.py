"""Fixtures: the repo's mock server (mock-gemini) on a free loopback port, and params.yaml files.

The binaries come from PUZZLEGEN_MOCK_BIN / PUZZLEGEN_CLI_BIN (set by scripts/test-python),
else from the workspace's target folder (CARGO_TARGET_DIR or <repo>/target, debug).
"""

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
MODEL_DIR = REPO / "models" / "all-MiniLM-L6-v2"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
KEY_ENV = "PUZZLEGEN_PYTEST_KEY"
GOOD_KEY = "pytest-key-3f9a1c"


def binary(env, name):
    path = Path(os.environ.get(env) or TARGET / "debug" / name)
    assert path.is_file(), f"{path} not found: build it (cargo build -p mock-gemini --bin mock-gemini / cargo build --bin puzzlegen) or set {env}"
    return path


class MockServer:
    """A running mock-gemini process."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [str(binary("PUZZLEGEN_MOCK_BIN", "mock-gemini")), "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        assert line.startswith("listening on "), f"mock-gemini did not start: {line!r} {self.proc.stderr.read()!r}"
        self.base_url = line.split()[-1]

    def stats(self):
        with urllib.request.urlopen(self.base_url + "/stats", timeout=5) as r:
            return json.load(r)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def mock_server():
    """A factory: mock_server(*flags) starts one mock-gemini (expecting GOOD_KEY); all are
    stopped at the end of the test."""
    servers = []

    def start(*args):
        s = MockServer("--api-key", GOOD_KEY, *args)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, GOOD_KEY)
    return GOOD_KEY


def gemini_params(dir, base_url, puzzles=1, themes_per_puzzle=4, request_timeout=5, cache="cache",
                  outputs="out"):
    """A params.yaml for the Gemini provider at `base_url` (768 dimensions), paths in `dir`."""
    p = Path(dir) / "params.yaml"
    p.write_text(
        f"""puzzle_generation:
  total_puzzle_count: {puzzles}
  words_per_theme: 4
  themes_per_puzzle: {themes_per_puzzle}
embedding:
  provider: gemini
gemini:
  base_url: {base_url}
  api_key_env: {KEY_ENV}
  embedding_dimension: 768
  retry_base_delay: 0.05
  max_retries: 3
  request_timeout: {request_timeout}
multiprocessing:
  worker_count: 4
  max_concurrent_requests: 4
  task_timeout_seconds: 120
output:
  embedding_cache_file: {dir}/{cache}/all_embeddings.csv
  puzzle_embeddings_file: {dir}/{outputs}/puzzle_embeddings.csv
paths:
  themes: {dir}/themes.json
  candidates: {dir}/candidates.json
  outputs: {dir}/{outputs}
  reports: {dir}/{outputs}/reports
  cache: {dir}/{cache}
"""
    )
    return p


def example_inputs(n_themes=None):
    themes = json.loads((EXAMPLES / "selected_themes.json").read_text())["themes"]
    candidates = json.loads((EXAMPLES / "candidate_words.json").read_text())["candidates"]
    return (themes if n_themes is None else themes[:n_themes]), candidates
