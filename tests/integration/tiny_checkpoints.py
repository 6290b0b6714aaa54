"""Build a tiny random SD 1.x or SDXL checkpoint the AUTOMATIC1111 WebUI loads (with its yaml beside it).

Run with the WebUI venv's python and the WebUI tree as the working directory (the model classes
come from its repositories/, so the state dict's keys are exactly the ones the WebUI loads):

    python tiny_checkpoints.py sd1|sdxl OUT_DIR [--seed 0]

Writes OUT_DIR/<kind>-tiny.safetensors, OUT_DIR/<kind>-tiny.yaml, the text encoder folder(s) the
yaml points at, and for SDXL open_clip/ (a tiny architecture JSON that must be registered with
open_clip.add_model_config in the WebUI process before the model loads; the harness does it from a
test-only preload.py).

Why the weights are touched after the random init:
- zero-initialised layers (every SpatialTransformer's proj_out, the ResBlocks' last conv, the
  UNet's output conv) are re-randomised: with proj_out at zero the prompt has no effect at all
  and a pinning run on the model would measure nothing;
- the VAE encoder's posterior is made a point (see deterministic_vae_encoder);
- the text encoders' hidden states get a constant offset (position embeddings, final layer norm
  bias): the WebUI's "Original" emphasis divides by the mean of the embedding, which is near
  zero for a random encoder and gives NaN latents (black images).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import logging
import sys
from pathlib import Path

import torch

log = logging.getLogger("tiny_checkpoints")

CLIP_L = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
          "projection_dim": 64}
OPEN_CLIP_ARCH = "pinning-tiny-openclip"
OPEN_CLIP = {"embed_dim": 96,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 32, "patch_size": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 96, "heads": 2, "layers": 2}}
OFFSET = 0.5


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character map (the BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_clip_tokenizer_files(folder: Path) -> None:
    """vocab.json and merges.txt of OpenAI's CLIP BPE, derived from the vocabulary file open_clip
    ships (the same construction as its SimpleTokenizer, hence the same ids as the Hub's files)."""
    package = importlib.util.find_spec("open_clip")  # not imported: its torchvision import may fail outside the WebUI
    assert package is not None and package.submodule_search_locations, "open_clip is not installed"
    bpe = Path(package.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    pairs = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(p) for p in pairs]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(p) for p in pairs) + "\n")


def build_clip_text_encoder(folder: Path, seed: int) -> Path:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    write_clip_tokenizer_files(folder)
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                            pad_token_id=49407, hidden_act="quick_gelu", **CLIP_L)
    model = CLIPTextModel(config)
    with torch.no_grad():
        model.text_model.embeddings.position_embedding.weight += OFFSET
        model.text_model.final_layer_norm.bias += OFFSET
    model.save_pretrained(str(folder))
    return folder


def rerandomise_zero_weights(model: torch.nn.Module, generator: torch.Generator) -> int:
    """Give every all-zero weight (dim > 1) a random value of the default init's scale."""
    count = 0
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() > 1 and not param.any():
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=generator) / fan_in ** 0.5)
                count += 1
    return count


def deterministic_vae_encoder(model: torch.nn.Module) -> None:
    """A trained VAE's posterior is nearly a point (std ~1e-3 of the latent scale); a random one's
    is wide, and the WebUI samples it from the global torch RNG when it encodes an img2img init
    image (modules/sd_samplers_common.images_tensor_to_samples -> DiagonalGaussianDistribution
    .sample), whose state is whatever the previous request left: the same img2img request would
    then give other images on its first run. Setting the log-variance half of quant_conv to the
    distribution's clamp (-30) makes the encoding a point, as with a real VAE."""
    quant = model.first_stage_model.quant_conv
    half = quant.out_channels // 2
    with torch.no_grad():
        quant.weight[half:] = 0.0
        quant.bias[half:] = -30.0


