"""Gaussian diffusion over interaction vectors, the importance step sampler and the MLP denoiser.

Expected values are computed here, apart from the library: by hand on a 3-step schedule
with variances 0.1, 0.2, 0.3 (alpha_bar 0.9, 0.8, 0.7, so every coefficient is a simple
fraction), and with numpy in float64 from the paper's formulas for the presets.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recmodels.nn.denoiser import DenoiserConfig, MLPDenoiser, step_embedding
from recmodels.nn.diffusion import DiffusionConfig, GaussianDiffusion, ImportanceStepSampler, linear_variance_betas

SEED = 11
# variance = linspace(0.1, 0.3, 3) -> alpha_bar = [0.9, 0.8, 0.7] when beta_0 is not fixed
TINY = DiffusionConfig(steps=3, noise_scale=1.0, noise_min=0.1, noise_max=0.3, beta_fixed=False)
TINY_BETAS = [0.1, 1 - 0.8 / 0.9, 1 - 0.7 / 0.8]  # = [1/10, 1/9, 1/8]
TINY_ALPHA_BAR = [0.9, 0.8, 0.7]


def _reference_betas(steps: int, scale: float, low: float, high: float, beta_fixed: bool) -> np.ndarray:
    """The "linear-var" betas written out: beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}, capped at 0.999."""
    alpha_bar = 1.0 - np.linspace(scale * low, scale * high, steps, dtype=np.float64)
    betas = [1e-5 if beta_fixed else scale * low]
    for t in range(1, steps):
        betas.append(min(1.0 - alpha_bar[t] / alpha_bar[t - 1], 0.999))
    return np.array(betas)


def _reference_alpha_bar(config: DiffusionConfig) -> np.ndarray:
    betas = _reference_betas(config.steps, config.noise_scale, config.noise_min, config.noise_max, config.beta_fixed)
    return np.cumprod(1.0 - betas)


# --- schedule --------------------------------------------------------------------------------------


def test_tiny_schedule_betas_by_hand():
    assert linear_variance_betas(TINY) == pytest.approx(TINY_BETAS, rel=1e-12)
    fixed = DiffusionConfig(steps=3, noise_scale=1.0, noise_min=0.1, noise_max=0.3, beta_fixed=True)
    assert linear_variance_betas(fixed) == pytest.approx([1e-5, 1 / 9, 1 / 8], rel=1e-12)


@pytest.mark.parametrize(
    "config",
    [
        DiffusionConfig(),  # DiffRec's ML-1M preset: 40 steps, scale 0.005, [0.005, 0.01], beta_0 fixed
        DiffusionConfig(noise_max=0.02, beta_fixed=False),  # L-DiffRec's
        DiffusionConfig(steps=7, noise_scale=0.5, noise_min=0.1, noise_max=1.5),
    ],
    ids=["diffrec", "l_diffrec", "larger_noise"],
)
def test_betas_follow_the_linear_variance_formula(config):
    expected = _reference_betas(config.steps, config.noise_scale, config.noise_min, config.noise_max, config.beta_fixed)
    betas = linear_variance_betas(config)
    assert betas.dtype == np.float64 and betas.shape == (config.steps,)
    np.testing.assert_allclose(betas, expected, rtol=1e-12, atol=0)


def test_alpha_bar_is_one_minus_the_linear_variance_when_beta_0_is_free():
    config = DiffusionConfig(steps=9, noise_scale=0.2, noise_min=0.1, noise_max=2.0, beta_fixed=False)
    alpha_bar = np.cumprod(1.0 - linear_variance_betas(config))
    np.testing.assert_allclose(alpha_bar, 1.0 - np.linspace(0.02, 0.4, 9), rtol=1e-12)


def test_fixed_beta_0_rescales_every_alpha_bar():
    # beta_0 = 1e-5 instead of v_0 multiplies the whole cumulative product by (1 - 1e-5) / (1 - v_0)
    config = DiffusionConfig(steps=5, noise_scale=1.0, noise_min=0.1, noise_max=0.5, beta_fixed=True)
    alpha_bar = np.cumprod(1.0 - linear_variance_betas(config))
    variance = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    np.testing.assert_allclose(alpha_bar, (1 - 1e-5) / 0.9 * (1 - variance), rtol=1e-12)


def test_beta_is_clipped_at_0_999_for_an_extreme_schedule():
    # alpha_bar = [0.5, 5e-7]: the unclipped beta_1 would be 1 - 1e-6
    config = DiffusionConfig(steps=2, noise_scale=1.0, noise_min=0.5, noise_max=1 - 5e-7, beta_fixed=False)
    betas = linear_variance_betas(config)
    assert betas[0] == pytest.approx(0.5)
    assert betas[1] == 0.999
    diffusion = GaussianDiffusion(config)
    assert diffusion.alpha_bar.tolist() == pytest.approx([0.5, 0.5 * 0.001], rel=1e-6)  # not 5e-7


@pytest.mark.parametrize(
    "options, message",
    [
        ({"steps": 0}, "steps must be >= 1"),
        ({"noise_min": 0.0}, "need 0 <"),
        ({"noise_scale": 0.0}, "need 0 <"),
        ({"noise_min": -0.1}, "need 0 <"),
        ({"noise_min": 0.02, "noise_max": 0.01}, "need 0 <"),
        ({"noise_scale": 1.0, "noise_max": 1.0}, "need 0 <"),
        ({"noise_scale": 100.0, "noise_max": 0.02}, "need 0 <"),  # 100 * 0.02 = 2
        ({"inference_start": 41}, r"inference_start must be in \[0, 40\]"),
        ({"inference_start": -1}, r"inference_start must be in \[0, 40\]"),
        ({"history_per_step": 0}, "history_per_step must be >= 1"),
        ({"uniform_share": 1.5}, r"uniform_share must be in \[0, 1\]"),
        ({"uniform_share": -0.1}, r"uniform_share must be in \[0, 1\]"),
    ],
)
def test_config_rejects_bad_values(options, message):
    with pytest.raises(ValueError, match=message):
        DiffusionConfig(**options)


def test_config_accepts_the_boundaries():
    assert DiffusionConfig(steps=1).steps == 1
    assert DiffusionConfig(inference_start=40).inference_start == 40
    assert DiffusionConfig(noise_scale=1.0, noise_min=0.3, noise_max=0.3).noise_max == 0.3  # min == max


# --- forward process and posterior -----------------------------------------------------------------


def test_q_sample_is_the_closed_form_row_by_row():
    diffusion = GaussianDiffusion(TINY)
    x0 = torch.tensor([[1.0, -2.0], [1.0, -2.0], [1.0, -2.0]])
    noise = torch.tensor([[0.5, 1.0], [0.5, 1.0], [0.5, 1.0]])
    t = torch.tensor([2, 0, 1])
    expected = torch.tensor(
        [[math.sqrt(a) * x + math.sqrt(1 - a) * n for x, n in zip([1.0, -2.0], [0.5, 1.0])] for a in [0.7, 0.9, 0.8]]
    )
    torch.testing.assert_close(diffusion.q_sample(x0, t, noise), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("t, alpha_bar", [(1, 0.8), (4, 0.5)])
def test_q_sample_has_the_forward_mean_and_variance(t, alpha_bar):
    # variance linspace(0.1, 0.5, 5): alpha_bar = [0.9, 0.8, 0.7, 0.6, 0.5]
    config = DiffusionConfig(steps=5, noise_scale=1.0, noise_min=0.1, noise_max=0.5, beta_fixed=False)
    diffusion = GaussianDiffusion(config)
    draws = 200_000
    x0 = torch.tensor([1.0, 0.0, -2.0, 0.5]).expand(draws, -1)
    noise = torch.randn(draws, 4, generator=torch.Generator().manual_seed(SEED))
    x_t = diffusion.q_sample(x0, torch.full((draws,), t), noise).double()
    # standard errors ~0.0016 for both statistics: 0.01 is > 6 of them
    expected_mean = math.sqrt(alpha_bar) * torch.tensor([1.0, 0.0, -2.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(x_t.mean(dim=0), expected_mean, rtol=0, atol=0.01)
    torch.testing.assert_close(x_t.var(dim=0), torch.full((4,), 1 - alpha_bar, dtype=torch.float64), rtol=0, atol=0.01)


def test_schedule_buffers_are_float32_and_not_saved():
    diffusion = GaussianDiffusion(DiffusionConfig())
    assert diffusion.alpha_bar.dtype == torch.float32
    assert diffusion.state_dict() == {}  # rebuilt from the config, never checkpointed
    np.testing.assert_allclose(diffusion.alpha_bar.numpy(), _reference_alpha_bar(DiffusionConfig()), rtol=1e-6)


def test_posterior_mean_coefficients_by_hand():
    diffusion = GaussianDiffusion(TINY)
    # coef1 = beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t)
    # coef2 = (1 - alpha_bar_{t-1}) sqrt(alpha_t) / (1 - alpha_bar_t)
    coef1 = [0.1 * 1.0 / 0.1, (1 / 9) * math.sqrt(0.9) / 0.2, (1 / 8) * math.sqrt(0.8) / 0.3]
    coef2 = [0.0, 0.1 * math.sqrt(8 / 9) / 0.2, 0.2 * math.sqrt(7 / 8) / 0.3]
    assert diffusion.posterior_x0_coef.tolist() == pytest.approx(coef1, rel=1e-6)
    assert diffusion.posterior_xt_coef.tolist() == pytest.approx(coef2, abs=1e-7)

    x0 = torch.tensor([[2.0, -1.0]]).expand(3, -1)
    x_t = torch.tensor([[0.5, 4.0]]).expand(3, -1)
    mean = diffusion.posterior_mean(x0, x_t, torch.tensor([0, 1, 2]))
    expected = torch.tensor([[c1 * 2.0 + c2 * 0.5, c1 * -1.0 + c2 * 4.0] for c1, c2 in zip(coef1, coef2)])
    torch.testing.assert_close(mean, expected, rtol=1e-6, atol=1e-6)
    assert mean[0].tolist() == pytest.approx([2.0, -1.0], abs=1e-6)  # at t = 0 the posterior mean is x0


@pytest.mark.parametrize("beta_fixed", [True, False])
def test_posterior_mean_at_step_0_is_x0_for_the_presets(beta_fixed):
    diffusion = GaussianDiffusion(DiffusionConfig(beta_fixed=beta_fixed))
    assert diffusion.posterior_x0_coef[0].item() == pytest.approx(1.0, abs=1e-6)
    assert diffusion.posterior_xt_coef[0].item() == 0.0


# --- SNR reweighting -------------------------------------------------------------------------------


def test_loss_weight_by_hand_on_the_tiny_schedule():
    # SNR = alpha_bar / (1 - alpha_bar) = [9, 4, 7/3]; weight_t = SNR(t-1) - SNR(t), 1 at t = 0
    assert GaussianDiffusion(TINY).loss_weight.tolist() == pytest.approx([1.0, 5.0, 4 - 7 / 3], rel=1e-6)


@pytest.mark.parametrize(
    "config", [DiffusionConfig(), DiffusionConfig(noise_max=0.02, beta_fixed=False)], ids=["diffrec", "l_diffrec"]
)
def test_loss_weight_is_the_snr_difference(config):
    alpha_bar = _reference_alpha_bar(config)
    snr = alpha_bar / (1.0 - alpha_bar)
    expected = np.concatenate([[1.0], snr[:-1] - snr[1:]])
    weight = GaussianDiffusion(config).loss_weight
    assert weight.dtype == torch.float32
    np.testing.assert_allclose(weight.numpy(), expected, rtol=1e-6)
    assert (weight > 0).all()  # the SNR falls with t


def test_loss_weight_is_one_without_reweighting():
    weight = GaussianDiffusion(DiffusionConfig(snr_reweight=False)).loss_weight
    assert weight.shape == (40,)
    assert torch.equal(weight, torch.ones(40))


# --- inference ------------------------------------------------------------------------------------


class _PerfectDenoiser(torch.nn.Module):
    """Always predicts ``x0``; records the steps and inputs it was called with."""

    def __init__(self, x0: torch.Tensor) -> None:
        super().__init__()
        self.x0 = x0
        self.steps: list[list[int]] = []
        self.inputs: list[torch.Tensor] = []

    def forward(self, x_t, t):
        self.steps.append(t.tolist())
        self.inputs.append(x_t.clone())
        return self.x0


def test_denoise_with_a_perfect_denoiser_returns_x0_after_every_step_in_reverse():
    diffusion = GaussianDiffusion(DiffusionConfig())  # 40 steps, inference from the clean history
    target = torch.tensor([[1.0, 0.0, 0.3], [0.0, 2.0, -1.0]])
    history = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    denoiser = _PerfectDenoiser(target)
    result = diffusion.denoise(denoiser, history)
    assert denoiser.steps == [[step, step] for step in range(39, -1, -1)]
    assert torch.equal(denoiser.inputs[0], history)  # T' = 0: no noise before the first step
    torch.testing.assert_close(result, target, rtol=0, atol=1e-6)


def test_denoise_from_a_noised_start_still_runs_every_step():
    config = DiffusionConfig(
        steps=5, noise_scale=1.0, noise_min=0.1, noise_max=0.5, beta_fixed=False, inference_start=2
    )
    diffusion = GaussianDiffusion(config)
    history = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    noise = torch.tensor([[0.3, -0.2], [1.0, 0.5]])
    denoiser = _PerfectDenoiser(torch.tensor([[0.5, 0.5], [0.2, 0.8]]))
    result = diffusion.denoise(denoiser, history, noise)
    assert [steps[0] for steps in denoiser.steps] == [4, 3, 2, 1, 0]
    # T' = 2 noises the history to step T' - 1 = 1 (alpha_bar 0.8)
    expected_start = math.sqrt(0.8) * history + math.sqrt(0.2) * noise
    torch.testing.assert_close(denoiser.inputs[0], expected_start, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(result, denoiser.x0, rtol=0, atol=1e-6)


def test_denoise_from_a_noised_start_needs_the_noise():
    diffusion = GaussianDiffusion(DiffusionConfig(inference_start=3))
    with pytest.raises(ValueError, match="needs the noise"):
        diffusion.denoise(_PerfectDenoiser(torch.zeros(1, 2)), torch.zeros(1, 2))


def test_denoise_follows_the_posterior_mean_with_a_non_perfect_denoiser():
    # a denoiser that returns half its input: each step is x <- (coef1_t / 2 + coef2_t) x
    diffusion = GaussianDiffusion(TINY)
    x = torch.tensor([[1.0, -3.0]])
    coef1 = [1.0, (1 / 9) * math.sqrt(0.9) / 0.2, (1 / 8) * math.sqrt(0.8) / 0.3]
    coef2 = [0.0, 0.1 * math.sqrt(8 / 9) / 0.2, 0.2 * math.sqrt(7 / 8) / 0.3]
    factor = math.prod(c1 / 2 + c2 for c1, c2 in zip(coef1, coef2))
    result = diffusion.denoise(lambda x_t, t: x_t / 2, x)
    torch.testing.assert_close(result, factor * x, rtol=1e-5, atol=1e-6)


# --- importance step sampler ----------------------------------------------------------------------


def _generator(seed: int = SEED) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _stored(sampler: ImportanceStepSampler, step: int) -> list[float]:
    return sorted(sampler.losses[step, : int(sampler.counts[step])].tolist())


def test_sampler_is_uniform_until_every_step_has_its_history():
    sampler = ImportanceStepSampler(steps=4, history_per_step=3, uniform_share=0.1)
    assert not sampler.warmed_up
    assert sampler.probabilities().tolist() == [0.25] * 4
    t, scale = sampler.sample(8, _generator())
    assert torch.equal(t, torch.randint(0, 4, (8,), generator=_generator()))  # the plain uniform draws
    assert torch.equal(scale, torch.ones(8))

    # steps 0..2 full, step 3 with two of three losses: still uniform
    sampler.record(torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3]), torch.arange(1.0, 12.0))
    assert not sampler.warmed_up
    assert sampler.probabilities().tolist() == [0.25] * 4
    assert torch.equal(sampler.sample(5, _generator())[1], torch.ones(5))

    sampler.record(torch.tensor([3]), torch.tensor([12.0]))
    assert sampler.warmed_up


def _warmed_sampler(uniform_share: float = 0.1) -> ImportanceStepSampler:
    sampler = ImportanceStepSampler(steps=4, history_per_step=3, uniform_share=uniform_share)
    losses = {0: [1.0, 1.0, 1.0], 1: [2.0, 2.0, 2.0], 2: [0.0, 0.0, 3.0], 3: [4.0, 0.0, 0.0]}
    t = torch.tensor([step for step, values in losses.items() for _ in values])
    sampler.record(t, torch.tensor([value for values in losses.values() for value in values]))
    return sampler


def test_warmed_up_probabilities_follow_the_root_mean_square_loss():
    sampler = _warmed_sampler(uniform_share=0.1)
    assert sampler.warmed_up
    # sqrt(mean(loss^2)) per step: 1, 2, sqrt(3), sqrt(16 / 3) (not the mean loss: 1, 2, 1, 4/3)
    rms = [1.0, 2.0, math.sqrt(3.0), math.sqrt(16.0 / 3.0)]
    expected = [r / sum(rms) * 0.9 + 0.1 / 4 for r in rms]
    probabilities = sampler.probabilities()
    assert probabilities.tolist() == pytest.approx(expected, rel=1e-12)
    assert probabilities.sum().item() == pytest.approx(1.0)


def test_warmed_up_sample_scale_is_probability_times_steps():
    sampler = _warmed_sampler()
    probabilities = sampler.probabilities()
    t, scale = sampler.sample(64, _generator())
    assert torch.equal(t, torch.multinomial(probabilities, 64, replacement=True, generator=_generator()))
    assert scale.dtype == torch.float32
    torch.testing.assert_close(scale, (probabilities[t] * 4).float())
    assert set(t.tolist()) == {0, 1, 2, 3}


def test_warmed_up_sample_frequencies_match_the_probabilities():
    sampler = _warmed_sampler()
    t, _ = sampler.sample(40_000, _generator())
    frequencies = torch.bincount(t, minlength=4).double() / 40_000
    torch.testing.assert_close(frequencies, sampler.probabilities(), rtol=0, atol=0.01)


def test_uniform_share_keeps_a_zero_loss_step_reachable():
    sampler = ImportanceStepSampler(steps=2, history_per_step=1, uniform_share=0.2)
    sampler.record(torch.tensor([0, 1]), torch.tensor([0.0, 5.0]))
    assert sampler.probabilities().tolist() == pytest.approx([0.1, 0.9])


def test_record_keeps_only_the_latest_losses_within_one_call():
    sampler = ImportanceStepSampler(steps=2, history_per_step=3, uniform_share=0.0)
    sampler.record(torch.tensor([0, 0, 0, 0, 0]), torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert _stored(sampler, 0) == [3.0, 4.0, 5.0]
    assert sampler.counts.tolist() == [3, 0]
    # interleaved steps: each keeps its own latest, in batch order
    sampler.record(torch.tensor([1, 0, 1, 0, 1, 1]), torch.tensor([10.0, 6.0, 11.0, 7.0, 12.0, 13.0]))
    assert _stored(sampler, 0) == [5.0, 6.0, 7.0]
    assert _stored(sampler, 1) == [11.0, 12.0, 13.0]
    assert sampler.counts.tolist() == [3, 3]


def test_record_keeps_only_the_latest_losses_across_calls():
    sampler = ImportanceStepSampler(steps=3, history_per_step=3, uniform_share=0.0)
    seen = []
    for call, values in enumerate([[1.0, 2.0], [3.0], [4.0, 5.0], [6.0, 7.0, 8.0, 9.0], [10.0]]):
        sampler.record(torch.full((len(values),), 2), torch.tensor(values))
        seen.extend(values)
        assert _stored(sampler, 2) == sorted(seen[-3:]), f"after call {call}"
    assert sampler.counts.tolist() == [0, 0, 3]
    assert not sampler.warmed_up


def test_record_detaches_and_accepts_float32_losses():
    sampler = ImportanceStepSampler(steps=1, history_per_step=2, uniform_share=0.0)
    losses = torch.tensor([0.5, 1.5], requires_grad=True)
    sampler.record(torch.tensor([0, 0]), losses * 2)
    assert sampler.losses.dtype == torch.float64
    assert not sampler.losses.requires_grad
    assert _stored(sampler, 0) == [1.0, 3.0]


def test_sampler_is_deterministic_for_a_seed_and_its_state_round_trips():
    first, second = _warmed_sampler(), _warmed_sampler()
    assert torch.equal(first.sample(32, _generator(5))[0], second.sample(32, _generator(5))[0])
    assert not torch.equal(first.sample(32, _generator(5))[0], first.sample(32, _generator(6))[0])

    restored = ImportanceStepSampler(steps=4, history_per_step=3, uniform_share=0.1)
    restored.load_state_dict(first.state_dict())
    assert restored.warmed_up
    assert torch.equal(restored.probabilities(), first.probabilities())
    # the ring position is restored too: the next record overwrites the same (oldest) slot
    first.record(torch.tensor([3]), torch.tensor([9.0]))
    restored.record(torch.tensor([3]), torch.tensor([9.0]))
    assert torch.equal(restored.losses, first.losses)
    assert _stored(first, 3) == [0.0, 0.0, 9.0]


# --- step embedding and denoiser ------------------------------------------------------------------


def test_step_embedding_is_cos_then_sin_of_geometric_frequencies():
    embedding = step_embedding(torch.tensor([0, 3]), 6)
    assert embedding.shape == (2, 6)
    assert embedding[0].tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    frequencies = [10_000 ** (-i / 3) for i in range(3)]  # exp(-ln(10000) i / half)
    expected = [math.cos(3 * f) for f in frequencies] + [math.sin(3 * f) for f in frequencies]
    assert embedding[1].tolist() == pytest.approx(expected, abs=1e-6)


def test_step_embedding_pads_an_odd_width_with_one_zero_column():
    t = torch.tensor([0, 1, 7, 39])
    odd = step_embedding(t, 7)
    assert odd.shape == (4, 7)
    assert torch.equal(odd[:, :6], step_embedding(t, 6))
    assert torch.equal(odd[:, 6], torch.zeros(4))


@pytest.mark.parametrize(
    "hidden, shapes",
    [
        # the paper's [200, 600] over n items: n (+ step) -> 600 -> 200 -> 600 -> n
        ((200, 600), [(600, 50), (200, 600), (600, 200), (50, 600)]),
        ((300,), [(300, 50), (50, 300)]),
    ],
)
def test_denoiser_layer_widths_and_output_shape(hidden, shapes):
    torch.manual_seed(SEED)
    denoiser = MLPDenoiser(50, DenoiserConfig(hidden=hidden)).eval()
    weights = [denoiser.input_layer.weight.shape, *(layer.weight.shape for layer in denoiser.layers)]
    assert [tuple(shape) for shape in weights] == shapes
    assert tuple(denoiser.step_layer.weight.shape) == (shapes[0][0], 10)  # the step embedding joins the first layer
    assert tuple(denoiser.step_projection.weight.shape) == (10, 10)
    output = denoiser(torch.rand(7, 50), torch.arange(7))
    assert output.shape == (7, 50)
    assert torch.isfinite(output).all()


def test_denoiser_needs_a_hidden_width():
    with pytest.raises(ValueError, match="at least one hidden width"):
        MLPDenoiser(5, DenoiserConfig(hidden=()))


def test_denoiser_forward_by_hand():
    """tanh(W_x x + W_s (P emb(t) + p) + b), then a linear output layer (eval: no dropout)."""
    torch.manual_seed(SEED)
    config = DenoiserConfig(hidden=(3,), step_embedding_dim=4)
    denoiser = MLPDenoiser(5, config).eval()
    x = torch.rand(2, 5, generator=_generator())
    t = torch.tensor([0, 6])
    step = step_embedding(t, 4) @ denoiser.step_projection.weight.T + denoiser.step_projection.bias
    first = denoiser.input_layer
    hidden = torch.tanh(x @ first.weight.T + first.bias + step @ denoiser.step_layer.weight.T)
    output_layer = denoiser.layers[0]
    expected = hidden @ output_layer.weight.T + output_layer.bias
    torch.testing.assert_close(denoiser(x, t), expected)
    assert not torch.allclose(denoiser(x, torch.tensor([6, 0])), expected)  # the step matters


def test_denoiser_dropout_only_in_training_and_normalised_input_ignores_scale():
    torch.manual_seed(SEED)
    denoiser = MLPDenoiser(20, DenoiserConfig(hidden=(8, 16), input_dropout=0.5))
    x, t = torch.rand(4, 20, generator=_generator()), torch.tensor([0, 1, 2, 3])
    denoiser.train()
    assert not torch.equal(denoiser(x, t), denoiser(x, t))
    denoiser.eval()
    assert torch.equal(denoiser(x, t), denoiser(x, t))

    torch.manual_seed(SEED)
    normalising = MLPDenoiser(20, DenoiserConfig(hidden=(8, 16), normalise_input=True)).eval()
    torch.testing.assert_close(normalising(3.0 * x, t), normalising(x, t))
    assert not torch.allclose(denoiser(3.0 * x, t), denoiser(x, t))
