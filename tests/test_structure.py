"""The shape of the code, held by tests: no import circle inside core/, a core that names no
shipped plugin's file, folder or key, size limits on what a newcomer reads, and
`python -m slimcore` from any folder."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

CORE = REPO / "core"
# The modules that name shipped plugins' files on purpose: the deprecated names of RunPaths
# (they go in 0.3, with the old hook forms' adapters).
DEPRECATION_MODULES = {"deprecated.py", "host/legacy.py"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["slimcore", *parts])


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The core modules `path` imports anywhere (functions too), but under TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    typing_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and ast.unparse(block.test) == "TYPE_CHECKING"
                   for node in ast.walk(block)}
    package = module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found |= {c for c in candidates if c in known}
    return found - {module_name(path)}


def core_graph() -> dict[str, set[str]]:
    paths = sorted(CORE.rglob("*.py"))
    known = {module_name(p) for p in paths}
    graph = {module_name(p): imported_modules(p, known) for p in paths}
    graph.pop("slimcore", None)  # the facade: names load lazily from every package
    return {name: {m for m in deps if m != "slimcore"} for name, deps in graph.items()}


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_core_has_no_import_circle():
    graph = core_graph()
    assert len(graph) > 40 and graph["slimcore.launch.training"]  # the graph is really read
    assert cycle_in(graph) is None, " -> ".join(cycle_in(graph))


def test_the_circle_finder_finds_a_circle():
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle_in({"a": {"b"}, "b": set()}) is None


def shipped_plugin_names() -> dict[str, str]:
    """What the shipped plugins own, each with why it counts: their files and folders and
    every key of their config sections. Built from the plugins themselves, so the list
    cannot go stale."""
    from slimcore_checkpointers import three_file
    from slimcore_datasources.chunk import ChunkConfig
    from slimcore_datasources.config import CorpusConfig
    from slimcore_visualizers import files
    from slimcore_visualizers.dashboard import DashboardConfig
    from slimcore_visualizers.json_export import JsonExportConfig

    names = {f"{three_file.CHECKPOINTS}/": "three_file's folder",
             "checkpoint_step_": "three_file's files", ".bin.embeddings": "three_file's files",
             files.FOLDER: "the dashboard's folder",
             files.metrics_history(".").name: "json_export's file",
             files.text_samples(".").name: "json_export's file",
             files.dashboard_latest(".").name: "the dashboard's file",
             "training_step_": "the dashboard's files"}
    for section, cls in (("corpus", CorpusConfig), ("chunk", ChunkConfig),
                         ("dashboard", DashboardConfig), ("json_export", JsonExportConfig),
                         ("three_file", three_file.ThreeFileConfig)):
        for field in cls.__dataclass_fields__:
            names[f"{section}.{field}"] = f"the {section} section's key"
    return names


def test_the_core_names_no_shipped_plugins_file_folder_or_key():
    names = shipped_plugin_names()
    assert len(names) > 30
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        relative = str(path.relative_to(CORE))
        if relative in DEPRECATION_MODULES:
            continue
        # The core's own files, which a plugin's name may be part of
        text = path.read_text().replace("text_samples.jsonl", "").replace("metrics.jsonl", "")
        offenders += [f"core/{relative} names {name!r} ({why})"
                      for name, why in names.items() if name in text]
    assert offenders == []


def test_the_list_of_plugin_names_is_honest():
    """Each name the test above looks for is really in a shipped plugin's code."""
    plugins = "".join(p.read_text() for p in (REPO / "plugins").glob("*/slimcore_*/*.py"))
    missing = [name for name in shipped_plugin_names()
               if name not in plugins and name.split(".", 1)[-1] not in plugins]
    assert missing == []
    # and the deprecation modules are the only ones that name such files
    assert "training_viz" in (CORE / "deprecated.py").read_text()


def test_size_limits_a_newcomer_reads():
    """No product file over 400 lines; no function of the training loop over 40."""
    product = [*CORE.rglob("*.py"), *(REPO / "plugins").glob("*/slimcore_*/*.py")]
    long_files = [f"{p.relative_to(REPO)}: {n}" for p in product
                  if (n := len(p.read_text().splitlines())) > 400]
    assert long_files == []
    loop = ast.parse((CORE / "train" / "loop.py").read_text())
    long_functions = [f"{node.name}: {node.end_lineno - node.lineno + 1}"
                      for node in ast.walk(loop) if isinstance(node, ast.FunctionDef)
                      and node.end_lineno - node.lineno + 1 > 40]
    assert long_functions == []


def test_python_dash_m_slimcore_works_beside_a_clone_named_slimcore(tmp_path):
    """torchrun's form, run from the parent folder of a clone named `slimcore` (whose
    folder, without an __init__.py, would be found first as a namespace package)."""
    clone = tmp_path / "slimcore"
    for folder in ("core", "plugins", "native", "tests"):
        (clone / folder).mkdir(parents=True)
    (clone / "pyproject.toml").write_text("[project]\nname = 'slimcore'\n")
    done = subprocess.run([sys.executable, "-m", "slimcore", "plugins", "--check"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr  # the plugins import `slimcore` too
    assert "three_file" in done.stdout


def test_a_tokenizer_never_builds_the_kernels(tmp_path):
    """The word table is a library of its own: making a Tokenizer (as `slimcore generate`
    does) builds that small library and never the kernels."""
    code = ("from slimcore.config.schema import TokenizerSection\n"
            "from slimcore.text.tokenizer import train_or_reuse\n"
            "texts = [f'word {i} and more words' for i in range(300)]\n"
            "tok = train_or_reuse(TokenizerSection(vocab_size=300), texts, log=lambda _: 0)\n"
            "print(type(tok.word_cache).__name__, tok.encode('word 7'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "SLIMCORE_CACHE_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("NativeWordCacheEncoder")
    built = sorted(p.name.split("-")[0] for p in (tmp_path / "native").iterdir())
    assert built == ["words"]


@pytest.mark.parametrize("code", [
    "import slimcore.host.registry, slimcore.host.manager",
    "from slimcore import installed_charts; assert installed_charts({'loss'})",
])
def test_the_render_process_side_imports_no_torch(code):
    """The dashboard's render process asks the registry for its charts without torch."""
    done = subprocess.run([sys.executable, "-c", f"import sys; {code}; "
                           "print('torch' in sys.modules)"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
