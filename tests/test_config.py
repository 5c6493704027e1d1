"""The typed config: every bad input names the dotted key and where it came from."""

import dataclasses

import pytest

from slimcore.contracts.errors import ConfigError

from slimcore.config.schema import RunConfig

from slimcore.config.yaml_text import apply_override, load_yaml

from slimcore.config.parse import parse_config
from slimcore.contracts.errors import UserError


@dataclasses.dataclass
class PluginSection:
    rate: float = 1.0
    names: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if self.rate <= 0:
            raise ConfigError("rate", "must be positive")


def parse(raw, sections=None, ignorable=frozenset()):
    from slimcore_datasources.corpus import CorpusConfig

    return parse_config(raw, {"corpus": CorpusConfig, **(sections or {})}, "cfg.yaml",
                        set(ignorable))


def test_defaults_are_the_original_scripts():
    config = parse({})
    assert isinstance(config, RunConfig)
    assert (config.intervals.checkpoint, config.samples.every) == (2000, 250)  # 5 x 50 steps
    assert (config.tokenizer.vocab_size, config.model.width) == (32000, 1536)


def test_values_are_typed_and_ints_widen_to_float():
    config = parse({"model": {"width": 64, "heads": 4}, "optimizer": {"lr": 1}})
    assert config.model.width == 64
    assert config.optimizer.lr == 1.0 and isinstance(config.optimizer.lr, float)


@pytest.mark.parametrize("raw, message", [
    ({"model": {"widht": 64}}, "cfg.yaml: model.widht: unknown key (did you mean 'width'?)"),
    ({"modle": {}}, "cfg.yaml: modle: unknown section (did you mean 'model'?"),
    ({"model": {"width": "wide"}}, "cfg.yaml: model.width: expected int, got str 'wide'"),
    ({"model": {"width": True}}, "cfg.yaml: model.width: expected int, got bool True"),
    ({"model": {"width": 1.5}}, "cfg.yaml: model.width: expected int, got float 1.5"),
    ({"model": {"backend": "cuda"}}, "model.backend: must be one of 'auto', 'native', 'torch'"),
    ({"model": {"width": 100, "heads": 3}}, "model.width: 100 is not divisible by heads=3"),
    ({"plugins": {"disable": "chunk"}}, "plugins.disable: expected a list, got str"),
    ({"samples": {"prompts": [1]}}, "samples.prompts[0]: expected str, got int 1"),
    ({"run": 5}, "cfg.yaml: run: expected a section (mapping), got int 5"),
    ({"corpus": {"workers": 0}}, "cfg.yaml: corpus.workers: must be at least 1"),
    ({"corpus": {"shuffle_buffer": -1}}, "cfg.yaml: corpus.shuffle_buffer: must be at least 0, got int -1"),
    ({"eval": {"batches": 0}}, "cfg.yaml: eval.batches: must be at least 1"),
    ({"distributed": {"strategy": "zero3"}},
     "distributed.strategy: must be one of 'ddp', 'fsdp', got str 'zero3'"),
    ({"distributed": {"timeout_s": 0}}, "distributed.timeout_s: must be more than 0, got float 0.0"),
])
def test_bad_values_name_the_dotted_key(raw, message):
    with pytest.raises(ConfigError) as error:
        parse(raw)
    assert message in str(error.value)


# Values the schema once accepted and a run then crashed on (or silently misused): each is
# refused before any work, naming its key.
OUT_OF_RANGE = [
    ("model.heads", 0), ("data.batch_size", 0), ("model.seq_len", 0), ("model.width", 0),
    ("optimizer.lr", float("nan")), ("optimizer.lr", -1), ("optimizer.beta2", -1),
    ("optimizer.beta1", 1), ("optimizer.grad_accum_steps", 0), ("intervals.checkpoint", 0),
    ("intervals.viz", 0), ("intervals.sample_every", 0), ("intervals.log", 0),
    ("samples.temperature", float("nan")), ("samples.temperature", -0.5),
    ("run.seed", 2**64), ("run.seed", -1), ("model.width", 2**70), ("model.layers", 0),
    ("model.norm_eps", float("inf")), ("model.norm_eps", 0), ("run.stall_timeout_s", float("nan")),
    ("corpus.max_retries", -1), ("corpus.path", ""), ("corpus.path", "  "), ("output.dir", ""),
    ("run.steps", 0), ("run.steps", -1), ("schedule.min_lr_ratio", 1.5),
    ("tokenizer.vocab_size", 2**40), ("corpus.workers", 10**6), ("run.name", "a/b"),
    ("run.name", ".."), ("eval.interval", -5), ("corpus.timeout_s", float("-inf")),
    ("optimizer.weight_decay", 10**400), ("corpus.shuffle_buffer", 10**8),
    ("samples.max_new_tokens", 10**9), ("distributed.timeout_s", 1e12),
    ("corpus.retry_backoff_s", 1e9), ("run.stall_timeout_s", 0),
]


