"""Bits per byte: each target's bytes add up to the text's UTF-8 bytes, and the bits per byte
of an evaluation are the summed loss over ln 2 times those bytes, counted by hand."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from slimcore import IGNORE_INDEX, Batch
from slimcore.config.schema import ModelSection, TokenizerSection
from slimcore.model.gpt import GPT
from slimcore.model.ops import TorchOps
from slimcore.text.token_bytes import TokenBytes, bits_per_byte
from slimcore.text.tokenizer import train_or_reuse
from slimcore.train.evaluation import evaluate

TEXTS = [f"Document {i}: the state of the Union, {i * 7} people, and a road ahead."
         for i in range(200)]
# A leading space, two spaces, accents, CJK and a check mark (byte pieces: the tokenizer
# has never seen them), a newline, and a one-letter document.
DOCUMENTS = ["The state of the Union is strong.", "  Two spaces, naïve café — 東京 ✓\nend", "x"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    section = TokenizerSection(vocab_size=300, cache_dir=str(tmp_path_factory.mktemp("tok")))
    return train_or_reuse(section, TEXTS, log=lambda _: None)


def test_the_targets_stand_for_every_byte_of_the_text_and_no_more(tokenizer):
    ids = tokenizer.encode_documents(DOCUMENTS)
    batch = Batch.from_sequences(ids.view(1, -1))
    counter = TokenBytes(tokenizer, torch.device("cpu"))
    whole = sum(len(d.encode("utf-8")) for d in DOCUMENTS)
    assert int(counter.count(batch)) == whole
    # Masked targets (IGNORE_INDEX) count nothing: two complementary masks share the bytes.
    first = torch.arange(batch.targets.shape[1]) < 10
    parts = [counter.count(Batch(batch.inputs, torch.where(mask, IGNORE_INDEX, batch.targets)))
             for mask in (first, ~first)]
    assert all(0 < int(part) < whole for part in parts) and int(sum(parts)) == whole


def test_an_evaluations_bits_per_byte_is_its_nats_over_ln2_bytes_by_hand(tokenizer):
    torch.manual_seed(0)
    model = GPT(ModelSection(width=32, layers=2, heads=4, mlp_hidden=48, seq_len=256),
                tokenizer.vocab_size, TorchOps)
    ids = tokenizer.encode_documents(DOCUMENTS)
    batch = Batch.from_sequences(ids.view(1, -1))
    loss, _, bpb = evaluate(model, [batch], torch.device("cpu"), torch.autocast("cpu",
                            enabled=False), TokenBytes(tokenizer, torch.device("cpu")))
    with torch.no_grad():
        logits = model.head(model.hidden_states(batch.inputs))
    nats = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), reduction="sum")
    assert loss == pytest.approx(nats.item() / batch.target_count, rel=1e-5)
    whole = sum(len(d.encode("utf-8")) for d in DOCUMENTS)
    assert bpb == pytest.approx(nats.item() / (math.log(2) * whole), rel=1e-5)
    assert bits_per_byte(3.0, 0) is None  # targets that stand for no text (boundaries)


def test_a_run_records_bits_per_byte_and_eval_says_the_same(trained_run, cli):
    """The history of a run holds both, and `slimcore eval` on its checkpoint gives the
    held-out value the run measured at its last step."""
    records = [json.loads(line) for line in
               (trained_run / "history" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["bits_per_byte"] > 0 for r in records)
    last = records[-1]
    ratio = last["eval_loss"] / last["eval_bits_per_byte"]  # ln 2 x bytes per target
    assert 1.0 < ratio < 10.0
    result = cli("eval", str(trained_run), "--json")
    assert result.returncode == 0, result.stderr
    said = json.loads(result.stdout)
    assert said["bits_per_byte"] == pytest.approx(last["eval_bits_per_byte"], rel=1e-6)
