"""lm-evaluation-harness on the live model, cross-checked against the harness's own `hf`
model on the Hugging Face export of the same checkpoint: the same log-likelihoods, rolling
log-likelihoods and greedy answers. Tasks are local files these tests write."""

import json

import pytest
import torch

from conftest import run_cli
from slimcore.commands.cli import main
from slimcore.commands.trained import load_trained
from slimcore.contracts.errors import UserError
from slimcore.evals.harness import (SlimcoreLM, check_task_names, evaluate_harness_tasks,
                                    task_manager)
from slimcore.evals.scoring import LikelihoodScorer
from slimcore.host.manager import SlimcorePluginManager
from word_order import write_harness_task, write_order_task

# The slow tier (CI runs it after the suite): the harness indexes its thousands of tasks
# (about 7 s) in each process that scores one.
pytestmark = pytest.mark.slow

lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("accelerate")  # the harness's `hf` model needs it
from lm_eval.api.instance import Instance  # noqa: E402


@pytest.fixture(scope="module")
def setting(trained_run, tmp_path_factory):
    """The trained model, its export, and a folder with one harness task over a local file."""
    folder = tmp_path_factory.mktemp("harness")
    data = write_order_task(folder / "order.jsonl", count=40)
    write_harness_task(folder / "tasks", data)
    exported = folder / "hf"
    assert main(["export", str(trained_run), "--format", "hf", "--output", str(exported)]) == 0
    pm = SlimcorePluginManager()
    pm.discover()
    trained = load_trained(str(trained_run), pm, torch.device("cpu"))
    scorer = LikelihoodScorer(trained.model, trained.tokenizer, torch.device("cpu"),
                              batch_size=8)
    return scorer, exported, folder / "tasks", task_manager(str(folder / "tasks"))


def hf_model(exported, add_bos_token):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(exported), dtype="float32", device="cpu", batch_size=8,
                add_bos_token=add_bos_token)


def test_the_adapter_scores_a_task_as_the_harness_scores_the_export(setting):
    """Every request's log-likelihood equal to the harness's `hf` model on the exported
    folder (relative 1e-4: float32, different kernels), and so the same accuracy."""
    scorer, exported, _, manager = setting

    def evaluate(model):
        return lm_eval.simple_evaluate(model=model, tasks=["word_order"], task_manager=manager,
                                       bootstrap_iters=0, log_samples=True)

    ours, theirs = evaluate(SlimcoreLM(scorer)), evaluate(hf_model(exported, True))

    def log_likelihoods(results):
        return [float(resp[0][0]) for sample in results["samples"]["word_order"]
                for resp in sample["resps"]]

    assert len(log_likelihoods(ours)) == 160
    assert log_likelihoods(ours) == pytest.approx(log_likelihoods(theirs), rel=1e-4)
    for metric in ("acc,none", "acc_norm,none"):
        assert ours["results"]["word_order"][metric] == theirs["results"]["word_order"][metric]
    assert ours["results"]["word_order"]["acc,none"] > 0.25  # a trained model, not noise


def test_rolling_log_likelihoods_equal_the_harness_across_windows(setting):
    """A text four times the model's length is scored in windows; each token once."""
    scorer, exported, _, _ = setting
    long_text = " ".join(["We the people of the United States, in order to form a more "
                          "perfect union, establish justice."] * 20)
    assert len(scorer.tokenizer.encode(long_text)) > 3 * scorer.seq_len
    requests = [Instance(request_type="loglikelihood_rolling", doc={}, arguments=(text,),
                         idx=0) for text in ("Peace.", long_text)]
    ours = SlimcoreLM(scorer).loglikelihood_rolling(requests)
    # The harness's `hf` model puts BOS in front as the prefix token when it adds none itself.
    theirs = hf_model(exported, False).loglikelihood_rolling(requests)
    assert ours == pytest.approx([float(t) for t in theirs], rel=1e-4)


def test_greedy_answers_equal_the_harness_generation(setting):
    """Greedy, cut at the first stop string, decoded as the harness decodes new tokens."""
    scorer, exported, _, _ = setting
    requests = [Instance(request_type="generate_until", doc={}, idx=0, arguments=(
        prompt, {"until": ["\n", "."], "max_gen_toks": 12, "do_sample": False}))
        for prompt in ("The state of the Union is", "Congress must", "We")]
    ours = SlimcoreLM(scorer).generate_until(requests)
    theirs = hf_model(exported, True).generate_until(requests)
    assert ours == theirs
    assert all(ours) and not any("." in text or "\n" in text for text in ours)
    # Each request stops at its own max_gen_toks, whatever the others ask.
    lengths = [Instance(request_type="generate_until", doc={}, idx=0, arguments=(
        "We the people", {"until": ["\u0000"], "max_gen_toks": limit, "do_sample": False}))
        for limit in (2, 10)]
    ours = SlimcoreLM(scorer).generate_until(lengths)
    assert ours == hf_model(exported, True).generate_until(lengths)
    assert len(scorer.tokenizer.encode(ours[0])) <= 2 < len(scorer.tokenizer.encode(ours[1]))


def test_harness_tasks_score_in_slimcore_eval_and_name_a_wrong_task(setting, trained_run):
    scorer, _, tasks, manager = setting
    result = run_cli("eval", str(trained_run), "--task", "harness:word_order",
                     "--harness-dir", str(tasks), "--limit", "20", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    printed = json.loads(result.stdout)["tasks"]["word_order"]
    assert printed == evaluate_harness_tasks(scorer, ["word_order"], manager, 20)["word_order"]
    assert set(printed) == {"acc", "acc_norm"}
    with pytest.raises(UserError) as wrong:
        check_task_names(manager, ["word_order", "word_ordr"], "--task")
    assert str(wrong.value).startswith(
        "--task: lm-evaluation-harness has no task 'word_ordr' (did you mean 'word_order'?)")


def test_without_the_harness_installed_a_harness_task_is_one_line(trained_run, tmp_path):
    shadow = tmp_path / "shadow" / "lm_eval"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('lm_eval is not installed here')\n")
    result = run_cli("eval", str(trained_run), "--task", "harness:hellaswag",
                     env={"PYTHONPATH": str(tmp_path / "shadow")})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "pip install 'slimcore[harness]'" in result.stderr
