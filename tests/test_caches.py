"""The cache heals: a tokenizer model or a native library in the cache that fails its check
is made again (with a warning), and a cache folder that cannot be written is one line that
names it and the variable that moves it. Real files, real builds, real runs."""

import os
import subprocess
import sys

import pytest

from conftest import run_in_process

from slimcore.native import loader as native
from slimcore.config.schema import TokenizerSection
from slimcore.text.tokenizer import train_or_reuse

TEXTS = [f"Sentence {i} about the state of the union and the people in it." for i in range(200)]


def test_a_corrupt_tokenizer_model_in_the_cache_is_trained_again(tmp_path, capsys):
    section = TokenizerSection(vocab_size=300, cache_dir=str(tmp_path))
    first = train_or_reuse(section, TEXTS, log=print)
    model = first.path.read_bytes()
    first.path.write_bytes(model[:100] + b"\x00" * 50 + model[150:])  # a damaged sector
    second = train_or_reuse(section, TEXTS, log=print)
    out = capsys.readouterr()
    assert "fails its sha256 check" in out.err and "training it again" in out.err
    assert second.path.read_bytes() == model  # the same training: the same model
    assert second.encode("the state of the union") == first.encode("the state of the union")
    train_or_reuse(section, TEXTS, log=print)
    assert "reusing" in capsys.readouterr().out  # healed: reused from now on


def test_a_run_with_a_corrupt_cached_tokenizer_goes_on(write_config, cli, tmp_path):
    cache = tmp_path / "cache"
    env = {"SLIMCORE_CACHE_DIR": str(cache)}
    config = write_config({"run": {"steps": 2}, "tokenizer": {"cache_dir": str(cache)}})
    run_in_process(config)
    (model,) = (cache / "tokenizers").glob("*.model")
    model.write_bytes(b"this is not a sentencepiece model")
    result = cli("run", str(config), "--overwrite", env=env)
    assert result.returncode == 0, result.stderr
    assert "fails its sha256 check" in result.stderr


def test_a_truncated_native_library_is_built_again(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SLIMCORE_CACHE_DIR", str(tmp_path))
    path = native.build("cpu")
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 3])  # what a full disk or a killed copy leaves
    assert native.build("cpu") == path
    assert "fails its sha256 check" in capsys.readouterr().err
    assert len(path.read_bytes()) == len(whole)
    # And it loads and answers in a fresh process (a truncated one dies there of SIGBUS).
    probe = ("from cffi import FFI; from slimcore.native import loader as native; ffi = FFI(); "
             "ffi.cdef(native.cdef_text()); print(ffi.dlopen(%r).slimcore_abi_version())"
             % str(path))
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == str(native.ABI_VERSION)


@pytest.mark.parametrize("kind", ["a file", "read-only"])
def test_an_unusable_cache_folder_is_one_line_naming_it(write_config, cli, tmp_path, kind):
    cache = tmp_path / "cache"
    if kind == "a file":
        cache.write_text("not a folder")
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        cache.mkdir()
        cache.chmod(0o500)
    result = cli("run", str(write_config({"run": {"steps": 2}})),
                 env={"SLIMCORE_CACHE_DIR": str(cache)}, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(cache) in lines[0] and "SLIMCORE_CACHE_DIR" in lines[0]


def test_a_cached_file_replaced_with_its_checksum_is_made_again(monkeypatch, tmp_path, capsys):
    """A tokenizer model and a native library each replaced together with its `.sha256` (a
    copy cut short, then vouched for): the model is trained again, the library built again
    before it is loaded (loading it died of SIGBUS, or was a traceback, on every run)."""
    monkeypatch.setenv("SLIMCORE_CACHE_DIR", str(tmp_path))
    section = TokenizerSection(vocab_size=300, cache_dir=str(tmp_path))
    model = train_or_reuse(section, TEXTS, log=print).path
    good_model = model.read_bytes()
    model.write_bytes(b"\xff not a model " * 20)
    native.vouch(model)
    assert train_or_reuse(section, TEXTS, log=print).path.read_bytes() == good_model
    assert "is not a model SentencePiece loads; training it again" in capsys.readouterr().err
    library = native.build("cpu")
    whole = library.read_bytes()
    library.write_bytes(whole[: len(whole) // 2])
    native.vouch(library)
    probe = ("from slimcore.native import loader as native; "
             "print(native.library('cpu')[1].slimcore_abi_version())")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env={**os.environ, "SLIMCORE_CACHE_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(native.ABI_VERSION)
    assert "cut short; building it again" in result.stderr
    assert library.read_bytes() == whole
