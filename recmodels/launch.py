"""Train one model as one rank of a ``torchrun`` world (or as a single process) and write it.

    torchrun --nproc-per-node 2 -m recmodels.launch --family sasrec --config config.json \\
        --split artifacts/split/<md5> --out trained/ [--input overlap=artifacts/item_neighbourhood_overlap/<md5>] \\
        [--checkpoint-dir checkpoints/] [--max-epochs N]

Two hosts: the same command on each with ``--nnodes 2 --node-rank R --master-addr <host 0> --master-port P``.
Every rank reads the same stored inputs and trains its share of each batch (``recmodels.distributed``);
rank 0 writes the model into a scratch folder and moves it into place, with ``training.json`` (the history
and the world's size). A model asset with ``ranks`` > 1 runs this through ``orchestration.ranks``, which
adds Dagster Pipes on rank 0.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import resource
import shutil
import time
from pathlib import Path
from typing import Any

from recmodels.cluster import ItemClusters
from recmodels.data.splits import load_split
from recmodels.distributed import World, current_world
from recmodels.features.modalities import ItemModalities
from recmodels.graph import NeighbourhoodOverlap
from recmodels.models import Recommender, model_family

# fit() keywords of the inputs a family may read besides the split, and the type each is stored as
FIT_INPUT_TYPES = {"overlap": NeighbourhoodOverlap, "clusters": ItemClusters, "modalities": ItemModalities}
TRAINING_FILE = "training.json"


def train(
    family: str,
    config: dict[str, Any],
    split: Path,
    out: Path,
    inputs: dict[str, Path] | None = None,
    checkpoint_dir: Path | None = None,
    max_epochs: int | None = None,
    world: World | None = None,
) -> Recommender:
    """Fit ``family`` with ``config`` on the stored split (and inputs); rank 0 writes it to ``out``."""
    world = world if world is not None else current_world()
    unknown = set(inputs or {}) - set(FIT_INPUT_TYPES)
    if unknown:
        raise ValueError(f"unknown fit inputs {sorted(unknown)}; known: {sorted(FIT_INPUT_TYPES)}")
    cls = model_family(family)
    model = cls(cls.config_class.from_dict(config))
    extras: dict[str, Any] = {name: FIT_INPUT_TYPES[name].load(Path(folder)) for name, folder in (inputs or {}).items()}
    if checkpoint_dir is not None:
        extras["checkpoint_dir"] = Path(checkpoint_dir)
    if max_epochs is not None:
        extras["max_epochs"] = max_epochs
    started = time.perf_counter()
    model.fit(load_split(Path(split)), **extras)
    seconds = time.perf_counter() - started
    digests = world.gathered(state_digest(model))
    peaks = world.gathered(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if world.is_main:
        out = Path(out)
        scratch = out.with_name(f".{out.name}.partial")
        shutil.rmtree(scratch, ignore_errors=True)
        model.save(scratch)
        history = getattr(model, "history", None)
        record = {
            "ranks": world.size,
            "seconds": seconds,
            # every rank must end with the weights rank 0 writes: a rank that drifted would show here
            "state_sha256": digests,
            "peak_rss_mb": [round(peak, 1) for peak in peaks],
            "communication_seconds": world.communication_seconds,
            "gradient_syncs": world.gradient_syncs,
            "history": history.as_dict() if history else None,
        }
        (scratch / TRAINING_FILE).write_text(json.dumps(record, indent=2))
        shutil.rmtree(out, ignore_errors=True)
        scratch.replace(out)
    world.barrier()
    return model


def state_digest(model: Recommender) -> str:
    """SHA-256 of the trained model's state (what ``save`` writes), tensor by tensor in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> Path:
    """Parse the command line, train, return where rank 0 wrote the model."""
    parser = argparse.ArgumentParser(prog="python -m recmodels.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", required=True)
    parser.add_argument("--config", type=Path, required=True, help="the model config as JSON")
    parser.add_argument("--split", type=Path, required=True, help="a stored split folder")
    parser.add_argument("--out", type=Path, required=True, help="where rank 0 writes the model")
    parser.add_argument("--input", action="append", default=[], metavar="KEYWORD=FOLDER", help="a fit input")
    parser.add_argument("--checkpoint-dir", type=Path, default=None)
    parser.add_argument("--max-epochs", type=int, default=None)
    args = parser.parse_args(argv)
    inputs = {}
    for item in args.input:
        keyword, sep, folder = item.partition("=")
        if not sep:
            parser.error(f"--input {item!r} must look like KEYWORD=FOLDER")
        inputs[keyword] = Path(folder)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = json.loads(args.config.read_text())
    train(args.family, config, args.split, args.out, inputs, args.checkpoint_dir, args.max_epochs)
    return args.out


if __name__ == "__main__":
    main()
