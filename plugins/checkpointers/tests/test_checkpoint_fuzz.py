"""Crafted and damaged checkpoints, seeded and bounded: every reader (the checkpointer's
`load`, `newest`, `inspect`, `generate`, `--resume auto`) either uses the set or refuses it
in one line (UserError, exit 2); `newest` skips it and falls back. Never a traceback, never
a model larger than the weights it was given.

A crafted set has its digests recomputed (as an attacker would), so every check past the
sha256 is exercised; a damaged one has not. The suite runs a few hundred cases through the
readers and a few dozen through the commands; the slow tier (`make test-slow`) five times
as many."""

import copy
import hashlib
import json
import random
import shutil
import struct
from pathlib import Path

import pytest

from conftest import run_in_process
from slimcore import UserError
from slimcore.commands.cli import main
from slimcore_checkpointers.tensor_files import ZEROS
from slimcore_checkpointers.three_file import (DIGEST_KEY, ThreeFile, format_of, newest_intact,
                                               read_checkpoint, run_id_of)



def counts(fast: int, slow: int):
    """`fast` cases in the suite, `slow` in the slow tier (`make test-slow`)."""
    return pytest.mark.parametrize("cases", [fast, pytest.param(slow, marks=pytest.mark.slow)])

SEED = 20261205


# -- a set, taken apart and put together again -------------------------------------------


def read_parts(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + length]), raw[8 + length:]


def write_parts(path: Path, header: dict | str, data: bytes, self_digest: bool) -> str:
    """Write a safetensors file; with `self_digest`, its own digest recomputed as the writer
    does (the header with zeros in its place, then the digest put there). Returns the
    file's sha256 (with its digest zeroed), as a manifest records it."""
    if self_digest and isinstance(header, dict) and \
            isinstance(header.setdefault("__metadata__", {}), dict):
        header["__metadata__"][DIGEST_KEY] = ZEROS
    text = header if isinstance(header, str) else json.dumps(header, separators=(",", ":"))
    encoded = text.encode("utf-8", "surrogatepass")
    encoded += b" " * (-len(encoded) % 8)
    prefix = struct.pack("<Q", len(encoded)) + encoded
    digest = hashlib.sha256(prefix + data).hexdigest()
    if self_digest and ZEROS.encode() in encoded:
        encoded = encoded.replace(ZEROS.encode(), digest.encode(), 1)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)
    return digest


class CraftedSet:
    """A copy of a good set whose parts a case edits; `commit()` writes them back with
    every digest and the manifest made consistent."""

    def __init__(self, base: Path):
        self.base = base
        self.headers, self.data = {}, {}
        for suffix in ("", ".embeddings", ".decoder"):
            self.headers[suffix], self.data[suffix] = read_parts(base.with_name(base.name + suffix))
        self.state = json.loads(self.headers[""]["__metadata__"]["slimcore"])
        self.metadata_edited = False  # the header's metadata replaced: the state stays out

    def tensor_entry(self, rng, suffix=None) -> dict:
        suffix = rng.choice(["", ".embeddings", ".decoder"]) if suffix is None else suffix
        names = [n for n in self.headers[suffix] if n != "__metadata__"]
        return self.headers[suffix][rng.choice(names)]

    def commit(self) -> None:
        manifest = self.state.get("manifest") if isinstance(self.state, dict) else None
        for suffix in (".embeddings", ".decoder"):
            path = self.base.with_name(self.base.name + suffix)
            digest = write_parts(path, self.headers[suffix], self.data[suffix], False)
            entry = manifest.get(path.name) if isinstance(manifest, dict) else None
            if isinstance(entry, dict) and entry.get("sha256") != "keep":
                entry["sha256"], entry["bytes"] = digest, path.stat().st_size
        header = self.headers[""]
        if not self.metadata_edited:
            header["__metadata__"]["slimcore"] = \
                self.state if isinstance(self.state, str) else state_text(self.state)
        write_parts(self.base, header, self.data[""], True)


# -- the mutations ------------------------------------------------------------------------


def nested(depth: int, leaf=0):
    for _ in range(depth):
        leaf = [leaf]
    return leaf


HOSTILE_VALUES = [None, True, -1, 0, 2**63, 10**30, -(2**70), 1.5, float("1e308"), "x", "",
                  "\ud800", "../../etc", [], {}, [1, 2], {"a": 1}, nested(5)]


