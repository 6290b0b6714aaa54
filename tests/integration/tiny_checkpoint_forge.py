"""Build a tiny random SD 1.5 checkpoint that Forge loads as SD 1.5.

Run with Forge's own Python, in Forge's root (so `backend` and `huggingface_guess` import):

    <forge venv>/bin/python tiny_checkpoint_forge.py --forge-root ROOT --out tiny.safetensors --seed 0

Why these shapes: Forge has no yaml configs; it detects the model from the state dict's shapes
(huggingface_guess) and recognises SD 1.5 only with UNet model_channels 320 and context 768, then
builds the text encoder and VAE from the fixed configs in
backend/huggingface/runwayml/stable-diffusion-v1-5/. So the UNet is SD 1.5's width with one level
and one res block (about 26M parameters, cheap on a CPU), and the text encoder (CLIP-L) and VAE are
full size, all random from one seed. Forge's own classes build the UNet and VAE, so their key names
are exactly the ones its loader expects. The transformers' `proj_out` layers keep their random
initialisation (the ldm code zero-initialises them, and then the prompt would not change the image;
Forge's classes zero-initialise nothing). The text encoder's final layer norm gets a constant bias
offset: its output has a per-token mean of exactly zero otherwise, and the "Original" emphasis
mode (backend/text_processing/emphasis.py) rescales by the ratio of two such means, which turns
every weighted prompt into NaN or huge values.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("forge_checkpoint")

TEXT_MEAN_OFFSET = 0.5
"""Added to the text encoder's final layer norm bias (see the module docstring)."""

SD15_REPO = Path("backend") / "huggingface" / "runwayml" / "stable-diffusion-v1-5"


def build_state_dict(forge_root: Path, seed: int) -> dict:
    """The checkpoint's tensors in the original LDM layout, fp16."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from backend.nn.unet import IntegratedUNet2DConditionModel
    from backend.nn.vae import IntegratedAutoencoderKL

    torch.manual_seed(seed)
    unet = IntegratedUNet2DConditionModel(
        in_channels=4, model_channels=320, out_channels=4, num_res_blocks=[1], channel_mult=[1],
        num_heads=8, use_spatial_transformer=True, transformer_depth=[1], transformer_depth_output=[1, 1],
        transformer_depth_middle=1, context_dim=768, use_linear_in_transformer=False,
    )
    text_config = CLIPTextConfig.from_pretrained(str(forge_root / SD15_REPO / "text_encoder"))
    text_encoder = CLIPTextModel(text_config)
    with torch.no_grad():
        text_encoder.text_model.final_layer_norm.bias += TEXT_MEAN_OFFSET
    vae = IntegratedAutoencoderKL.from_config(IntegratedAutoencoderKL.load_config(str(forge_root / SD15_REPO / "vae")))
    # A point posterior, as a trained VAE's nearly is (tiny_checkpoints.deterministic_vae_encoder):
    # Forge samples it from the global torch RNG when it encodes an img2img init image.
    half = vae.quant_conv.out_channels // 2
    with torch.no_grad():
        vae.quant_conv.weight[half:] = 0.0
        vae.quant_conv.bias[half:] = -30.0

    out: dict = {}
    for prefix, module in (("model.diffusion_model.", unet), ("cond_stage_model.transformer.", text_encoder),
                           ("first_stage_model.", vae)):
        for key, tensor in module.state_dict().items():
            value = tensor.detach()
            out[prefix + key] = value if "position_ids" in key else value.to(torch.float16).contiguous()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forge-root", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    forge_root = args.forge_root.resolve()
    sys.path[:0] = [str(forge_root), str(forge_root / "repositories" / "huggingface_guess"),
                    str(forge_root / "packages_3rdparty")]
    sys.argv = [sys.argv[0], "--always-cpu"]  # Forge's backend.args parses the command line at import
    os.chdir(forge_root)
    start = time.monotonic()
    state = build_state_dict(forge_root, args.seed)

    from safetensors.torch import save_file

    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    save_file(state, str(partial))
    os.replace(partial, args.out)
    params = sum(t.numel() for t in state.values())
    log.info("wrote %s: %d tensors, %.1fM parameters, %.1f s", args.out, len(state), params / 1e6,
             time.monotonic() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
