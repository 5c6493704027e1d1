"""Optimizers and schedules as registered roles: AdamW as it always was, Muon against
torch.optim.Muon, the parameter groups as docs/optimizers.md states them, schedules by their
formulas, resume with each, and an optimizer from a plugin."""

import dataclasses
import math
import re
from types import SimpleNamespace

import pytest
import torch

from conftest import REPO, pip_install, run_in_process
from slimcore import EMBEDDING, GAIN, MATRIX, OptimizerBuilder, UserError, hookimpl
from slimcore.config.parse import parse_config
from slimcore.config.schema import ModelSection
from slimcore.launch.resume import apply_optimizer_settings, optimizer_settings
from slimcore.model.gpt import GPT
from slimcore.model.ops import TorchOps
from slimcore.optim.adamw import AdamWBuilder
from slimcore.optim.groups import parameter_groups
from slimcore.optim.muon import MuonBuilder, MuonSection
from slimcore.optim.schedules import SCHEDULES, build_scheduler

CFG = ModelSection(width=32, layers=2, heads=4, mlp_hidden=48, seq_len=16)


def tiny_model(seed=0, kv_heads=None):
    torch.manual_seed(seed)
    return GPT(dataclasses.replace(CFG, kv_heads=kv_heads), 97, TorchOps)


def config_of(**sections):
    return parse_config({name: dict(values) for name, values in sections.items()},
                        {"muon": MuonSection}, "test")


def run_of(config):
    """What a builder reads of a run."""
    return SimpleNamespace(config=config, device=torch.device("cpu"))


def random_gradients(model, seed):
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(p.shape, generator=generator) * 0.1
            for name, p in model.named_parameters()}


# -- the parameter groups ---------------------------------------------------------------------

def documented_groups() -> list[tuple[re.Pattern, str, int]]:
    """The table of docs/optimizers.md: (name pattern, kind, parts) per row."""
    rows = re.findall(r"^\| `([^`]+)` \| (\w+) \| (\d+) \|", (REPO / "docs" / "optimizers.md")
                      .read_text(), flags=re.M)
    assert len(rows) >= 9, rows
    return [(re.compile(re.escape(name).replace("N", r"\d+") + "$"), kind, int(parts))
            for name, kind, parts in rows]


def test_every_parameter_is_in_the_group_the_docs_state():
    model = tiny_model()
    groups = parameter_groups(model)
    assert [p.name for p in groups.parameters] == [n for n, _ in model.named_parameters()]
    table = documented_groups()
    for parameter in groups.parameters:
        rows = [(kind, parts) for pattern, kind, parts in table
                if pattern.match(parameter.name)]
        assert rows == [(parameter.kind, parameter.parts)], parameter.name
    assert {p.name for p in groups.described(EMBEDDING)} == {"embed.weight", "head.weight"}
    assert all(t.dim() == 1 for t in groups.of(GAIN))


# -- AdamW, unchanged ------------------------------------------------------------------------

