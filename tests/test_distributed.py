"""Data-parallel training (``recmodels.distributed`` in the one training loop, launched by ``torchrun``): two ranks
on two hosts (network namespaces joined by a veth pair, rendezvous over that link) train the single
process's loss curve on real ML-1M sequences, the model rank 0 writes scores as trained, and a checkpoint
of two ranks resumes on one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from recmodels.data.interactions import Interactions
from recmodels.data.splits import leave_one_out_split, load_split, save_split
from recmodels.distributed import World
from recmodels.evaluation import evaluate
from recmodels.launch import TRAINING_FILE, train
from recmodels.models import Recommender
from recmodels.models.sasrec import esasrec

N_USERS = 600
EPOCHS = 2
BATCH_SIZE = 64  # the global batch: 32 rows per rank with two
ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))


@dataclass(frozen=True)
class _Rows:
    index: int
    items: torch.Tensor
    users: np.ndarray
    histories: torch.Tensor | None


def test_each_rank_takes_a_contiguous_share_of_every_row_field():
    batch = _Rows(7, torch.arange(10).view(5, 2), np.arange(5), None)
    shards = [World(rank, 2).shard(batch) for rank in range(2)]
    assert [rows for _, rows in shards] == [2, 3]
    assert torch.equal(torch.cat([shard.items for shard, _ in shards]), batch.items)
    assert np.array_equal(np.concatenate([shard.users for shard, _ in shards]), batch.users)
    assert all(shard.index == 7 and shard.histories is None for shard, _ in shards)
    assert World().shard(batch) == (batch, 5)


def _config(epochs: int = EPOCHS) -> dict:
    """eSASRec with a loss that is a function of the batch alone: the full softmax and no dropout. (Sampled
    negatives and dropout masks are drawn per rank, so with them two ranks agree with one in distribution,
    not number for number.)"""
    config = esasrec(dim=32, max_len=50, dropout=0.0).to_dict()
    config["loss"] = {"kind": "full_softmax"}
    config["trainer"] |= {"epochs": epochs, "batch_size": BATCH_SIZE, "device": "cpu"}
    return config


def _launch(config: dict, split: Path, out: Path, folder: Path, *extra: str) -> list[str]:
    path = folder / f"config-{config['trainer']['epochs']}.json"
    path.write_text(json.dumps(config))
    return ["-m", "recmodels.launch", "--family", "sasrec", "--config", str(path), "--split", str(split)] + [
        "--out",
        str(out),
        *extra,
    ]


def _environment(**extra: str) -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"} | extra


def _finished(processes: list[subprocess.Popen]) -> None:
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    assert [process.returncode for process in processes] == [0] * len(processes), "\n".join(outputs)


pytestmark = pytest.mark.needs_shared_data("ml-1m-seq/ml-1m.txt")


@pytest.fixture(scope="module")
def stored_split(ml1m_seq_raw, tmp_path_factory) -> Path:
    keep = ml1m_seq_raw["user_id"].astype(np.int64) <= N_USERS
    split = leave_one_out_split(Interactions.from_frame(ml1m_seq_raw.loc[keep].reset_index(drop=True)))
    folder = tmp_path_factory.mktemp("split")
    save_split(split, folder)
    return folder


@pytest.fixture(scope="module")
def single(stored_split, tmp_path_factory) -> dict:
    """One process, the whole batch: the reference curve."""
    out = tmp_path_factory.mktemp("single") / "model"
    train("sasrec", _config(), stored_split, out, world=World())
    return json.loads((out / TRAINING_FILE).read_text())


def test_two_ranks_on_two_hosts_train_the_single_process_loss_curve(two_hosts, stored_split, single, tmp_path):
    out = tmp_path / "model"
    master = two_hosts[0]
    processes = [
        subprocess.Popen(
            host.command(TORCHRUN, "--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1")
            + ["--master-addr", master.address, "--master-port", "29500"]
            + _launch(_config(), stored_split, out, tmp_path),
            env=_environment(GLOO_SOCKET_IFNAME=host.interface),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank, host in enumerate(two_hosts)
    ]
    _finished(processes)
    record = json.loads((out / TRAINING_FILE).read_text())
    assert record["ranks"] == 2
    np.testing.assert_allclose(record["history"]["loss"], single["history"]["loss"], rtol=1e-5)
    np.testing.assert_allclose(record["history"]["valid_score"], single["history"]["valid_score"], rtol=1e-5)
    assert len(record["history"]["communication_seconds"]) == EPOCHS
    reloaded = Recommender.load(out)
    valid = evaluate(reloaded, load_split(stored_split).valid, (10,)).metrics["ndcg@10"]
    assert valid == pytest.approx(record["history"]["best_score"], rel=1e-6)


def test_a_checkpoint_of_two_ranks_resumes_on_one(stored_split, single, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    first_epoch = subprocess.Popen(
        [TORCHRUN, "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(port)]
        + _launch(
            _config(epochs=1), stored_split, tmp_path / "one-epoch", tmp_path, "--checkpoint-dir", str(checkpoints)
        ),
        env=_environment(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _finished([first_epoch])
    out = tmp_path / "resumed"
    train("sasrec", _config(), stored_split, out, checkpoint_dir=checkpoints, world=World())
    resumed = json.loads((out / TRAINING_FILE).read_text())
    assert resumed["ranks"] == 1
    assert len(resumed["history"]["communication_seconds"]) == EPOCHS  # the resumed epoch communicated nothing
    assert resumed["history"]["communication_seconds"][1] == 0.0
    np.testing.assert_allclose(resumed["history"]["loss"], single["history"]["loss"], rtol=1e-5)
    np.testing.assert_allclose(resumed["history"]["valid_score"], single["history"]["valid_score"], rtol=1e-5)
