"""The shared training loop on a tiny linear-regression task: learning, early stopping,
best-weight restore, checkpoint/resume (after SIGKILL too), checkpoint fingerprints and seeding."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from recmodels.data.interactions import Interactions
from recmodels.data.splits import leave_one_out_split
from recmodels.train import (
    CHECKPOINT_FILE,
    CheckpointMismatchError,
    Fingerprint,
    Trainer,
    TrainerConfig,
    TrainingHistory,
    WeightAverage,
    resolve_device,
)

TRUE_WEIGHTS = torch.tensor([[1.5, -2.0, 0.5, 3.0]])


class RegressionTask:
    """Fit ``y = x W* + 1`` with a linear layer behind dropout.

    Exercises both random sources the loop owns: batches are shuffled and the
    targets jittered with the loop's generator; dropout draws from the global one.
    ``scripted`` replaces the validation score by a fixed sequence (by epoch).
    """

    def __init__(self, init_seed: int = 0, scripted: list[float] | None = None, batch_size: int = 16) -> None:
        data = torch.Generator().manual_seed(123)
        self.x = torch.randn(96, 4, generator=data)
        self.y = self.x @ TRUE_WEIGHTS.T + 1.0
        self.x_valid = torch.randn(32, 4, generator=data)
        self.y_valid = self.x_valid @ TRUE_WEIGHTS.T + 1.0
        torch.manual_seed(init_seed)
        self.module = nn.Sequential(nn.Dropout(0.1), nn.Linear(4, 1))
        self.batch_size = batch_size
        self.scripted = scripted
        self.validations = 0
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def batches(self, epoch, generator):
        order = torch.randperm(len(self.x), generator=generator)
        return [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]

    def loss(self, batch, epoch, generator):
        jitter = 0.01 * torch.randn(len(batch), 1, generator=generator)
        return nn.functional.mse_loss(self.module(self.x[batch]), self.y[batch] + jitter)

    def validation_score(self):
        assert not self.module.training and torch.is_inference_mode_enabled()
        epoch = self.validations
        self.validations += 1
        if self.scripted is not None:
            return self.scripted[epoch]
        return -float(nn.functional.mse_loss(self.module(self.x_valid), self.y_valid))

    def epoch_figures(self, epoch):
        return {"weight_norm": float(self.module[1].weight.detach().norm()), "epoch": float(epoch)}

    def record(self, epoch: int, history: TrainingHistory) -> None:
        """``on_epoch`` hook: the weights as they were at the end of each epoch."""
        self.snapshots[epoch] = {name: value.clone() for name, value in self.module.state_dict().items()}


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def _figures(history: TrainingHistory) -> dict:
    figures = history.as_dict()
    del figures["seconds"]  # wall time differs between runs
    return figures


def test_trainer_learns_the_regression():
    task = RegressionTask()
    history = Trainer(TrainerConfig(epochs=10, patience=10, lr=0.2), seed=0).fit(task)
    assert len(history.loss) == len(history.valid_score) == len(history.seconds) == 10
    assert history.valid_score[0] < -5.0  # validation MSE starts large ...
    assert history.best_score > -0.25  # ... and drops well below it
    assert history.loss[-1] < 0.15 * history.loss[0]
    assert history.best_score == max(history.valid_score)
    assert history.best_epoch == history.valid_score.index(history.best_score)
    assert history.extra["epoch"] == [float(e) for e in range(10)]
    assert not task.module.training  # left in eval mode
    assert torch.allclose(task.module[1].weight, TRUE_WEIGHTS, atol=0.3)


def test_adam_betas_reach_the_optimiser(monkeypatch):
    seen = []

    class RecordingAdam(torch.optim.Adam):
        def __init__(self, params, **kwargs):
            seen.append(kwargs["betas"])
            super().__init__(params, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    weights = []
    for betas in ((0.9, 0.98), (0.9, 0.999)):
        task = RegressionTask()
        Trainer(TrainerConfig(epochs=3, patience=3, lr=0.05, adam_betas=betas), seed=0).fit(task)
        weights.append(task.module[1].weight.detach().clone())
    assert seen == [(0.9, 0.98), (0.9, 0.999)]
    assert not torch.equal(*weights)


def test_early_stopping_after_patience_restores_the_best_weights():
    # best at epoch 1, then `patience` = 2 epochs without improvement (a tie is not one)
    scripted = [0.1, 0.5, 0.3, 0.5, 0.9, 0.95, 0.99]
    task = RegressionTask(scripted=scripted)
    history = Trainer(TrainerConfig(epochs=7, patience=2, lr=0.05), seed=0, on_epoch=task.record).fit(task)
    assert history.valid_score == [0.1, 0.5, 0.3, 0.5]  # epochs 0..3; epoch 4 never runs
    assert len(history.loss) == 4 and task.validations == 4
    assert (history.best_epoch, history.best_score) == (1, 0.5)
    assert sorted(task.snapshots) == [0, 1, 2, 3]
    assert not _same_weights(task.snapshots[1], task.snapshots[3])  # training went on after the best epoch
    assert _same_weights(task.module.state_dict(), task.snapshots[1])


def test_min_epochs_keeps_training_past_an_early_plateau():
    # the same script as above would stop after epoch 3; min_epochs holds on until epoch 5
    scripted = [0.1, 0.5, 0.3, 0.5, 0.9, 0.95, 0.99]
    task = RegressionTask(scripted=scripted)
    config = TrainerConfig(epochs=7, patience=2, min_epochs=5, lr=0.05)
    history = Trainer(config, seed=0, on_epoch=task.record).fit(task)
    assert history.valid_score == scripted
    assert (history.best_epoch, history.best_score) == (6, 0.99)


def test_gnno_preset_waits_for_the_curriculum():
    from recmodels.models.sasrec import GNNOConfig, esasrec, with_gnno

    config = with_gnno(esasrec(), GNNOConfig(start_epoch=19))
    assert config.trainer.min_epochs == 19 + config.trainer.patience


def test_best_weights_restored_even_when_training_runs_to_the_end():
    scripted = [0.2, 0.4, 0.9, 0.3, 0.35]
    task = RegressionTask(scripted=scripted)
    history = Trainer(TrainerConfig(epochs=5, patience=10, lr=0.05), seed=0, on_epoch=task.record).fit(task)
    assert len(history.valid_score) == 5 and history.best_epoch == 2
    assert _same_weights(task.module.state_dict(), task.snapshots[2])
    assert not _same_weights(task.module.state_dict(), task.snapshots[4])


def test_max_epochs_caps_the_configured_epochs():
    task = RegressionTask()
    history = Trainer(TrainerConfig(epochs=5, patience=5), seed=0).fit(task, max_epochs=2)
    assert len(history.loss) == 2
    task = RegressionTask()
    history = Trainer(TrainerConfig(epochs=2, patience=5), seed=0).fit(task, max_epochs=9)
    assert len(history.loss) == 2


def test_resume_from_checkpoint_matches_an_uninterrupted_run(tmp_path):
    config = TrainerConfig(epochs=6, patience=10, lr=0.02)

    straight_task = RegressionTask(init_seed=0)
    straight = Trainer(config, seed=3).fit(straight_task)

    first_task = RegressionTask(init_seed=0)
    first = Trainer(TrainerConfig(epochs=3, patience=10, lr=0.02), seed=3, checkpoint_dir=tmp_path).fit(first_task)
    assert len(first.loss) == 3
    checkpoint = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert checkpoint["next_epoch"] == 3
    assert not (tmp_path / "checkpoint.tmp").exists()

    torch.manual_seed(999)  # disturb the global generator: resuming must restore it
    resumed_task = RegressionTask(init_seed=42)  # different initial weights: they must come from the checkpoint
    resumed = Trainer(config, seed=3, checkpoint_dir=tmp_path, on_epoch=resumed_task.record).fit(resumed_task)

    assert sorted(resumed_task.snapshots) == [3, 4, 5]  # continued from epoch 3, nothing repeated
    assert resumed_task.validations == 3
    assert _figures(resumed) == _figures(straight)
    assert len(resumed.seconds) == 6
    assert resumed.loss[:3] == first.loss
    assert _same_weights(resumed_task.module.state_dict(), straight_task.module.state_dict())
    assert torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)["next_epoch"] == 6


def test_resume_keeps_the_best_weights_from_before_the_interruption(tmp_path):
    scripted = [0.1, 0.9, 0.2, 0.3, 0.4]
    first_task = RegressionTask(scripted=scripted, init_seed=0)
    Trainer(TrainerConfig(epochs=3, patience=10), seed=0, checkpoint_dir=tmp_path, on_epoch=first_task.record).fit(
        first_task
    )
    resumed_task = RegressionTask(scripted=scripted[3:], init_seed=5)
    history = Trainer(TrainerConfig(epochs=5, patience=10), seed=0, checkpoint_dir=tmp_path).fit(resumed_task)
    assert history.valid_score == scripted
    assert history.best_epoch == 1
    assert _same_weights(resumed_task.module.state_dict(), first_task.snapshots[1])


def test_same_seed_same_result_and_another_seed_differs():
    config = TrainerConfig(epochs=3, patience=10, lr=0.02)
    runs = []
    for seed in (0, 0, 1):
        task = RegressionTask(init_seed=0)
        history = Trainer(config, seed=seed).fit(task)
        runs.append((task.module.state_dict(), _figures(history)))
    assert _same_weights(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    assert not _same_weights(runs[0][0], runs[2][0])
    assert runs[0][1]["loss"] != runs[2][1]["loss"]


def test_weight_average_validates_and_returns_the_averaged_weights(monkeypatch):
    averages: list[WeightAverage] = []
    original_update = WeightAverage.update

    def tracking_update(self):
        original_update(self)
        averages.append(self)

    monkeypatch.setattr(WeightAverage, "update", tracking_update)
    task = RegressionTask(init_seed=0)
    average_at_epoch = {}

    def record(epoch, history):
        task.record(epoch, history)
        average_at_epoch[epoch] = [tensor.clone() for tensor in averages[-1].average]

    config = TrainerConfig(epochs=3, patience=10, lr=0.05, ema_decay=0.9)
    history = Trainer(config, seed=0, on_epoch=record).fit(task)
    weight, bias = average_at_epoch[history.best_epoch]
    # the module ends with the best epoch's average, not its trained weights ...
    assert torch.equal(task.module[1].weight, weight) and torch.equal(task.module[1].bias, bias)
    # ... while training itself ran on the trained weights, which differ from the average
    assert not torch.equal(task.snapshots[history.best_epoch]["1.weight"], weight)


def test_weight_average_warms_up_and_follows_the_decay():
    module = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        module.weight.fill_(0.0)
    average = WeightAverage(module, decay=0.5)
    with torch.no_grad():
        module.weight.fill_(1.0)
    average.update()  # warm-up decay min(0.5, 1/10) = 0.1
    assert average.average[0].item() == pytest.approx(0.9)
    average.update()  # min(0.5, 2/11)
    assert average.average[0].item() == pytest.approx(0.9 + 0.1 * (1 - 2 / 11))
    for _ in range(20):
        average.update()
    assert average.average[0].item() == pytest.approx(1.0, abs=1e-4)
    assert average.updates == 22
    with pytest.raises(ValueError, match="ema_decay"):
        WeightAverage(module, decay=1.0)


def test_resume_with_a_weight_average_matches_an_uninterrupted_run(tmp_path):
    config = TrainerConfig(epochs=5, patience=10, lr=0.02, ema_decay=0.8)
    straight_task = RegressionTask(init_seed=0)
    straight = Trainer(config, seed=3).fit(straight_task)
    first_task = RegressionTask(init_seed=0)
    Trainer(dataclasses.replace(config, epochs=2), seed=3, checkpoint_dir=tmp_path).fit(first_task)
    resumed_task = RegressionTask(init_seed=7)
    resumed = Trainer(config, seed=3, checkpoint_dir=tmp_path).fit(resumed_task)
    assert _figures(resumed) == _figures(straight)
    assert _same_weights(resumed_task.module.state_dict(), straight_task.module.state_dict())
    # a checkpoint written without an average cannot silently resume with one: ema_decay is in its fingerprint
    plain_dir = tmp_path / "plain"
    Trainer(dataclasses.replace(config, epochs=1, ema_decay=0.0), seed=3, checkpoint_dir=plain_dir).fit(
        RegressionTask()
    )
    with pytest.raises(CheckpointMismatchError, match=r"trainer\.ema_decay 0\.0 -> 0\.8"):
        Trainer(config, seed=3, checkpoint_dir=plain_dir).fit(RegressionTask())


def train_until_killed(checkpoint_dir: str, killed_after_epoch: int) -> None:
    """Run in a child process: the 6-epoch run of the resume tests, SIGKILLed once an epoch's checkpoint is written."""

    def kill(epoch: int, history: TrainingHistory) -> None:
        if epoch == killed_after_epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    Trainer(
        TrainerConfig(epochs=6, patience=10, lr=0.02), seed=3, checkpoint_dir=Path(checkpoint_dir), on_epoch=kill
    ).fit(RegressionTask(init_seed=0))


