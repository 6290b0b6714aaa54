"""Forge target: "forge-sd15" (stable-diffusion-webui-forge main dfdcbab6, gradio 4.40, SD 1.5).

Facts used (../shared/webui/README.md, verified against the tree and by running it here):
- venv: Forge's requirements_versions.txt without its setuptools line (69.5 conflicts with torch
  2.13, which needs >= 77; 80.9 still has pkg_resources), setuptools 80.9 and clip-anytorch, all
  under one constraints file: the CPU torch, numpy 1.26.2 and protobuf 3.20.0.
- every start gets PIP_CONSTRAINT = that file: Forge's built-in extensions pip-install mediapipe,
  onnxruntime and opencv when their installers run, which upgrades numpy to 2.x and protobuf, and
  the next start dies in scikit-image ("numpy.dtype size changed"). REQS_FILE points at the copy
  without setuptools, because Forge re-checks its requirements at each start (launch_utils
  prepare_environment). Both files live in the venv folder, so a user checkout stays untouched.
- --skip-prepare-environment (the trees here are not git checkouts; it also skips every extension
  installer): the harness runs this extension's install.py as launch_utils does.
- Forge has no model yaml: it detects the model from the state dict (tiny_checkpoint_forge.py).
- Reload UI is gradio 4's: the button's event is called through /run/predict with the event's id.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.integration import harness
from tests.integration.harness import Checkpoint, LaunchContext, PreparedWebUI, Target, VenvContext, WebUI

BUILDER = Path(__file__).with_name("tiny_checkpoint_forge.py")
SEED = 0
CONSTRAINTS = (harness.CONSTRAINT_TORCH, "numpy==1.26.2", "protobuf==3.20.0")
"""Pinned for the venv build and for every start (PIP_CONSTRAINT)."""
CONSTRAINTS_FILE = "pinning-constraints.txt"
REQUIREMENTS_FILE = "pinning-requirements_versions.txt"
"""Both written into the venv folder by the recipe; REQS_FILE and PIP_CONSTRAINT point there."""


def forge_venv(ctx: VenvContext) -> None:
    constraints = ctx.venv / CONSTRAINTS_FILE
    constraints.write_text("\n".join(CONSTRAINTS) + "\n")
    requirements = ctx.requirements_without("requirements_versions.txt", lambda line: line.startswith("setuptools"))
    (ctx.venv / REQUIREMENTS_FILE).write_text(requirements.read_text())
    ctx.pip("install", "-q", "-c", constraints, "torch==2.13.0", "-r", requirements, "setuptools==80.9.0",
            "clip-anytorch==2.6.0")


def start_env(prepared: PreparedWebUI) -> dict[str, str]:
    return {"PIP_CONSTRAINT": str(prepared.venv / CONSTRAINTS_FILE),
            "REQS_FILE": str(prepared.venv / REQUIREMENTS_FILE)}


FORGE = WebUI(name="forge-dfdcbab6", tarball="forge-dfdcbab6.tar.gz", env_var="PINNING_WEBUI_FORGE",
              venv_recipe=forge_venv, recipe_inputs=CONSTRAINTS, start_env=start_env)


def tiny_sd15(prepared: PreparedWebUI, cache: Path) -> Checkpoint:
    """tiny_checkpoint_forge.py run with Forge's python (it builds the model with Forge's classes)."""

    def run(folder: Path) -> Path:
        out = folder / "forge-sd15-tiny.safetensors"
        env = {**os.environ, **harness.OFFLINE_ENV}
        result = subprocess.run([str(prepared.python), str(BUILDER), "--forge-root", str(prepared.tree),
                                 "--out", str(out), "--seed", str(SEED)],
                                cwd=prepared.tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        (folder / "build.log").write_text(result.stdout)
        if result.returncode:
            raise RuntimeError(f"building the tiny Forge SD 1.5 checkpoint failed:\n{result.stdout[-4000:]}")
        return out

    params = {"kind": "forge-sd15", "seed": SEED, "webui": prepared.webui.key()}
    return harness.cached_build("forge-sd15", params, run, BUILDER)


def launch_args(ctx: LaunchContext) -> list[str]:
    """The README's flags, plus --gradio-allowed-path for the tree: gradio 4 serves `file=` paths only
    inside its allowed paths (not the working directory, as gradio 3 did), and Forge allows only
    the data dir by default (modules/cmd_args.py), so with a --data-dir outside the tree every
    `file=script.js` / `file=javascript/...` of Forge's own UI answers 403 and the page has no
    gradioApp(), hints or progress (seen in the browser tests)."""
    return ["--skip-prepare-environment", "--skip-torch-cuda-test", "--skip-version-check",
            "--skip-python-version-check", "--always-cpu", "--all-in-fp32", "--api", "--server-name", "127.0.0.1",
            "--port", str(ctx.port), "--data-dir", str(ctx.data_dir), "--gradio-allowed-path", str(ctx.prepared.tree),
            "--ckpt", str(ctx.checkpoint.path), "--no-download-sd-model", "--do-not-download-clip"]


THREADS = {"OMP_NUM_THREADS": os.environ.get("PINNING_WEBUI_THREADS", "1")}

harness.register(Target(
    name="forge-sd15", webui=FORGE, checkpoint=tiny_sd15, launch_args=launch_args,
    features=frozenset({"forge", "sd15", "schedule_type", "gradio4"}), env=THREADS, startup_timeout=420,
))
