"""How SASRec forms its training batches, on real ML-1M sequences of 300 users."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from recmodels.data.interactions import Interactions
from recmodels.data.splits import SplitData, leave_one_out_split
from recmodels.models.sasrec import SASRec, _NextItemTask, sasrec_ss

N_USERS = 300

pytestmark = pytest.mark.needs_shared_data("ml-1m-seq/ml-1m.txt")


@pytest.fixture(scope="module")
def split(ml1m_seq_raw) -> SplitData:
    keep = ml1m_seq_raw["user_id"].astype(np.int64) <= N_USERS
    return leave_one_out_split(Interactions.from_frame(ml1m_seq_raw.loc[keep].reset_index(drop=True)))


def _task(split: SplitData, group_by_length: bool) -> _NextItemTask:
    preset = sasrec_ss(dim=16, max_len=50)
    trainer = dataclasses.replace(preset.trainer, batch_size=32, device="cpu")
    config = dataclasses.replace(preset, trainer=trainer, group_by_length=group_by_length)
    torch.manual_seed(0)
    return SASRec(config)._training_task(split, overlap=None)


@pytest.mark.parametrize("group_by_length", [True, False])
def test_every_user_trains_once_per_epoch(split, group_by_length):
    task = _task(split, group_by_length)
    batches = task._user_batches(torch.Generator().manual_seed(0))
    seen = np.concatenate(batches)
    assert len(seen) == len(task.users)
    assert set(seen) == set(task.users)


def test_grouped_batches_hold_users_of_similar_length(split):
    lengths = split.train.sequences().lengths
    spread = {
        grouped: np.mean(
            [np.ptp(lengths[batch]) for batch in _task(split, grouped)._user_batches(torch.Generator().manual_seed(0))]
        )
        for grouped in (True, False)
    }
    assert spread[True] < 0.25 * spread[False]


def test_no_target_without_history(split):
    """A user's first item is never a target: nothing precedes it to predict it from."""
    task = _task(split, group_by_length=True)
    for batch in task.batches(0, torch.Generator().manual_seed(0)):
        assert not ((batch.targets > 0) & (batch.inputs == 0)).any()
        assert torch.equal((batch.targets > 0).sum(1), (batch.inputs > 0).sum(1))
