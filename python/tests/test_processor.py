"""create_improved_task_processor / process_themes against the mock server and the local model."""

import csv
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

import puzzlegen
from puzzlegen import ApiError, create_improved_task_processor

from conftest import (EXAMPLES, MODEL_DIR, KEY_ENV, binary, example_inputs, gemini_params)

PUZZLE_KEYS = ["words", "theme_similarity_scores", "themes", "all_candidates", "all_similarities"]
METADATA_KEYS = {"total_themes_needed", "total_themes_available", "themes_reused",
                 "successful_puzzles", "failed_puzzles", "processing_time", "gemini_config",
                 "multiprocessing_enabled", "multiprocessing_implementation",
                 "multiprocessing_stats"}
MP_STATS_KEYS = {"total_tasks", "completed_tasks", "failed_tasks", "success_rate",
                 "processing_time", "tasks_per_second", "worker_count", "cache_stats",
                 "rate_limiter_stats"}
EMBEDDING_KEYS = ["theme", "word", "word_type", "embedding", "similarity_to_theme", "rank", "dataset"]


def check_shapes(results, embeddings, words_per_theme=4, dimension=768):
    assert set(results) == {"puzzles", "metadata"}
    for key, p in results["puzzles"].items():
        assert key.startswith("puzzle_")
        assert list(p)[:5] == PUZZLE_KEYS
        assert len(p["words"]) == len(p["themes"]) * words_per_theme
        assert p["all_similarities"] == p["theme_similarity_scores"]
        assert p["all_candidates"] == []
    meta = results["metadata"]
    assert METADATA_KEYS <= set(meta)
    assert meta["multiprocessing_enabled"] is True
    assert MP_STATS_KEYS <= set(meta["multiprocessing_stats"])
    assert {"model_id", "embedding_dimension", "words_per_theme", "themes_per_puzzle"} <= set(meta["gemini_config"])
    assert isinstance(embeddings, list)
    for row in embeddings:
        assert list(row) == EMBEDDING_KEYS
        assert len(row["embedding"]) == dimension
        assert all(isinstance(x, float) for x in row["embedding"][:5])
        assert row["dataset"] == "puzzle"
        assert row["word_type"] in ("theme", "selected_word")


def test_two_themes_as_the_original_test_script(tmp_path, mock_server, api_key, monkeypatch):
    server = mock_server("--dimension", "768")
    monkeypatch.chdir(tmp_path)
    # Two themes fill puzzles of two groups (a puzzle needs different themes, as in the CLI).
    params = gemini_params(tmp_path, server.base_url, puzzles=20, themes_per_puzzle=2)
    themes, candidates = example_inputs(2)
    processor = create_improved_task_processor(str(params))
    results, embeddings = processor.process_themes(themes, candidates)
    check_shapes(results, embeddings)
    stats = results["metadata"]["multiprocessing_stats"]
    assert stats["total_tasks"] == 40
    assert stats["completed_tasks"] > 0
    assert server.stats()["texts_embedded"] > 0
    # The cache is kept: database and cache CSV; no output file written.
    assert (tmp_path / "cache" / "embeddings.sqlite3").is_file()
    assert (tmp_path / "cache" / "all_embeddings.csv").is_file()
    assert not (tmp_path / "out" / "final_puzzles.json").exists()
    assert not (tmp_path / "out" / "run_journal.jsonl").exists()


def test_two_themes_with_the_originals_four_per_puzzle(tmp_path, mock_server, api_key, monkeypatch):
    # The original's test script passes 2 themes under its own params.yaml (4 themes a puzzle):
    # the themes are still processed (the original's TaskGenerator cycles them), puzzles that
    # cannot be made are reported as failed, and the call returns the usual structure.
    server = mock_server("--dimension", "768")
    monkeypatch.chdir(tmp_path)
    params = gemini_params(tmp_path, server.base_url, puzzles=20, themes_per_puzzle=4)
    themes, candidates = example_inputs(2)
    processor = create_improved_task_processor(str(params))
    results, embeddings = processor.process_themes(themes, candidates)
    assert "puzzles" in results and "metadata" in results
    stats = results["metadata"]["multiprocessing_stats"]
    assert stats["total_tasks"] == 80
    assert stats["completed_tasks"] > 0
    assert server.stats()["texts_embedded"] > 0