def negative_shape(s, rng):
    entry = s.tensor_entry(rng)
    if len(entry["shape"]) == 2:
        entry["shape"] = [-entry["shape"][0], -entry["shape"][1]]  # the count still matches
    else:
        entry["shape"] = [-1, -entry["shape"][0]] if entry["shape"] else [-1, -1]


def odd_shape(s, rng):
    s.tensor_entry(rng)["shape"] = rng.choice(
        [[2**40, 2**40], [0], [1.5], ["3"], nested(3), None, [2**64], [-0], [10**30, 0]])


def odd_offsets(s, rng):
    entry = s.tensor_entry(rng)
    begin, end = entry["data_offsets"]
    entry["data_offsets"] = rng.choice(
        [[end, begin], [-8, end - 8], [begin + 0.5, end], [str(begin), end], [begin],
         [begin, end, end], None, [begin + 2**63, end + 2**63], [begin + 1, end + 1]])


def odd_dtype(s, rng):
    s.tensor_entry(rng)["dtype"] = rng.choice(["F8", "", None, 1, ["F32"], "I64", "BOOL"])


def odd_record_field(s, rng):
    record = s.state["record"]
    key = rng.choice(sorted(record))
    record[key] = rng.choice(HOSTILE_VALUES)


def dropped_field(s, rng):
    target = rng.choice([s.state, s.state["record"]])
    target.pop(rng.choice(sorted(target)), None)


def deep(depth: int) -> str:
    """A stand-in that `state_text` turns into JSON nested `depth` deep (json.dumps itself
    cannot write such a value)."""
    return f"__deep_{depth}__"


def state_text(state) -> str:
    text = json.dumps(state)
    for depth in (100, 900, 5000):
        text = text.replace(json.dumps(deep(depth)), "[" * depth + "0" + "]" * depth)
    return text


def deep_state(s, rng):
    where = rng.choice(["state", "record", "config", "data_state", "manifest"])
    value = deep(rng.choice([100, 900, 5000]))
    if where == "state":
        s.state = "[" * 5000 + "]" * 5000
    elif where == "manifest":
        s.state["manifest"] = value
    else:
        s.state["record"][where] = value


def odd_state(s, rng):
    s.state = rng.choice(["not json", "[]", "7", "null", json.dumps({"format_version": 9}),
                          "\ud800"])


def odd_manifest(s, rng):
    manifest = s.state["manifest"]
    name = rng.choice(sorted(manifest))
    choice = rng.randrange(5)
    if choice == 0:
        manifest["../" + name] = manifest.pop(name)
    elif choice == 1:
        manifest[name] = {"sha256": 7, "bytes": "x"}
    elif choice == 2:
        manifest[name]["sha256"] = "keep"  # a digest that no longer matches
        manifest[name]["bytes"] = 1
    elif choice == 3:
        manifest["/etc/passwd"] = manifest[name]
    else:
        manifest.pop(name)


def odd_config(s, rng):
    config = s.state["record"]["config"]
    section = rng.choice(sorted(config))
    if isinstance(config[section], dict) and config[section] and rng.random() < 0.7:
        key = rng.choice(sorted(config[section]))
        config[section][key] = rng.choice(HOSTILE_VALUES + [10**6, 2**31])
    else:
        config[section] = rng.choice(HOSTILE_VALUES)


def odd_metadata(s, rng):
    header = s.headers[""]
    meta = header["__metadata__"]
    choice = rng.randrange(3)
    if choice == 0:
        header["__metadata__"] = rng.choice([[], "x", 7, None, nested(50)])
        s.metadata_edited = True
    elif choice == 1:
        meta["slimcore"] = rng.choice([7, None, [], {"a": 1}])
        s.metadata_edited = True
    else:
        meta["extra"] = {"not": "a string"}


def odd_bytes_field(s, rng):
    """The tokenizer's bytes (or another tensor's) replaced: garbage SentencePiece, or a
    text field that is not UTF-8."""
    header, data = s.headers[""], bytearray(s.data[""])
    names = [n for n in header if n != "__metadata__"]
    name = "tokenizer_model" if "tokenizer_model" in names and rng.random() < 0.6 \
        else rng.choice(names)
    begin, end = header[name]["data_offsets"]
    data[begin:end] = bytes(rng.randrange(256) for _ in range(end - begin))
    s.data[""] = bytes(data)