@pytest.mark.parametrize("key, value", OUT_OF_RANGE)
def test_values_out_of_range_are_refused_naming_the_key(key, value):
    section, name = key.split(".")
    with pytest.raises(ConfigError) as error:
        parse({section: {name: value}})
    assert str(error.value).startswith(f"cfg.yaml: {key}: ")
    assert len(str(error.value)) < 300  # one readable line, even for a huge number


def test_every_float_must_be_finite_and_every_int_fit_64_bits():
    @dataclasses.dataclass
    class Loose:  # no Range: the defaults still apply
        ratio: float = 1.0
        count: int = 1

    for raw in ({"ratio": float("nan")}, {"ratio": float("inf")}, {"count": 2**63}):
        with pytest.raises(ConfigError, match=r"loose\.(ratio|count): "):
            parse({"loose": raw}, {"loose": Loose})
    assert parse({"loose": {"count": 2**63 - 1}}, {"loose": Loose}).section("loose").count \
        == 2**63 - 1


def test_plugin_error_with_the_dotted_key_is_not_prefixed_twice():
    @dataclasses.dataclass
    class Logger:
        every: int = 1

        def __post_init__(self):
            if self.every > 100:
                raise ConfigError("logger.every", "at most 100")

    with pytest.raises(ConfigError) as error:
        parse({"logger": {"every": 101}}, {"logger": Logger})
    assert str(error.value) == "cfg.yaml: logger.every: at most 100"


def test_plugin_sections_parse_and_validate_by_the_same_rules():
    config = parse({"extra": {"rate": 2, "names": ["a"]}}, {"extra": PluginSection})
    assert config.section("extra") == PluginSection(rate=2.0, names=["a"])
    with pytest.raises(ConfigError, match=r"cfg.yaml: extra.rate: must be positive"):
        parse({"extra": {"rate": -1}}, {"extra": PluginSection})
    with pytest.raises(ConfigError, match=r"extra.rat: unknown key \(did you mean 'rate'"):
        parse({"extra": {"rat": 1}}, {"extra": PluginSection})


def test_sections_of_plugins_that_are_not_loaded_may_stay():
    with pytest.raises(ConfigError, match="extra: unknown section"):
        parse({"extra": {"rate": 1}})
    assert "extra" not in parse({"extra": {"rate": 1}}, ignorable={"extra"}).plugin_sections


