"""data.document_mask: documents packed into one row are computed as if each were alone.

Tolerance: float32, each document's summed loss within 1e-5 relative of its loss alone (the
same arithmetic in another order: a masked softmax over more keys, whose masked terms are
exact zeros)."""

import pytest
import torch

from slimcore import IGNORE_INDEX, Batch
from slimcore.config.schema import ModelSection
from slimcore.model.documents import document_attention_mask, document_positions
from slimcore.model.gpt import GPT
from slimcore.model.ops import TorchOps

BOS, EOS, VOCAB = 1, 2, 101
LLAMA = dict(kv_heads=1, head_dim=12, tie_embeddings=True,
             rope_scaling={"type": "llama3", "factor": 8.0})


def ops_named(name):
    if name == "torch":
        return TorchOps
    from slimcore.model.native_ops import NativeOps
    return NativeOps


def model(ops="torch", seed=0, seq_len=48, **shape):
    torch.manual_seed(seed)
    # weights larger than the default's 0.02, so attention's reach shows in the losses
    cfg = ModelSection(width=32, layers=2, heads=4, mlp_hidden=48, seq_len=seq_len,
                       init_std=0.2, **shape)
    return GPT(cfg, VOCAB, ops_named(ops))


def documents(lengths, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.cat([torch.tensor([BOS]), torch.randint(3, VOCAB, (n,), generator=generator),
                       torch.tensor([EOS])]) for n in lengths]


def document_losses(net, docs, row, masked=True):
    """Each whole document's summed loss inside the packed `row`: the targets of the others
    ignored."""
    batch = Batch.from_sequences(row[None], BOS)
    losses, offset = [], 0
    for doc in docs:
        targets = torch.full_like(batch.targets, IGNORE_INDEX)
        span = slice(offset, offset + len(doc) - 1)  # the document predicting itself
        targets[0, span] = batch.targets[0, span]
        loss, _, _ = net(batch.inputs, targets, batch.documents if masked else None)
        losses.append(loss)
        offset += len(doc)
    return losses


def alone(net, doc):
    batch = Batch.from_sequences(doc[None])
    return net(batch.inputs, batch.targets)[0]


@pytest.mark.parametrize("ops", ["torch", "native"])
@pytest.mark.parametrize("shape", [{}, LLAMA], ids=["gpt", "llama"])
def test_each_document_in_a_packed_row_scores_as_it_does_alone(ops, shape):
    net = model(ops, **shape)
    docs = documents([9, 20, 5])
    row = torch.cat(docs + [torch.tensor([BOS, 7, 8])])  # and the next document's start
    for doc, packed in zip(docs, document_losses(net, docs, row)):
        torch.testing.assert_close(packed, alone(net, doc), rtol=1e-5, atol=1e-6)
    # unmasked, the later documents see the earlier ones: the same row scores otherwise
    unmasked = document_losses(net, docs, row, masked=False)
    torch.testing.assert_close(unmasked[0], alone(net, docs[0]), rtol=1e-5, atol=1e-6)
    assert abs(unmasked[1] / alone(net, docs[1]) - 1) > 1e-3


@pytest.mark.parametrize("ops", ["torch", "native"])
def test_gradients_with_masking_match_the_documents_alone(ops):
    """The backward pass too (the native rotary's token-major form, its inverse rotation):
    the gradient of the packed row's loss is the sum of the documents' alone."""
    docs = documents([6, 11])
    packed, separate = model(ops), model(ops)
    batch = Batch.from_sequences(torch.cat(docs)[None], BOS)
    # EOS predicting the next document's BOS has no counterpart alone
    batch.targets[batch.targets == BOS] = IGNORE_INDEX
    packed(batch.inputs, batch.targets, batch.documents)[0].backward()
    for doc in docs:
        alone(separate, doc).backward()
    for (name, p), q in zip(packed.named_parameters(), separate.parameters()):
        # summed losses of ~100 nats: float32 gradients agree to 1e-5 absolute
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5,
                                   msg=lambda m, n=name: f"{n}: {m}")


