"""Training throughput of the slimcore model against plain PyTorch, same device, one process.

    python bench/throughput.py [--device cpu|cuda] [--steps 10] [--no-compile]

The plain-PyTorch peer is the same architecture written the ordinary way (F.rms_norm, an
explicit rotary, F.silu, F.cross_entropy over full logits), trained with the same weights,
batches and AdamW (fused on CUDA, bf16 autocast on CUDA). Variants: the peer eager and under
torch.compile; slimcore with `model.backend: torch` and `native`, eager and compiled.
Printed per variant: tokens/s, MFU (6 x matrix parameters + 12 x layers x width x sequence
FLOPs per token, against the card's dense bf16 peak; none on the CPU), peak memory
(CUDA: max_memory_allocated; not measured on the CPU), and ratios to the peer.
GPU config: the issue's (width 1536, 16 layers, 12 heads, MLP 4096, sequence 1024, batch 16,
vocabulary 32,000). CPU config: width 256, 4 layers, 4 heads, MLP 1024, sequence 256,
batch 8, vocabulary 4,096.

The strongest peer, where `liger_kernel` imports (CUDA only; carry its wheel to a lent GPU):
the same model with Liger's Triton kernels (RMSNorm, SwiGLU, rotary, fused linear
cross-entropy), eager and under torch.compile: what a user who wants fast kernels picks.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from slimcore.config.schema import ModelSection
from slimcore.train.measure import device_peak_flops, flops_per_token
from slimcore.model.gpt import GPT, rotary_tables
from slimcore.model.native_ops import NativeOps
from slimcore.model.ops import TorchOps, under_compile


class PeerBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.heads = cfg.heads
        self.attn_norm = nn.RMSNorm(cfg.width, eps=cfg.norm_eps)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(cfg.width, 3 * cfg.width, bias=False)
        self.attn.out = nn.Linear(cfg.width, cfg.width, bias=False)
        self.mlp_norm = nn.RMSNorm(cfg.width, eps=cfg.norm_eps)
        self.mlp = nn.Module()
        self.mlp.gate_up = nn.Linear(cfg.width, 2 * cfg.mlp_hidden, bias=False)
        self.mlp.down = nn.Linear(cfg.mlp_hidden, cfg.width, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q, k, v = self.attn.qkv(self.attn_norm(x)).split(C, dim=-1)
        q, k, v = (t.view(B, T, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn.out(y.transpose(1, 2).reshape(B, T, C))
        gate, up = self.mlp.gate_up(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.mlp.down(F.silu(gate) * up)


def rotate(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class Peer(nn.Module):
    """The same architecture in plain PyTorch (parameter names match slimcore's GPT)."""

    def __init__(self, cfg, vocab):
        super().__init__()
        self.embed = nn.Embedding(vocab, cfg.width)
        self.blocks = nn.ModuleList(PeerBlock(cfg) for _ in range(cfg.layers))
        self.norm = nn.RMSNorm(cfg.width, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.width, vocab, bias=False)
        cos, sin = rotary_tables(cfg.seq_len, cfg.width // cfg.heads, cfg.rope_theta)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, inputs, targets):
        x = self.embed(inputs)
        for block in self.blocks:
            x = block(x, self.cos, self.sin)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


class LigerPeer(Peer):
    """The peer with Liger's kernels in place of the memory-bound PyTorch ops (same
    parameter names, so the same weights load)."""

    def __init__(self, cfg, vocab):
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss, LigerRMSNorm

        super().__init__(cfg, vocab)
        for block in self.blocks:
            block.attn_norm = LigerRMSNorm(cfg.width, eps=cfg.norm_eps, in_place=False)
            block.mlp_norm = LigerRMSNorm(cfg.width, eps=cfg.norm_eps, in_place=False)
            block.forward = liger_block_forward.__get__(block)
        self.norm = LigerRMSNorm(cfg.width, eps=cfg.norm_eps, in_place=False)
        self.loss = LigerFusedLinearCrossEntropyLoss()
        # Liger's rotary takes Hugging Face's tables: (1, T, D), the half repeated.
        self.register_buffer("cos_full", torch.cat((self.cos, self.cos), -1)[None],
                             persistent=False)
        self.register_buffer("sin_full", torch.cat((self.sin, self.sin), -1)[None],
                             persistent=False)

    def forward(self, inputs, targets):
        x = self.embed(inputs)
        for block in self.blocks:
            x = block(x, self.cos_full, self.sin_full)
        hidden = self.norm(x).flatten(0, 1)
        return self.loss(self.head.weight, hidden, targets.flatten())


def liger_block_forward(self, x, cos, sin):
    from liger_kernel.ops.swiglu import LigerSiLUMulFunction
    from liger_kernel.transformers.rope import liger_rotary_pos_emb

    B, T, C = x.shape
    q, k, v = self.attn.qkv(self.attn_norm(x)).split(C, dim=-1)
    q, k, v = (t.view(B, T, self.heads, -1).transpose(1, 2) for t in (q, k, v))
    q, k = liger_rotary_pos_emb(q, k, cos.to(q.dtype), sin.to(q.dtype))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    x = x + self.attn.out(y.transpose(1, 2).reshape(B, T, C))
    gate, up = self.mlp.gate_up(self.mlp_norm(x)).chunk(2, dim=-1)
    return x + self.mlp.down(LigerSiLUMulFunction.apply(gate.contiguous(), up.contiguous()))


def liger_available(device) -> bool:
    if device.type != "cuda":
        return False
    try:
        import liger_kernel.transformers  # noqa: F401
    except ImportError as error:
        print(f"no Liger peer: {error} (pip install liger-kernel)")
        return False
    return True


def training_step(model, loss_of, device):
    """step(inputs, targets) -> loss: one step of the benchmark's training (AdamW, fused on
    CUDA; bf16 autocast on CUDA), the same for every variant and for bench/profile_step.py."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" \
        else torch.autocast("cpu", enabled=False)

    def step(inputs, targets, *more):  # more: what else loss_of takes (documents)
        with autocast:
            loss = loss_of(model, inputs, targets, *more)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()
    return step


def train_rate(model, loss_of, batches, device, steps, warmup=3):
    step_once = training_step(model, loss_of, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses = []
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        losses.append(step_once(*batches[step % len(batches)]))
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    tokens = steps * batches[0][0].numel()
    memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return tokens / elapsed, memory, float(losses[warmup])


def issue_shape(device: torch.device, small: bool = False):
    """(model section, vocabulary, batch): the issue's GPU model on CUDA, a small one on the
    CPU (or anywhere with `small`)."""
    if device.type == "cuda" and not small:
        return ModelSection(width=1536, layers=16, heads=12, mlp_hidden=4096, seq_len=1024), \
            32000, 16
    return ModelSection(width=256, layers=4, heads=4, mlp_hidden=1024, seq_len=256), 4096, 8


def build(kind: str, compiled: bool, cfg, vocab: int, state: dict, device):
    """A variant's model with the reference weights: `peer`, `liger`, or slimcore's `torch`
    or `native` backend (compiled, the native backend keeps the kernels NATIVE_UNDER_COMPILE
    names, as a run with model.compile does)."""
    if kind in ("peer", "liger"):
        model = (Peer if kind == "peer" else LigerPeer)(cfg, vocab)
        model.load_state_dict(state, strict=False)  # rotary tables are buffers of its own
    else:
        ops = (under_compile(NativeOps, device.type) if compiled else NativeOps) \
            if kind == "native" else TorchOps
        model = GPT(cfg, vocab, ops)
        model.load_state_dict(state)
    return model.to(device)


def slimcore_loss(model, inputs, targets):
    loss_sum, _, count = model(inputs, targets)
    return loss_sum / count


def peer_loss(model, inputs, targets):
    return model(inputs, targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    cfg, vocab, batch = issue_shape(device)
    torch.manual_seed(0)
    reference = GPT(cfg, vocab, TorchOps)
    state = reference.state_dict()
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, vocab, (batch, cfg.seq_len), generator=g).to(device),
                torch.randint(0, vocab, (batch, cfg.seq_len), generator=g).to(device))
               for _ in range(4)]
    peak = device_peak_flops(device)
    flops = flops_per_token(reference.matmul_parameters(), cfg.layers, cfg.width, cfg.seq_len)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}, {torch.get_num_threads()} threads; width "
          f"{cfg.width}, {cfg.layers} layers, sequence {cfg.seq_len}, batch {batch}, "
          f"vocabulary {vocab}")

    variants = [("peer eager", "peer", False), ("slimcore torch eager", "torch", False),
                ("slimcore native eager", "native", False)]
    if not args.no_compile:
        variants += [("peer compile", "peer", True), ("slimcore torch compile", "torch", True),
                     ("slimcore native compile", "native", True)]
    if liger_available(device):
        variants += [("liger eager", "liger", False)]
        if not args.no_compile:
            variants += [("liger compile", "liger", True)]
    results = {}
    for label, kind, compiled in variants:
        model = build(kind, compiled, cfg, vocab, state, device)
        runner = torch.compile(model) if compiled else model
        rate, memory, first_loss = train_rate(runner, peer_loss if kind in ("peer", "liger")
                                              else slimcore_loss, batches, device, args.steps)
        results[label] = rate
        mfu = f"{rate * flops / peak:.1%}" if peak else "n/a"
        mem = f"{memory / 2**30:.1f} GiB" if memory is not None else "n/a"
        print(f"{label:<26} {rate:>10,.0f} tok/s  MFU {mfu:>6}  peak memory {mem:>9}  "
              f"first loss {first_loss:.4f}", flush=True)
        del model, runner
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for label in results:
        ratios = [f"{results[label] / results[peer]:.2f}x {peer}" for peer in
                  ("peer eager", "peer compile", "liger compile") if peer in results]
        print(f"{label:<26} " + ", ".join(ratios))


if __name__ == "__main__":
    main()