def test_yaml_rejects_duplicate_keys(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("model:\n  width: 64\n  width: 128\n")
    with pytest.raises(UserError, match=r"dup.yaml: duplicate key 'width' \(line 3\)"):
        load_yaml(path)


def test_yaml_malformed_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  width: [64\n")
    with pytest.raises(UserError, match=r"bad.yaml: malformed YAML at line \d+"):
        load_yaml(path)


def test_yaml_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(UserError, match="config file not found: .*nope.yaml"):
        load_yaml(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="top level must be a mapping"):
        load_yaml(path)


def test_yaml_that_is_not_utf8_or_nested_too_deeply(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("run:\n  name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1.yaml: not UTF-8 text \(byte 0xe9 at offset"):
        load_yaml(path)
    path = tmp_path / "deep.yaml"
    path.write_text("run: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(UserError, match="deep.yaml: nested too deeply"):
        load_yaml(path)
    path = tmp_path / "digits.yaml"
    path.write_text("run:\n  seed: " + "9" * 5000 + "\n")
    with pytest.raises(UserError, match="digits.yaml: a value YAML cannot read"):
        load_yaml(path)


def alias_bomb(levels: int = 10) -> str:
    """A YAML value of a few hundred bytes that stands for 9**levels strings."""
    parts = ['&a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    parts += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


@pytest.mark.parametrize("where", ["yaml", "--set"])
def test_an_alias_bomb_as_a_value_is_one_line_at_once(tmp_path, cli, where):
    """Billions of strings by reference: the error shows a few of them (it turned the whole
    value into text first, for minutes and gigabytes)."""
    bomb = alias_bomb()
    path = tmp_path / "bomb.yaml"
    path.write_text(f"model:\n  width: {bomb}\n" if where == "yaml" else "run:\n  steps: 2\n")
    result = cli("config", str(path), *(["--set", f"model.width={bomb}"]
                                        if where == "--set" else []), timeout=120)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "model.width: expected int, got list [['lol', 'lol', 'lol', 'lol', ...]" in line
    assert len(line) < 400


def test_exponent_floats_without_a_dot_are_floats(tmp_path):
    """`3e-4` is a float (YAML 1.2, and what every user writes); PyYAML's YAML 1.1 read it as
    a string, so `optimizer.lr: 3e-4` was refused as "got str". A quoted one stays text."""
    path = tmp_path / "lr.yaml"
    path.write_text("optimizer:\n  lr: 3e-4\n  weight_decay: 1E-1\nrun:\n  name: '1e3'\n")
    raw = load_yaml(path)
    assert raw == {"optimizer": {"lr": 3e-4, "weight_decay": 0.1}, "run": {"name": "1e3"}}
    assert parse_config(raw, {}, "lr.yaml").optimizer.lr == 3e-4
    apply_override(raw, "optimizer.lr=-2e+3")
    assert raw["optimizer"]["lr"] == -2000.0


def test_yaml_never_builds_python_objects(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("run: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(UserError, match="evil.yaml"):
        load_yaml(path)


def test_override_reads_values_as_yaml():
    raw = {"model": {"width": 64}}
    apply_override(raw, "model.width=128")
    apply_override(raw, "samples.prompts=[a, b]")
    apply_override(raw, "run.name=demo")
    assert raw == {"model": {"width": 128}, "samples": {"prompts": ["a", "b"]},
                   "run": {"name": "demo"}}
    with pytest.raises(UserError, match="expected dotted.key=value"):
        apply_override(raw, "model.width")
    with pytest.raises(ConfigError, match="model.width: is a value, not a section"):
        apply_override(raw, "model.width.x=1")


def test_docs_configuration_lists_every_key_with_its_type_default_and_range():
    """docs/configuration.md is the reference users read: every key of the core's sections
    and of the shipped plugins' sections (the built-in `optimizers` plugin's too), with the type, default and valid values the schema
    really has."""
    from conftest import REPO
    from slimcore.config.schema import CORE_SECTIONS
    from slimcore.config.reference import field_reference
    from slimcore.optim.muon import MuonSection
    from slimcore_checkpointers.sharded import ShardedConfig
    from slimcore_checkpointers.three_file import ThreeFileConfig
    from slimcore_datasources.chunk import ChunkConfig
    from slimcore_visualizers.dashboard import DashboardConfig
    from slimcore_visualizers.json_export import JsonExportConfig
    from slimcore_visualizers.mlflow_export import MlflowConfig
    from slimcore_visualizers.tensorboard_export import TensorBoardConfig
    from slimcore_visualizers.wandb_export import WandbConfig

    documented = {}
    for line in (REPO / "docs" / "configuration.md").read_text().splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            documented[cells[0].strip("`")] = tuple(cells[1:4])
    from slimcore_datasources.corpus import CorpusConfig

    from slimcore_datasources.tokens import TokensConfig

    sections = {**CORE_SECTIONS, "muon": MuonSection, "corpus": CorpusConfig, "chunk": ChunkConfig,
                "tokens": TokensConfig,
                "three_file": ThreeFileConfig, "sharded": ShardedConfig,
                "dashboard": DashboardConfig,
                "json_export": JsonExportConfig,
                "tensorboard": TensorBoardConfig, "wandb": WandbConfig, "mlflow": MlflowConfig}
    expected = {key: rest for name, cls in sections.items()
                for key, *rest in field_reference(cls, name)}
    assert sorted(documented) == sorted(expected)
    for key, row in expected.items():
        assert documented[key] == tuple(row), key


def test_the_config_section_example_in_docs_plugins_works_as_it_says():
    import re

    from conftest import REPO

    text = (REPO / "docs" / "plugins.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S)
                 if "class CsvLoggerConfig" in b)
    namespace = {}
    exec(compile(block, "docs/plugins.md", "exec"), namespace)
    cls = namespace["CsvLoggerConfig"]
    assert parse({"csv_logger": {"every": 5}}, {"csv_logger": cls}).section("csv_logger").every == 5
    for raw, message in [({"every": 0}, "csv_logger.every: must be at least 1"),
                         ({"share": 0}, "csv_logger.share: must be more than 0"),
                         ({"path": ""}, "csv_logger.path: must not be empty"),
                         ({"path": "logs/"}, "csv_logger.path: names a folder")]:
        with pytest.raises(ConfigError, match=message):
            parse({"csv_logger": raw}, {"csv_logger": cls})


@pytest.mark.parametrize("raised", ["every", "csv_logger.every", "csv.every"])
def test_a_sections_own_error_names_section_dot_key_whatever_form_it_raised(raised, tmp_path):
    from dataclasses import dataclass

    from slimcore import ConfigError, hookimpl
    from slimcore.config.resolve import resolve_config
    from slimcore.host.manager import SlimcorePluginManager

    @dataclass
    class CsvConfig:
        every: int = 10

        def __post_init__(self):
            if self.every > 5:
                raise ConfigError(raised, "must be at most 5")

    class CsvLogger:
        @hookimpl
        def declare_config(self):
            return {"csv_logger": CsvConfig}

    pm = SlimcorePluginManager()
    pm.register_in_process(CsvLogger(), "csv_logger")
    path = tmp_path / "c.yaml"
    path.write_text("csv_logger:\n  every: 7\n")
    with pytest.raises(ConfigError) as error:
        resolve_config(path, [], pm)
    assert str(error.value) == f"{path}: csv_logger.every: must be at most 5"
