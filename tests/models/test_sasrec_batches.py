"""How SASRec's training batches are formed and weighed, on real ML-1M sequences of 300 users."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from recmodels.data.interactions import Interactions
from recmodels.data.splits import SplitData, leave_one_out_split
from recmodels.models.sasrec import SASRec, _NextItemTask, sasrec_ss
from recmodels.nn.layers import SequenceBackbone
from recmodels.nn.losses import FullSoftmaxConfig

N_USERS = 300
BATCH = 32


@pytest.fixture(scope="module")
def split(ml1m_seq_raw) -> SplitData:
    keep = ml1m_seq_raw["user_id"].astype(np.int64) <= N_USERS
    return leave_one_out_split(Interactions.from_frame(ml1m_seq_raw.loc[keep].reset_index(drop=True)))


def _task(split: SplitData, group_by_length: bool, equal_position_weights: bool) -> _NextItemTask:
    """A deterministic task (no dropout, full softmax) so batch losses can be compared exactly."""
    config = dataclasses.replace(
        sasrec_ss(dim=16, max_len=50, dropout=0.0),
        loss=FullSoftmaxConfig(),
        group_by_length=group_by_length,
        equal_position_weights=equal_position_weights,
    )
    torch.manual_seed(0)
    module = SequenceBackbone(split.n_items, config.backbone)
    sequences = split.train.sequences()
    users = np.flatnonzero(sequences.lengths >= 2)
    positions = np.minimum(sequences.lengths[users] - 1, config.backbone.max_len)
    return _NextItemTask(
        module=module,
        model=SASRec(config),
        split=split,
        sequences=sequences,
        users=users,
        loss_fn=config.loss.build(),
        sampler=None,
        schedule=None,
        device=torch.device("cpu"),
        batch_size=BATCH,
        group_by_length=group_by_length,
        positions_per_batch=float(positions.mean()) * BATCH if equal_position_weights else None,
    )


def _epoch(task: _NextItemTask) -> tuple[list[torch.Tensor], list[int]]:
    generator = torch.Generator().manual_seed(0)
    losses, positions = [], []
    with torch.no_grad():
        for batch in task.batches(0, generator):
            losses.append(task.loss(batch, 0, generator))
            positions.append(int((batch.targets > 0).sum()))
    return losses, positions


@pytest.mark.parametrize("group_by_length", [True, False])
def test_every_user_trains_once_per_epoch(split, group_by_length):
    task = _task(split, group_by_length, equal_position_weights=False)
    batches = task._user_batches(torch.Generator().manual_seed(0))
    seen = np.concatenate(batches)
    assert len(seen) == len(task.users)
    assert set(seen) == set(task.users)


def test_grouped_batches_hold_users_of_similar_length(split):
    lengths = split.train.sequences().lengths
    spread = {
        grouped: np.mean([np.ptp(lengths[batch]) for batch in _task(split, grouped, False)._user_batches(torch.Generator().manual_seed(0))])
        for grouped in (True, False)
    }
    assert spread[True] < 0.25 * spread[False]


def test_equal_position_weights_make_grouped_batches_weigh_every_position_alike(split):
    """Plain batch means weigh a position by 1 / (positions in its batch), which varies
    several-fold across grouped batches; weighted, every position counts 1 / (positions
    in an average batch), so an epoch adds up to the mean over all positions times
    users / batch size, as mixed batches would."""
    task = _task(split, group_by_length=True, equal_position_weights=True)
    weighted, positions = _epoch(task)
    plain, _ = _epoch(_task(split, group_by_length=True, equal_position_weights=False))
    positions = torch.tensor(positions, dtype=torch.float64)
    weighted, plain = torch.stack(weighted).double(), torch.stack(plain).double()
    assert float(positions.min() / positions.max()) < 0.5
    assert torch.allclose(weighted / plain, positions / task.positions_per_batch, rtol=1e-5)
    position_mean = (plain * positions).sum() / positions.sum()
    assert float(weighted.sum()) == pytest.approx(float(position_mean * len(task.users) / BATCH), rel=1e-5)


def test_no_target_without_history(split):
    """A user's first item is never a target: nothing precedes it to predict it from."""
    task = _task(split, group_by_length=True, equal_position_weights=False)
    for batch in task.batches(0, torch.Generator().manual_seed(0)):
        assert not ((batch.targets > 0) & (batch.inputs == 0)).any()
        assert torch.equal((batch.targets > 0).sum(1), (batch.inputs > 0).sum(1))
