"""Data-parallel training on ML-1M: seconds per epoch, communication and peak memory per rank for eSASRec and
DiffRec (their presets, the global batch of the preset) in three layouts of the same 2 cores:

- ``1x2``: one process, two torch threads (``python -m recmodels.launch``);
- ``2x1``: two ranks on this host, one thread each (``torchrun --standalone --nproc-per-node 2``);
- ``2hosts``: two ranks on two hosts, network namespaces joined by a veth pair (``benchmarks.hosts``), one
  thread each, rendezvous and gloo over that link (root needed).

Prints one JSON line; the log goes to stderr.

    .venv/bin/python benchmarks/distributed.py [--model esasrec diffrec] [--layout 1x2 2x1 2hosts] [--epochs 2]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import finish, parser, prepare, progress  # noqa: E402
from benchmarks.hosts import network_hosts  # noqa: E402
from recmodels.data.splits import save_split  # noqa: E402
from recmodels.launch import TRAINING_FILE  # noqa: E402
from recmodels.models.diffrec import diffrec  # noqa: E402
from recmodels.models.sasrec import esasrec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
MODELS = {"esasrec": ("sasrec", esasrec), "diffrec": ("diffrec", diffrec)}


def _launch_arguments(family: str, config: Path, split: Path, out: Path) -> list[str]:
    return ["-m", "recmodels.launch", "--family", family, "--config", str(config), "--split", str(split)] + [
        "--out",
        str(out),
    ]


def _run(commands: list[tuple[list[str], dict[str, str]]]) -> None:
    processes = [
        subprocess.Popen(command, env=os.environ | {"PYTHONPATH": str(ROOT)} | env, cwd=ROOT, stderr=subprocess.PIPE)
        for command, env in commands
    ]
    errors = [process.communicate()[1].decode(errors="replace") for process in processes]
    for process, error in zip(processes, errors):
        if process.returncode != 0:
            raise RuntimeError(f"{process.args[:6]}... exited {process.returncode}:\n{error[-3000:]}")


def _one_process(arguments: list[str]) -> None:
    _run([([sys.executable, *arguments], {"OMP_NUM_THREADS": "2"})])


def _two_local_ranks(arguments: list[str]) -> None:
    _run([([TORCHRUN, "--standalone", "--nproc-per-node", "2", *arguments], {"OMP_NUM_THREADS": "1"})])


def _two_hosts(arguments: list[str]) -> None:
    with network_hosts(2) as hosts:
        rendezvous = ["--nnodes", "2", "--nproc-per-node", "1", "--master-addr", hosts[0].address, "--master-port"]
        _run(
            [
                (
                    host.command(TORCHRUN, *rendezvous, "29500", "--node-rank", str(rank), *arguments),
                    {"OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": host.interface},
                )
                for rank, host in enumerate(hosts)
            ]
        )


LAYOUTS = {"1x2": _one_process, "2x1": _two_local_ranks, "2hosts": _two_hosts}


def main() -> None:
    args = parser("distributed", ["ml-1m-seq/ml-1m.txt"], list(MODELS))
    args.add_argument("--layout", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    options = args.parse_args()
    epochs = options.epochs or 2
    results = []
    with tempfile.TemporaryDirectory(prefix="recpipe-distributed-") as scratch:
        folder = Path(scratch)
        for dataset in options.dataset:
            prepared = prepare(options.data_dir, dataset, options.quick)
            split = folder / "split"
            save_split(prepared.split, split)
            for name in options.model:
                family, preset = MODELS[name]
                config = preset().to_dict()
                config["seed"] = options.seed
                config["trainer"] |= {"epochs": epochs, "patience": epochs, "device": "cpu"}
                config_file = folder / f"{name}.json"
                config_file.write_text(json.dumps(config))
                for layout in options.layout:
                    progress(f"{dataset}: {name} {layout}, {epochs} epochs")
                    out = folder / f"{name}-{layout}"
                    LAYOUTS[layout](_launch_arguments(family, config_file, split, out))
                    record = json.loads((out / TRAINING_FILE).read_text())
                    history = record["history"]
                    steps = record["gradient_syncs"] / len(history["loss"]) if record["gradient_syncs"] else None
                    row = {
                        "dataset": dataset,
                        "model": name,
                        "layout": layout,
                        "ranks": record["ranks"],
                        "epochs": len(history["loss"]),
                        "batch_size": config["trainer"]["batch_size"],
                        "seconds_per_epoch": round(sum(history["seconds"]) / len(history["seconds"]), 2),
                        "train_seconds": round(record["seconds"], 1),
                        "communication_seconds_per_epoch": round(record["communication_seconds"] / epochs, 2),
                        "communication_ms_per_step": (
                            round(1000 * record["communication_seconds"] / epochs / steps, 3) if steps else None
                        ),
                        "steps_per_epoch": steps,
                        "peak_rss_mb_per_rank": record["peak_rss_mb"],
                        "loss": [round(value, 5) for value in history["loss"]],
                        "valid_score": [round(value, 5) for value in history["valid_score"]],
                        "same_state_on_every_rank": len(set(record["state_sha256"])) == 1,
                    }
                    progress(f"  {row}")
                    results.append(row)
    finish("distributed", results)


if __name__ == "__main__":
    main()
