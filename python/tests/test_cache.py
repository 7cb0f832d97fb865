"""SharedEmbeddingCache: the original test script's checks, and the original's semantics."""

import csv
import sqlite3

import pytest

from puzzlegen import SharedEmbeddingCache

STATS_KEYS = {"cache_size", "hit_rate", "total_requests", "cache_file", "hits", "misses",
              "writes", "backups", "last_backup"}


def test_store_and_retrieve(tmp_path):
    cache = SharedEmbeddingCache(str(tmp_path / "test_cache.csv"), backup_interval=10)
    cache.put("test", [1.0, 2.0, 3.0, 4.0], theme="example", word_type="test")
    assert cache.get("test") == [1.0, 2.0, 3.0, 4.0]
    # Keys are word.lower().strip().
    assert cache.get("  TeSt ") == [1.0, 2.0, 3.0, 4.0]
    assert cache.get("tes") is None
    assert cache.contains("TEST") and "test" in cache and len(cache) == 1


def test_batch(tmp_path):
    cache = SharedEmbeddingCache(str(tmp_path / "test_cache.csv"), backup_interval=10)
    batch = [("word1", [1.0, 0.0, 0.0]), ("word2", [0.0, 1.0, 0.0]), ("word3", [0.0, 0.0, 1.0])]
    cache.put_batch(batch, theme="batch_test")
    assert cache.get_batch(["word1", "word2", "word3", "absent"]) == [e for _, e in batch] + [None]


def test_values_come_back_as_float32(tmp_path):
    cache = SharedEmbeddingCache(str(tmp_path / "c.csv"))
    cache.put("x", [0.1, -1e-3, 12345.678])
    import struct
    as_f32 = [struct.unpack("f", struct.pack("f", v))[0] for v in [0.1, -1e-3, 12345.678]]
    assert cache.get("x") == as_f32
    # Vectors of any length, one cache.
    cache.put("long", [0.5] * 3072)
    assert cache.get("long") == [0.5] * 3072


def test_backup_then_new_instance_reads_it_back(tmp_path):
    path = tmp_path / "sub" / "test_cache.csv"
    cache = SharedEmbeddingCache(str(path), backup_interval=10)
    cache.put("test", [1.0, 2.0, 3.0, 4.0], theme="example", word_type="test")
    cache.put_batch([("Mercury", [0.25, 0.5, 0.75, 1.0])], theme="planets",
                    word_types=["candidate"], similarities=[0.5])
    cache.backup_to_csv()
    stats = cache.get_stats()
    assert stats["backups"] == 1 and stats["last_backup"] > 0

    # The original's backup layout.
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0].keys()) == ["word", "theme", "word_type", "similarity_to_theme",
                                    "timestamp"] + [f"embedding_dim_{i}" for i in range(1, 5)]
    assert [r["word"] for r in rows] == ["test", "Mercury"]
    assert rows[0]["theme"] == "example" and rows[0]["word_type"] == "test"
    assert rows[0]["similarity_to_theme"] == "" and float(rows[0]["timestamp"]) > 0
    assert float(rows[1]["similarity_to_theme"]) == 0.5
    assert [float(rows[1][f"embedding_dim_{i}"]) for i in range(1, 5)] == [0.25, 0.5, 0.75, 1.0]

    # A new instance on the same file reads it back (from the database).
    cache2 = SharedEmbeddingCache(str(path), backup_interval=10)
    assert cache2.get("test") == [1.0, 2.0, 3.0, 4.0]
    assert cache2.get("mercury") == [0.25, 0.5, 0.75, 1.0]

    # Without the database, from the CSV alone (the original's only store).
    db = cache2.database
    del cache, cache2
    for suffix in ("", "-wal", "-shm"):
        p = tmp_path / "sub" / ("embeddings.sqlite3" + suffix)
        if p.exists():
            p.unlink()
    cache3 = SharedEmbeddingCache(str(path))
    assert cache3.get("TEST") == [1.0, 2.0, 3.0, 4.0]
    assert cache3.get("Mercury") == [0.25, 0.5, 0.75, 1.0]
    assert str(db).endswith("embeddings.sqlite3")


def test_every_put_is_committed_at_once(tmp_path):
    cache = SharedEmbeddingCache(str(tmp_path / "c.csv"))
    cache.put("kept", [1.0, 2.0])
    # No backup, no close: the database already holds it.
    con = sqlite3.connect(cache.database)
    assert con.execute("SELECT count(*) FROM embeddings WHERE text_key = 'kept'").fetchone() == (1,)
    con.close()
    assert SharedEmbeddingCache(str(tmp_path / "c.csv")).get("kept") == [1.0, 2.0]


def test_mixed_lengths_back_up_the_first_length(tmp_path):
    # The original test script puts 4-dimensional then 3-dimensional vectors in one cache.
    cache = SharedEmbeddingCache(str(tmp_path / "c.csv"))
    cache.put("test", [1.0, 2.0, 3.0, 4.0])
    cache.put_batch([("word1", [1.0, 0.0, 0.0])])
    cache.backup_to_csv()
    with open(tmp_path / "c.csv", newline="") as f:
        assert [r["word"] for r in csv.DictReader(f)] == ["test"]
    assert SharedEmbeddingCache(str(tmp_path / "c.csv")).get("word1") == [1.0, 0.0, 0.0]


def test_empty_cache_writes_no_backup(tmp_path):
    cache = SharedEmbeddingCache(str(tmp_path / "c.csv"))
    cache.backup_to_csv()
    assert not (tmp_path / "c.csv").exists()
    assert cache.get_stats()["backups"] == 0


def test_stats(tmp_path):
    cache = SharedEmbeddingCache(str(tmp_path / "c.csv"), backup_interval=10)
    assert cache.backup_interval == 10
    cache.put("a", [1.0])
    cache.put_batch([("b", [2.0]), ("c", [3.0])])
    cache.get("a")
    cache.get_batch(["b", "zz"])
    s = cache.get_stats()
    assert STATS_KEYS <= set(s)
    assert (s["cache_size"], s["hits"], s["misses"], s["writes"], s["total_requests"]) == (3, 2, 1, 3, 3)
    assert s["hit_rate"] == pytest.approx(2 / 3)
    assert s["cache_file"] == str(tmp_path / "c.csv")


def test_empty_embedding_is_refused(tmp_path):
    cache = SharedEmbeddingCache(str(tmp_path / "c.csv"))
    with pytest.raises(ValueError):
        cache.put("x", [])


def test_last_put_wins_also_in_a_new_instance(tmp_path):
    # The original overwrites an entry put again; so does the database behind this cache.
    cache = SharedEmbeddingCache(str(tmp_path / "c.csv"))
    cache.put("Word", [1.0, 1.0])
    cache.put("word ", [2.0, 2.0])
    cache.put_batch([("other", [1.0])])
    cache.put_batch([("OTHER", [3.0, 3.0, 3.0])])
    assert cache.get("word") == [2.0, 2.0] and cache.get("other") == [3.0, 3.0, 3.0]
    assert len(cache) == 2
    again = SharedEmbeddingCache(str(tmp_path / "c.csv"))
    assert again.get("word") == [2.0, 2.0]
    assert again.get("other") == [3.0, 3.0, 3.0]
    assert len(again) == 2
