"""Downstream tasks on the live model (`evals`, `slimcore eval --task`): the scorer against a
plain forward, the built-in multiple-choice scorer on tasks a trained model can and cannot
answer, bad task files, scores in the history, the trackers and the dashboard."""

import json

import pytest
import torch

from conftest import QUICKSTART, run_cli, run_in_process
from slimcore.commands.trained import load_trained
from slimcore.config.schema import EvalsSection
from slimcore.contracts.errors import UserError
from slimcore.evals.choice_tasks import read_questions, score_questions, shared_credit
from slimcore.evals.scoring import LikelihoodScorer, cut_at_stops
from slimcore.evals.suite import TaskSuite
from slimcore.host.manager import SlimcorePluginManager
from word_order import write_order_task


@pytest.fixture(scope="module")
def trained(trained_run):
    pm = SlimcorePluginManager()
    pm.discover()
    return load_trained(str(trained_run), pm, torch.device("cpu"))


def plain_log_likelihood(model, context, continuation):
    """The continuation's summed log-probability from one unpadded forward, the greedy test
    beside it."""
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        logits = model.head(model.hidden_states(ids[:, :-1])).float()
    picked = torch.log_softmax(logits, -1)[0, len(context) - 1:]
    wanted = torch.tensor(continuation)
    return (float(picked.gather(1, wanted[:, None]).sum()),
            bool((picked.argmax(-1) == wanted).all()))


def test_scores_equal_a_plain_forward_whatever_the_batching(trained):
    """Right-padded batches of uneven rows score each pair as it scores alone (1e-5), and a
    continuation greedy decoding gives is marked greedy."""
    model, tokenizer = trained.model.eval(), trained.tokenizer
    texts = [("The Congress", " of the United States"), ("We", " must"), ("", "Peace"),
             ("I ask the Congress to  ", "act"), ("Our nation", " is strong and free."),
             ("The", " the the"), ("A" * 40, " long")]
    greedy_context = tokenizer.encode("The state of the Union is")
    with torch.no_grad():
        greedy_next = int(model.head(model.hidden_states(
            torch.tensor([[tokenizer.bos_id] + greedy_context])))[0, -1].argmax())
    for batch_size in (1, 3, 16):
        scorer = LikelihoodScorer(model, tokenizer, torch.device("cpu"), batch_size=batch_size)
        pairs = [scorer.encode_pair(c, k) for c, k in texts]
        pairs.append(([tokenizer.bos_id] + greedy_context, [greedy_next]))
        scored = scorer.score(pairs)
        for (context, continuation), (ll, greedy) in zip(pairs, scored):
            alone, alone_greedy = plain_log_likelihood(model, context, continuation)
            assert ll == pytest.approx(alone, rel=1e-5, abs=1e-5)
            assert greedy == alone_greedy
        assert scored[-1][1] is True


def test_a_context_longer_than_the_model_keeps_its_newest_tokens(trained):
    model, tokenizer = trained.model, trained.tokenizer
    scorer = LikelihoodScorer(model, tokenizer, torch.device("cpu"))
    seq_len = model.cfg.seq_len
    context = (tokenizer.encode("We the people of the United States " * 40))[:3 * seq_len]
    continuation = tokenizer.encode(" in order to form")
    [(ll, _)] = scorer.score([(context, continuation)])
    kept = (context + continuation)[-(seq_len + 1):]
    alone, _ = plain_log_likelihood(model, kept[:-len(continuation)], continuation)
    assert ll == pytest.approx(alone, rel=1e-5)


def test_the_pair_split_moves_trailing_spaces_and_keeps_bos_first(trained):
    scorer = LikelihoodScorer(trained.model, trained.tokenizer, torch.device("cpu"))
    bos = trained.tokenizer.bos_id
    context, continuation = scorer.encode_pair("The Union  ", "is strong")
    assert context[0] == bos and context == scorer.encode("The Union")
    assert context + continuation == scorer.encode("The Union  is strong")
    assert scorer.encode_pair("", "Peace") == ([bos], trained.tokenizer.encode("Peace"))


def test_a_trained_model_beats_chance_on_word_order_and_not_on_shuffled_answers(
        trained, tmp_path):
    """400 questions of 4 choices: chance is 0.25 with a standard error of 0.022. The
    20-step quickstart model prefers sentences in their order well beyond that; against
    answers drawn at random it stays within chance's spread."""
    scorer = LikelihoodScorer(trained.model, trained.tokenizer, torch.device("cpu"))
    ordered = score_questions(scorer, read_questions(write_order_task(tmp_path / "o.jsonl"), 0))
    assert ordered["chance"] == 0.25
    assert ordered["acc"] > 0.25 + 4 * 0.022, ordered
    shuffled = score_questions(scorer, read_questions(
        write_order_task(tmp_path / "s.jsonl", shuffle_answers=True), 0))
    assert abs(shuffled["acc"] - 0.25) < 3 * 0.022, shuffled


