"""The GPT decoder: token embedding, blocks of (RMSNorm, rotary causal attention, RMSNorm,
SwiGLU MLP) with residuals, a final RMSNorm and an output projection (its own matrix, or the
embedding's with model.tie_embeddings). No biases. Attention may be grouped-query
(model.kv_heads): Llama's decoder, so a Hugging Face Llama folder loads into it.

Matrix products stay in PyTorch (cuBLAS) and attention in `scaled_dot_product_attention`
(fused flash/memory-efficient kernels); the memory-bound work goes through `ops`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..config.schema import ModelSection
from .documents import document_attention_mask, document_positions
from .initialization import initialize


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float, ops):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps
        self.ops = ops

    def forward(self, x):
        return self.ops.rms_norm(x, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, cfg: ModelSection, ops):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.heads, cfg.key_value_heads, cfg.head_size
        self.sizes = (self.heads * self.head_dim, *2 * [self.kv_heads * self.head_dim])
        self.qkv = nn.Linear(cfg.width, sum(self.sizes), bias=False)
        self.out = nn.Linear(self.sizes[0], cfg.width, bias=False)
        self.ops = ops

    def forward(self, x, cos, sin, cache: LayerCache | None = None, start: int = 0,
                mask: torch.Tensor | None = None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(self.sizes, dim=-1)
        # (B, T, heads * D) -> (B, heads, T, D); keys and values have kv_heads heads
        q, k, v = (t.view(B, T, -1, self.head_dim).transpose(1, 2) for t in (q, k, v))
        q = self.ops.rotary(q, cos, sin)
        k = self.ops.rotary(k, cos, sin)
        grouped = self.kv_heads != self.heads  # each key/value head serves several queries
        if mask is not None:  # documents kept apart (core/model/documents.py)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=grouped)
        elif cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=grouped)
        else:
            k, v = cache.extend(k, v, start)  # every position so far: (B, KV, start + T, D)
            if T == 1:  # one new token sees every earlier one: no mask
                y = single_query_attention(q, k, v)
            elif start == 0:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=grouped)
            else:  # new token i sees the cache and new tokens up to i
                mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(start)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=grouped)
        return self.out(y.transpose(1, 2).reshape(B, T, self.sizes[0]))


def single_query_attention(q, k, v):
    """Attention of one query position over every cached one: two small matrix products.
    PyTorch's fused CPU kernel tiles for many queries and took ~2 ms here for what this
    does in ~0.1 ms (bench/generate.py); on a GPU it is the same few kernels."""
    if k.shape[1] != q.shape[1]:  # grouped-query: each key/value head serves several
        k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
    scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)  # (B, H, 1, L)
    return torch.softmax(scores.float(), dim=-1).type_as(v) @ v


class MLP(nn.Module):
    def __init__(self, cfg: ModelSection, ops):
        super().__init__()
        self.gate_up = nn.Linear(cfg.width, 2 * cfg.mlp_hidden, bias=False)
        self.down = nn.Linear(cfg.mlp_hidden, cfg.width, bias=False)
        self.ops = ops

    def forward(self, x):
        return self.down(self.ops.swiglu(self.gate_up(x)))


class Block(nn.Module):
    def __init__(self, cfg: ModelSection, ops):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.width, cfg.norm_eps, ops)
        self.attn = Attention(cfg, ops)
        self.mlp_norm = RMSNorm(cfg.width, cfg.norm_eps, ops)
        self.mlp = MLP(cfg, ops)

    def forward(self, x, cos, sin, cache: LayerCache | None = None, start: int = 0,
                mask: torch.Tensor | None = None):
        x = x + self.attn(self.attn_norm(x), cos, sin, cache, start, mask)
        return x + self.mlp(self.mlp_norm(x))


class GPT(nn.Module):
    # The 2-D weights that are not hidden matrices (a lookup and a readout), and the hidden
    # matrices that hold several stacked by rows (q, k, v; gate, up): what optimizers that
    # treat matrices by their shape need to know (optim/groups.py).
    OUTER_MATRICES = ("embed.weight", "head.weight")
    FUSED_MATRICES = {"qkv.weight": 3, "gate_up.weight": 2}

    def __init__(self, cfg: ModelSection, vocab_size: int, ops):
        """The model with its starting weights (initialization.py) on the CPU; built under
        `torch.device("meta")`, without storage, for a caller to place (`materialize`)."""
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.ops = ops
        on_meta = torch.get_default_device().type == "meta"
        # The layers are made without storage either way: their own default initialisation
        # would be drawn only to be replaced.
        with torch.device("meta"):
            self.embed = nn.Embedding(vocab_size, cfg.width)
            self.blocks = nn.ModuleList(Block(cfg, ops) for _ in range(cfg.layers))
            self.norm = RMSNorm(cfg.width, cfg.norm_eps, ops)
            self.head = nn.Linear(cfg.width, vocab_size, bias=False)
        # Not persistent: derived from the config, so checkpoints need not carry them.
        self.register_buffer("rotary_cos", torch.empty(0), persistent=False)
        self.register_buffer("rotary_sin", torch.empty(0), persistent=False)
        if cfg.tie_embeddings:  # one matrix for both
            self.tie()
        if not on_meta:
            self.materialize(torch.device("cpu"))

    def materialize(self, device: torch.device, weights: bool = True) -> None:
        """Storage on `device` for a model made on the meta device (sharded first, under
        FSDP: each rank then gives storage to its shards only), the rotary tables, and with
        `weights` the starting weights."""
        self.to_empty(device=device)
        if self.cfg.tie_embeddings:
            self.tie()  # to_empty made the shared matrix two
        self.make_rotary_tables()
        if weights:
            initialize(self)

    def make_rotary_tables(self) -> None:
        """The rotary tables from the config, on the device the model is on: again after a
        model built on the meta device is given real storage (`to_empty`)."""
        cfg = self.cfg
        cos, sin = rotary_tables(cfg.seq_len, cfg.head_size, cfg.rope_theta, rope_scaling(cfg))
        device = self.embed.weight.device
        self.rotary_cos, self.rotary_sin = cos.to(device), sin.to(device)

    def tie(self) -> None:
        """The output layer reads the embedding's matrix (model.tie_embeddings)."""
        self.head.weight = self.embed.weight

    def fused_rows(self, name: str) -> tuple[int, ...]:
        """The rows of each matrix a fused one stacks (`FUSED_MATRICES`): q, k, v (k and v
        fewer under grouped-query attention); gate, up."""
        if name.endswith("qkv.weight"):
            return self.blocks[0].attn.sizes
        return (self.cfg.mlp_hidden,) * 2

    def hidden_states(self, inputs: torch.Tensor, cache: KVCache | None = None,
                      documents: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, C) final hidden states of (B, T) inputs. With a `cache`, the inputs follow
        the `cache.length` positions it holds (their keys and values are not recomputed),
        and theirs are added to it. With `documents` (Batch.documents), each document of a
        row is attended and positioned as if alone."""
        T = inputs.shape[1]
        start = cache.length if cache is not None else 0
        if start + T > self.cfg.seq_len:
            raise ValueError(f"sequence of {start + T} tokens exceeds model.seq_len="
                             f"{self.cfg.seq_len}")
        x = self.embed(inputs)  # (B, T, C)
        cos, sin = self.rotary_cos[start:start + T], self.rotary_sin[start:start + T]
        mask = None
        if documents is not None and cache is None:
            positions = document_positions(documents)  # tables per row: (B, 1, T, D/2)
            cos, sin = self.rotary_cos[positions][:, None], self.rotary_sin[positions][:, None]
            mask = document_attention_mask(documents)
        for i, block in enumerate(self.blocks):
            if cache is not None:
                x = block(x, cos, sin, cache.layers[i], start)
            elif self.cfg.activation_checkpointing and self.training:
                x = checkpoint(block, x, cos, sin, None, 0, mask, use_reentrant=False)
            else:
                x = block(x, cos, sin, mask=mask)
        if cache is not None:
            cache.length += T
        return self.norm(x)

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor,
                documents: torch.Tensor | None = None):
        """(loss summed over counted targets, correct top-1 count, counted targets)."""
        hidden = self.hidden_states(inputs, documents=documents)
        return self.ops.output_loss(hidden.flatten(0, 1), self.head.weight, targets.flatten())

    @torch.no_grad()
    def next_token_logits(self, inputs: torch.Tensor, cache: KVCache | None = None
                          ) -> torch.Tensor:
        """(B, V) logits for the token after each row of (B, T) inputs (which follow the
        positions `cache` holds, if given)."""
        return self.head(self.hidden_states(inputs, cache)[:, -1])

    def new_cache(self, batch: int = 1) -> KVCache:
        """An empty KV cache for `batch` sequences of up to `model.seq_len` tokens, in the
        dtype and on the device of the model's weights."""
        weight = self.head.weight
        return KVCache(len(self.blocks), batch, self.cfg.key_value_heads, self.cfg.seq_len,
                       self.cfg.head_size, weight.dtype, weight.device)

    def matmul_parameters(self) -> int:
        """Parameters of matrix products (every Linear, the output projection included);
        the embedding is a lookup and does not count toward FLOPs."""
        return sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))

    def unique_parameters(self) -> int:
        """Parameters, a tied matrix counted once."""
        return sum(p.numel() for p in self.parameters())