def test_positional_and_default_config_path(tmp_path, mock_server, api_key, monkeypatch):
    server = mock_server("--dimension", "768")
    monkeypatch.chdir(tmp_path)
    gemini_params(tmp_path, server.base_url, puzzles=1)
    processor = create_improved_task_processor()  # params.yaml in the working directory
    assert Path(processor.config_path).name == "params.yaml"
    themes, candidates = example_inputs(4)
    results, embeddings = processor.process_themes(themes, candidates)
    assert list(results["puzzles"]) == ["puzzle_1"]
    assert len(embeddings) == 4 * 5
    # A second call is answered from the cache: no new text requested.
    before = server.stats()["texts_embedded"]
    again, again_embeddings = processor.process_themes(themes, candidates)
    assert server.stats()["texts_embedded"] == before
    assert again["puzzles"] == results["puzzles"]
    assert again_embeddings == embeddings


def test_example_data_matches_the_cli(tmp_path):
    """process_themes on the example data returns the CLI's puzzles, and all_embeddings its
    puzzle CSV (each run with its own cache, local model)."""
    assert MODEL_DIR.is_dir(), "run scripts/fetch-model.sh"
    base = (EXAMPLES / "params.yaml").read_text()

    def params(name):
        d = tmp_path / name
        d.mkdir()
        text = base
        for old, new in [
            ('embedding_cache_file: "cache/all_embeddings.csv"', f'embedding_cache_file: "{d}/cache/all_embeddings.csv"'),
            ('puzzle_embeddings_file: "outputs/puzzle_embeddings.csv"', f'puzzle_embeddings_file: "{d}/outputs/puzzle_embeddings.csv"'),
            ("themes: examples/selected_themes.json", f"themes: {EXAMPLES}/selected_themes.json"),
            ("candidates: examples/candidate_words.json", f"candidates: {EXAMPLES}/candidate_words.json"),
            ("outputs: outputs", f"outputs: {d}/outputs"),
            ("reports: reports", f"reports: {d}/reports"),
            ("cache: cache", f"cache: {d}/cache"),
            ("model_dir: models/all-MiniLM-L6-v2", f"model_dir: {MODEL_DIR}"),
        ]:
            assert old in text, old
            text = text.replace(old, new)
        (d / "params.yaml").write_text(text)
        return d

    cli_dir, py_dir = params("cli"), params("py")
    subprocess.run([str(binary("PUZZLEGEN_CLI_BIN", "puzzlegen")), "-q", "run", "--config",
                    str(cli_dir / "params.yaml")], check=True, timeout=600)
    cli_puzzles = json.loads((cli_dir / "outputs" / "final_puzzles.json").read_text())
    with open(cli_dir / "outputs" / "puzzle_embeddings.csv", newline="") as f:
        cli_rows = list(csv.DictReader(f))

    themes, candidates = example_inputs()
    results, embeddings = create_improved_task_processor(py_dir / "params.yaml").process_themes(
        themes, candidates)
    check_shapes(results, embeddings, dimension=384)
    assert len(cli_puzzles) == 12
    assert list(results["puzzles"]) == list(cli_puzzles)
    for key, cli in cli_puzzles.items():
        ours = results["puzzles"][key]
        assert ours["themes"] == cli["themes"] and ours["words"] == cli["words"], key
        assert ours["theme_similarity_scores"] == pytest.approx(cli["theme_similarity_scores"], abs=1e-6)
        assert ours["difficulty"]["levels"] == cli["difficulty"]["levels"], key
        assert ours["solver"] == cli["solver"], key
    cli_meta = json.loads((cli_dir / "outputs" / "puzzle_metadata.json").read_text())
    assert results["metadata"]["successful_puzzles"] == cli_meta["successful_puzzles"]
    assert results["metadata"]["difficulty"]["groups_per_level"] == \
        cli_meta["difficulty"]["groups_per_level"]
    assert results["metadata"]["multiprocessing_stats"]["completed_tasks"] == \
        cli_meta["multiprocessing_stats"]["completed_tasks"]

    assert len(embeddings) == len(cli_rows)
    dims = [f"embedding_dim_{i}" for i in range(1, 385)]
    for ours, row in zip(embeddings, cli_rows):
        assert (ours["theme"], ours["word"], ours["word_type"], ours["rank"]) == \
            (row["theme"], row["word"], row["word_type"], int(row["rank"]))
        assert ours["similarity_to_theme"] == pytest.approx(float(row["similarity_to_theme"]), abs=1e-6)
        assert ours["embedding"] == pytest.approx([float(row[d]) for d in dims], abs=1e-6)


def test_wrong_key_raises_api_error_fast_without_the_key(tmp_path, mock_server, monkeypatch, capfd):
    server = mock_server("--dimension", "768")
    wrong = "wrong-key-d41d8cd98f00"
    monkeypatch.setenv(KEY_ENV, wrong)
    params = gemini_params(tmp_path, server.base_url, puzzles=2)
    themes, candidates = example_inputs(8)
    processor = create_improved_task_processor(str(params))
    start = time.monotonic()
    with pytest.raises(ApiError) as info:
        processor.process_themes(themes, candidates)
    assert time.monotonic() - start < 5
    assert isinstance(info.value, RuntimeError) and puzzlegen.ApiError is ApiError
    message = str(info.value)
    assert "refused" in message and "HTTP" in message, message
    out, err = capfd.readouterr()
    for text in (message, repr(info.value), out, err):
        assert wrong not in text


