"""Google's own SDK (google-genai) against the mock's Batch API: the mock accepts exactly what
the SDK sends and answers what it parses (issue 25). The shapes puzzlegen's Rust client sends
and reads (src/embed/batch.rs) are tested against the same mock in tests/suite/batch.rs.

scripts/test-python installs the SDK (pinned) into its throwaway venv.
"""

import json
import time
import warnings

from conftest import GOOD_KEY

try:
    from google import genai
    from google.genai import types
except ImportError as e:  # a missing SDK fails the tests, saying how to install it
    raise ImportError(
        "google-genai is missing: pip install 'google-genai==3.6.1' (scripts/test-python does)"
    ) from e

TEXTS = ["Gouda", "Bishop", "Mercury"]
FINAL = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}


def client(base_url):
    return genai.Client(api_key=GOOD_KEY, http_options=types.HttpOptions(base_url=base_url))


def wait(c, name):
    for _ in range(100):
        job = c.batches.get(name=name)
        if job.state is not None and job.state.value in FINAL:
            return job
        time.sleep(0.1)
    raise AssertionError(f"{name} never ended")


def config():
    return types.EmbedContentConfig(task_type="SEMANTIC_SIMILARITY", output_dimensionality=768)


def create_inline(c, **job_config):
    """An inline embedding batch of TEXTS (the SDK warns that the method is experimental)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return c.batches.create_embeddings(
            model="gemini-embedding-001",
            src=types.EmbeddingsBatchJobSource(
                inlined_requests=types.EmbedContentBatch(contents=TEXTS, config=config())
            ),
            config=types.CreateEmbeddingsBatchJobConfig(**job_config),
        )


def test_the_sdk_creates_polls_and_reads_an_inline_embedding_batch(mock_server):
    server = mock_server("--dimension", "768", "--batch-latency-ms", "300")
    c = client(server.base_url)
    job = create_inline(c, display_name="sdk-inline")
    assert job.name.startswith("batches/")
    assert job.state.value == "JOB_STATE_PENDING"
    assert job.display_name == "sdk-inline"
    job = wait(c, job.name)
    assert job.state.value == "JOB_STATE_SUCCEEDED"
    items = job.dest.inlined_embed_content_responses
    assert len(items) == len(TEXTS)
    assert all(item.error is None and len(item.response.embedding.values) == 768 for item in items)
    listed = [j.name for j in c.batches.list()]
    assert job.name in listed
    s = server.stats()["batch"]
    assert (s["jobs"], s["texts"], s["texts_embedded"], s["refused"]) == (1, 3, 3, 0)
    assert s["polls"] >= 2


def test_the_sdk_uploads_a_jsonl_file_and_downloads_the_responses(mock_server, tmp_path):
    server = mock_server("--dimension", "768", "--batch-latency-ms", "200")
    c = client(server.base_url)
    lines = [
        {"key": str(i), "request": {"content": {"parts": [{"text": t}]},
                                    "taskType": "SEMANTIC_SIMILARITY", "outputDimensionality": 768}}
        for i, t in enumerate(TEXTS)
    ]
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    uploaded = c.files.upload(file=str(path), config=types.UploadFileConfig(mime_type="application/jsonl"))
    assert uploaded.name.startswith("files/")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        job = c.batches.create_embeddings(
            model="gemini-embedding-001",
            src=types.EmbeddingsBatchJobSource(file_name=uploaded.name),
        )
    job = wait(c, job.name)
    assert job.state.value == "JOB_STATE_SUCCEEDED"
    assert job.dest.file_name.startswith("files/")
    body = c.files.download(file=job.dest.file_name).decode()
    answers = [json.loads(line) for line in body.splitlines()]
    assert [a["key"] for a in answers] == ["0", "1", "2"]
    assert all(len(a["response"]["embedding"]["values"]) == 768 for a in answers)
    s = server.stats()["batch"]
    assert (s["uploads"], s["downloads"], s["jobs"], s["texts_embedded"]) == (1, 1, 1, 3)


def test_the_sdk_cancels_a_running_job(mock_server):
    server = mock_server("--dimension", "768", "--batch-latency-ms", "60000")
    c = client(server.base_url)
    job = create_inline(c)
    c.batches.cancel(name=job.name)
    assert wait(c, job.name).state.value == "JOB_STATE_CANCELLED"
    assert server.stats()["batch"]["cancels"] == 1