def adamw_as_before(model, cfg):
    """The optimizer of slimcore 0.1 before optimizers were roles (train/optim.py)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW([
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
        lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=False)


def test_adamw_trains_bit_for_bit_as_before():
    config = config_of(optimizer={"lr": 3e-3, "weight_decay": 0.5})
    before, now = tiny_model(), tiny_model()
    optimizers = [adamw_as_before(before, config.optimizer),
                  AdamWBuilder().build(parameter_groups(now), run_of(config))]
    tokens = torch.randint(0, 97, (4, 17), generator=torch.Generator().manual_seed(3))
    for _ in range(5):
        for model, optimizer in zip((before, now), optimizers):
            model(tokens[:, :-1], tokens[:, 1:])[0].backward()
            optimizer.step()
            optimizer.zero_grad()
    for (name, a), b in zip(before.named_parameters(), now.parameters()):
        assert torch.equal(a, b), name
    decayed, plain = optimizers[1].param_groups
    assert decayed["weight_decay"] == 0.5 and plain["weight_decay"] == 0.0


# -- Muon against torch.optim.Muon -----------------------------------------------------------

@pytest.mark.parametrize("adjust_lr, kv_heads", [("original", None), ("match_rms_adamw", None),
                                                ("original", 2), ("match_rms_adamw", 2)])
def test_muon_steps_as_torch_muon_on_each_matrix_and_adamw_on_the_rest(adjust_lr, kv_heads):
    """Two steps of random gradients: every matrix (each part of a fused one taken as the
    matrix it stands for: under grouped-query attention k and v have half q's rows) as
    torch.optim.Muon moves it, everything else as torch.optim.AdamW does, to within 1e-6
    (the same arithmetic: in practice equal)."""
    settings = dict(lr=0.05, momentum=0.9, nesterov=True, ns_steps=5, weight_decay=0.1)
    config = config_of(optimizer={"lr": 4e-3, "weight_decay": 0.2},
                       muon={**settings, "adjust_lr": adjust_lr})
    model, reference_model = tiny_model(kv_heads=kv_heads), tiny_model(kv_heads=kv_heads)
    muon = MuonBuilder().build(parameter_groups(model), run_of(config))
    groups = parameter_groups(reference_model)
    rows = {p.name: list(p.rows) or [p.tensor.shape[0]] for p in groups.described(MATRIX)}
    if kv_heads:
        assert rows["blocks.0.attn.qkv.weight"] == [32, 16, 16]
    parts = {p.name: [torch.nn.Parameter(c.clone()) for c in p.tensor.detach().split(rows[p.name])]
             for p in groups.described(MATRIX)}
    reference_muon = torch.optim.Muon([q for qs in parts.values() for q in qs],
                                      adjust_lr_fn=adjust_lr, **settings)
    reference_adamw = torch.optim.AdamW(
        [{"params": groups.of(EMBEDDING), "weight_decay": 0.2},
         {"params": groups.of(GAIN), "weight_decay": 0.0}], lr=4e-3, betas=(0.9, 0.95))
    for step in range(2):
        gradients = random_gradients(model, step)
        for name, p in model.named_parameters():
            p.grad = gradients[name]
        for name, p in reference_model.named_parameters():
            p.grad = gradients[name]
            if name in parts:
                for q, g in zip(parts[name], gradients[name].split(rows[name])):
                    q.grad = g
        for optimizer in (muon, reference_muon, reference_adamw):
            optimizer.step()
    moved = {name: torch.cat([q.detach() for q in qs]) for name, qs in parts.items()}
    for name, p in model.named_parameters():
        expected = moved.get(name, dict(reference_model.named_parameters())[name])
        torch.testing.assert_close(p.detach(), expected.detach(), rtol=0, atol=1e-6, msg=name)
        assert not torch.equal(p.detach(),
                               dict(tiny_model(kv_heads=kv_heads).named_parameters())[name]), name


def test_muon_orthogonalises_each_part_of_a_fused_matrix_alone():
    """One step from zero momentum: the update of each of q, k, v has its singular values in
    the quintic's band (most near 1, none above 1.6), and is not a slice of the whole fused
    matrix orthogonalised as one."""
    from slimcore.optim.muon_update import orthogonalise

    config = config_of(muon={"lr": 1.0, "momentum": 0.0, "nesterov": False})
    model = tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = MuonBuilder().build(parameter_groups(model), run_of(config))
    gradients = random_gradients(model, 7)
    for name, p in model.named_parameters():
        p.grad = gradients[name]
    optimizer.step()
    qkv = "blocks.0.attn.qkv.weight"
    update = before[qkv] - dict(model.named_parameters())[qkv].detach()
    for part in update.chunk(3):  # 32 x 32 each: scale 1
        singular = torch.linalg.svdvals(part)
        assert singular.max() < 1.6 and singular.median() > 0.6, singular
    as_one = orthogonalise(gradients[qkv], 5).float() * math.sqrt(3)  # 96 x 32: scale sqrt 3
    assert (update - as_one).abs().max() > 0.1


def test_the_settings_in_force_replace_the_restored_ones():
    """A resume keeps each group's moments but takes the config's settings: a changed
    muon.momentum and optimizer.lr apply from the first resumed step."""
    saved_config = config_of(muon={"momentum": 0.9, "lr": 0.02})
    model = tiny_model()
    saved = MuonBuilder().build(parameter_groups(model), run_of(saved_config))
    for name, p in model.named_parameters():
        p.grad = random_gradients(model, 1)[name]
    saved.step()
    config = config_of(optimizer={"lr": 1e-3}, muon={"momentum": 0.5, "lr": 0.01})
    fresh = MuonBuilder().build(parameter_groups(model), run_of(config))
    state = SimpleNamespace(optimizer=fresh, scheduler=build_scheduler(fresh, SCHEDULES[0],
                                                                       config))
    in_force = optimizer_settings(state)
    fresh.load_state_dict(saved.state_dict())
    assert {g["momentum"] for g in fresh.param_groups} == {0.9}  # what loading brings back
    apply_optimizer_settings(state, in_force)
    assert {g["momentum"] for g in fresh.param_groups} == {0.5}
    assert [g["initial_lr"] for g in fresh.param_groups] == [1e-3, 1e-3, 0.01, 0.01, 0.01]
    assert state.scheduler.base_lrs == [1e-3, 1e-3, 0.01, 0.01, 0.01]
    assert len(fresh.state) == len(list(model.parameters()))  # the moments kept


# -- schedules ---------------------------------------------------------------------------------

def rates_of(scheduler, optimizer, steps):
    rates = []
    for _ in range(steps):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


def schedule_rates(steps=24, run_steps=20, **settings):
    config = config_of(run={"steps": run_steps}, optimizer={"lr": 1.0}, schedule=settings)
    optimizer = AdamWBuilder().build(parameter_groups(tiny_model()), run_of(config))
    schedule = next(s for s in SCHEDULES if s.name == config.schedule.kind)
    return rates_of(build_scheduler(optimizer, schedule, config), optimizer, steps)


# warmup 4, the decay over scheduler steps 4..20 (16 steps), floor 0.1; (step, rate)
EXPECTED = {
    "cosine": [(8, 0.1 + 0.45 * (1 + math.cos(math.pi * 4 / 16))), (12, 0.55),
               (19, 0.1 + 0.45 * (1 + math.cos(math.pi * 15 / 16))), (22, 0.1)],
    "linear": [(8, 1 - 0.9 * 4 / 16), (12, 0.55), (19, 1 - 0.9 * 15 / 16), (22, 0.1)],
    "constant": [(8, 1.0), (12, 1.0), (19, 1.0), (22, 1.0)],
    # wsd, decay fraction 0.25: stable to step 16, then linear to the floor at 20
    "wsd": [(8, 1.0), (15, 1.0), (16, 1.0), (18, 1 - 0.9 * 2 / 4), (19, 1 - 0.9 * 3 / 4),
            (22, 0.1)],
}


def test_the_shipped_schedules_are_the_documented_ones():
    assert sorted(s.name for s in SCHEDULES) == sorted(EXPECTED)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_schedule_follows_its_formula(kind):
    rates = schedule_rates(kind=kind, warmup_steps=4, min_lr_ratio=0.1,
                           wsd_decay_fraction=0.25)
    assert rates[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # the warmup, for every kind
    for step, expected in EXPECTED[kind]:
        assert rates[step] == pytest.approx(expected), (kind, step)


def test_a_decay_horizon_beyond_run_steps_and_a_resume_mid_decay_continue_one_curve():
    """total_steps 40 with run.steps 20: halfway down at step 20, not at the floor; a
    scheduler rebuilt from its state dict mid-decay (a resume) gives the same rates."""
    settings = dict(kind="linear", warmup_steps=0, min_lr_ratio=0.0, total_steps=40)
    straight = schedule_rates(steps=40, run_steps=20, **settings)
    assert straight[20] == pytest.approx(0.5) and straight[39] == pytest.approx(1 / 40)
    linear = next(s for s in SCHEDULES if s.name == "linear")
    first_config = config_of(run={"steps": 20}, optimizer={"lr": 1.0}, schedule=settings)
    optimizer = AdamWBuilder().build(parameter_groups(tiny_model()), run_of(first_config))
    first = build_scheduler(optimizer, linear, first_config)
    rates_of(first, optimizer, 13)
    config = config_of(run={"steps": 40}, optimizer={"lr": 1.0}, schedule=settings)
    optimizer = AdamWBuilder().build(parameter_groups(tiny_model()), run_of(config))
    resumed = build_scheduler(optimizer, linear, config)  # a larger --steps
    resumed.load_state_dict(first.state_dict())
    assert rates_of(resumed, optimizer, 27) == pytest.approx(straight[13:])


def test_muon_groups_follow_the_schedule_from_their_own_peaks():
    config = config_of(run={"steps": 20}, optimizer={"lr": 1e-3}, muon={"lr": 0.02},
                       schedule={"warmup_steps": 4})
    optimizer = MuonBuilder().build(parameter_groups(tiny_model()), run_of(config))
    scheduler = build_scheduler(optimizer, SCHEDULES[0], config)
    assert scheduler.get_last_lr() == pytest.approx([2.5e-4, 2.5e-4, 5e-3, 5e-3, 5e-3])


# -- runs ------------------------------------------------------------------------------------

def losses(out):
    import json

    return {m["step"]: m["loss"] for m in
            map(json.loads, (out / "history" / "metrics.jsonl").read_text().splitlines())}


def test_a_muon_run_resumes_bit_for_bit(write_config, tmp_path):
    settings = {"run": {"steps": 12}, "optimizer": {"name": "muon"},
                "intervals": {"checkpoint": 6}}
    run_in_process(write_config(settings, name="straight"))
    straight = losses(tmp_path / "out")
    assert straight[12] < straight[1]
    resumed = write_config({**settings, "output": {"dir": str(tmp_path / "resumed")}},
                           name="resumed")
    run_in_process(resumed, resume=str(tmp_path / "out" / "checkpoints" /
                                       "checkpoint_step_6.bin"))
    again = losses(tmp_path / "resumed")
    assert [again[s] for s in range(7, 13)] == [straight[s] for s in range(7, 13)]


def test_a_resume_with_another_optimizer_is_one_line(write_config, tmp_path):
    config = write_config({"run": {"steps": 4}, "intervals": {"checkpoint": 2}})
    run_in_process(config)
    with pytest.raises(UserError, match=r"^--resume: optimizer.name is 'muon' here and 'adamw' "
                                        r"in .*its optimizer state is another rule's"):
        run_in_process(config, overrides=["optimizer.name=muon", "run.steps=6"],
                       resume="auto")


def test_unknown_optimizer_and_schedule_names_are_one_line_each(cli, write_config):
    config = write_config()
    for key, role, wrong, right, installed in (
            ("optimizer.name", "optimizer", "mun", "muon", "adamw, muon"),
            ("schedule.kind", "schedule", "cosin", "cosine", "constant, cosine, linear, wsd")):
        result = cli("run", str(config), "--set", f"{key}={wrong}")
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [
            f"slimcore: error: {key}: unknown {role} '{wrong}' (did you mean '{right}'?) "
            f"(installed: {installed}; see `slimcore plugins`)"]


class LeavesOutGains(OptimizerBuilder):
    name = "matrices_only"

    def build(self, groups, run):
        return torch.optim.SGD(groups.of(MATRIX, EMBEDDING), lr=0.1)


class Raises(OptimizerBuilder):
    name = "raises"

    def build(self, groups, run):
        raise ValueError("no such setting")


class Offers:
    @hookimpl
    def register_optimizers(self):
        return [LeavesOutGains(), Raises()]


@pytest.mark.parametrize("name, message", [
    ("matrices_only", "optimizer.name: optimizer 'matrices_only' must hold every trainable "
                      "parameter once; it left out blocks.0.attn_norm.weight, "
                      "blocks.0.mlp_norm.weight, blocks.1.attn_norm.weight"),
    ("raises", "optimizer.name: optimizer 'raises' failed to build: ValueError: no such "
               "setting")])
def test_a_plugin_optimizer_that_cannot_train_the_model_is_one_line(write_config, name,
                                                                    message):
    with pytest.raises(UserError) as refused:
        run_in_process(write_config(), plugins={"offers": Offers()},
                       overrides=[f"optimizer.name={name}"])
    assert str(refused.value) == message


def test_the_documented_plugin_optimizer_installs_trains_and_resumes(tmp_path_factory,
                                                                     write_config, tmp_path,
                                                                     cli):
    """docs/optimizers.md's example, pip-installed as a distribution of its own: selected by
    name, set by its own section, its state in the checkpoint and back on resume."""
    from slimcore_checkpointers.three_file import read_checkpoint

    text = (REPO / "docs" / "optimizers.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S)
                if "class SignDescentBuilder" in b)
    env = pip_install({"slimcore-sign-descent": ("sign_descent", "sign_descent",
                                                 "slimcore_sign_descent", code)},
                      tmp_path_factory.mktemp("sign-src"), tmp_path_factory.mktemp("sign-site"),
                      version="0.1.0")
    listed = cli("plugins", env=env)
    assert "sign_descent" in listed.stdout, listed.stdout
    config = write_config({"run": {"steps": 6}, "intervals": {"checkpoint": 3},
                           "optimizer": {"name": "sign_descent"},
                           "sign_descent": {"lr": 0.003}})
    first = cli("run", str(config), env=env)
    assert first.returncode == 0, first.stderr
    trained = losses(tmp_path / "out")
    assert trained[6] < trained[1]
    saved = read_checkpoint(tmp_path / "out" / "checkpoints" / "checkpoint_step_6.bin")
    assert {s["steps"] for s in saved.optimizer["state"].values()} == {6}
    again = cli("run", str(config), "--resume", "auto", "--steps", "8", env=env)
    assert again.returncode == 0, again.stderr
    saved = read_checkpoint(tmp_path / "out" / "checkpoints" / "checkpoint_step_8.bin")
    assert {s["steps"] for s in saved.optimizer["state"].values()} == {8}


@pytest.mark.slow
def test_muon_trains_a_compiled_model_as_an_eager_one(write_config, tmp_path):
    """`model.compile: true`: the compiled model's gradients feed Muon as the eager one's do
    (inductor's kernels differ from eager in float32 rounding: 1e-4 of the loss)."""
    settings = {"run": {"steps": 4}, "optimizer": {"name": "muon"},
                "model": {"backend": "torch"}}
    run_in_process(write_config(settings, name="eager"))
    eager = losses(tmp_path / "out")
    run_in_process(write_config({**settings, "model": {"backend": "torch", "compile": True},
                                 "output": {"dir": str(tmp_path / "compiled")}},
                                name="compiled"))
    compiled = losses(tmp_path / "compiled")
    assert [compiled[s] for s in range(1, 5)] == pytest.approx(
        [eager[s] for s in range(1, 5)], rel=1e-4)


def test_slimcore_plugins_says_what_names_each_plugin_offers(cli):
    """What a YAML selects by name (`optimizer.name: muon`) is not the plugin's name
    (`optimizers`): the listing gives the names each registration hook offers."""
    import json

    table = cli("plugins")
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if line.startswith("optimizers "))
    assert "register_optimizers (adamw, muon), register_schedules (constant, cosine, linear, " \
           "wsd)" in row
    listed = {p["name"]: p for p in json.loads(cli("plugins", "--json").stdout)}
    assert listed["optimizers"]["offers"] == {
        "register_optimizers": ["adamw", "muon"],
        "register_schedules": ["constant", "cosine", "linear", "wsd"]}
    assert listed["chunk"]["offers"] == {"register_data_sources": ["chunk"]}