def test_choices_the_model_cannot_tell_apart_score_chance_exactly(trained, tmp_path):
    """Three identical choices tie at every question: 1/3 each, whichever is the answer
    (taking the first of a tie would give 1.0 here, and 0.0 with the answer last)."""
    path = tmp_path / "same.jsonl"
    path.write_text("\n".join(json.dumps({"query": f"Question {i}:", "endings": ["yes"] * 3,
                                          "gold": i % 3}) for i in range(30)))
    scorer = LikelihoodScorer(trained.model, trained.tokenizer, torch.device("cpu"))
    scores = score_questions(scorer, read_questions(path, 0))
    assert scores == {"acc": pytest.approx(1 / 3), "acc_norm": pytest.approx(1 / 3),
                      "chance": pytest.approx(1 / 3)}
    assert shared_credit([-1.0, -1.0, -3.0], 1) == 0.5
    assert shared_credit([-1.0, -2.0], 1) == 0.0
    assert shared_credit([float("nan"), float("nan")], 0) == 0.0


@pytest.mark.parametrize("line, says", [
    ("not json", "is not JSON"),
    ("[1, 2]", "is not a JSON object"),
    ('{"choices": ["a", "b"], "answer": 0}', "has no 'context' field"),
    ('{"context": "x", "choices": ["a"], "answer": 0}', "two or more non-empty texts"),
    ('{"context": "x", "choices": ["a", ""], "answer": 0}', "two or more non-empty texts"),
    ('{"context": 3, "choices": ["a", "b"], "answer": 0}', "'context' must be text"),
    ('{"context": "x", "choices": ["a", "b"], "answer": 2}', "index of a choice (0 to 1)"),
    ('{"context": "x", "choices": ["a", "b"], "answer": true}', "index of a choice"),
    ('{"context": "x", "choices": ["a", "b"], "answer": 1e400}', "index of a choice"),
    ('{"context": "x", "choices": ["a", "b"], "answer": ' + "9" * 5000 + "}", "not JSON"),
    ("[" * 100_000 + "]" * 100_000, "not JSON"),
])
def test_a_bad_question_is_one_line_naming_the_file_and_line(tmp_path, line, says):
    path = tmp_path / "task.jsonl"
    path.write_text('{"context": "x", "choices": ["a", "b"], "answer": 0}\n\n' + line + "\n")
    with pytest.raises(UserError) as caught:
        read_questions(path, 0)
    message = str(caught.value)
    assert says in message and f"{path}:3" in message and "\n" not in message