def odd_resume_state(s, rng):
    """What only a resume reads: random states, the data position, the schedule, the
    optimizer's settings; the set still verifies, so `--resume auto` takes it."""
    record = s.state["record"]
    field = rng.choice(["rng", "data_state", "scheduler", "optimizer", "step", "tokens_seen"])
    value = record[field]
    if isinstance(value, dict) and value and rng.random() < 0.7:
        key = rng.choice(sorted(value))
        inner = value[key]
        if isinstance(inner, list) and inner and rng.random() < 0.5:
            inner[rng.randrange(len(inner))] = rng.choice(HOSTILE_VALUES)
        else:
            value[key] = rng.choice(HOSTILE_VALUES)
    else:
        record[field] = rng.choice(HOSTILE_VALUES + [{}, {"world_size": 3, "ranks": [1]}])


def odd_header_length(s, rng):
    """Not crafted: the length field, or the file, damaged (commit is skipped)."""
    path = s.base.with_name(s.base.name + rng.choice(["", ".embeddings", ".decoder"]))
    raw = bytearray(path.read_bytes())
    choice = rng.randrange(4)
    if choice == 0:
        raw[:8] = struct.pack("<Q", rng.choice([0, 1, 2**64 - 1, len(raw), 100 << 20]))
    elif choice == 1:
        del raw[rng.randrange(len(raw)):]
    elif choice == 2:
        raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    else:
        raw[8:8] = b"{" * 100
    path.write_bytes(bytes(raw))
    return "damaged"


MUTATIONS = [negative_shape, odd_shape, odd_offsets, odd_dtype, odd_record_field,
             dropped_field, deep_state, odd_state, odd_manifest, odd_config, odd_metadata,
             odd_bytes_field, odd_resume_state, odd_header_length]


def craft(good: Path, folder: Path, rng: random.Random, mutations=MUTATIONS
          ) -> tuple[Path, list[str]]:
    """A copy of the good set in `folder` with one to three of `mutations`; the set's
    `.bin`."""
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(good.parent, folder)
    base = folder / good.name
    crafted = CraftedSet(base)
    names = []
    for mutation in rng.sample(mutations, min(len(mutations), rng.choice([1, 1, 2, 3]))):
        if mutation is odd_header_length:
            continue  # applied after the commit, below
        try:
            mutation(crafted, rng)
        except (KeyError, TypeError, AttributeError, IndexError, ValueError):
            continue  # an earlier mutation left nothing for this one to edit
        names.append(mutation.__name__)
    crafted.commit()
    if not names or (odd_header_length in mutations and rng.random() < 0.15):
        odd_header_length(crafted, rng)
        names.append("odd_header_length")
    return base, names


# -- the readers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_set(tmp_path_factory):
    """A real run's newest set (a tiny model: 4 steps, saved at 2 and 4)."""
    from slimcore.testing import tiny_run

    root = tmp_path_factory.mktemp("fuzz-source")
    tiny_run(root / "run", steps=4, overrides=["intervals.checkpoint=2"])
    return root / "run" / "checkpoints" / "checkpoint_step_4.bin"


@counts(300, 1500)
def test_crafted_sets_are_read_or_refused_in_one_line(good_set, tmp_path, cases):
    rng = random.Random(SEED)
    checkpointer = ThreeFile()
    outcomes = {"read": 0, "refused": 0}
    for case in range(cases):
        base, names = craft(good_set, tmp_path / "checkpoints", rng)
        where = (case, names)
        try:
            saved = checkpointer.load(str(base))
            assert saved.step >= 0 and isinstance(saved.model, dict), where
            outcomes["read"] += 1
        except UserError as e:
            assert "\n" not in str(e) and len(str(e)) < 1000, (where, str(e)[:300])
            outcomes["refused"] += 1
        for reader in (format_of, run_id_of):
            try:
                reader(base)
            except UserError:
                pass
        # The newest intact set: this one when it reads (its step may be crafted too), else
        # the good one before it.
        newest = newest_intact(tmp_path / "checkpoints")
        assert newest and (newest.step in (2, 4) or newest.path == str(base)), where
    print(f"checkpoint fuzz: {cases} crafted sets, {outcomes}")
    assert outcomes["refused"] > cases // 2 and outcomes["read"] > 0


