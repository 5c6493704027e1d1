"""Text generation from a GPT: greedy or sampled (temperature, top-k, top-p), token by token,
with a KV cache so that each new token costs one position's compute, not the context's.

    settings = SamplingSettings(max_new_tokens=64, temperature=0.8, top_k=50, top_p=0.95)
    new_ids = generate(model, prompt_ids, settings, torch.Generator().manual_seed(0))

`slimcore generate` and the text samples drawn during training both come from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Callable

import torch

from ..config.parse import checked_value
from ..config.values import COUNT, Range
from ..contracts.errors import ConfigError


@dataclass(frozen=True)
class SamplingSettings:
    # Valid values as a config key's are (`slimcore generate`'s flags are checked by them):
    # no request for 10**22 tokens reaches the loop.
    max_new_tokens: Annotated[int, Range(min=1, max=1_000_000)] = 48
    temperature: Annotated[float, COUNT] = 0.8  # 0: greedy (the most likely token every time)
    top_k: Annotated[int, COUNT] = 0  # sample among the k most likely tokens; 0: no cut
    # sample among the most likely tokens whose mass reaches p; 1: no cut
    top_p: Annotated[float, Range(above=0, max=1)] = 1.0
    stop_id: int | None = None  # generation ends at this token (not returned), e.g. EOS

    def problems(self) -> list[tuple[str, str]]:
        """(setting, what is wrong) for every value out of range."""
        found = []
        for name in ("max_new_tokens", "temperature", "top_k", "top_p"):
            try:
                checked_value(SamplingSettings, name, getattr(self, name), name)
            except ConfigError as e:
                found.append((name, e.detail))
        return found


@torch.no_grad()
def generate(model, prompt_ids: list[int], settings: SamplingSettings,
             generator: torch.Generator | None = None, use_cache: bool = True,
             on_token: Callable[[int], None] | None = None,
             stop_when: Callable[[list[int]], bool] | None = None) -> list[int]:
    """Continue `prompt_ids` (at least one id, BOS first as in training); returns the new
    ids, fewer than asked when `settings.stop_id` came or the logits stopped being finite.
    `on_token` is called with each new id as it is chosen; `stop_when(new_ids)` true ends
    the generation after that id (a stop string reached).

    The model sees at most `model.seq_len` tokens. Without the cache each token recomputes
    the newest `seq_len` tokens (a sliding window); with it, a full cache starts again from
    the newest half of the context (computed once), so past `seq_len` the two paths see
    different contexts. Within `seq_len` they choose the same tokens."""
    if not prompt_ids:
        raise ValueError("generate needs at least one prompt id (the tokenizer's BOS)")
    device = model.head.weight.device
    seq_len = model.cfg.seq_len
    was_training = model.training
    model.eval()
    ids, new = list(prompt_ids), []
    cache, pending = None, []
    try:
        for _ in range(settings.max_new_tokens):
            if not use_cache:
                logits = model.next_token_logits(_tensor(ids[-seq_len:], device))
            else:
                if cache is None or cache.length + len(pending) > cache.capacity:
                    pending = ids[-seq_len:] if cache is None else ids[-max(1, seq_len // 2):]
                    cache = model.new_cache()
                logits = model.next_token_logits(_tensor(pending, device), cache)
            next_id = choose_token(logits[0], settings, generator)
            if next_id is None or next_id == settings.stop_id:
                break
            ids.append(next_id)
            new.append(next_id)
            pending = [next_id]
            if on_token is not None:
                on_token(next_id)
            if stop_when is not None and stop_when(new):
                break
    finally:
        model.train(was_training)
    return new


def choose_token(logits: torch.Tensor, settings: SamplingSettings,
                 generator: torch.Generator | None) -> int | None:
    """The next id from (V,) logits: the argmax at temperature 0, else a draw from the
    softmax at `temperature`, cut to the top k and then to the top p of the mass. None when
    the logits are not finite (a diverged model has nothing to say)."""
    logits = logits.float()
    if not torch.isfinite(logits).all():
        return None
    if settings.temperature <= 0:
        return int(logits.argmax())
    logits = logits / settings.temperature
    if 0 < settings.top_k < logits.shape[-1]:
        kth = torch.topk(logits, settings.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if settings.top_p < 1:
        ordered, order = probs.sort(descending=True)
        # Keep the most likely tokens until their mass reaches top_p (the first always).
        ordered = ordered.masked_fill(ordered.cumsum(0) - ordered >= settings.top_p, 0)
        probs = torch.zeros_like(probs).scatter_(0, order, ordered)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


def continuation_text(tokenizer, prompt_ids: list[int], new_ids: list[int],
                      head: str | None = None) -> str:
    """The text `new_ids` add after the prompt, with the space that joins them: decoding
    the new ids alone would drop a leading space (SentencePiece strips it at a start).
    `head`: the prompt's decoding, when the caller has it already."""
    head = tokenizer.decode(prompt_ids) if head is None else head
    full = tokenizer.decode(prompt_ids + new_ids)
    return full[len(head):] if full.startswith(head) else tokenizer.decode(new_ids)


def _tensor(ids: list[int], device: torch.device) -> torch.Tensor:
    return torch.tensor([ids], dtype=torch.long, device=device)
