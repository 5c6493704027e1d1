"""`slimcore generate`, `slimcore eval` and `slimcore export` on a checkpoint of a short
quickstart run: what a user gets, what the checkpoint carries, and every bad input (one
line, exit status 2, nothing written)."""

import io
import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import QUICKSTART, QUIET, run_cli, run_in_process
from slimcore.commands.cli import main
from slimcore.config.resolve import SMOKE_OVERRIDES
from slimcore.model.generation import SamplingSettings, generate
from slimcore.host.manager import SlimcorePluginManager
from slimcore.commands.trained import load_trained

def loaded(source):
    pm = SlimcorePluginManager()
    pm.discover()
    return load_trained(str(source), pm, torch.device("cpu"))


def command(capsys, *argv):
    """The CLI's own entry point in this process: (exit status, stdout, stderr)."""
    code = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slimcore: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_generate_streams_text_and_its_json_has_the_models_own_ids(trained_run):
    done = run_cli("generate", str(trained_run), "--prompt", "The state of the Union is",
                   "--prompt", "Congress must", "--temperature", "0", "--max-new-tokens",
                   "12", "--ignore-eos")
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.split("\n\n")
    assert first.startswith("The state of the Union is") and len(first) > 30
    assert second.startswith("Congress must")
    assert "generate: " in done.stderr and "step 20" in done.stderr

    done = run_cli("generate", str(trained_run), "--prompt", "Congress must", "--json",
                   "--temperature", "0", "--max-new-tokens", "12", "--ignore-eos")
    record = json.loads(done.stdout)  # stdout holds the JSON alone
    trained = loaded(trained_run)
    prompt_ids = [trained.tokenizer.bos_id] + trained.tokenizer.encode("Congress must")
    expected = generate(trained.model, prompt_ids,
                        SamplingSettings(max_new_tokens=12, temperature=0))
    assert record["ids"] == expected and record["new_tokens"] == 12
    assert record["stopped"] == "max_new_tokens"
    assert second.strip() == "Congress must" + record["text"].rstrip()


def test_prompts_come_from_a_file_or_standard_input_and_sampling_is_seeded(
        trained_run, tmp_path, capsys, monkeypatch):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("We the people\n\nThe economy\n")
    code, out, _ = command(capsys, "generate", trained_run, "--prompt-file", prompts, "--json",
                           "--max-new-tokens", "6", "--seed", "5")
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["prompt"] for r in records] == ["We the people", "The economy"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("We the people\nThe economy\n"))
    code, again, _ = command(capsys, "generate", trained_run, "--json", "--max-new-tokens",
                             "6", "--seed", "5")
    assert [json.loads(line)["ids"] for line in again.splitlines()] == \
        [r["ids"] for r in records]
    code, other, _ = command(capsys, "generate", trained_run, "--prompt-file", prompts,
                             "--json", "--max-new-tokens", "6", "--seed", "6")
    assert [json.loads(line)["ids"] for line in other.splitlines()] != \
        [r["ids"] for r in records]


def test_eval_gives_the_runs_own_evaluation_and_scores_other_text(trained_run, tmp_path,
                                                                    capsys):
    history = [json.loads(line) for line in
               (trained_run / "history" / "metrics.jsonl").read_text().splitlines()]
    in_run = history[-1]
    assert in_run["step"] == 20 and in_run["eval_loss"] is not None
    code, out, _ = command(capsys, "eval", trained_run, "--json")
    result = json.loads(out)
    assert code == 0 and result["step"] == 20 and result["batches"] == 2
    assert result["loss"] == pytest.approx(in_run["eval_loss"], rel=1e-6)
    assert result["accuracy"] == pytest.approx(in_run["eval_accuracy"], abs=1e-9)
    assert result["perplexity"] == pytest.approx(torch.tensor(result["loss"]).exp().item())

    corpus = tmp_path / "other.jsonl"
    text = "The budget of the Navy shall be raised by ten per cent in the coming year. "
    corpus.write_text("".join(json.dumps({"text": text * 40}) + "\n" for _ in range(20)))
    code, out, _ = command(capsys, "eval", trained_run, "--data", corpus, "--batches", "1",
                           "--json")
    other = json.loads(out)
    assert code == 0 and other["data"] == str(corpus) and other["batches"] == 1
    assert 0 < other["tokens"] <= 4 * 64 and other["loss"] != result["loss"]
    code, out, _ = command(capsys, "eval", trained_run, "--data", corpus, "--batches", "1")
    assert code == 0 and out.startswith("eval: ") and "perplexity" in out