def test_a_limit_reads_only_the_first_questions_and_an_empty_file_is_refused(tmp_path):
    path = tmp_path / "task.jsonl"
    good = json.dumps({"context": "x", "choices": ["a", "b"], "answer": 1})
    path.write_text(good + "\n" + good + "\nbroken past the limit\n")
    assert len(read_questions(path, 2)) == 2
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(UserError, match="holds no questions"):
        read_questions(tmp_path / "empty.jsonl", 0)
    (tmp_path / "binary.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UserError, match="cannot read task file"):
        read_questions(tmp_path / "binary.jsonl", 0)


def test_stop_strings_cut_the_generated_text():
    assert cut_at_stops("Paris.\nQ: next", ["\n", "Q:"]) == "Paris."
    assert cut_at_stops("no stop here", ["\n"]) == "no stop here"
    assert cut_at_stops("abc", [""]) == "abc"


def test_tasks_in_the_loop_reach_the_history_and_never_change_the_losses(tmp_path):
    """Scored at every evals.interval and the last step, into the history as task_scores;
    the losses equal those of the same run without tasks (scoring draws on no training RNG
    and leaves the model in training mode)."""
    task = write_order_task(tmp_path / "order.jsonl", count=40)
    common = ["run.steps=6", "eval.interval=0", "samples.max_new_tokens=0", "dashboard.every=6"]
    from slimcore.config.resolve import SMOKE_OVERRIDES

    def train(name, extra):
        folder = tmp_path / name
        status, _ = run_in_process(QUICKSTART, overrides=[
            *SMOKE_OVERRIDES, *common, f"output.dir={folder}", *extra])
        assert status == "completed"
        return [json.loads(line) for line in
                (folder / "history" / "metrics.jsonl").read_text().splitlines()]

    scored = train("scored", [f'evals.tasks=["{task}"]', "evals.interval=4"])
    plain = train("plain", [])
    assert [m["loss"] for m in scored] == [m["loss"] for m in plain]
    by_step = {m["step"]: m.get("task_scores") for m in scored}
    assert [s for s, v in by_step.items() if v] == [4, 6]
    assert set(by_step[6]) == {"order/acc", "order/acc_norm"}
    assert all(0 <= v <= 1 for v in by_step[6].values())
    from PIL import Image

    def charts(name):  # the dashboard's PNG names the charts it drew
        with Image.open(tmp_path / name / "training_viz" / "training_latest.png") as png:
            return png.text["Description"].split(": ")[1].split(", ")

    assert "tasks" in charts("scored") and "tasks" not in charts("plain")


def test_a_bad_task_file_stops_the_run_before_any_work_with_one_line(tmp_path):
    path = tmp_path / "task.jsonl"
    path.write_text('{"context": "x", "choices": ["a", "b"], "answer": 5}\n')
    result = run_cli("run", str(QUICKSTART), "--test", "--set", f"evals.tasks=['{path}']",
                     "--set", f"output.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"evals.tasks: {path}:1: 'answer' must be the index" in result.stderr
    assert not (tmp_path / "run" / "history").exists()


def test_slimcore_eval_task_scores_a_checkpoint(trained_run, trained, tmp_path):
    task = write_order_task(tmp_path / "order.jsonl", count=60)
    result = run_cli("eval", str(trained_run), "--task", str(task), "--json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    scorer = LikelihoodScorer(trained.model, trained.tokenizer, torch.device("cpu"))
    assert printed["tasks"]["order"] == pytest.approx(
        score_questions(scorer, read_questions(task, 0)))
    missing = run_cli("eval", str(trained_run), "--task", str(tmp_path / "none.jsonl"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().endswith(
        f"--task: cannot read task file {tmp_path / 'none.jsonl'} ([Errno 2] No such file or "
        f"directory: '{tmp_path / 'none.jsonl'}'); give a JSON-lines file of {{\"context\", "
        "\"choices\", \"answer\"} questions")
    with pytest.raises(UserError, match="names the task 'order' again"):
        TaskSuite(EvalsSection(tasks=[str(task), str(task)]))


def test_the_trackers_and_the_chart_take_the_task_scores():
    from slimcore_visualizers.charts import DownstreamTasksChart
    from slimcore_visualizers.tracker_thread import scalars

    from slimcore import ChartData

    record = {"step": 4, "loss": 2.0, "task_scores": {"order/acc": 0.5, "order/acc_norm": 0.75,
                                                      "harness_task/acc": 0.25}}
    assert {k: v for k, v in scalars(record).items() if k.startswith("tasks/")} == {
        "tasks/order/acc": 0.5, "tasks/order/acc_norm": 0.75, "tasks/harness_task/acc": 0.25}
    data = ChartData(metrics=[{"step": 2, "loss": 3.0}, record,
                              {"step": 8, "task_scores": {"order/acc_norm": 0.8}}])
    series = data.task_series()
    assert series["order/acc_norm"][0].tolist() == [4.0, 8.0]
    assert sorted(DownstreamTasksChart().shown(series)) == ["harness_task/acc",
                                                            "order/acc_norm"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_split_the_questions_and_score_as_one_process(write_config, tmp_path,
                                                                strategy):
    """Under torchrun each rank scores its share (25 batches for 2 ranks: FSDP's rank 1 runs
    one forward to match) and both get every answer: the scores in the history equal
    `slimcore eval --task` of the saved model in one process."""
    from test_distributed import history, torchrun

    task = write_order_task(tmp_path / "order.jsonl", count=31)
    config = write_config({"run": {"steps": 2}, "data": {"batch_size": 2},
                           "distributed": {"strategy": strategy},
                           "evals": {"tasks": [str(task)], "interval": 2, "batch_size": 5},
                           "output": {"dir": str(tmp_path / "run")}})
    job = torchrun(config)
    assert job.returncode == 0, job.stderr[-3000:]
    scored = history(tmp_path / "run")[2]["task_scores"]
    alone = run_cli("eval", str(tmp_path / "run"), "--task", str(task), "--json")
    assert alone.returncode == 0, alone.stderr[-2000:]
    expected = json.loads(alone.stdout)["tasks"]["order"]
    assert scored == {"order/acc": expected["acc"], "order/acc_norm": expected["acc_norm"]}


def test_each_rank_takes_every_other_batch_and_the_short_rank_pads_a_round():
    from slimcore.train.distributed import Distributed

    def share(rank, count):
        scorer = LikelihoodScorer.__new__(LikelihoodScorer)
        scorer.ranks = Distributed(rank=rank, world_size=2)
        return list(scorer._my_share(count))

    assert share(0, 5) == [0, 2, 4] and share(1, 5) == [1, 3, None]
    assert share(0, 4) == [0, 2] and share(1, 4) == [1, 3]
    assert share(1, 1) == [None] and share(0, 0) == []
