"""pandas baseline for the cache import: `pandas.read_csv` of a backup-layout CSV.

    bench/.venv/bin/python bench/pandas_import.py FILE [RUNS]

Reads FILE into a DataFrame RUNS times (default 3) and prints the median seconds as
`pandas_read_csv_seconds <s>`, the line bench/cache.sh compares with puzzlegen's import.
Only the parse is timed: pandas keeps the frame in memory, it writes no database.
"""

import statistics
import sys
import time

import pandas as pd


def main() -> None:
    path = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        frame = pd.read_csv(path)
        times.append(time.perf_counter() - t)
        shape = frame.shape
        del frame
    print(f"pandas_version {pd.__version__}")
    print(f"pandas_shape {shape[0]}x{shape[1]}")
    print(f"pandas_read_csv_runs {' '.join(f'{s:.3f}' for s in times)}")
    print(f"pandas_read_csv_seconds {statistics.median(times):.3f}")


if __name__ == "__main__":
    main()
