"""AlignedLinear must be nn.Linear with another memory layout: same values, same gradients, same state dict."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recmodels.nn.aligned import FLOATS_PER_LINE, AlignedLinear, aligned_product


@pytest.mark.parametrize(("n_in", "n_out"), [(37, 5), (5, 37), (32, 48)])
def test_values_and_gradients_match_linear(n_in: int, n_out: int) -> None:
    torch.manual_seed(0)
    aligned = AlignedLinear(n_in, n_out).double()
    plain = nn.Linear(n_in, n_out).double()
    plain.load_state_dict(aligned.state_dict())
    x = torch.randn(6, n_in, dtype=torch.float64, requires_grad=True)
    x_plain = x.detach().clone().requires_grad_()
    upstream = torch.randn(6, n_out, dtype=torch.float64)

    out = aligned(x)
    torch.testing.assert_close(out, plain(x_plain))
    (out * upstream).sum().backward()
    (plain(x_plain) * upstream).sum().backward()
    torch.testing.assert_close(x.grad, x_plain.grad)
    torch.testing.assert_close(aligned.weight.grad, plain.weight.grad)
    torch.testing.assert_close(aligned.bias.grad, plain.bias.grad)
    assert aligned.weight.grad.is_contiguous()  # the optimiser sees the parameter's own layout


def test_gradcheck() -> None:
    torch.manual_seed(0)
    layer = AlignedLinear(19, 23).double()
    x = torch.randn(4, 19, dtype=torch.float64, requires_grad=True)
    # gradcheck perturbs the weight and bias in place, so the layer sees each perturbation
    assert torch.autograd.gradcheck(lambda x, weight, bias: layer(x), (x, layer.weight, layer.bias))


def test_rows_are_padded_to_cache_lines() -> None:
    product = aligned_product(torch.ones(3, 4), torch.ones(4, 37))
    assert product.shape == (3, 37)
    assert product.stride(0) % FLOATS_PER_LINE == 0 and product.stride(0) >= 37
    assert torch.equal(product, torch.full((3, 37), 4.0))


def test_three_dimensional_input_falls_back_to_linear() -> None:
    layer = AlignedLinear(8, 3)
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))
