"""Generation speed: slimcore with its KV cache, slimcore without it, and transformers'
`generate` on the same model exported with `slimcore export --format hf`; same device, one
process, greedy, 256 new tokens after a 128-token prompt of real text.

    python bench/generate.py                       the CPU, a model of width 512
    python bench/generate.py --device cuda --width 1536 --layers 16 --heads 12 --mlp 4096

The model is freshly initialised (speed does not depend on what it learned); the tokenizer
is the quickstart's. Every variant generates exactly --new tokens (no stop at EOS). Prints
the median of --repeats timed generations per variant and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, build_config  # noqa: E402
from slimcore import Checkpoint  # noqa: E402
from slimcore.config.schema import ModelSection  # noqa: E402
from slimcore.model.generation import SamplingSettings, generate  # noqa: E402
from slimcore.launch.preparation import prepare_tokenizer  # noqa: E402
from slimcore.model.gpt import GPT  # noqa: E402
from slimcore.model.ops import select_ops  # noqa: E402
from slimcore.testing import make_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--mlp", type=int, default=1408)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        args.steps = 1
        config, pm = build_config(args, Path(tmp) / "run")
        run = make_run(config.to_dict(), output_dir=tmp)
        tokenizer = prepare_tokenizer(run, pm)
        shape = ModelSection(width=args.width, layers=args.layers, heads=args.heads,
                             mlp_hidden=args.mlp, seq_len=args.prompt + args.new)
        torch.manual_seed(0)
        model = GPT(shape, tokenizer.vocab_size, select_ops("auto", device)).to(device).eval()
        text = (REPO / "README.md").read_text() * 4
        prompt = ([tokenizer.bos_id] + tokenizer.encode(text))[:args.prompt]
        assert len(prompt) == args.prompt

        hf_model = export_and_load(model, shape, tokenizer, config, Path(tmp) / "hf", device)
        settings = SamplingSettings(max_new_tokens=args.new, temperature=0)

        def ours(use_cache):
            return lambda: generate(model, prompt, settings, use_cache=use_cache)

        def theirs():
            inputs = torch.tensor([prompt], device=device)
            with torch.no_grad():
                out = hf_model.generate(inputs, attention_mask=torch.ones_like(inputs),
                                        max_new_tokens=args.new, min_new_tokens=args.new,
                                        do_sample=False)
            return out[0, len(prompt):].tolist()

        variants = {"slimcore, KV cache": ours(True), "slimcore, no cache": ours(False),
                    "transformers generate": theirs}
        rates, outputs = {}, {}
        for name, fn in variants.items():
            fn()  # warm up: allocations, kernels, lazy imports
            times = []
            for _ in range(args.repeats):
                sync(device)
                start = time.perf_counter()
                outputs[name] = fn()
                sync(device)
                times.append(time.perf_counter() - start)
            assert len(outputs[name]) == args.new, (name, len(outputs[name]))
            rates[name] = args.new / statistics.median(times)

    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"model width {args.width}, {args.layers} layers, {args.heads} heads, mlp "
          f"{args.mlp}, vocabulary {tokenizer.vocab_size}; prompt {args.prompt}, new "
          f"{args.new}, median of {args.repeats}")
    print("| variant | tokens/s | vs no cache | vs transformers |")
    print("| --- | --- | --- | --- |")
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.1f} | {rate / rates['slimcore, no cache']:.2f}x | "
              f"{rate / rates['transformers generate']:.2f}x |")
    same = outputs["slimcore, KV cache"] == outputs["transformers generate"]
    print(f"greedy tokens identical to transformers': {same}; cached and uncached "
          f"identical: {outputs['slimcore, KV cache'] == outputs['slimcore, no cache']}")


def export_and_load(model, shape, tokenizer, config, folder: Path, device):
    """The model through the hf export plugin, loaded by transformers."""
    import dataclasses

    import transformers
    from slimcore_checkpointers.hf_export import HuggingFace

    recorded = config.to_dict()
    recorded["model"] = {**recorded["model"], **dataclasses.asdict(shape)}
    record = Checkpoint(step=0, tokens_seen=0, skipped_steps=0, run_id=None, config=recorded,
                        tokenizer_fingerprint=tokenizer.fingerprint,
                        model={k: v.detach().cpu() for k, v in model.state_dict().items()},
                        optimizer={"state": {}, "param_groups": []}, scheduler={}, rng={},
                        data_state=None, tokenizer_model=tokenizer.model_proto)
    folder.mkdir()
    HuggingFace().export(record, folder, torch.float32)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return hf.to(device).eval()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