class LayerCache:
    """One attention layer's keys and values for every position seen, (B, H, seq_len, D)
    allocated once: a new token writes its own and reads the rest in place."""

    def __init__(self, batch: int, heads: int, seq_len: int, head_dim: int, dtype, device):
        self.keys = torch.zeros(batch, heads, seq_len, head_dim, dtype=dtype, device=device)
        self.values = torch.zeros_like(self.keys)

    def extend(self, k: torch.Tensor, v: torch.Tensor, start: int):
        end = start + k.shape[2]
        self.keys[:, :, start:end] = k
        self.values[:, :, start:end] = v
        return self.keys[:, :, :end], self.values[:, :, :end]


class KVCache:
    """Keys and values of every layer for the positions generated so far (`length`), so that
    each new token costs one position's compute instead of the whole context's."""

    def __init__(self, layers: int, batch: int, heads: int, seq_len: int, head_dim: int,
                 dtype, device):
        self.layers = [LayerCache(batch, heads, seq_len, head_dim, dtype, device)
                       for _ in range(layers)]
        self.capacity = seq_len
        self.length = 0


def model_vocab(cfg: ModelSection, tokenizer) -> int:
    """The embedding's rows: model.vocab_size (an imported model's, which may pad the
    tokenizer's), else the tokenizer's."""
    return cfg.vocab_size or tokenizer.vocab_size


