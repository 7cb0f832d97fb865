"""OpenAI's own SDK (openai) against the mock's OpenAI Batch API: the mock accepts exactly what
the SDK sends (a multipart upload, the batch create, retrieve, cancel, list) and answers what
it parses (issue 25). The shapes puzzlegen's Rust client sends and reads
(src/embed/batch/openai.rs) are tested against the same mock in tests/suite/batch_openai.rs.

scripts/test-python installs the SDK (pinned) into its throwaway venv.
"""

import io
import json
import time

from conftest import GOOD_KEY

try:
    import openai
except ImportError as e:  # a missing SDK fails the tests, saying how to install it
    raise ImportError(
        "openai is missing: pip install 'openai==3.63.0' (scripts/test-python does)"
    ) from e

TEXTS = ["Gouda", "Bishop", "Mercury", "Brie"]
FINAL = {"completed", "failed", "expired", "cancelled"}


def client(base_url):
    return openai.OpenAI(api_key=GOOD_KEY, base_url=f"{base_url}/v1", max_retries=0)


def jsonl(texts, per_line=1):
    """A batch input file: `/v1/embeddings` requests of `per_line` texts each."""
    lines = []
    for i in range(0, len(texts), per_line):
        lines.append(json.dumps({
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "text-embedding-3-small", "input": texts[i:i + per_line],
                     "encoding_format": "float"},
        }))
    return ("\n".join(lines) + "\n").encode()


def wait(c, batch_id):
    for _ in range(100):
        batch = c.batches.retrieve(batch_id)
        if batch.status in FINAL:
            return batch
        time.sleep(0.1)
    raise AssertionError(f"{batch_id} never ended")


def create(c, texts, per_line=1, metadata=None):
    uploaded = c.files.create(file=("in.jsonl", io.BytesIO(jsonl(texts, per_line))),
                              purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.id.startswith("file-")
    return c.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings",
                            completion_window="24h", metadata=metadata)


def lines_of(c, file_id):
    return [json.loads(line) for line in c.files.content(file_id).text.splitlines() if line]


def test_the_sdk_uploads_creates_polls_and_reads_an_embedding_batch(mock_server):
    server = mock_server("--dimension", "256", "--batch-latency-ms", "300")
    c = client(server.base_url)
    batch = create(c, TEXTS, per_line=2, metadata={"puzzlegen_job": "sdk-test"})
    assert batch.status == "validating"
    assert batch.metadata == {"puzzlegen_job": "sdk-test"}
    batch = wait(c, batch.id)
    assert batch.status == "completed"
    assert batch.request_counts.total == 2 and batch.request_counts.completed == 2
    assert batch.error_file_id is None
    out = {line["custom_id"]: line for line in lines_of(c, batch.output_file_id)}
    assert set(out) == {"req-0", "req-2"}
    for line in out.values():
        assert line["error"] is None and line["response"]["status_code"] == 200
        data = line["response"]["body"]["data"]
        assert [d["index"] for d in data] == [0, 1]
        assert all(len(d["embedding"]) == 256 for d in data)
    assert batch.id in [b.id for b in c.batches.list()]
    s = server.stats()["batch"]
    assert (s["jobs"], s["texts"], s["texts_embedded"], s["uploads"], s["refused"]) == (1, 4, 4, 1, 0)


def test_errors_go_to_the_error_file_and_a_cancelled_batch_keeps_what_it_ran(mock_server):
    server = mock_server("--dimension", "256", "--batch-latency-ms", "60000",
                         "--batch-item-error-every", "1")
    c = client(server.base_url)
    batch = create(c, TEXTS)
    cancelled = c.batches.cancel(batch.id)
    assert cancelled.status == "cancelling"
    batch = wait(c, batch.id)
    assert batch.status == "cancelled"
    # The mock ran half the lines before the cancel, every one answered with an error.
    assert (batch.request_counts.completed, batch.request_counts.failed) == (0, len(TEXTS) // 2)
    assert batch.output_file_id is None
    errors = lines_of(c, batch.error_file_id)
    assert sorted(line["custom_id"] for line in errors) == ["req-0", "req-1"]
    for line in errors:
        assert line["response"]["status_code"] == 500
        assert line["response"]["body"]["error"]["message"]
    assert server.stats()["batch"]["cancels"] == 1


def test_a_failed_ending_and_a_bad_input_line(mock_server):
    server = mock_server("--dimension", "256", "--batch-latency-ms", "100",
                         "--batch-endings", "failed")
    c = client(server.base_url)
    batch = wait(c, create(c, TEXTS).id)
    assert batch.status == "failed" and batch.output_file_id is None
    bad = c.files.create(file=("bad.jsonl", io.BytesIO(b'{"custom_id": "x"}\n')), purpose="batch")
    batch = c.batches.create(input_file_id=bad.id, endpoint="/v1/embeddings",
                             completion_window="24h")
    batch = wait(c, batch.id)
    assert batch.status == "failed"
    assert batch.errors.data[0].line == 1


def test_a_wrong_key_is_refused_as_openai_refuses_it(mock_server):
    server = mock_server("--dimension", "256")
    c = openai.OpenAI(api_key="not-the-key", base_url=f"{server.base_url}/v1", max_retries=0)
    try:
        c.batches.list()
    except openai.AuthenticationError as e:
        assert e.status_code == 401
    else:
        raise AssertionError("the wrong key was accepted")