def test_resume_after_sigkill_in_another_process_matches_an_uninterrupted_run(tmp_path):
    config = TrainerConfig(epochs=6, patience=10, lr=0.02)
    straight_task = RegressionTask(init_seed=0)
    straight = Trainer(config, seed=3).fit(straight_task)
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_train; "
            f"test_train.train_until_killed({str(tmp_path)!r}, killed_after_epoch=2)",
        ],
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL
    assert torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)["next_epoch"] == 3

    resumed_task = RegressionTask(init_seed=42)  # the fingerprint written by the killed process matches this one
    resumed = Trainer(config, seed=3, checkpoint_dir=tmp_path, on_epoch=resumed_task.record).fit(resumed_task)
    assert sorted(resumed_task.snapshots) == [3, 4, 5]
    assert _figures(resumed) == _figures(straight)
    assert _same_weights(resumed_task.module.state_dict(), straight_task.module.state_dict())


def test_a_checkpoint_of_another_learning_rate_is_refused_naming_both_fingerprints_and_the_folder(tmp_path):
    Trainer(TrainerConfig(epochs=3, patience=10, lr=0.02), seed=3, checkpoint_dir=tmp_path).fit(RegressionTask())
    written = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    config = TrainerConfig(epochs=6, patience=10, lr=0.2)
    task = RegressionTask(init_seed=42)

    with pytest.raises(CheckpointMismatchError) as refused:
        Trainer(config, seed=3, checkpoint_dir=tmp_path, on_epoch=task.record).fit(task)

    message = str(refused.value)
    assert f"{written['fingerprint']['config']} (checkpoint) != {Fingerprint.of(task, config, 3).config}" in message
    assert "trainer.lr 0.02 -> 0.2" in message and str(tmp_path) in message
    assert "restart_on_checkpoint_mismatch=True" in message
    assert task.snapshots == {}  # not one epoch ran, neither on the old optimiser state nor afresh
    kept = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert kept["next_epoch"] == 3 and _same_weights(kept["module"], written["module"])


