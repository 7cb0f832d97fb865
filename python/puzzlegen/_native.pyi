"""Type stubs of puzzlegen's native module (re-exported by ``puzzlegen``)."""

import os
from pathlib import Path
from types import TracebackType
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

__version__: str

class ApiError(RuntimeError):
    """The embedding API refused to go on: a refused API key, an exhausted quota.

    The message is the CLI's; it never contains the key.
    """

class ImprovedGeminiTaskProcessor:
    """The original processor, backed by puzzlegen's engine."""

    def __init__(self, config_path: Union[str, os.PathLike[str]] = "params.yaml") -> None: ...
    @property
    def config_path(self) -> Path: ...
    def process_themes(
        self,
        themes: Sequence[str],
        candidates_dict: Mapping[str, Mapping[str, Any]],
    ) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
        """Processes ``themes`` with ``candidates_dict`` (``{theme: {"words": [...]}}``) as
        ``puzzlegen run`` does (same plan, provider, cache, limiter, retries, journal), writing
        no output file but keeping the cache.

        Returns ``(results_dict, all_embeddings)``: ``{"puzzles": {"puzzle_<id>": {...}},
        "metadata": {...}}`` as final_puzzles.json and puzzle_metadata.json, and for each group
        of each puzzle a theme row then its words (``theme``, ``word``, ``word_type``,
        ``embedding``, ``similarity_to_theme``, ``rank``, ``dataset``), as the puzzle CSV.

        Raises ValueError for bad input or configuration, ApiError when the API refuses the
        key or the quota is used up, KeyboardInterrupt on Ctrl-C.
        """

def create_improved_task_processor(
    config_path: Union[str, os.PathLike[str]] = "params.yaml",
) -> ImprovedGeminiTaskProcessor:
    """Loads ``config_path`` (the original's params.yaml) and returns a processor.

    Raises ValueError for a missing or invalid configuration.
    """

class SharedEmbeddingCache:
    """The original's shared embedding cache, kept in ``<folder of cache_file>/embeddings.sqlite3``.

    Keys are ``word.lower().strip()``; ``get`` returns the floats given, as float32 values;
    ``backup_to_csv()`` writes ``cache_file`` in the original's backup layout.
    """

    backup_interval: float
    def __init__(
        self, cache_file: Union[str, os.PathLike[str]], backup_interval: float = 60
    ) -> None: ...
    @property
    def cache_file(self) -> Path: ...
    @property
    def database(self) -> Path: ...
    def get(self, word: str) -> Optional[List[float]]: ...
    def get_batch(self, words: Sequence[str]) -> List[Optional[List[float]]]: ...
    def put(
        self,
        word: str,
        embedding: Sequence[float],
        theme: Optional[str] = None,
        word_type: Optional[str] = None,
        similarity_to_theme: Optional[float] = None,
    ) -> None: ...
    def put_batch(
        self,
        embeddings: Sequence[Tuple[str, Sequence[float]]],
        theme: Optional[str] = None,
        word_types: Optional[Sequence[Optional[str]]] = None,
        similarities: Optional[Sequence[Optional[float]]] = None,
    ) -> None: ...
    def contains(self, word: str) -> bool: ...
    def __contains__(self, word: str) -> bool: ...
    def __len__(self) -> int: ...
    def backup_to_csv(self) -> None: ...
    def get_stats(self) -> Dict[str, Any]:
        """cache_size, hit_rate, total_requests, cache_file, hits, misses, writes, backups,
        last_backup (and database)."""
    def clear(self) -> None: ...

class RequestSlot:
    """One request slot of a SharedRateLimiter (a context manager)."""

    def __enter__(self) -> "RequestSlot": ...
    def __exit__(
        self,
        exc_type: Optional[type],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

class SharedRateLimiter:
    """The engine's rate limiter, shared by every thread holding it."""

    min_request_interval: float
    max_concurrent_requests: int
    def __init__(
        self,
        requests_per_minute: Union[int, float] = 2900,
        min_request_interval: float = 0.1,
        max_concurrent_requests: int = 10,
    ) -> None: ...
    @property
    def requests_per_minute(self) -> Union[int, float]: ...
    def acquire_request_slot(self) -> RequestSlot: ...
    def get_stats(self) -> Dict[str, Any]:
        """active_requests, total_requests, requests_this_minute, requests_per_second,
        requests_per_minute_limit, max_concurrent_limit, min_request_interval."""
