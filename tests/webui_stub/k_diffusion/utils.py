"""`k_diffusion.utils.append_dims`, compiled from the installed k-diffusion's utils.py.

utils.py imports PIL, safetensors and torchvision at its top; sampling.py needs only append_dims,
so only that definition is taken from the file's syntax tree (the code is k-diffusion's own).
"""

from __future__ import annotations

import ast

from k_diffusion import installed_package_dir

_PATH = installed_package_dir() / "utils.py"
_TREE = ast.parse(_PATH.read_text(encoding="utf-8"), filename=str(_PATH))
_WANTED = [node for node in _TREE.body if isinstance(node, ast.FunctionDef) and node.name == "append_dims"]
if not _WANTED:
    raise ImportError(f"{_PATH} defines no append_dims")
exec(compile(ast.Module(body=_WANTED, type_ignores=[]), str(_PATH), "exec", dont_inherit=True), globals())  # noqa: S102