def save(model: torch.nn.Module, config: object, out: Path, name: str) -> Path:
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    path = out / f"{name}.safetensors"
    save_file(state, str(path))
    OmegaConf.save(config, str(out / f"{name}.yaml"))
    return path


def sd1(tree: Path, out: Path, seed: int) -> Path:
    from omegaconf import OmegaConf

    sys.path.insert(0, str(tree / "repositories" / "stable-diffusion-stability-ai"))
    from ldm.util import instantiate_from_config

    text = build_clip_text_encoder(out / "clip-l", seed)
    config = OmegaConf.load(str(tree / "configs" / "v1-inference.yaml"))
    unet = config.model.params.unet_config.params
    unet.update({"model_channels": 32, "attention_resolutions": [1, 2], "num_res_blocks": 1, "channel_mult": [1, 2],
                 "num_heads": 2, "context_dim": CLIP_L["hidden_size"]})
    config.model.params.first_stage_config.params.ddconfig.update({"ch": 32, "num_res_blocks": 1})
    config.model.params.cond_stage_config["params"] = {"version": str(text)}
    torch.manual_seed(seed)
    model = instantiate_from_config(config.model)
    touched = rerandomise_zero_weights(model, torch.Generator().manual_seed(seed + 1))
    deterministic_vae_encoder(model)
    log.info("sd1: %d parameters, %d zero weights re-randomised", sum(p.numel() for p in model.parameters()), touched)
    return save(model, config, out, "sd1-tiny")


def sdxl(tree: Path, out: Path, seed: int) -> Path:
    import open_clip
    from omegaconf import OmegaConf

    sys.path.insert(0, str(tree / "repositories" / "generative-models"))
    from sgm.util import instantiate_from_config

    text = build_clip_text_encoder(out / "clip-l", seed)
    arch_dir = out / "open_clip"
    arch_dir.mkdir()
    (arch_dir / f"{OPEN_CLIP_ARCH}.json").write_text(json.dumps(OPEN_CLIP, indent=1))
    open_clip.add_model_config(str(arch_dir))

    config = OmegaConf.load(str(tree / "repositories" / "generative-models" / "configs" / "inference" / "sd_xl_base.yaml"))
    params = config.model.params
    vector_dim = 32
    params.network_config.params.update({
        "adm_in_channels": OPEN_CLIP["embed_dim"] + 3 * 2 * vector_dim, "model_channels": 32,
        "attention_resolutions": [2], "num_res_blocks": 1, "channel_mult": [1, 2], "num_head_channels": 32,
        "transformer_depth": [1, 1], "context_dim": CLIP_L["hidden_size"] + OPEN_CLIP["text_cfg"]["width"],
        "spatial_transformer_attn_type": "softmax", "use_checkpoint": False})
    embedders = params.conditioner_config.params.emb_models
    embedders[0].params.update({"layer_idx": CLIP_L["num_hidden_layers"] - 1, "version": str(text)})
    embedders[1].params.update({"arch": OPEN_CLIP_ARCH, "version": None})
    for embedder in embedders[2:]:
        embedder.params.outdim = vector_dim
    params.first_stage_config.params.ddconfig.update({"ch": 32, "num_res_blocks": 1, "attn_type": "vanilla"})
    torch.manual_seed(seed)
    model = instantiate_from_config(config.model)
    with torch.no_grad():
        clip_g = model.conditioner.embedders[1].model
        clip_g.positional_embedding += OFFSET
        clip_g.ln_final.bias += OFFSET
    touched = rerandomise_zero_weights(model, torch.Generator().manual_seed(seed + 1))
    deterministic_vae_encoder(model)
    log.info("sdxl: %d parameters, %d zero weights re-randomised", sum(p.numel() for p in model.parameters()), touched)
    return save(model, config, out, "sdxl-tiny")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("sd1", "sdxl"))
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    path = {"sd1": sd1, "sdxl": sdxl}[args.kind](Path.cwd(), args.out, args.seed)
    print(path)


if __name__ == "__main__":
    main()
