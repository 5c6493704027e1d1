"""Generation (core/generation.py): the KV cache against the full recomputation it replaces,
and the sampling rules (temperature, top-k, top-p) against their definitions."""

import dataclasses
import pytest
import torch

from slimcore.config.schema import ModelSection
from slimcore.model.generation import SamplingSettings, choose_token, generate
from slimcore.model.gpt import GPT
from slimcore.model.ops import TorchOps

# A wide init spreads the logits, so the greedy choice is never a near tie that float
# rounding could flip.
CFG = ModelSection(width=48, layers=3, heads=4, mlp_hidden=96, seq_len=40, init_std=0.3)
GREEDY = SamplingSettings(max_new_tokens=30, temperature=0)


def model(seed=0, vocab=101, kv_heads=None):
    torch.manual_seed(seed)
    return GPT(dataclasses.replace(CFG, kv_heads=kv_heads), vocab, TorchOps).eval()


@pytest.mark.parametrize("kv_heads", [None, 2, 1])  # grouped-query, multi-query attention
def test_cached_and_uncached_generation_choose_the_same_tokens(kv_heads):
    gpt = model(kv_heads=kv_heads)
    prompt = [1, 17, 42, 5, 99, 3]
    cached = generate(gpt, prompt, GREEDY, use_cache=True)
    uncached = generate(gpt, prompt, GREEDY, use_cache=False)
    assert len(cached) == 30 and cached == uncached
    # Sampled too: the same draws from the same generator see the same distributions.
    sampled = SamplingSettings(max_new_tokens=30, temperature=1.0, top_k=20, top_p=0.9)
    assert generate(gpt, prompt, sampled, torch.Generator().manual_seed(3)) == \
        generate(gpt, prompt, sampled, torch.Generator().manual_seed(3), use_cache=False)


@pytest.mark.parametrize("kv_heads", [None, 2])
def test_cached_logits_equal_the_full_forward_at_every_position(kv_heads):
    gpt = model(seed=1, kv_heads=kv_heads)
    ids = torch.randint(0, 101, (2, CFG.seq_len))
    full = gpt.head(gpt.hidden_states(ids))  # (2, T, V)
    cache = gpt.new_cache(batch=2)
    # A prefill of 7, a chunk of 5 after it (the masked path), then one token at a time.
    pieces = [ids[:, :7], ids[:, 7:12]] + [ids[:, t:t + 1] for t in range(12, CFG.seq_len)]
    stepwise = torch.cat([gpt.head(gpt.hidden_states(piece, cache)) for piece in pieces], 1)
    assert cache.length == CFG.seq_len
    # float32 rounding of a different summation order, on logits of magnitude ~10
    torch.testing.assert_close(stepwise, full, rtol=1e-5, atol=1e-4)


def test_a_full_cache_starts_again_from_the_newest_half():
    gpt = model(seed=2)
    prompt = list(range(1, 31))
    new = generate(gpt, prompt, SamplingSettings(max_new_tokens=50, temperature=0))
    assert len(new) == 50  # past seq_len = 40: no error, every token generated
    # The step that overflowed saw exactly the newest half of the context, as the uncached
    # model does on that half.
    overflow = CFG.seq_len - len(prompt) + 1  # the first new token whose input did not fit
    before = (prompt + new)[:len(prompt) + overflow]
    expected = int(gpt.next_token_logits(torch.tensor([before[-(CFG.seq_len // 2):]]))[0].argmax())
    assert new[overflow] == expected


def test_the_cache_refuses_more_than_seq_len_positions():
    gpt = model()
    cache = gpt.new_cache()
    gpt.hidden_states(torch.zeros(1, CFG.seq_len, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="exceeds model.seq_len"):
        gpt.hidden_states(torch.zeros(1, 1, dtype=torch.long), cache)


def test_stop_id_ends_generation_and_is_not_returned():
    gpt = model()
    prompt = [1, 2, 3]
    free = generate(gpt, prompt, GREEDY)
    stop = free[4]
    stopped = generate(gpt, prompt, SamplingSettings(max_new_tokens=30, temperature=0,
                                                     stop_id=stop))
    assert stopped == free[:free.index(stop)]


def test_top_k_and_top_p_keep_exactly_the_tokens_they_define():
    logits = torch.log(torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05]))
    draws = lambda settings: {choose_token(logits, settings, torch.Generator().manual_seed(s))
                              for s in range(400)}
    assert draws(SamplingSettings(temperature=1.0, top_k=2)) == {0, 1}
    # top-p 0.6: 0.5 alone falls short, 0.5 + 0.2 reaches it: tokens 0 and 1.
    assert draws(SamplingSettings(temperature=1.0, top_p=0.6)) == {0, 1}
    assert draws(SamplingSettings(temperature=1.0, top_p=0.5)) == {0}
    assert draws(SamplingSettings(temperature=1.0)) == {0, 1, 2, 3, 4}
    assert draws(SamplingSettings(temperature=0)) == {0}
    # A high temperature flattens: the rarest token comes up far more often than 5%.
    hot = [choose_token(logits, SamplingSettings(temperature=50.0),
                        torch.Generator().manual_seed(s)) for s in range(2000)]
    assert hot.count(4) / len(hot) > 0.12


def test_non_finite_logits_end_generation():
    assert choose_token(torch.tensor([0.0, float("nan")]), GREEDY, None) is None


@pytest.mark.parametrize("settings, key", [
    (SamplingSettings(max_new_tokens=0), "max_new_tokens"),
    (SamplingSettings(temperature=-0.1), "temperature"),
    (SamplingSettings(temperature=float("nan")), "temperature"),
    (SamplingSettings(top_k=-1), "top_k"),
    (SamplingSettings(top_p=0.0), "top_p"),
    (SamplingSettings(top_p=1.5), "top_p"),
])
def test_out_of_range_settings_are_named(settings, key):
    assert [name for name, _ in settings.problems()] == [key]
