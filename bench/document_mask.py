"""The step cost of `data.document_mask`: the same model, weights and packed rows trained
with documents kept apart and without (plain causal attention, the peer), one process.

    python bench/document_mask.py [--device cpu|cuda] [--steps 10] [--mean-tokens 300]

Rows are packed as the `chunk` source packs them: documents of BOS + tokens + EOS back to
back, their lengths drawn from an exponential distribution of mean `--mean-tokens` (web
text's documents: a few hundred tokens, a long tail). Masked, the model gathers a rotary
table per row and hands scaled_dot_product_attention a (B, 1, T, T) boolean mask
(core/model/documents.py); unmasked, `is_causal`. Both backends, eager. Printed: tokens/s
of each and the ratio masked / unmasked (above 1: masking is faster). Shapes: the issue's
GPU model on CUDA, a small one on the CPU (bench/throughput.py's).
"""

from __future__ import annotations

import argparse
import statistics

import torch

from slimcore import Batch
from slimcore.model.gpt import GPT
from slimcore.model.native_ops import NativeOps
from slimcore.model.ops import TorchOps

from throughput import issue_shape, train_rate

BOS, EOS = 1, 2


def packed_rows(count: int, seq_len: int, vocab: int, mean_tokens: int, seed: int = 0):
    """(count, seq_len + 1) ids: documents of exponential lengths back to back."""
    generator = torch.Generator().manual_seed(seed)
    need, pieces, documents = count * (seq_len + 1), [], 0
    while need > 0:
        length = max(1, int(torch.empty(1).exponential_(1 / mean_tokens,
                                                        generator=generator)))
        doc = torch.cat([torch.tensor([BOS]), torch.randint(3, vocab, (length,),
                                                            generator=generator),
                         torch.tensor([EOS])])
        pieces.append(doc)
        need -= len(doc)
        documents += 1
    rows = torch.cat(pieces)[:count * (seq_len + 1)].view(count, seq_len + 1)
    return rows, documents


def masked_loss(model, inputs, targets, documents):
    loss_sum, _, count = model(inputs, targets, documents)
    return loss_sum / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--mean-tokens", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg, vocab, batch = issue_shape(device)
    rows, documents = packed_rows(batch * 4, cfg.seq_len, vocab, args.mean_tokens)
    batches = [Batch.from_sequences(part, BOS) for part in rows.split(batch)]
    print(f"device {device}, model width {cfg.width} x {cfg.layers} layers, rows {batch} x "
          f"{cfg.seq_len}, {documents} documents in {len(rows)} rows (mean "
          f"{args.mean_tokens} tokens)")
    state = GPT(cfg, vocab, TorchOps).state_dict()
    for name, ops in (("torch", TorchOps), ("native", NativeOps)):
        rates = {}
        for masked in (False, True):
            model = GPT(cfg, vocab, ops)
            model.load_state_dict(state)
            model.to(device)
            on_device = [(b.inputs.to(device), b.targets.to(device),
                          b.documents.to(device) if masked else None) for b in batches]
            rates[masked] = statistics.median(
                train_rate(model, masked_loss, on_device, device, args.steps)[0]
                for _ in range(args.repeats))
        print(f"{name:7s} unmasked {rates[False]:9,.0f} tok/s   masked {rates[True]:9,.0f} "
              f"tok/s   masked/unmasked {rates[True] / rates[False]:.3f}x")


if __name__ == "__main__":
    main()
