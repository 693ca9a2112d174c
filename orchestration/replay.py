"""Replay a dataset into the incoming folder, one time window per file, for the live loop to pick up.

``python -m orchestration.replay [--interval 30] [--limit N]`` (or ``make replay``) while
``make ui`` runs: the incoming-file sensor sees each file and asks for its window's landing run
(and drift report, once there is a champion), and the drift sensor retrains when they say so.
Files stay in the incoming folder (the loop never moves them); replaying again into the same
folder rewrites them, which the sensor sees as changed files.
"""

import argparse
import time
from pathlib import Path

import pandas as pd

from orchestration.assets.live import StreamResource
from orchestration.resources import DatasetResource
from recmodels.data.readers import ColumnMap, load_dataset
from recmodels.data.stream import replay_batches

COLUMNS = ["user_id", "item_id", "rating", "timestamp"]


def window_files(rows: pd.DataFrame, window_days: int) -> list[tuple[str, pd.DataFrame]]:
    """``(file name, rows)`` per window, named so that name order is time order."""
    return [(f"interactions-{key}.csv", batch[COLUMNS]) for key, batch in replay_batches(rows, window_days)]


def drop(incoming: Path, name: str, rows: pd.DataFrame) -> Path:
    """Write next to the target and rename, so the sensor never reads a half-written file."""
    incoming.mkdir(parents=True, exist_ok=True)
    partial = incoming / f".{name}.partial"
    rows.to_csv(partial, index=False)
    return partial.replace(incoming / name)


def main() -> None:
    dataset, stream = DatasetResource(), StreamResource()
    parser = argparse.ArgumentParser(prog="python -m orchestration.replay", description=__doc__)
    parser.add_argument("--source", type=Path, default=dataset.source, help="dataset to replay")
    parser.add_argument("--incoming", type=Path, default=stream.incoming_path)
    parser.add_argument("--window-days", type=int, default=stream.window_days)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between two files")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many windows")
    options = parser.parse_args()
    columns = dataset.column_map if options.source == dataset.source else ColumnMap()  # the map is the dataset's
    files = window_files(load_dataset(options.source, columns).interactions, options.window_days)[: options.limit]
    for index, (name, rows) in enumerate(files):
        path = drop(options.incoming, name, rows)
        print(f"[{time.strftime('%H:%M:%S')}] {index + 1}/{len(files)} {path} ({len(rows)} rows)", flush=True)
        if index + 1 < len(files):
            time.sleep(options.interval)


if __name__ == "__main__":
    main()