def test_restart_on_checkpoint_mismatch_trains_exactly_like_a_fresh_run_and_overwrites_it(tmp_path, caplog):
    Trainer(TrainerConfig(epochs=3, patience=10, lr=0.02), seed=3, checkpoint_dir=tmp_path).fit(RegressionTask())
    config = TrainerConfig(epochs=4, patience=10, lr=0.2)
    fresh_task = RegressionTask(init_seed=0)
    fresh = Trainer(config, seed=3).fit(fresh_task)

    restarted_task = RegressionTask(init_seed=0)
    restarting = dataclasses.replace(config, restart_on_checkpoint_mismatch=True)
    with caplog.at_level(logging.WARNING, logger="recmodels.train"):
        restarted = Trainer(restarting, seed=3, checkpoint_dir=tmp_path).fit(restarted_task)

    assert "trainer.lr 0.02 -> 0.2" in caplog.text and "training from scratch" in caplog.text
    assert _figures(restarted) == _figures(fresh)
    assert _same_weights(restarted_task.module.state_dict(), fresh_task.module.state_dict())
    overwritten = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert overwritten["next_epoch"] == 4
    assert overwritten["fingerprint"]["config"] == Fingerprint.of(restarted_task, config, 3).config
    # the overwritten checkpoint is the new config's own: a rerun without the option resumes it
    rerun_task = RegressionTask(init_seed=9)
    Trainer(config, seed=3, checkpoint_dir=tmp_path).fit(rerun_task)
    assert _same_weights(rerun_task.module.state_dict(), fresh_task.module.state_dict())