def test_a_checkpoint_carries_its_tokenizer(trained_run, tmp_path, capsys):
    """Generate, eval and resume need neither the tokenizer cache nor the corpus to
    tokenize: the checkpoint holds the SentencePiece model (and the run folder a copy)."""
    trained = loaded(trained_run)
    assert trained.checkpoint.tokenizer_model == (trained_run / "tokenizer.model").read_bytes()
    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    empty_cache = tmp_path / "empty-cache"
    status, _ = run_in_process(QUICKSTART, overrides=[
        *SMOKE_OVERRIDES, "run.steps=22", "eval.interval=20", "eval.batches=2",
        f"output.dir={copy}", f"tokenizer.cache_dir={empty_cache}"], disabled=QUIET,
        resume="auto")
    out = capsys.readouterr().out
    assert status == "completed" and "tokenizer: the one" in out
    assert not (empty_cache / "tokenizers").exists()  # nothing trained, nothing cached
    assert loaded(copy).checkpoint.step == 22


@pytest.mark.parametrize("argv, says", [
    (["generate", "{run}", "--prompt", "x", "--temperature", "-1"],
     "--temperature: must be at least 0"),
    (["generate", "{run}", "--prompt", "x", "--top-p", "0"], "--top-p: must be more than 0"),
    (["generate", "{run}", "--prompt", "x", "--top-k", "-3"], "--top-k: must be at least 0"),
    (["generate", "{run}", "--prompt", "x", "--max-new-tokens", "0"], "--max-new-tokens: must"),
    (["generate", "{run}", "--prompt", "x", "--max-new-tokens", "9" * 23],
     "--max-new-tokens: does not fit in 64 bits"),
    (["generate", "{run}", "--prompt", "x", "--max-new-tokens", "2000000"],
     "--max-new-tokens: must be at most 1000000"),
    (["generate", "{run}", "--prompt", "x", "--seed", "9" * 23], "--seed: does not fit in 64"),
    (["generate", "{run}", "--prompt", "x", "--bogus"], "unrecognized arguments: --bogus"),
    (["generate", "{run}", "--prompt-file", "{tmp}/nothing.txt"], "--prompt-file: cannot read"),
    (["generate", "{run}", "--prompt-file", "{tmp}/blank.txt"], "the prompts given are all empty"),
    (["generate", "{tmp}/nowhere", "--prompt", "x"], "SOURCE: {tmp}/nowhere does not exist"),
    (["generate", "{tmp}", "--prompt", "x"], "holds no intact checkpoint"),
    (["generate", "{run}/config.yaml", "--prompt", "x"], "damaged or not a slimcore checkpoint"),
    (["generate", "{run}", "--prompt", "x", "--checkpointer", "nope"],
     "--checkpointer: unknown checkpointer 'nope' (installed: sharded, three_file"),
    (["generate", "{run}", "--prompt", "x", "--device", "cuda:7"], "run.device"),
    (["eval", "{run}", "--batches", "0"], "--batches: must be at least 1"),
    (["eval", "{run}", "--data", "{tmp}/missing.jsonl"], "{tmp}/missing.jsonl"),
    (["eval", "{run}", "--set", "data.batch_size=0"], "data.batch_size"),
    (["export", "{run}", "--format", "onnx", "--output", "{tmp}/x"],
     "--format: unknown export format 'onnx' (installed: hf"),
])
def test_bad_inputs_get_one_line_and_exit_status_2(argv, says, trained_run, tmp_path, capsys):
    fill = lambda s: s.format(run=trained_run, tmp=tmp_path)
    (tmp_path / "blank.txt").write_text("\n  \n")
    code, out, err = command(capsys, *map(fill, argv))
    assert code == 2 and fill(says) in error_line(err)
    assert not (tmp_path / "x").exists()


