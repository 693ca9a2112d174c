"""Reading and validating a clean table and a mostly bad one of the same size: bad rows must not be slow rows.

MovieLens-100K tiled to ``--rows`` rows (each copy under its own user ids, so no copy repeats
another), written as CSV; the bad table has ``--bad-share`` of its rows broken, cycling through
every kind of bad row the validation knows (rating out of bounds, not a number, missing; an empty
id, an id that is only blanks; a negative, unparsable, future or int64-overflowing timestamp; a
repeated row) plus ids padded with blanks, which are normalised and kept. Prints the median of
``--repeats`` runs of ``read_table`` and of ``validate_interactions`` (MovieLens rules: ratings
1-5) per table.

    python benchmarks/validation.py                # 1M rows, 89% bad, 3 repeats
    python benchmarks/validation.py --quick        # 100k rows, 1 repeat
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import default_data_dir, finish, progress  # noqa: E402

from recmodels.data.readers import load_dataset, read_table  # noqa: E402
from recmodels.data.schemas import ValidationRules, validate_interactions  # noqa: E402

COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
RULES = ValidationRules(rating_min=1, rating_max=5)
BREAKERS = {
    "rating out of bounds": lambda rows: rows.assign(rating="9"),
    "rating not a number": lambda rows: rows.assign(rating="abc"),
    "rating missing": lambda rows: rows.assign(rating=""),
    "user_id empty": lambda rows: rows.assign(user_id=""),
    "item_id only blanks": lambda rows: rows.assign(item_id="\u00a0\u200b"),
    "timestamp negative": lambda rows: rows.assign(timestamp="-5"),
    "timestamp not a number": lambda rows: rows.assign(timestamp="soon"),
    "timestamp in the future": lambda rows: rows.assign(timestamp="4102444800"),
    "timestamp beyond int64": lambda rows: rows.assign(timestamp="1e20"),
    "duplicate": None,  # a copy of the row before it
}


def tiled(base: pd.DataFrame, rows: int) -> pd.DataFrame:
    copies = -(-rows // len(base))
    frame = pd.concat(
        [base.assign(user_id=base["user_id"] + f"-{copy}") for copy in range(copies)], ignore_index=True
    ).iloc[:rows]
    return frame.astype(str).reset_index(drop=True)


def broken(clean: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    """``share`` of the rows broken, each kind of breakage on an equal part of them; ids padded on the rest."""
    rng = np.random.default_rng(seed)
    frame = clean.copy()
    chosen = np.flatnonzero(rng.random(len(frame)) < share)
    chosen = chosen[chosen > 0]  # a duplicate needs a row before it
    for part, (name, breaker) in zip(np.array_split(rng.permutation(chosen), len(BREAKERS)), BREAKERS.items()):
        if breaker is None:
            frame.loc[part, COLUMNS] = frame.loc[part - 1, COLUMNS].to_numpy()
        else:
            frame.loc[part] = breaker(frame.loc[part])
    kept = np.setdiff1d(np.arange(len(frame)), chosen)
    padded = kept[:: max(len(kept) // 1000, 1)]
    frame.loc[padded, "user_id"] = " " + frame.loc[padded, "user_id"] + "\u00a0"
    return frame


def measure(path: Path, repeats: int) -> dict:
    reads, validations = [], []
    for repeat in range(repeats):
        started = time.perf_counter()
        raw = read_table(path).interactions
        reads.append(time.perf_counter() - started)
        started = time.perf_counter()
        result = validate_interactions(raw, RULES)
        validations.append(time.perf_counter() - started)
        progress(f"{path.name} run {repeat + 1}: read {reads[-1]:.2f} s, validated {validations[-1]:.2f} s")
    return {
        "rows": len(raw),
        "rows_kept": len(result.valid),
        "rows_quarantined": len(result.quarantined),
        "reasons": len(result.by_reason),
        "ids_normalised": result.ids_normalised,
        "read_seconds": round(statistics.median(reads), 2),
        "validate_seconds": round(statistics.median(validations), 2),
    }


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="benchmarks/validation.py", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--bad-share", type=float, default=0.89)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="100k rows, one run")
    options = parser.parse_args()
    rows, repeats = (100_000, 1) if options.quick else (options.rows, options.repeats)
    base = load_dataset(options.data_dir / options.dataset).interactions[COLUMNS]
    clean = tiled(base, rows)
    bad = broken(clean, options.bad_share, options.seed)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for case, frame, share in (("clean", clean, 0.0), ("mostly bad", bad, options.bad_share)):
            path = Path(folder) / f"{case.replace(' ', '_')}.csv"
            frame.to_csv(path, index=False)
            progress(f"{case}: {len(frame)} rows written to {path}")
            results.append({"dataset": options.dataset, "case": case, "bad_share": share, **measure(path, repeats)})
    clean_seconds, bad_seconds = (result["validate_seconds"] for result in results)
    finish("validation", results, validate_slowdown=round(bad_seconds / max(clean_seconds, 1e-9), 2))


if __name__ == "__main__":
    main()
