"""The chunked output loss (core/chunked_loss.py) against the plain formula
(TorchOps.plain_output_loss: full logits, F.cross_entropy), over several chunks, with both
scorers: PyTorch operators (the torch backend's, for logits past CHUNK_ELEMENTS) and the
native fused kernel (the C build). Float32 within 1e-5 relative for the loss, 1e-4 for the
gradients (sums over the vocabulary); bf16 within 2e-2."""

import pytest
import torch

from slimcore.model.chunked_loss import chunked_output_loss, torch_score
from slimcore.model.ops import TorchOps


def scorers():
    from slimcore.model.native_ops import _native_score

    return {"torch": torch_score, "native": _native_score}


@pytest.mark.parametrize("scorer", ["torch", "native"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows,chunk_rows", [(37, 5), (64, 64), (9, 1)])
def test_chunked_loss_matches_the_plain_formula(scorer, dtype, rows, chunk_rows):
    vocab, width = 301, 24
    generator = torch.Generator().manual_seed(rows)
    hidden = torch.randn(rows, width, generator=generator).to(dtype).requires_grad_()
    weight = (torch.randn(vocab, width, generator=generator) * 0.5).to(dtype).requires_grad_()
    targets = torch.randint(0, vocab, (rows,), generator=generator)
    targets[::4] = -100  # ignored rows, in every chunk
    function = chunked_output_loss(scorers()[scorer], chunk_elements=chunk_rows * vocab)

    got = function.apply(hidden, weight, targets)
    want = TorchOps.plain_output_loss(hidden, weight, targets)
    loose = dtype == torch.bfloat16
    torch.testing.assert_close(got[0], want[0].float(), rtol=2e-2 if loose else 1e-5,
                               atol=1e-2 if loose else 1e-4)
    assert abs(int(got[1]) - int(want[1])) <= (1 if loose else 0)  # bf16 may tie maxima
    assert int(got[2]) == int(want[2]) == int((targets != -100).sum())
    upstream = torch.tensor(0.37)
    tolerance = dict(rtol=2e-2, atol=2e-2) if loose else dict(rtol=1e-4, atol=1e-5)
    for a, b in zip(torch.autograd.grad(got[0], (hidden, weight), upstream),
                    torch.autograd.grad(want[0], (hidden, weight), upstream)):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, **tolerance)


def test_the_torch_backend_chunks_logits_past_the_limit(monkeypatch):
    """TorchOps.output_loss: the plain formula up to CHUNK_ELEMENTS logits, chunked past it,
    with the same results."""
    from slimcore.model import chunked_loss, ops

    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(40, 16, generator=generator, requires_grad=True)
    weight = torch.randn(100, 16, generator=generator, requires_grad=True)
    targets = torch.randint(0, 100, (40,), generator=generator)
    plain = TorchOps.output_loss(hidden, weight, targets)
    assert plain[0].grad_fn.name() != "ChunkedOutputLossBackward"
    monkeypatch.setattr(ops, "CHUNK_ELEMENTS", 1000)  # 40 x 100 logits: past it
    monkeypatch.setattr(ops, "TorchChunkedOutputLoss",
                        chunked_loss.chunked_output_loss(torch_score, chunk_elements=1000))
    chunked = TorchOps.output_loss(hidden, weight, targets)
    assert "ChunkedOutputLoss" in chunked[0].grad_fn.name()
    torch.testing.assert_close(chunked[0], plain[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(chunked[1], plain[1])