def test_a_checkpoint_trained_past_this_runs_epochs_is_refused(tmp_path):
    Trainer(TrainerConfig(epochs=4, patience=10, lr=0.02), seed=3, checkpoint_dir=tmp_path).fit(RegressionTask())
    with pytest.raises(CheckpointMismatchError, match="trained 4 epochs, more than this run's 2"):
        Trainer(TrainerConfig(epochs=2, patience=10, lr=0.02), seed=3, checkpoint_dir=tmp_path).fit(RegressionTask())
    with pytest.raises(CheckpointMismatchError, match="trained 4 epochs, more than this run's 3"):
        Trainer(TrainerConfig(epochs=6, patience=10, lr=0.02), seed=3, checkpoint_dir=tmp_path).fit(
            RegressionTask(), max_epochs=3
        )


def test_a_checkpoint_without_a_fingerprint_is_refused(tmp_path):
    Trainer(TrainerConfig(epochs=2, patience=10, lr=0.02), seed=3, checkpoint_dir=tmp_path).fit(RegressionTask())
    path = tmp_path / CHECKPOINT_FILE
    state = torch.load(path, weights_only=True)
    del state["fingerprint"]  # as the trainer wrote checkpoints before they carried one
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match="records no fingerprint"):
        Trainer(TrainerConfig(epochs=3, patience=10, lr=0.02), seed=3, checkpoint_dir=tmp_path).fit(RegressionTask())


