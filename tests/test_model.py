"""The model, its ops and the trainer's arithmetic, against plain PyTorch references."""

import math

import pytest
import torch
import torch.nn.functional as F

from slimcore import IGNORE_INDEX
from slimcore.config.schema import ModelSection
from slimcore.model.gpt import GPT
from slimcore.model.ops import TorchOps

CFG = ModelSection(width=32, layers=2, heads=4, mlp_hidden=48, seq_len=16)


def tiny_model(seed=0, vocab=97):
    torch.manual_seed(seed)
    return GPT(CFG, vocab, TorchOps)


def test_output_loss_is_cross_entropy_and_accuracy_the_argmax():
    torch.manual_seed(1)
    hidden, weight = torch.randn(10, 8), torch.randn(13, 8)
    targets = torch.randint(0, 13, (10,))
    targets[[2, 7]] = IGNORE_INDEX
    loss_sum, correct, count = TorchOps.output_loss(hidden, weight, targets)
    logits = hidden @ weight.t()
    keep = targets != IGNORE_INDEX
    expected = F.cross_entropy(logits[keep], targets[keep], reduction="sum")
    torch.testing.assert_close(loss_sum, expected, rtol=1e-6, atol=1e-5)
    assert int(count) == 8
    assert int(correct) == int((logits.argmax(-1)[keep] == targets[keep]).sum())


def test_rms_norm_matches_the_formula():
    x, w = torch.randn(3, 5, 16), torch.rand(16) + 0.5
    expected = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5) * w
    torch.testing.assert_close(TorchOps.rms_norm(x, w, 1e-5), expected, rtol=1e-5, atol=1e-6)


def test_rotary_preserves_norms_and_encodes_relative_position():
    from slimcore.model.gpt import rotary_tables

    cos, sin = rotary_tables(8, 4, 10000.0)
    q = torch.randn(1, 1, 1, 4).expand(1, 1, 8, 4)
    k = torch.randn(1, 1, 1, 4).expand(1, 1, 8, 4)
    rq, rk = TorchOps.rotary(q, cos, sin), TorchOps.rotary(k, cos, sin)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))
    # The score of positions (i, j) depends on i - j only.
    scores = rq[0, 0] @ rk[0, 0].t()
    torch.testing.assert_close(scores[3, 1], scores[6, 4], rtol=1e-5, atol=1e-5)


def test_model_is_causal():
    model = tiny_model()
    inputs = torch.randint(0, 97, (2, 12))
    changed = inputs.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 97
    h1, h2 = model.hidden_states(inputs), model.hidden_states(changed)
    torch.testing.assert_close(h1[:, :8], h2[:, :8])
    assert not torch.allclose(h1[:, 8:], h2[:, 8:])


def test_untrained_loss_is_near_log_vocab():
    model = tiny_model()
    inputs = torch.randint(0, 97, (4, 16))
    loss_sum, _, count = model(inputs, inputs)
    assert abs(loss_sum.item() / count.item() - math.log(97)) < 0.1


def test_rows_longer_than_seq_len_are_refused():
    with pytest.raises(ValueError, match="exceeds model.seq_len=16"):
        tiny_model().hidden_states(torch.zeros(1, 17, dtype=torch.long))


def test_matmul_parameters_count_every_linear_and_not_the_embedding():
    model = tiny_model()
    per_block = 32 * 96 + 32 * 32 + 32 * 96 + 48 * 32
    assert model.matmul_parameters() == 2 * per_block + 97 * 32


def test_token_normalised_accumulation_equals_one_big_batch():
    """Two micro-batches with different counted targets, each loss divided by the step's
    total, give the gradient of one batch holding both."""
    inputs = torch.randint(0, 97, (4, 16))
    targets = inputs.roll(-1, dims=1)
    targets[2:, 10:] = IGNORE_INDEX  # the second half has fewer counted targets
    whole = tiny_model()
    loss_sum, _, count = whole(inputs, targets)
    (loss_sum / count).backward()
    split = tiny_model()
    total = int((targets != IGNORE_INDEX).sum())
    for part in (slice(0, 2), slice(2, 4)):
        micro_loss, _, _ = split(inputs[part], targets[part])
        (micro_loss / total).backward()
    for (name, a), (_, b) in zip(whole.named_parameters(), split.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)
