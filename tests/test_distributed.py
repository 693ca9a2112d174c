"""Data-parallel training (``recmodels.distributed`` in the one training loop, launched by ``torchrun``): two ranks
on two hosts (network namespaces joined by a veth pair, rendezvous over that link) train the single
process's loss curve on real ML-1M sequences, the model rank 0 writes scores as trained, and a checkpoint
of two ranks resumes on one."""

from __future__ import annotations

import dataclasses
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
from recmodels.evaluation import stage_metric
from recmodels.features.modalities import ItemModalities
from recmodels.graph import NeighbourhoodConfig
from recmodels.launch import TRAINING_FILE, train
from recmodels.models import Recommender
from recmodels.models.diffrec import diffrec, l_diffrec, t_diffrec
from recmodels.models.efficientrec import EfficientRecConfig, ItemEncoderConfig
from recmodels.models.multimodal import demure
from recmodels.models.sasrec import esasrec, with_gnno
from recmodels.train import TrainerConfig

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


def _launch(config: dict, split: Path, out: Path, folder: Path, *extra: str, family: str = "sasrec") -> list[str]:
    path = folder / f"config-{config['trainer']['epochs']}.json"
    path.write_text(json.dumps(config))
    return ["-m", "recmodels.launch", "--family", family, "--config", str(path), "--split", str(split)] + [
        "--out",
        str(out),
        *extra,
    ]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _two_local_ranks(arguments: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [TORCHRUN, "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
        + arguments,
        env=_environment(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _environment(**extra: str) -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"} | extra


def _finished(processes: list[subprocess.Popen]) -> None:
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    assert [process.returncode for process in processes] == [0] * len(processes), "\n".join(outputs)


ML1M = pytest.mark.needs_shared_data("ml-1m-seq/ml-1m.txt")


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


@ML1M
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
    assert len(set(record["state_sha256"])) == 1  # both ranks hold the weights rank 0 wrote
    np.testing.assert_allclose(record["history"]["loss"], single["history"]["loss"], rtol=1e-5)
    np.testing.assert_allclose(record["history"]["valid_score"], single["history"]["valid_score"], rtol=1e-5)
    assert len(record["history"]["communication_seconds"]) == EPOCHS
    reloaded = Recommender.load(out)
    valid = stage_metric(reloaded, load_split(stored_split).valid, reloaded.config.valid_metric)
    assert valid == pytest.approx(record["history"]["best_score"], rel=1e-6)


@ML1M
def test_a_checkpoint_of_two_ranks_resumes_on_one(stored_split, single, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    first_epoch = _two_local_ranks(
        _launch(_config(epochs=1), stored_split, tmp_path / "one-epoch", tmp_path, "--checkpoint-dir", str(checkpoints))
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


SHORT = TrainerConfig(epochs=1, batch_size=64, device="cpu")
SMALL_SEQUENCE = {"dim": 16, "max_len": 20, "ff_mult": 2}
# One case per torch family and per part the loop treats specially: parameter groups (L-DiffRec), a
# curriculum sampler with its own inputs (GNNO), in-batch negatives (EfficientRec), per-epoch noise labels
# and a contrastive term over the batch (Demure).
FAMILY_CASES = {
    "esasrec_gnno": ("sasrec", dataclasses.replace(with_gnno(esasrec(**SMALL_SEQUENCE)), trainer=SHORT)),
    "diffrec": ("diffrec", dataclasses.replace(diffrec(), trainer=SHORT)),
    "l_diffrec": ("diffrec", dataclasses.replace(l_diffrec(), trainer=SHORT)),
    "t_diffrec": ("diffrec", dataclasses.replace(t_diffrec(), trainer=SHORT)),
    "efficientrec": ("efficientrec", EfficientRecConfig(items=ItemEncoderConfig(dim=16, hidden=32), trainer=SHORT)),
    "demure": ("multimodal", dataclasses.replace(demure(**SMALL_SEQUENCE), trainer=SHORT)),
}
FIT_INPUTS = {"sasrec": "overlap", "multimodal": "modalities"}


@pytest.fixture(scope="module")
def small_inputs(ml100k_small_raw, ml100k_items, encoder, tmp_path_factory) -> dict[str, Path]:
    """ML-100K's first 300 users, leave-one-out, stored with the inputs the families read."""
    split = leave_one_out_split(Interactions.from_frame(ml100k_small_raw))
    folders = {name: tmp_path_factory.mktemp(name) for name in ("split", "overlap", "modalities")}
    save_split(split, folders["split"])
    NeighbourhoodConfig(top_m=20).build(split.train.sequences(), split.n_items).save(folders["overlap"])
    ItemModalities.from_items(ml100k_items, split.train.item_ids, encoder).save(folders["modalities"])
    return folders


@pytest.mark.parametrize("case", sorted(FAMILY_CASES))
def test_every_torch_family_trains_on_two_ranks_through_the_one_loop(case, small_inputs, tmp_path):
    family, config = FAMILY_CASES[case]
    keyword = FIT_INPUTS.get(family)
    inputs = [] if keyword is None else ["--input", f"{keyword}={small_inputs[keyword]}"]
    out = tmp_path / "model"
    _finished(
        [_two_local_ranks(_launch(config.to_dict(), small_inputs["split"], out, tmp_path, *inputs, family=family))]
    )
    record = json.loads((out / TRAINING_FILE).read_text())
    assert record["ranks"] == 2
    assert len(set(record["state_sha256"])) == 1, record["state_sha256"]
    assert all(np.isfinite(record["history"]["loss"]))
    reloaded = Recommender.load(out)
    valid = stage_metric(reloaded, load_split(small_inputs["split"]).valid, reloaded.config.valid_metric)
    assert valid == pytest.approx(record["history"]["best_score"], rel=1e-6)