def _small_model_case(case: str):
    """A family, a config small enough for a quick fit, and a setting to change that keeps every shape.

    Imported here, not at the top: the SIGKILL test's child process imports this module for the trainer only.
    """
    from recmodels.models.diffrec import DiffRec, diffrec
    from recmodels.models.sasrec import SASRec, sasrec

    if case == "sasrec":
        config = dataclasses.replace(
            sasrec(dim=16, max_len=20, ff_mult=2), trainer=TrainerConfig(epochs=1, patience=10, batch_size=64)
        )
        return SASRec, config, "backbone", "dropout", 0.5
    preset = diffrec()
    config = dataclasses.replace(
        preset,
        diffusion=dataclasses.replace(preset.diffusion, steps=5),
        denoiser=dataclasses.replace(preset.denoiser, hidden=(16,)),
        trainer=TrainerConfig(epochs=1, patience=10, batch_size=64, validate_every=1),
    )
    return DiffRec, config, "diffusion", "noise_scale", 0.05


@pytest.mark.parametrize("case", ["diffrec", "sasrec"])
def test_a_finished_checkpoint_is_never_the_model_of_another_config_or_split(case, ml100k_small_raw, tmp_path):
    """A model's fit records its whole config and its split in the checkpoint: a finished checkpoint of
    another model setting (same shapes) or of other data would otherwise come back without training."""
    family, config, section, name, other_value = _small_model_case(case)
    interactions = Interactions.from_frame(ml100k_small_raw)
    split = leave_one_out_split(interactions)
    first = family(config).fit(split, checkpoint_dir=tmp_path)
    again = family(config).fit(split, checkpoint_dir=tmp_path)  # the same config and data: the finished run
    assert _same_weights(again.state_dict(), first.state_dict())

    changed = dataclasses.replace(
        config, **{section: dataclasses.replace(getattr(config, section), **{name: other_value})}
    )
    with pytest.raises(CheckpointMismatchError, match=rf"model\.{section}\.{name} \S+ -> {other_value}"):
        family(changed).fit(split, checkpoint_dir=tmp_path)

    fewer_users = leave_one_out_split(interactions.subset(interactions.frame["user"].to_numpy() >= 10))
    assert fewer_users.n_items == split.n_items  # the same id maps: only the data tells the two apart
    with pytest.raises(CheckpointMismatchError, match=r"data fingerprint [0-9a-f]{64} \(checkpoint\) != [0-9a-f]{64}"):
        family(config).fit(fewer_users, checkpoint_dir=tmp_path)


def test_history_as_dict_round_trips():
    history = TrainingHistory(
        loss=[1.0], valid_score=[0.5], seconds=[0.1], extra={"h": [0.2]}, best_epoch=0, best_score=0.5
    )
    assert TrainingHistory(**history.as_dict()) == history
    assert TrainingHistory().best_score == -math.inf and TrainingHistory().best_epoch == -1


@pytest.mark.parametrize(("cuda_available", "auto"), [(False, "cpu"), (True, "cuda")])
def test_resolve_device(monkeypatch, cuda_available, auto):
    """`auto` follows what torch reports, on a machine with or without a GPU; explicit names are kept."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_available)
    assert resolve_device("auto") == torch.device(auto)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
