"""Building and loading the native libraries through cffi. Their sources are native/ at the
repository's root, which ships inside the `slimcore` distribution as the data-only package
`slimcore._native` (an editable install maps it to native/, a wheel carries a copy).

    library("cpu")    the kernels' C build (the system compiler, OpenMP), built on first use
    library("cuda")   the kernels' CUDA build (nvcc, sm_80 and sm_90), built on first use
    library("words")  the tokenizer's word table (a small C library of its own: a tokenizer
                      never builds the kernels)
    slimcore build-native [--cuda]   builds ahead of time

Builds land in a cache folder keyed by the sha256 of the sources, the compiler command and
the compiler's version, under a file lock, so concurrent processes (torchrun ranks) build
once. Each build's sha256 is kept beside it and checked before the library is loaded: a
library cut short in the cache (a full disk, a copy interrupted) would otherwise crash
every run with SIGBUS; it is built again, with a warning. The cffi declarations are the
block of each library's header between its cdef markers: the header is the one source of
truth for its ABI.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

from ..contracts.errors import UserError
from ..storage.atomic import atomic_path
from ..storage.cache import MOVE_HINT, default_cache_dir, read_checked, vouch


@functools.cache
def sources() -> Path:
    """native/, wherever this install keeps it: the package data of `slimcore._native`."""
    spec = importlib.util.find_spec("slimcore._native")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("native: this install of slimcore lacks its native sources "
                        "(slimcore._native); reinstall slimcore, or set model.backend: torch")
    return Path(list(spec.submodule_search_locations)[0])


HEADER_NAME = "slimcore_native.h"
ABI_VERSION = 1
CUDA_ARCHS = ("80", "90")
# kind -> (its header, its source, every file its build reads, its ABI function)
KINDS = {
    "cpu": ("slimcore_native.h", "slimcore_native.c", ("slimcore_common.inc",),
            "slimcore_abi_version"),
    "cuda": ("slimcore_native.h", "slimcore_native.cu", ("slimcore_common.inc",),
             "slimcore_abi_version"),
    "words": ("slimcore_words.h", "slimcore_words.c", (), "slimcore_words_abi_version"),
}


def cdef_text(kind: str = "cpu") -> str:
    text = (sources() / KINDS[kind][0]).read_text()
    return text.split("/* cdef-begin */", 1)[1].split("/* cdef-end */", 1)[0]


def compile_command(kind: str, source: Path, output: Path) -> list[str]:
    if kind in ("cpu", "words"):
        compiler = os.environ.get("CC", "cc")
        # -march=native: the cache key includes this machine's CPU flags (see build_key).
        openmp = ["-fopenmp"] if kind == "cpu" else []
        return [compiler, "-O3", "-march=native", *openmp, "-shared", "-fPIC",
                "-std=c11", "-I", str(sources()), "-o", str(output), str(source), "-lm"]
    gencode = [flag for arch in CUDA_ARCHS
               for flag in ("-gencode", f"arch=compute_{arch},code=sm_{arch}")]
    # The CUDA runtime is linked statically (nvcc's default): the library needs no toolkit.
    return ["nvcc", "-O3", "-shared", "-Xcompiler", "-fPIC", *gencode, "-I", str(sources()),
            "-o", str(output), str(source)]


def source_for(kind: str) -> Path:
    return sources() / KINDS[kind][1]


def cache_root() -> Path:
    return default_cache_dir() / "native"


def build_key(kind: str, command: list[str]) -> str:
    digest = hashlib.sha256()
    header, source, included, _ = KINDS[kind]
    for name in (header, *included, source):
        digest.update((sources() / name).read_bytes())
    digest.update(" ".join(command).encode())
    digest.update(compiler_version(command[0]).encode())
    if kind != "cuda":
        digest.update(cpu_flags().encode())
    return digest.hexdigest()[:20]


@functools.cache
def compiler_version(compiler: str) -> str:
    try:
        return subprocess.run([compiler, "--version"], capture_output=True, text=True,
                              timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""


def build(kind: str, quiet: bool = True, again: bool = False) -> Path:
    """The path of the built library for `kind` (KINDS), building it if needed (`again`:
    even when a library vouched for by its checksum is there: it did not load)."""
    from filelock import FileLock

    placeholder = Path("lib.so")
    command = compile_command(kind, source_for(kind), placeholder)
    compiler = command[0]
    if shutil.which(compiler) is None:
        what = "nvcc (the CUDA toolkit)" if kind == "cuda" else \
            "a C compiler (set CC, or install gcc)"
        raise UserError(f"{_setting(kind)}: the native {_what(kind)} need {what}, and "
                        f"'{compiler}' is not on PATH; install it, or set model.backend: torch")
    folder = cache_root() / f"{kind}-{build_key(kind, command)}"
    library_path = folder / f"libslimcore_native_{kind}.so"
    if not again and _whole(library_path):
        return library_path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / "build.lock")):
            if not again and _whole(library_path):  # built by another process meanwhile
                return library_path
            if library_path.exists() and not again:
                print(f"slimcore: warning: native: {library_path} fails its sha256 check or is "
                      "cut short; building it again", file=sys.stderr)
            _compile(kind, command, library_path, quiet)
    except OSError as e:
        raise UserError(f"native: cannot write the {kind} build into the cache {folder} "
                        f"({e.strerror or e}); make it writable, or {MOVE_HINT}") from None
    return library_path


def _whole(library_path: Path) -> bool:
    """Vouched for by its checksum, and an ELF file whose segments all lie inside it: one
    cut short maps pages past its end, and the first touch of them is SIGBUS (a file and its
    checksum both replaced, say by a copy cut short, pass the first check only)."""
    data = read_checked(library_path)
    if data is None:
        return False
    if data[:5] != b"\x7fELF\x02" or len(data) < 64:  # 64-bit ELF, its header whole
        return False
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    if phoff + phentsize * phnum > len(data) or phentsize < 56:
        return False
    for index in range(phnum):
        kind, = struct.unpack_from("<I", data, phoff + index * phentsize)
        offset, = struct.unpack_from("<Q", data, phoff + index * phentsize + 8)
        filesz, = struct.unpack_from("<Q", data, phoff + index * phentsize + 32)
        if kind == 1 and offset + filesz > len(data):  # PT_LOAD past the end
            return False
    return True


def _compile(kind: str, command: list[str], library_path: Path, quiet: bool) -> None:
    with atomic_path(library_path) as output:  # the compiler writes aside: whole, or nothing
        result = subprocess.run(compile_command(kind, source_for(kind), output),
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise UserError(f"{_setting(kind)}: building the native {_what(kind)} failed "
                            f"({' '.join(command[:1])}): "
                            f"{(result.stderr or result.stdout).strip()[:600]}")
    vouch(library_path)  # the checksum last: a library without one is rebuilt
    if not quiet:
        print(f"native: built {library_path}")


@functools.cache
def library(kind: str):
    """The loaded library: (its cffi FFI, its lib object) for a kind of KINDS."""
    from cffi import FFI

    ffi = FFI()
    ffi.cdef(cdef_text(kind))
    path = build(kind)
    try:
        lib = ffi.dlopen(str(path))
    except OSError as e:  # whole, vouched for, and still not a library this loader takes
        print(f"slimcore: warning: native: {path} does not load ({str(e)[:200]}); building "
              "it again", file=sys.stderr)
        lib = ffi.dlopen(str(build(kind, again=True)))
    version = getattr(lib, KINDS[kind][3])()
    if version != ABI_VERSION:
        raise UserError(f"native: the {kind} library speaks ABI {version}, this slimcore "
                        f"{ABI_VERSION}; delete {cache_root()} to rebuild")
    return ffi, lib


def _what(kind: str) -> str:
    return "word table (the tokenizer's)" if kind == "words" else f"{kind} kernels"


def _setting(kind: str) -> str:
    """The setting a user changes when a library cannot be built."""
    return "tokenizer" if kind == "words" else "model.backend"


def check(status: int, kernel: str, kind: str) -> None:
    """Every kernel call's status goes through here: a failure is never silent."""
    if status != 0:
        ffi, lib = library(kind)
        raise RuntimeError(f"native kernel {kernel} ({kind}) failed: "
                           f"{ffi.string(lib.slimcore_status_string(status)).decode()} "
                           f"(status {status})")


def command_build_native(args) -> int:
    """`slimcore build-native [--cuda]`: build ahead of time, e.g. in a container image."""
    for kind in ("cpu", "cuda") if args.cuda else ("cpu",):
        path = build(kind, quiet=False)
        print(f"native {kind}: {path}")
    return 0
