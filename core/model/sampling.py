"""Text samples drawn from the model being trained (generation.py generates them)."""

from __future__ import annotations

import torch

from ..config.schema import SamplesSection
from ..contracts.samples import TextSample
from .generation import SamplingSettings, continuation_text, generate


def sample_texts(model, tokenizer, section: SamplesSection, step: int,
                 seed: int) -> list[TextSample]:
    """One continuation per configured prompt. A generator seeded by step keeps sampling from
    disturbing the training RNG, so samples never change the run's losses."""
    generator = torch.Generator().manual_seed(seed + step)
    settings = SamplingSettings(max_new_tokens=section.max_new_tokens,
                                temperature=section.temperature, top_k=section.top_k)
    samples = []
    for prompt in section.prompts:
        prompt_ids = [tokenizer.bos_id] + tokenizer.encode(prompt)
        new_ids = generate(model, prompt_ids, settings, generator) \
            if settings.max_new_tokens else []
        text = continuation_text(tokenizer, prompt_ids, new_ids)
        samples.append(TextSample(step=step, prompt=prompt, text=text))
    return samples
