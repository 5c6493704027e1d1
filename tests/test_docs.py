"""Every Python block of the docs runs: the blocks of docs/plugins.md and
docs/architecture.md are executed each on its own (a complete example imports what it
uses), and the test functions the plugin docs show are called as an author's pytest would."""

import re
import sys
import types

import pytest

from conftest import REPO

DOCS = ("docs/plugins.md", "docs/architecture.md")


def python_blocks(name: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / name).read_text(), re.S)


def test_the_plugin_docs_have_blocks_to_run():
    assert len(python_blocks("docs/plugins.md")) >= 15


@pytest.mark.parametrize("name", DOCS)
def test_every_python_block_runs(name, tmp_path):
    """Each block in a namespace of its own; a block that defines test functions has them
    run, each with a folder of its own."""
    ran = 0
    for index, block in enumerate(python_blocks(name)):
        module = types.ModuleType(f"docs_block_{index}")  # dataclasses look their module up
        sys.modules[module.__name__] = module
        exec(compile("from __future__ import annotations\n" + block,
                     f"{name} block {index}", "exec"), module.__dict__)
        for test_name, function in sorted(vars(module).items()):
            if test_name.startswith("test_") and callable(function):
                (tmp_path / test_name).mkdir()
                function(tmp_path / test_name)
                ran += 1
    if name == "docs/plugins.md":
        assert ran == 2  # the testing section's examples