def test_damaged_or_missing_checkpoints_are_named(trained_run, tmp_path, capsys):
    copy = tmp_path / "damaged"
    shutil.copytree(trained_run, copy)
    decoder = copy / "checkpoints" / "checkpoint_step_20.bin.decoder"
    data = bytearray(decoder.read_bytes())
    data[len(data) // 2] ^= 0xFF
    decoder.write_bytes(bytes(data))
    code, _, err = command(capsys, "generate", copy / "checkpoints" / "checkpoint_step_20.bin",
                           "--prompt", "x")
    assert code == 2 and "fails its sha256 check (damaged)" in error_line(err)
    # The run folder's only checkpoint is damaged: skipped with a warning, then nothing left.
    code, _, err = command(capsys, "eval", copy)
    assert code == 2 and "holds no intact checkpoint" in err.strip().splitlines()[-1]
    assert "falling back to the previous checkpoint" in err
    (tmp_path / "fresh" / "checkpoints").mkdir(parents=True)
    code, _, err = command(capsys, "export", tmp_path / "fresh", "--format", "hf",
                           "--output", tmp_path / "out")
    assert code == 2 and "holds no intact checkpoint" in error_line(err)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_export_refuses_a_folder_that_holds_files_and_leaves_it_alone(trained_run, tmp_path,
                                                                       capsys):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    code, _, err = command(capsys, "export", trained_run, "--format", "hf", "--output", target)
    assert code == 2 and "exists and is not an empty folder" in error_line(err)
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    # An empty folder is taken, and a real process reports a bad input the same way.
    (tmp_path / "empty").mkdir()
    code, out, _ = command(capsys, "export", trained_run, "--format", "hf", "--output",
                           tmp_path / "empty", "--dtype", "bfloat16")
    assert code == 0 and "model.safetensors" in out
    config = json.loads((tmp_path / "empty" / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16"
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "empty" / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    done = run_cli("export", str(trained_run), "--format", "hf", "--output", str(target))
    assert done.returncode == 2 and "Traceback" not in done.stderr


# An export format that writes a megabyte, says where, then takes its time: a process to stop.
SLOW_EXPORT = {"slimcore-slow-export": ("slow_export", "slow_export", "slimcore_slow_export", """
import os
import time
from pathlib import Path

from slimcore import ExportFormat, hookimpl


class Slow(ExportFormat):
    name = "slow"

    def export(self, checkpoint, output, dtype):
        (Path(output) / "weights.bin").write_bytes(os.urandom(1 << 20))
        Path(os.environ["SLOW_EXPORT_MARK"]).write_text(str(output))
        time.sleep(600)
        return "never"


@hookimpl
def register_export_formats():
    return [Slow()]
""")}


@pytest.fixture(scope="module")
def slow_export(tmp_path_factory):
    from conftest import pip_install

    return pip_install(SLOW_EXPORT, tmp_path_factory.mktemp("slow-src"),
                       tmp_path_factory.mktemp("slow-site"), version="0.0.1")


def start_slow_export(trained_run, target, env):
    import subprocess

    from conftest import SANDBOX, guarded

    mark = target.with_name("mark")
    mark.unlink(missing_ok=True)
    process = subprocess.Popen([sys.executable, "-m", "slimcore", "export", str(trained_run),
                                "--format", "slow", "--output", str(target)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=SANDBOX, env=guarded({**env, "SLOW_EXPORT_MARK": str(mark)}))
    deadline = time.monotonic() + 120
    while not mark.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.05)
    return process, Path(mark.read_text())


def test_export_never_touches_a_folder_of_the_users_beside_its_output(trained_run, tmp_path,
                                                                       capsys):
    """DIR.partial is the user's: an export to DIR leaves it byte for byte as it was."""
    mine = tmp_path / "model.partial"
    mine.mkdir()
    (mine / "notes.txt").write_bytes(b"\x00weeks of notes\xff")
    code, out, _ = command(capsys, "export", trained_run, "--format", "hf", "--output",
                           tmp_path / "model")
    assert code == 0 and "model.safetensors" in out
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert (mine / "notes.txt").read_bytes() == b"\x00weeks of notes\xff"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.partial"]


def test_a_stopped_export_leaves_nothing_behind(trained_run, tmp_path, slow_export):
    """SIGTERM mid-export: exit 143, no output and no half-written folder. SIGKILL (no
    handler runs): the next export to that folder removes what the killed one left."""
    import signal

    target = tmp_path / "model"
    process, aside = start_slow_export(trained_run, target, slow_export)
    assert aside.parent == tmp_path and (aside / "weights.bin").exists()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143 and err.strip().splitlines()[-1] == "slimcore: terminated"
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mark"]

    process, aside = start_slow_export(trained_run, target, slow_export)
    process.kill()
    process.wait(timeout=60)
    assert aside.exists()  # nothing runs on SIGKILL
    done = run_cli("export", str(trained_run), "--format", "hf", "--output", str(target))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mark", "model"]


def test_prompts_that_are_not_utf8_are_continued(trained_run):
    """Bytes that are not UTF-8 on the command line or on stdin: each becomes U+FFFD, and the
    prompt is continued (both were tracebacks)."""
    import os
    import subprocess

    from conftest import SANDBOX, guarded

    argv = [sys.executable, "-m", "slimcore", "generate", str(trained_run), "--max-new-tokens",
            "4", "--temperature", "0"]
    by_flag = subprocess.run(argv + ["--prompt", os.fsdecode(b"caf\xe9 and")], cwd=SANDBOX,
                             capture_output=True, env=guarded(), timeout=120)
    by_stdin = subprocess.run(argv, input=b"caf\xe9 and\n\xff\xfe\n", cwd=SANDBOX,
                              capture_output=True, env=guarded(), timeout=120)
    for done in (by_flag, by_stdin):
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        assert done.stdout.decode().startswith("caf\ufffd and")
        assert b"Traceback" not in done.stderr


def test_a_reader_that_goes_away_ends_generate_quietly(trained_run):
    """`slimcore generate ... | head`: no traceback, the SIGPIPE status."""
    import os
    import subprocess

    process = subprocess.Popen(
        [sys.executable, "-m", "slimcore", "generate", str(trained_run), "--prompt", "We",
         "--prompt", "The", "--max-new-tokens", "3000", "--ignore-eos", "--temperature", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    assert process.stdout.read(2) == b"We"
    process.stdout.close()  # the reader leaves after a few bytes
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err