def parameter_count(cfg: ModelSection, vocab_size: int) -> int:
    """The model's parameters, computed from its config without building it."""
    attention = cfg.width * (cfg.heads + 2 * cfg.key_value_heads) * cfg.head_size \
        + cfg.heads * cfg.head_size * cfg.width
    per_block = attention + 3 * cfg.width * cfg.mlp_hidden + 2 * cfg.width
    outer = (1 if cfg.tie_embeddings else 2) * vocab_size * cfg.width
    return outer + cfg.layers * per_block + cfg.width


def rope_scaling(cfg: ModelSection) -> dict | None:
    """Llama 3's rotary scaling settings, or None."""
    if cfg.rope_scaling == "none":
        return None
    return {"factor": cfg.rope_factor, "low_freq_factor": cfg.rope_low_freq_factor,
            "high_freq_factor": cfg.rope_high_freq_factor,
            "original_max_position_embeddings": cfg.rope_original_context}


def rotary_tables(seq_len: int, head_dim: int, theta: float, scaling: dict | None = None):
    """cos and sin of position * frequency, (seq_len, head_dim / 2), in float32. With
    Llama 3's `scaling`, wavelengths longer than the original context's / low_freq_factor
    are stretched by `factor`, those shorter than its / high_freq_factor kept, and those
    between blended (transformers' `_compute_llama3_parameters`)."""
    freqs = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    if scaling is not None:
        freqs = llama3_frequencies(freqs, **scaling)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), freqs)
    return angles.cos().float(), angles.sin().float()


def llama3_frequencies(freqs: torch.Tensor, factor: float, low_freq_factor: float,
                       high_freq_factor: float, original_max_position_embeddings: int):
    wavelength = 2 * math.pi / freqs
    low_wavelength = original_max_position_embeddings / low_freq_factor
    high_wavelength = original_max_position_embeddings / high_freq_factor
    smooth = (original_max_position_embeddings / wavelength - low_freq_factor) / (
        high_freq_factor - low_freq_factor)
    blended = (1 - smooth) * freqs / factor + smooth * freqs
    scaled = torch.where(wavelength > low_wavelength, freqs / factor, freqs)
    between = (wavelength >= high_wavelength) & (wavelength <= low_wavelength)
    return torch.where(between, blended, scaled)
