"""SharedRateLimiter: the original test script's check, concurrency, stats."""

import threading
import time

import pytest

from puzzlegen import SharedRateLimiter

STATS_KEYS = {"active_requests", "total_requests", "requests_this_minute", "requests_per_second",
              "requests_per_minute_limit", "max_concurrent_limit", "min_request_interval"}


def test_five_slots_take_two_seconds():
    limiter = SharedRateLimiter(requests_per_minute=120, min_request_interval=0.5,
                                max_concurrent_requests=2)
    start = time.monotonic()
    for _ in range(5):
        with limiter.acquire_request_slot():
            time.sleep(0.1)
    assert time.monotonic() - start >= 2.0
    s = limiter.get_stats()
    assert set(s) == STATS_KEYS
    assert s["total_requests"] == 5 and s["active_requests"] == 0
    assert s["requests_this_minute"] == 5
    assert s["requests_per_minute_limit"] == 120 and s["max_concurrent_limit"] == 2
    assert s["min_request_interval"] == 0.5


def test_never_more_than_max_concurrent_across_threads():
    limiter = SharedRateLimiter(requests_per_minute=6000, min_request_interval=0.0,
                                max_concurrent_requests=2)
    lock = threading.Lock()
    now = [0]
    peak = [0]

    def work():
        for _ in range(5):
            with limiter.acquire_request_slot():
                with lock:
                    now[0] += 1
                    peak[0] = max(peak[0], now[0])
                time.sleep(0.05)
                with lock:
                    now[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2
    # 20 slots of 50 ms, 2 at a time.
    assert time.monotonic() - start >= 0.45
    assert limiter.get_stats()["total_requests"] == 20


def test_interval_holds_across_threads():
    limiter = SharedRateLimiter(requests_per_minute=6000, min_request_interval=0.2,
                                max_concurrent_requests=10)
    times = []
    lock = threading.Lock()

    def work():
        with limiter.acquire_request_slot():
            with lock:
                times.append(time.monotonic())

    threads = [threading.Thread(target=work) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times.sort()
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.18, gaps


def test_exception_inside_frees_the_slot():
    limiter = SharedRateLimiter(requests_per_minute=6000, min_request_interval=0.0,
                                max_concurrent_requests=1)
    with pytest.raises(KeyError):
        with limiter.acquire_request_slot():
            raise KeyError("x")
    with limiter.acquire_request_slot():
        pass
    assert limiter.get_stats()["active_requests"] == 0


def test_bad_settings_are_value_errors():
    with pytest.raises(ValueError):
        SharedRateLimiter(requests_per_minute=0)
    with pytest.raises(ValueError):
        SharedRateLimiter(requests_per_minute=10, min_request_interval=-1)
    with pytest.raises(ValueError):
        SharedRateLimiter(requests_per_minute=10, max_concurrent_requests=0)