@counts(24, 120)
def test_crafted_sets_through_the_commands_are_used_or_one_line(good_set, tmp_path, capsys,
                                                                cases):
    """`inspect` and `generate` (in this process, as the CLI runs them) on a crafted set, or
    on the run folder whose newest set it is: exit 0 (the folder fell back to the good set,
    or the set was usable) or 2 with one line; never a traceback."""
    rng = random.Random(SEED + 1)
    folder = tmp_path / "run"
    codes = []
    for case in range(cases):
        base, names = craft(good_set, folder / "checkpoints", rng)
        source = folder if case % 2 else base  # the folder falls back; the file is used
        for argv in (["inspect", str(base)],
                     ["generate", str(source), "--prompt", "We the", "--max-new-tokens", "2"]):
            code = main(argv)
            out, err = capsys.readouterr()
            assert code in (0, 2), (case, names, argv[0], err[-2000:])
            assert "Traceback" not in err, (case, names, argv[0], err[-2000:])
            if code == 2:
                assert err.strip().splitlines()[-1].startswith("slimcore: error: "), err
            codes.append(code)
    print(f"checkpoint fuzz through inspect and generate: {len(codes)} commands, "
          f"{codes.count(0)} exit 0, {codes.count(2)} exit 2")
    assert 0 in codes and 2 in codes


@counts(6, 40)
def test_crafted_newest_sets_on_resume_fall_back_or_refuse(good_set, tmp_path, write_config,
                                                           cases):
    """`--resume auto` in a folder whose newest set is crafted: the run resumes (from it, or
    from the good set before it) and trains on, or stops with one line."""
    rng = random.Random(SEED + 2)
    outcomes = []
    for case in range(cases):
        out = tmp_path / f"out{case}"
        shutil.copytree(good_set.parent.parent, out, ignore=shutil.ignore_patterns(".slimcore.lock"))
        base, names = craft(good_set, out / "checkpoints", rng,
                            [odd_resume_state, odd_resume_state, odd_config])
        config = write_config({"run": {"steps": 5}, "output": {"dir": str(out)}},
                              name=f"resume{case}")
        try:
            run_in_process(config, resume="auto")
            resumed_from = json.loads((out / "run.json").read_text())
            outcomes.append("resumed")
        except UserError as e:
            assert "\n" not in str(e), (case, names, str(e))
            outcomes.append("refused")
    print(f"checkpoint fuzz through --resume auto: {outcomes}")
    assert "resumed" in outcomes


def test_a_set_whose_run_id_holds_a_slash_is_renamed_aside_safely(good_set, write_config,
                                                                   tmp_path):
    """A set of "another run" whose header's run id holds `/` where this run saves: renamed
    aside under a name made safe (the save of that step failed: the id named a folder)."""
    out = tmp_path / "out"
    crafted = CraftedSet(_copy_set(good_set, out / "checkpoints", "checkpoint_step_2.bin"))
    crafted.state["record"]["run_id"] = "../../elsewhere/x"
    crafted.commit()
    run_in_process(write_config({"run": {"steps": 2}, "intervals": {"checkpoint": 2}}))
    folder = out / "checkpoints"
    assert (folder / "checkpoint_step_2.bin.other-run-______elsewhere_x").is_file()
    assert read_checkpoint(folder / "checkpoint_step_2.bin").step == 2
    assert not (tmp_path / "elsewhere").exists()


def test_a_folder_in_the_way_of_a_sets_tmp_file_is_named_and_left(write_config, tmp_path):
    in_the_way = tmp_path / "out" / "checkpoints" / "checkpoint_step_2.bin.tmp"
    (in_the_way / "notes").mkdir(parents=True)
    with pytest.raises(UserError, match=f"checkpoint: could not write {in_the_way} "):
        run_in_process(write_config({"run": {"steps": 3}, "intervals": {"checkpoint": 2}}))
    assert (in_the_way / "notes").is_dir()
    assert not list(in_the_way.parent.glob("*.embeddings.tmp"))


def _copy_set(good: Path, folder: Path, name: str) -> Path:
    """The good set's three files in `folder` under the set name `name`."""
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in ("", ".embeddings", ".decoder"):
        shutil.copyfile(good.with_name(good.name + suffix), folder / (name + suffix))
    base = folder / name
    crafted = CraftedSet(base)  # the manifest names the files under their new names
    crafted.state["manifest"] = {name + suffix: entry for suffix, entry in zip(
        (".embeddings", ".decoder"), crafted.state["manifest"].values())}
    crafted.commit()
    return base