def test_activation_checkpointing_and_compile_keep_documents_apart():
    docs = documents([7, 12, 4])
    batch = Batch.from_sequences(torch.cat(docs)[None], BOS)
    eager = model()
    expected = eager(batch.inputs, batch.targets, batch.documents)[0]
    recomputed = model(activation_checkpointing=True)
    recomputed.train()
    torch.testing.assert_close(recomputed(batch.inputs, batch.targets, batch.documents)[0],
                               expected, rtol=1e-6, atol=1e-6)
    torch._dynamo.reset()
    compiled = torch.compile(model(), backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(batch.inputs, batch.targets, batch.documents)[0],
                               expected, rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()


def test_without_documents_the_model_is_unchanged():
    """Masking off (documents None) is the causal model, and one document per row with
    masking on is too."""
    net = model()
    row = torch.cat(documents([30]))[None]
    batch = Batch.from_sequences(row, BOS)
    assert batch.documents.unique().tolist() == [1]
    plain = net(batch.inputs, batch.targets)[0]
    torch.testing.assert_close(net(batch.inputs, batch.targets, batch.documents)[0], plain,
                               rtol=1e-6, atol=1e-6)


def test_positions_restart_and_the_mask_stays_inside_each_document():
    # a row starting mid-document (no BOS first), then two documents
    inputs = torch.tensor([[5, 6, BOS, 7, 8, 9, BOS, 4]])
    docs = Batch.from_sequences(torch.cat([inputs, torch.tensor([[3]])], dim=1), BOS).documents
    assert docs.tolist() == [[0, 0, 1, 1, 1, 1, 2, 2]]
    assert document_positions(docs).tolist() == [[0, 1, 0, 1, 2, 3, 0, 1]]
    mask = document_attention_mask(docs)[0, 0]
    assert mask[4].tolist() == [False, False, True, True, True, False, False, False]
    assert mask[7].tolist() == [False] * 6 + [True, True]
    assert mask.diagonal().all()  # every position sees itself: no empty softmax


def test_a_single_row_batch_owns_its_inputs_and_targets():
    """A source that masks targets in place (the sample source pads this way) must not
    rewrite the inputs: one row's slices were views of one storage."""
    batch = Batch.from_sequences(torch.tensor([[BOS, 5, 6, EOS]]))
    batch.targets[0, 1:] = IGNORE_INDEX
    assert batch.inputs.tolist() == [[BOS, 5, 6]]


def test_a_run_with_document_mask_trains_and_evaluates_apart(tmp_path):
    """The quickstart's chunk source marks its documents, and a run with data.document_mask
    trains other losses than the same run without it, from the same first loss (the same
    untrained model sees the same rows; only the attention differs)."""
    from slimcore.testing import tiny_run

    # speeches cut into documents of at most 1,000 characters: a few in each row of 129
    runs = {masked: tiny_run(tmp_path / str(masked), steps=4,
                             config={"data": {"document_mask": masked},
                                     "model": {"seq_len": 128},
                                     "corpus": {"max_document_chars": 1000},
                                     "eval": {"interval": 4}})
            for masked in (False, True)}
    plain, masked = ([m.loss for m in runs[k].metrics] for k in (False, True))
    assert abs(masked[0] - plain[0]) < 0.05 * plain[0]
    assert masked != plain
    assert runs[True].metrics[-1].eval_loss != runs[False].metrics[-1].eval_loss


def test_a_source_without_documents_under_document_mask_is_named(tmp_path):
    from slimcore import UserError
    from slimcore.testing import tiny_run

    from conftest import source_plugin

    def unmarked(run):
        row = run.config.model.seq_len + 1
        while True:
            yield Batch.from_sequences(torch.randint(3, 100, (run.config.data.batch_size, row)))

    plugin = source_plugin("unmarked", unmarked, ["words for a tokenizer to learn"] * 50)
    with pytest.raises(UserError, match="data source 'unmarked': batch 1 has no document "
                                        "boundaries .Batch.documents., which "
                                        "data.document_mask needs"):
        tiny_run(tmp_path, {"unmarked": plugin}, steps=2,
                 config={"data": {"source": "unmarked", "document_mask": True},
                         "tokenizer": {"vocab_size": 300}})
