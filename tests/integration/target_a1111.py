"""AUTOMATIC1111 WebUI v1.10.1 targets: "a1111-sd1" and "a1111-sdxl" (one tree and venv, two checkpoints).

Facts used (../shared/webui/README.md, verified against the tree): the WebUI's pinned requirements
minus their setuptools line (69.5 conflicts with torch 2.13, which needs >= 77; 80.9 still has
pkg_resources), the CPU torch, clip-anytorch (launch_utils installs it at first start, which
--skip-install skips); --skip-prepare-environment, so the harness runs install.py itself.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.integration import harness
from tests.integration.harness import Checkpoint, LaunchContext, PreparedWebUI, Target, VenvContext, WebUI

BUILDER = Path(__file__).with_name("tiny_checkpoints.py")
SEED = 0
PRELOAD_EXTENSION = "zz-pinning-test-models"


def a1111_venv(ctx: VenvContext) -> None:
    constraints = ctx.constraints("constraints.txt", [harness.CONSTRAINT_TORCH])
    requirements = ctx.requirements_without("requirements_versions.txt", lambda line: line.startswith("setuptools"))
    ctx.pip("install", "-q", "-c", constraints, "torch==2.13.0", "-r", requirements, "setuptools==80.9.0",
            "clip-anytorch==2.6.0")


A1111 = WebUI(name="a1111-v1.10.1", tarball="a1111-v1.10.1.tar.gz", env_var="PINNING_WEBUI_A1111",
              venv_recipe=a1111_venv)


def tiny_checkpoint(kind: str):
    """The builder for `kind` ("sd1" or "sdxl"): tiny_checkpoints.py run in the WebUI's venv."""

    def build(prepared: PreparedWebUI, cache: Path) -> Checkpoint:
        def run(folder: Path) -> Path:
            env = {**os.environ, **harness.OFFLINE_ENV}
            result = subprocess.run([str(prepared.python), str(BUILDER), kind, str(folder), "--seed", str(SEED)],
                                    cwd=prepared.tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True)
            (folder / "build.log").write_text(result.stdout)
            if result.returncode:
                raise RuntimeError(f"building the tiny {kind} checkpoint failed:\n{result.stdout[-4000:]}")
            return folder / f"{kind}-tiny.safetensors"

        params = {"kind": kind, "seed": SEED, "webui": prepared.webui.key()}
        return harness.cached_build(f"a1111-{kind}", params, run, BUILDER)

    return build


def launch_args(ctx: LaunchContext) -> list[str]:
    return ["--skip-prepare-environment", "--skip-install", "--skip-torch-cuda-test", "--skip-version-check",
            "--no-half", "--use-cpu", "all", "--api", "--server-name", "127.0.0.1", "--port", str(ctx.port),
            "--data-dir", str(ctx.data_dir), "--ckpt", str(ctx.checkpoint.path), "--no-download-sd-model",
            "--do-not-download-clip"]


def open_clip_preload(ctx: LaunchContext) -> dict[str, dict[str, str]]:
    """SDXL's second text encoder is a tiny open_clip architecture the WebUI must know before the
    model loads: a test-only extension whose preload.py (run while the WebUI parses its arguments,
    modules/shared_cmd_options.py) registers it."""
    folder = ctx.checkpoint.path.parent / "open_clip"
    text = (f'"""Test-only: registers the tiny open_clip architecture of the SDXL test checkpoint."""\n'
            f"import open_clip\n\nopen_clip.add_model_config({str(folder)!r})\n\n\n"
            f"def preload(parser):\n    pass\n")
    return {PRELOAD_EXTENSION: {"preload.py": text}}


def vae_approx(ctx: LaunchContext) -> dict[str, Path]:
    """The live-preview model the tree ships under models/: --data-dir moves models/ to the data dir."""
    return {"models/VAE-approx/model.pt": ctx.prepared.tree / "models" / "VAE-approx" / "model.pt"}


THREADS = {"OMP_NUM_THREADS": os.environ.get("PINNING_WEBUI_THREADS", "1")}

harness.register(Target(
    name="a1111-sd1", webui=A1111, checkpoint=tiny_checkpoint("sd1"), launch_args=launch_args,
    data_files=vae_approx, features=frozenset({"a1111", "sd1", "schedule_type", "gradio3"}), env=THREADS,
    startup_timeout=300,
))

harness.register(Target(
    name="a1111-sdxl", webui=A1111, checkpoint=tiny_checkpoint("sdxl"), launch_args=launch_args,
    extra_extensions=open_clip_preload, features=frozenset({"a1111", "sdxl", "schedule_type", "gradio3"}),
    # the SDXL live preview would download its approximation model (TAESD / VAE-approx sdxl)
    settings={"live_previews_enable": False}, env=THREADS, startup_timeout=300,
))
