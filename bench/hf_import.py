"""Peak host memory and time of starting from a Hugging Face Llama folder: slimcore's import
(`model.init_from`: the model made on the meta device, each tensor read from the mapped
file, converted, its pages released) beside transformers' own `from_pretrained`, both to a
float32 model on the CPU, each in a fresh process of its own (a peak is a process's).

    python bench/hf_import.py                     # a random ~1 GB (bfloat16) Llama, made here
    python bench/hf_import.py --folder DIR        # any local Llama folder

Prints each one's peak resident memory over the process's before the import (torch and the
libraries loaded), against the file's size and the float32 model's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

# hidden 2048, 8 layers, 4 key/value heads, vocabulary 32,000: 483M parameters, 0.97 GB in
# bfloat16 (TinyLlama's shape, 8 of its 22 layers)
SHAPE = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=8,
             num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
             bos_token_id=1, eos_token_id=2)

MEASURE = textwrap.dedent("""\
    import json, sys, time
    import torch

    def high_water():  # VmHWM: this process's peak resident set (ru_maxrss would count the
        # parent's at the fork)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    which, folder = sys.argv[1], sys.argv[2]
    if which == "slimcore":
        import dataclasses
        from slimcore.config.schema import ModelSection
        from slimcore.launch.training import materialize_from
        from slimcore.model.gpt import GPT
        from slimcore.model.hf_folder import HFFolder
        from slimcore.model.ops import TorchOps
    else:
        import transformers
    before = high_water()
    began = time.perf_counter()
    if which == "slimcore":
        cfg = dataclasses.replace(ModelSection(seq_len=2048), **HFFolder.open(folder).shape())
        with torch.device("meta"):
            model = GPT(cfg, cfg.vocab_size, TorchOps)
        materialize_from(model, torch.device("cpu"), folder)
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    seconds = time.perf_counter() - began
    peak = high_water()
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    print(json.dumps({"peak": peak - before, "seconds": seconds, "model_bytes": size}))
    """)


def make_folder(folder: Path) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SHAPE)).to(torch.bfloat16)
    model.save_pretrained(folder)


def measure(which: str, folder: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", MEASURE, which, str(folder)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder or Path(scratch) / "llama"
        if args.folder is None:
            make_folder(folder)
        file_bytes = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
        ours, theirs = measure("slimcore", folder), measure("transformers", folder)
    gib = 2**30
    print(f"folder: {file_bytes / gib:.2f} GiB of safetensors; float32 model "
          f"{ours['model_bytes'] / gib:.2f} GiB")
    for name, m in (("slimcore", ours), ("transformers", theirs)):
        print(f"  {name:12s} peak {m['peak'] / gib:5.2f} GiB = {m['peak'] / file_bytes:4.2f}x "
              f"the file, {m['peak'] / m['model_bytes']:4.2f}x the model; {m['seconds']:5.1f} s")
    print(f"slimcore / transformers: peak {ours['peak'] / theirs['peak']:.2f}x, "
          f"time {ours['seconds'] / theirs['seconds']:.2f}x")


if __name__ == "__main__":
    main()