@pytest.mark.parametrize("after", [0.05, 0.5, 1.5])
def test_ctrl_c_raises_keyboard_interrupt_promptly(tmp_path, mock_server, api_key, after):
    # Every answer takes 10 s: whenever the signal comes (setup, first requests, requests in
    # flight), the call raises without waiting for the requests in flight, and only once the
    # work has ended: the cache is closed and whole, right away. A bound of 5 s (not 1) keeps
    # the test true on a busy machine; waiting for the requests would take 10.
    server = mock_server("--dimension", "768", "--latency-ms", "10000")
    params = gemini_params(tmp_path, server.base_url, puzzles=4, request_timeout=30)
    themes, candidates = example_inputs(16)
    processor = create_improved_task_processor(str(params))
    sent = []

    def interrupt():
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(after, interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            timer.start()
            processor.process_themes(themes, candidates)
        raised = time.monotonic()
    finally:
        timer.cancel()
    assert sent, "the signal was not sent"
    assert raised - sent[0] < 5.0, raised - sent[0]
    database = tmp_path / "cache" / "embeddings.sqlite3"
    if database.exists():
        con = sqlite3.connect(database)
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        con.close()


def test_four_threads_at_once_request_no_text_twice(tmp_path, mock_server, api_key):
    server = mock_server("--dimension", "768", "--latency-ms", "50")
    params = gemini_params(tmp_path, server.base_url, puzzles=3)
    themes, candidates = example_inputs(12)
    processor = create_improved_task_processor(str(params))
    answers, errors = [None] * 4, []
    barrier = threading.Barrier(4)

    def work(i):
        try:
            barrier.wait()
            answers[i] = processor.process_themes(themes, candidates)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert all(a is not None for a in answers)
    for results, embeddings in answers[1:]:
        assert results["puzzles"] == answers[0][0]["puzzles"]
        assert embeddings == answers[0][1]
    stats = server.stats()
    assert stats["texts_embedded"] > 0
    assert stats["duplicate_texts"] == 0, stats


def test_gil_is_released_while_it_runs(tmp_path, mock_server, api_key):
    server = mock_server("--dimension", "768", "--latency-ms", "300")
    params = gemini_params(tmp_path, server.base_url, puzzles=1)
    themes, candidates = example_inputs(4)
    ticks = []
    done = threading.Event()

    def ticker():
        while not done.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.01)

    t = threading.Thread(target=ticker)
    t.start()
    start = time.monotonic()
    try:
        create_improved_task_processor(str(params)).process_themes(themes, candidates)
    finally:
        done.set()
        t.join()
    elapsed = time.monotonic() - start
    assert elapsed > 0.3
    # The other thread kept running the whole time.
    assert len(ticks) > elapsed / 0.01 * 0.5


def test_config_and_input_errors_are_value_errors(tmp_path, mock_server, api_key):
    with pytest.raises(ValueError, match="cannot read"):
        create_improved_task_processor(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("puzzle_generation:\n  words_per_theme: -3\n")
    with pytest.raises(ValueError, match="words_per_theme"):
        create_improved_task_processor(str(bad))

    server = mock_server("--dimension", "768")
    processor = create_improved_task_processor(str(gemini_params(tmp_path, server.base_url)))
    with pytest.raises(ValueError, match=r"^themes: themes: expected at least one theme"):
        processor.process_themes([], {"a": {"words": ["x"]}})
    with pytest.raises(ValueError, match=r"^candidates_dict: .*candidates\[\"a\"\]: expected an object"):
        processor.process_themes(["a"], {"a": ["x"]})
    with pytest.raises(ValueError, match="words_per_theme is 4 but the largest candidate list in candidates_dict has 2"):
        processor.process_themes(["a"], {"a": {"words": ["x", "y"]}})
    with pytest.raises(ValueError, match="candidates_dict"):
        processor.process_themes(["a"], {"a": {"words": [object()]}})


def test_missing_key_is_a_value_error(tmp_path, mock_server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    server = mock_server("--dimension", "768")
    processor = create_improved_task_processor(str(gemini_params(tmp_path, server.base_url)))
    themes, candidates = example_inputs(4)
    with pytest.raises(ValueError, match=KEY_ENV):
        processor.process_themes(themes, candidates)
