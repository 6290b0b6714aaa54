"""WebUI installer hook: installs what this extension needs and the WebUI lacks; never aborts startup.

The WebUI runs every extension's install.py in a subprocess at startup, with its own folder on
PYTHONPATH so `launch` imports (modules/launch_utils.py:L228-L241 in v1.10.1), and prints the
script's stdout afterwards; stderr is shown only when the script fails. So messages go to stdout,
and the script always exits 0: a failed install is reported, package by package with pip's
output, and the WebUI starts anyway (the script then says which features will not work).

What is checked (A1111 1.10.1's requirements_versions.txt and Forge's already bring numpy 1.26,
Pillow, tqdm, torchsde 0.2.6, open-clip-torch 2.20, safetensors, transformers (and with it regex),
httpx 0.24.1 (the remote servers' client), gradio (and with it jinja2 and matplotlib); only DEAP and
onnxruntime are normally missing):

- REQUIRED: installed with `launch.run_pip` when `launch.is_installed` says they are missing.
  Versions known to work beside the WebUI's pins; deap 1.4.4 is pure Python (with moocore, which has
  cp310 wheels and wants numpy >= 1.24). onnxruntime is installed only when no variant of it
  (onnxruntime-gpu, -directml, -silicon, -openvino: the WD14 tagger extension installs one) is.
- An installed package older than our minimum is reported, not upgraded: the WebUI or another
  extension may depend on its version.
- OPTIONAL: reported when missing, never installed. open_clip_torch pulls torchvision, and a
  torchvision install can replace the WebUI's torch.
- Every pip call runs with a constraints file pinning the installed versions of torch,
  torchvision, numpy, gradio and the other packages the WebUI pins, so no dependency resolution
  can change them. torch is never installed or upgraded here.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("sd-prompt-pinning.install")


@dataclass(frozen=True)
class Requirement:
    dist: str  # the distribution name (what launch.is_installed and pip take)
    spec: str  # what to install when missing
    minimum: str  # the oldest installed version known to work
    purpose: str
    # Other distributions that provide the same import (onnxruntime-gpu for onnxruntime): any of
    # them installed counts, and installing ours beside one would break it (both own `onnxruntime/`).
    alternatives: tuple[str, ...] = ()

    def present(self, launch: Any) -> str | None:
        """The installed distribution that satisfies this requirement, or None."""
        return next((d for d in (self.dist, *self.alternatives) if launch.is_installed(d)), None)


REQUIRED: tuple[Requirement, ...] = (
    Requirement("deap", "deap==1.4.4", "1.4", "the CMA-ES optimizer"),
    Requirement("matplotlib", "matplotlib>=3.6,<4", "3.6", "the report's plots"),
    Requirement("jinja2", "jinja2>=3.0,<4", "3.0", "the report page"),
    Requirement("torchsde", "torchsde==0.2.6", "0.2.5", "the SDE hyperbatch samplers' noise"),
    Requirement("regex", "regex", "2022.1.18", "token granularity (CLIP pre-tokens)"),
    Requirement("onnxruntime", "onnxruntime>=1.16", "1.16", "the booru-tag (WD14 tagger) objective",
                alternatives=("onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-silicon",
                              "onnxruntime-openvino", "ort-nightly-gpu")),
)

OPTIONAL: tuple[Requirement, ...] = (
    Requirement("open-clip-torch", "", "2.20", "the CLIP tag and aesthetic objectives, and token granularity "
                "outside the WebUI's own tokenizer (the WebUI ships open-clip-torch)"),
    Requirement("safetensors", "", "0.3", "loading the aesthetic predictor's weights"),
    # The report's map of the searched weights (lib_pinning/analysis/weight_map.py). Reported, not
    # installed: umap-learn pulls numba and llvmlite, and a numba release supports a narrow range
    # of numpy versions, so pip could try to move the WebUI's numpy (the constraints would then
    # fail the install, or an unconstrained user install would break the WebUI).
    Requirement("umap-learn", "", "0.5", "the report's map of the searched weights (embedding)"),
    Requirement("scikit-learn", "", "1.3", "the report's map of the searched weights (HDBSCAN clusters)"),
)

PROTECTED = ("torch", "torchvision", "torchaudio", "xformers", "numpy", "gradio", "gradio-client", "fastapi",
             "pydantic", "pillow", "transformers", "protobuf", "open-clip-torch", "accelerate", "diffusers",
             "httpx", "httpcore")
"""Installed packages whose versions every pip call here keeps (see the module docstring)."""

NEVER = frozenset({"torch", "torchvision", "torchaudio"})


def installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def older_than(version: str, minimum: str) -> bool:
    """Whether `version` < `minimum`, comparing release numbers (local/pre-release tags ignored)."""
    def release(text: str) -> tuple[int, ...]:
        numbers = re.match(r"^\s*v?(\d+(?:\.\d+)*)", text)
        return tuple(int(n) for n in numbers.group(1).split(".")) if numbers else ()

    return release(version) < release(minimum)


def protective_constraints() -> str:
    """The constraints file content: "name==version" for every installed PROTECTED package."""
    lines = []
    for dist in PROTECTED:
        version = installed_version(dist)
        if version:
            lines.append(f"{dist}=={version}")
    return "\n".join(lines) + "\n"


def install(launch: Any) -> list[tuple[str, str]]:
    """Install the missing REQUIRED packages; return (package, error) for each that failed."""
    failures: list[tuple[str, str]] = []
    missing = []
    for req in REQUIRED:
        if req.dist in NEVER:
            raise AssertionError(f"{req.dist} must never be installed by this extension")
        present = req.present(launch)
        if present is not None:
            version = installed_version(present)
            if version and older_than(version, req.minimum):
                log.warning("sd-prompt-pinning: %s %s is older than the tested %s (used for %s); "
                            "it is left as it is", present, version, req.minimum, req.purpose)
            continue
        missing.append(req)
    if missing:
        with tempfile.TemporaryDirectory(prefix="sd-prompt-pinning-") as folder:
            constraints = os.path.join(folder, "constraints.txt")
            with open(constraints, "w", encoding="utf8") as file:
                file.write(protective_constraints())
            for req in missing:
                try:
                    launch.run_pip(f'install "{req.spec}" -c "{constraints}"',
                                   f"sd-prompt-pinning requirement: {req.spec}")
                except Exception as e:  # run_pip raises RuntimeError with pip's stdout and stderr
                    failures.append((req.dist, str(e)))
    for req in OPTIONAL:
        if not launch.is_installed(req.dist):
            log.info("sd-prompt-pinning: optional %s is not installed; %s will not work until it is",
                     req.dist, req.purpose)
    for dist, error in failures:
        purpose = next(r.purpose for r in REQUIRED if r.dist == dist)
        log.error("sd-prompt-pinning: could not install %s (needed for %s). pip said:\n%s", dist, purpose, error)
    if failures:
        log.error("sd-prompt-pinning: %d package(s) failed to install: %s. The WebUI starts anyway; install "
                  "them into the WebUI's Python by hand (the pip output above says why it failed).",
                  len(failures), ", ".join(d for d, _ in failures))
    return failures


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        import launch
    except ImportError as e:
        log.error("sd-prompt-pinning: install.py runs inside the WebUI's launcher (no 'launch' module: %s)", e)
        return 0
    try:
        install(launch)
    except Exception:  # never abort the WebUI's startup
        log.exception("sd-prompt-pinning: install.py failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
