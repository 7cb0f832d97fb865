"""puzzlegen: word-grouping puzzles scored with text embeddings, from Python.

A drop-in for the original pipeline's three entry points, backed by the Rust engine::

    from puzzlegen import create_improved_task_processor
    processor = create_improved_task_processor(config_path="params.yaml")
    results, embeddings = processor.process_themes(themes, candidates_dict)

- ``create_improved_task_processor(config_path)``: ``process_themes(themes, candidates_dict)``
  returns ``(results_dict, all_embeddings)`` in the original's shapes.
- ``SharedEmbeddingCache(cache_file, backup_interval=60)``: the embedding cache, kept in the
  SQLite cache database.
- ``SharedRateLimiter(requests_per_minute, min_request_interval, max_concurrent_requests)``:
  ``with limiter.acquire_request_slot(): ...``.
- ``ApiError``: the embedding API refused the key or the quota is used up.

The GIL is released while Rust works; Ctrl-C raises KeyboardInterrupt within about a second (requests in flight are given up).
Engine log lines go to stderr (warnings; ``PUZZLEGEN_LOG=info`` for more).
"""

from ._native import (
    ApiError,
    ImprovedGeminiTaskProcessor,
    RequestSlot,
    SharedEmbeddingCache,
    SharedRateLimiter,
    __version__,
    create_improved_task_processor,
)

__all__ = [
    "ApiError",
    "ImprovedGeminiTaskProcessor",
    "RequestSlot",
    "SharedEmbeddingCache",
    "SharedRateLimiter",
    "__version__",
    "create_improved_task_processor",
]
