"""k-diffusion's own samplers as the reference for tests/test_samplers.py.

`import k_diffusion` runs the package __init__, which imports its training stack (accelerate,
wandb, kornia, clean-fid, torchvision, ...), none of which is installed here. The samplers live in
k_diffusion/sampling.py, which needs only scipy, torchdiffeq, torchsde, tqdm and one function of
k_diffusion/utils.py (append_dims); utils.py itself imports PIL, safetensors and torchvision at
the top. So this helper:

1. locates the installed k_diffusion package without importing it (importlib.util.find_spec);
2. registers an empty stand-in parent package `_kdiffusion_reference` (no search path, so nothing
   else can be imported through it);
3. builds `_kdiffusion_reference.utils` from the real utils.py, compiling only its `append_dims`
   definition (taken from the file's syntax tree, so the code under test is k-diffusion's own);
4. executes the real sampling.py as `_kdiffusion_reference.sampling`, whose `from . import utils`
   then resolves to step 3.

The real package name `k_diffusion` is never put into sys.modules, so nothing here can shadow an
installed k-diffusion for other code.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys
import types
from pathlib import Path

PACKAGE = "_kdiffusion_reference"
UTILS_NEEDED = ("append_dims",)


class ReferenceUnavailable(ImportError):
    """k-diffusion is not installed (the tests that need it are skipped)."""


def _package_dir() -> Path:
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise ReferenceUnavailable(
            "k-diffusion is not installed; install it with "
            "`pip install --no-deps k-diffusion==0.1.1.post1`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _utils_module(path: Path) -> types.ModuleType:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    wanted = [
        node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in UTILS_NEEDED
    ]
    missing = set(UTILS_NEEDED) - {node.name for node in wanted}
    if missing:
        raise ReferenceUnavailable(f"{path} has no {sorted(missing)}")
    module = types.ModuleType(f"{PACKAGE}.utils")
    module.__file__ = str(path)
    code = compile(ast.Module(body=wanted, type_ignores=[]), str(path), "exec")
    exec(code, module.__dict__)  # noqa: S102 - k-diffusion's own function definitions
    return module


@functools.lru_cache(maxsize=1)
def load_sampling() -> types.ModuleType:
    """k_diffusion.sampling, loaded standalone (see the module docstring)."""
    package_dir = _package_dir()
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = []
        sys.modules[PACKAGE] = package
        utils = _utils_module(package_dir / "utils.py")
        sys.modules[utils.__name__] = utils
        package.utils = utils
    name = f"{PACKAGE}.sampling"
    spec = importlib.util.spec_from_file_location(name, package_dir / "sampling.py")
    if spec is None or spec.loader is None:
        raise ReferenceUnavailable(f"cannot load {package_dir / 'sampling.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
