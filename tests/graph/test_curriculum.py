"""Hardness curriculum: GNNO's Beauty defaults, validation, the plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recmodels.graph import CurriculumSchedule, plot_schedule


def test_default_schedule_values():
    schedule = CurriculumSchedule()
    assert (schedule.start_epoch, schedule.pace, schedule.max_hardness) == (19, 0.04, 0.5)
    assert schedule.threshold(0) == 0.0
    assert schedule.threshold(18) == 0.0
    assert schedule.threshold(19) == pytest.approx(0.04)
    assert schedule.threshold(20) == pytest.approx(0.08)
    assert schedule.threshold(29) == pytest.approx(0.44)
    assert schedule.threshold(30) == pytest.approx(0.48)
    assert schedule.threshold(31) == 0.5
    assert schedule.threshold(200) == 0.5


def test_values_agree_with_threshold():
    schedule = CurriculumSchedule(start_epoch=2, pace=0.3, max_hardness=0.8)
    values = schedule.values(6)
    np.testing.assert_allclose(values, [0.0, 0.0, 0.3, 0.6, 0.8, 0.8])
    np.testing.assert_allclose(values, [schedule.threshold(epoch) for epoch in range(6)])
    assert schedule.values(0).shape == (0,)


def test_start_at_zero_and_flat_pace():
    assert CurriculumSchedule(start_epoch=0, pace=0.1).threshold(0) == pytest.approx(0.1)
    np.testing.assert_array_equal(CurriculumSchedule(start_epoch=0, pace=0.0).values(4), np.zeros(4))


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"start_epoch": -1}, "start_epoch"),
        ({"pace": -0.01}, "pace"),
        ({"max_hardness": 1.5}, "max_hardness"),
        ({"max_hardness": -0.1}, "max_hardness"),
    ],
)
def test_rejects_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        CurriculumSchedule(**arguments)


def test_rejects_negative_epochs():
    with pytest.raises(ValueError, match="epoch"):
        CurriculumSchedule().threshold(-1)
    with pytest.raises(ValueError, match="n_epochs"):
        CurriculumSchedule().values(-1)


def test_plot_writes_a_png(tmp_path: Path):
    path = plot_schedule(CurriculumSchedule(), 60, tmp_path / "plots" / "curriculum.png")
    assert path == tmp_path / "plots" / "curriculum.png"
    content = path.read_bytes()
    assert content[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(content) > 5_000
