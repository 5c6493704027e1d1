"""A seeded fuzz of the config: hundreds of mutations of examples/quickstart.yaml (keys
deleted, wrong types, numbers out of range or not finite, unknown keys at every level, bad
encodings) through `slimcore config` in this process. Every outcome is exit 0, or exit 2
with one line on stderr; never a traceback. A sample of the accepted ones then trains
through `slimcore run --test`."""

import contextlib
import io
import math
import random

import pytest
import yaml

from conftest import REPO
from slimcore.commands.cli import main

MUTATIONS = 200
SEED = 20261201
VALUES = [None, "", "  ", "text", "../..", True, False, 0, -1, 1, 2**63, -(2**63) - 1, 10**30,
          0.0, -0.5, 0.5, 1e300, math.nan, math.inf, -math.inf, [], [1, "a"], {}, {"k": 1},
          [[[[[]]]]], "1e-3", "\u2581", "x" * 5000]


def paths(node, prefix=()):
    """Every (path, value) of a nested mapping."""
    for key, value in node.items():
        yield prefix + (key,), value
        if isinstance(value, dict):
            yield from paths(value, prefix + (key,))


def mutate(raw: dict, rng: random.Random) -> bytes:
    """One mutation of `raw` (changed in place), as the bytes of a YAML file."""
    kind = rng.choice(["delete", "nudge", "nudge", "nudge", "nudge", "value", "value",
                       "unknown", "encoding"])
    keys = list(paths(raw))
    path, old = rng.choice(keys)
    parent = raw
    for key in path[:-1]:
        parent = parent[key]
    if kind == "delete":
        del parent[path[-1]]
    elif kind == "nudge":  # the same type, another value: in range, at its edge, or out
        if isinstance(old, bool) or not isinstance(old, (int, float)):
            parent[path[-1]] = not old if isinstance(old, bool) else old
        else:
            factor = rng.choice([0, -1, 0.5, 2, 10, 1000, 2**40])
            value = old * factor if not isinstance(factor, float) or isinstance(old, float) \
                else old * 2
            parent[path[-1]] = type(old)(value) if abs(value) < 2**62 else value
    elif kind == "value":
        value = rng.choice(VALUES)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and rng.random() < 0.5:
            value = value * rng.choice([-1, 3, 1e-9]) if math.isfinite(value) else value
        parent[path[-1]] = value
    elif kind == "unknown":
        target = rng.choice([raw] + [v for _, v in keys if isinstance(v, dict)])
        target[rng.choice(["extra", "widht", "Model", "seq-len", 7, "plugins"])] = \
            rng.choice(VALUES[:8])
    text = yaml.safe_dump(raw, sort_keys=False, allow_unicode=True).encode()
    if kind == "encoding":
        at = rng.randrange(len(text))
        text = text[:at] + rng.choice([b"\xff\xfe", b"\x00", b"\xe9", b"\xef\xbb\xbf", b"\t",
                                       b": :", b"[" * 3000, b"&a *a", b"!!python/name:os"]) \
            + text[at:]
    return text


def run_config_in_process(path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["config", str(path)])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    original = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    rng = random.Random(SEED)
    folder = tmp_path_factory.mktemp("fuzz")
    results = []
    for i in range(MUTATIONS):
        raw = yaml.safe_load(yaml.safe_dump(original))
        for _ in range(rng.choice([1, 1, 2, 3])):
            data = mutate(raw, rng)
            try:
                raw = yaml.safe_load(data.decode("utf-8"))
            except (UnicodeDecodeError, yaml.YAMLError, RecursionError, ValueError):
                break
            if not isinstance(raw, dict) or not raw:
                break
        path = folder / f"mutation_{i:03d}.yaml"
        path.write_bytes(data)
        results.append((path, *run_config_in_process(path)))
    return results


def test_every_mutation_is_accepted_or_refused_in_one_line(outcomes):
    refused = 0
    for path, code, out, err in outcomes:
        assert code in (0, 2), f"{path.name}: exit {code}\n{err}"
        if code == 2:
            refused += 1
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("slimcore: error: "), \
                f"{path.name}:\n{err}"
            assert "Traceback" not in err and len(lines[0]) < 400, f"{path.name}: {lines[0]}"
        else:
            assert yaml.safe_load(out)["model"], path.name
    # Both outcomes are well represented, or the fuzz tests little.
    assert 0.3 * len(outcomes) < refused < 0.9 * len(outcomes)


def test_a_sample_of_the_accepted_mutations_trains(outcomes, cli, tmp_path):
    accepted = [path for path, code, _, _ in outcomes if code == 0]
    for index, path in enumerate(random.Random(SEED).sample(accepted, 2)):
        result = cli("run", str(path), "--test", "--output-dir", str(tmp_path / f"run{index}"),
                     "--set", "run.device=cpu", timeout=240)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 0 or (result.returncode == 2 and len(lines) == 1), \
            f"{path.name}: exit {result.returncode}\n{path.read_text()[:2000]}\n{result.stderr}"


