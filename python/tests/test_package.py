"""The package surface: names, docstrings (help()), type stubs."""

import ast
from pathlib import Path

import puzzlegen

PUBLIC = ["ApiError", "ImprovedGeminiTaskProcessor", "RequestSlot", "SharedEmbeddingCache",
          "SharedRateLimiter", "create_improved_task_processor"]


def test_public_names_have_docstrings():
    assert puzzlegen.__doc__ and "create_improved_task_processor" in puzzlegen.__doc__
    for name in PUBLIC:
        assert name in puzzlegen.__all__
        assert getattr(puzzlegen, name).__doc__, name
    for cls, methods in [
        (puzzlegen.SharedEmbeddingCache, ["get", "get_batch", "put", "put_batch", "backup_to_csv", "get_stats"]),
        (puzzlegen.SharedRateLimiter, ["acquire_request_slot", "get_stats"]),
        (puzzlegen.ImprovedGeminiTaskProcessor, ["process_themes"]),
    ]:
        for m in methods:
            assert getattr(cls, m).__doc__, f"{cls.__name__}.{m}"
    assert issubclass(puzzlegen.ApiError, RuntimeError)


def test_stubs_cover_the_native_module():
    stub = Path(puzzlegen.__file__).with_name("_native.pyi")
    assert (stub.parent / "py.typed").exists()
    tree = ast.parse(stub.read_text())
    declared = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    assert set(PUBLIC) <= declared
