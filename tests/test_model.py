"""The model, its ops and the trainer's arithmetic, against plain PyTorch references."""

import math

import pytest
import torch
import torch.nn.functional as F

from slimcore import IGNORE_INDEX
from slimcore.config.schema import ModelSection, OptimizerSection, ScheduleSection
from slimcore.model.gpt import GPT
from slimcore.model.ops import TorchOps
from slimcore.train.optim import build_optimizer, build_scheduler

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


def rates_of(scheduler, optimizer, steps):
    rates = []
    for _ in range(steps):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


def schedule_rates(steps=24, run_steps=20, **settings):
    optimizer = build_optimizer(tiny_model(), OptimizerSection(lr=1.0), torch.device("cpu"))
    scheduler = build_scheduler(optimizer, ScheduleSection(**settings), run_steps)
    return rates_of(scheduler, optimizer, steps)


# warmup 4, the decay over scheduler steps 4..20 (16 steps), floor 0.1; (step, rate)
EXPECTED = {
    "cosine": [(8, 0.1 + 0.45 * (1 + math.cos(math.pi * 4 / 16))), (12, 0.55),
               (19, 0.1 + 0.45 * (1 + math.cos(math.pi * 15 / 16))), (22, 0.1)],
    "linear": [(8, 1 - 0.9 * 4 / 16), (12, 0.55), (19, 1 - 0.9 * 15 / 16), (22, 0.1)],
    "constant": [(8, 1.0), (12, 1.0), (19, 1.0), (22, 1.0)],
    # wsd, decay fraction 0.25: stable to step 16, then linear to the floor at 20
    "wsd": [(8, 1.0), (15, 1.0), (16, 1.0), (18, 1 - 0.9 * 2 / 4), (19, 1 - 0.9 * 3 / 4),
            (22, 0.1)],
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_schedule_follows_its_formula(kind):
    rates = schedule_rates(kind=kind, warmup_steps=4, min_lr_ratio=0.1,
                           wsd_decay_fraction=0.25)
    assert rates[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # the warmup, for every kind
    for step, expected in EXPECTED[kind]:
        assert rates[step] == pytest.approx(expected), (kind, step)


def test_a_decay_horizon_beyond_run_steps_and_a_resume_mid_decay_continue_one_curve():
    """total_steps 40 with run.steps 20: halfway down at step 20, not at the floor; a
    scheduler rebuilt from its state dict mid-decay (a resume) gives the same rates."""
    settings = dict(kind="linear", warmup_steps=0, min_lr_ratio=0.0, total_steps=40)
    straight = schedule_rates(steps=40, run_steps=20, **settings)
    assert straight[20] == pytest.approx(0.5) and straight[39] == pytest.approx(1 / 40)
    optimizer = build_optimizer(tiny_model(), OptimizerSection(lr=1.0), torch.device("cpu"))
    first = build_scheduler(optimizer, ScheduleSection(**settings), 20)
    rates_of(first, optimizer, 13)
    optimizer = build_optimizer(tiny_model(), OptimizerSection(lr=1.0), torch.device("cpu"))
    resumed = build_scheduler(optimizer, ScheduleSection(**settings), 40)  # a larger --steps
    resumed.load_state_dict(first.state_dict())
    assert rates_of(resumed, optimizer, 27) == pytest.approx(straight[13:])


def test_weight_decay_spares_norm_gains():
    optimizer = build_optimizer(tiny_model(), OptimizerSection(weight_decay=0.5),
                                torch.device("cpu"))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.5 and all(p.dim() == 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.dim() == 1 for p in plain["params"])