# -- YAML's own features: anchors, aliases, tags, merge keys, huge scalars ---------------------

YAML_FEATURES = [
    "&a {width: 64}", "*nowhere", "!!str 64", "!!int '64'", "!!float 1e3", "!!binary aGVsbG8=",
    "!!timestamp 2001-12-14", "!!set {a, b}", "!!omap [a: 1]", "!!python/object:os.system {}",
    "!!python/name:os.system", "!custom 3", "!!null ''", "!!bool yes", "yes", "on", "0o17",
    "0x1F", "1_000", "+.inf", "-.nan", ".NaN", "1e400", "9" * 400, "-" + "9" * 400,
    "'" + "x" * 100_000 + "'", "[" * 200 + "]" * 200, "{" * 200 + "}" * 200,
    "? [a, b]\n  : c", "|\n    block\n    text", ">-\n    folded", "~", "''", "\"\\x00\"",
    "\"\\ud800\"", "2026-12-05", "12:30:45", "[*a, *a]",
]


def yaml_feature_text(original: str, rng: random.Random) -> str:
    """quickstart.yaml with one of YAML's features put where a value, a section or the
    document's frame goes."""
    lines = original.splitlines()
    choice = rng.randrange(6)
    if choice == 0:  # a value replaced by a feature
        slots = [i for i, line in enumerate(lines) if line.startswith("  ") and ":" in line]
        at = rng.choice(slots)
        key = lines[at].split(":")[0]
        lines[at] = f"{key}: {rng.choice(YAML_FEATURES)}"
    elif choice == 1:  # a merge key, from an anchor defined or not
        anchor = rng.choice(["&base {width: 48, heads: 4}", "{width: 48}", "[1, 2]"])
        lines = [f"base: {anchor}"] + lines + [rng.choice(
            ["model: {<<: *base}", "model:\n  <<: [*base, *base]", "model: {<<: 3}"])]
    elif choice == 2:  # an alias bomb at some depth
        depth = rng.choice([3, 6, 9])
        bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [
            f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
            f"*a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, depth + 1)]
        lines = ["bomb:"] + ["  " + line for line in bomb] + lines + \
            [f"extra: *a{depth}" if rng.random() < 0.5 else f"run: {{name: *a{depth}}}"]
    elif choice == 3:  # the document's frame: directives, several documents, a duplicate key
        lines = rng.choice([["%YAML 1.1", "---"] + lines, lines + ["---", "run: {steps: 1}"],
                            lines + ["run: {steps: 2}"], ["%TAG ! tag:x,2000:", "---"] + lines,
                            lines + ["...", "junk: ["]])
    elif choice == 4:  # a whole section replaced by a feature
        lines.append(f"model: {rng.choice(YAML_FEATURES)}")
    else:  # a tag on a section
        lines.append(rng.choice(["model: !!map {width: 64}", "model: !!seq [1]",
                                 "model: !!python/object/apply:os.getcwd []"]))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("count", [150, pytest.param(1200, marks=pytest.mark.slow)])
def test_yaml_features_are_read_or_refused_in_one_line_in_bounded_time_and_memory(tmp_path,
                                                                                  count):
    """Anchors, aliases (bombs too), tags (Python's among them), merge keys, directives,
    several documents, huge scalars: `slimcore config` exits 0 or 2 with one line, within a
    second or two each and 200 MB for all of them together; nothing runs code."""
    import time
    import tracemalloc

    original = (REPO / "examples" / "quickstart.yaml").read_text()
    rng = random.Random(SEED + 7)
    codes = []
    tracemalloc.start()
    for index in range(count):
        path = tmp_path / f"features_{index:03d}.yaml"
        path.write_text(yaml_feature_text(original, rng))
        started = time.monotonic()
        code, out, err = run_config_in_process(path)
        assert time.monotonic() - started < 10, path.read_text()[:500]
        assert code in (0, 2), f"{path.name}: exit {code}\n{err}\n{path.read_text()[:500]}"
        lines = err.strip().splitlines()
        if code == 2:
            assert len(lines) == 1 and lines[0].startswith("slimcore: error: ") and \
                len(lines[0]) < 600, f"{path.name}:\n{err[:2000]}"
        assert "Traceback" not in err
        codes.append(code)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"YAML feature fuzz: {count} files, {codes.count(0)} read, {codes.count(2)} refused, "
          f"peak {peak / 2**20:.0f} MB")
    assert peak < 200 << 20
    assert 0 < codes.count(0) and 0 < codes.count(2)
