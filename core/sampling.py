"""Text generation from the model being trained: temperature and top-k sampling."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .config import SamplesSection


@dataclass
class TextSample:
    step: int
    prompt: str
    text: str  # the generated continuation, without the prompt

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def generate(model, prompt_ids: list[int], max_new_tokens: int, temperature: float,
             top_k: int, generator: torch.Generator, device: torch.device) -> list[int]:
    """Continue `prompt_ids`; returns only the new ids (fewer, or none, if the logits stop
    being finite). Without a KV cache each token
    recomputes the window: samples are short and rare, so simplicity wins."""
    seq_len = model.cfg.seq_len
    ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    new: list[int] = []
    for _ in range(max_new_tokens):
        logits = model.next_token_logits(ids[:, -seq_len:]).float()  # (1, V)
        if not torch.isfinite(logits).all():
            break  # a diverged model has nothing to say; the training guards report it
        if temperature <= 0:
            next_id = logits.argmax(dim=-1, keepdim=True)
        else:
            logits = logits / temperature
            if 0 < top_k < logits.shape[-1]:
                kth = torch.topk(logits, top_k).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            next_id = torch.multinomial(probs.cpu(), 1, generator=generator).to(device)
        ids = torch.cat([ids, next_id], dim=1)
        new.append(int(next_id))
    return new


def sample_texts(model, tokenizer, section: SamplesSection, step: int, seed: int,
                 device: torch.device) -> list[TextSample]:
    """One continuation per configured prompt. A generator seeded by step keeps sampling from
    disturbing the training RNG, so samples never change the run's losses."""
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed + step)
    samples = []
    try:
        for prompt in section.prompts:
            prompt_ids = [tokenizer.bos_id] + tokenizer.encode(prompt)
            new_ids = generate(model, prompt_ids, section.max_new_tokens, section.temperature,
                               section.top_k, generator, device)
            samples.append(TextSample(step=step, prompt=prompt, text=tokenizer.decode(new_ids)))
    finally:
        model.train(was_training)
    return samples
