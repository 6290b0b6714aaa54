"""The LAION aesthetic head and its objective (objectives.aesthetic); unsafe pickles (objectives.weights)."""

from __future__ import annotations

import hashlib
import io

import pytest
import torch

from lib_pinning.generator import Batch
from lib_pinning.objectives.aesthetic import (
    AESTHETIC_HEAD,
    AestheticHead,
    AestheticObjective,
    load_aesthetic_head,
)
from lib_pinning.objectives.scale import AESTHETIC_SCALE
from lib_pinning.objectives.weights import (
    UnsafeWeightsError,
    WeightsError,
    WeightsFile,
    load_tensors,
    read_record,
)
from lib_pinning.toy import ToyModel, to_images
from lib_pinning.toy_clip import ToyClip
from lib_pinning.toy_prototypes import PROTOTYPES
from tests.clip_env import ensure_open_clip, tiny_model_name
from tests.file_server import ServedFiles, serve_files

# The published sac+logos+ava1-l14-linearMSE.pth (improved-aesthetic-predictor @ 6934dd8) holds
# exactly these float32 tensors; our module must load it unchanged.
PUBLISHED_LAYOUT = {
    "layers.0.weight": (1024, 768),
    "layers.0.bias": (1024,),
    "layers.2.weight": (128, 1024),
    "layers.2.bias": (128,),
    "layers.4.weight": (64, 128),
    "layers.4.bias": (64,),
    "layers.6.weight": (16, 64),
    "layers.6.bias": (16,),
    "layers.7.weight": (1, 16),
    "layers.7.bias": (1,),
}


def random_head(input_dim: int = 768, seed: int = 0) -> AestheticHead:
    torch.manual_seed(seed)
    return AestheticHead(input_dim)


def pth_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def axis_head(dim: int, axis: int, scale: float = 4.0, offset: float = 5.0) -> AestheticHead:
    """A head whose score is offset + scale * embedding[axis] (the published layout, hand-set)."""
    head = AestheticHead(dim)
    with torch.no_grad():
        for p in head.parameters():
            p.zero_()
        layers = head.layers
        layers[0].weight[0, axis] = 1.0
        layers[2].weight[0, 0] = 1.0
        layers[4].weight[0, 0] = 1.0
        layers[6].weight[0, 0] = 1.0
        layers[7].weight[0, 0] = scale
        layers[7].bias[0] = offset
    return head


def prototype_images(names: list[str]) -> torch.Tensor:
    model = ToyModel()
    index = {p.name: i for i, p in enumerate(PROTOTYPES)}
    return to_images(model.prototypes[[index[n] for n in names]])


# ---- the head -------------------------------------------------------------------------------------


def test_head_has_the_published_state_dict_layout() -> None:
    assert {k: tuple(v.shape) for k, v in AestheticHead().state_dict().items()} == PUBLISHED_LAYOUT


def test_head_is_the_published_affine_stack() -> None:
    """No activations between the linear layers (the published head was trained that way)."""
    head = random_head(16)
    x = torch.nn.functional.normalize(torch.randn(5, 16), dim=1)
    expected = x
    for i in (0, 2, 4, 6, 7):
        expected = torch.nn.functional.linear(expected, head.layers[i].weight, head.layers[i].bias)
    torch.testing.assert_close(head(x), expected.squeeze(-1))


def test_from_state_dict_rejects_a_wrong_layout() -> None:
    state = random_head(32).state_dict()
    state["layers.7.weight"] = torch.zeros(2, 16)
    with pytest.raises(WeightsError, match="layout"):
        AestheticHead.from_state_dict(state)
    with pytest.raises(WeightsError, match="layers.0.weight"):
        AestheticHead.from_state_dict({"w": torch.zeros(1)})


def test_published_head_is_pinned() -> None:
    assert AESTHETIC_HEAD.sha256 == "21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0"
    assert AESTHETIC_HEAD.size == 3_714_759
    assert "6934dd81792f086e613a121dbce43082cb8be85e" in AESTHETIC_HEAD.url


def test_pth_is_downloaded_verified_and_converted_to_safetensors(tmp_path) -> None:
    head = random_head()
    payload = pth_bytes(head.state_dict())
    files = ServedFiles({"/head.pth": payload})
    with serve_files(files) as base:
        spec = WeightsFile("head.pth", f"{base}/head.pth", hashlib.sha256(payload).hexdigest(), len(payload))
        loaded = load_aesthetic_head(tmp_path, spec=spec)
    for key, value in head.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, atol=0, rtol=0)
    converted = tmp_path / "head.safetensors"
    assert converted.is_file() and read_record(converted) is not None
    # Later loads read the safetensors copy: the pickle can go, no download is attempted.
    (tmp_path / "head.pth").unlink()
    again = load_aesthetic_head(tmp_path, spec=spec, download=False)
    torch.testing.assert_close(again.layers[0].weight, head.layers[0].weight, atol=0, rtol=0)


def test_tampered_conversion_is_redone_from_the_verified_source(tmp_path) -> None:
    head = random_head()
    payload = pth_bytes(head.state_dict())
    (tmp_path / "head.pth").write_bytes(payload)
    spec = WeightsFile("head.pth", "https://example.invalid/head.pth", hashlib.sha256(payload).hexdigest())
    load_aesthetic_head(tmp_path, spec=spec, download=False)
    from safetensors.torch import save_file

    evil = {k: torch.zeros_like(v) for k, v in head.state_dict().items()}
    save_file(evil, str(tmp_path / "head.safetensors"))
    loaded = load_aesthetic_head(tmp_path, spec=spec, download=False)
    torch.testing.assert_close(loaded.layers[0].weight, head.layers[0].weight, atol=0, rtol=0)


def test_conversion_follows_a_new_pin(tmp_path) -> None:
    """A release that pins another head file does not keep serving the old conversion."""
    old, new = random_head(seed=1), random_head(seed=2)
    for head in (old, new):
        payload = pth_bytes(head.state_dict())
        (tmp_path / "head.pth").unlink(missing_ok=True)
        (tmp_path / "head.pth.sha256.json").unlink(missing_ok=True)
        (tmp_path / "head.pth").write_bytes(payload)
        spec = WeightsFile("head.pth", "https://example.invalid/head.pth", hashlib.sha256(payload).hexdigest())
        loaded = load_aesthetic_head(tmp_path, spec=spec, download=False)
        torch.testing.assert_close(loaded.layers[0].weight, head.layers[0].weight, atol=0, rtol=0)


def test_empty_models_dir_means_the_default(tmp_path, monkeypatch) -> None:
    head = random_head()
    payload = pth_bytes(head.state_dict())
    (tmp_path / "head.pth").write_bytes(payload)
    monkeypatch.setenv("PROMPT_PINNING_MODELS_DIR", str(tmp_path))
    spec = WeightsFile("head.pth", "https://example.invalid/head.pth", hashlib.sha256(payload).hexdigest())
    loaded = load_aesthetic_head("", spec=spec, download=False)
    torch.testing.assert_close(loaded.layers[7].bias, head.layers[7].bias, atol=0, rtol=0)


class _Payload:
    """Unpickling this calls open(marker, "w"): a pickle that runs code when loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_that_runs_code_is_refused(tmp_path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"layers.0.weight": torch.zeros(2, 2), "payload": _Payload(str(marker))}, evil)
    with pytest.raises(UnsafeWeightsError, match="could run code"):
        load_tensors(evil)
    assert not marker.exists()
    # Through the head loader (a hand-placed file, trusted on first use) it is refused just the same.
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "head.pth").write_bytes(evil.read_bytes())
    with pytest.raises(UnsafeWeightsError):
        load_aesthetic_head(tmp_path / "models", spec=WeightsFile("head.pth", "https://example.invalid/h"), download=False)
    assert not marker.exists()
    # Control: the payload is live; an unrestricted load would have run it.
    torch.load(evil, weights_only=False)
    assert marker.exists()


# ---- the objective ---------------------------------------------------------------------------------


def test_objective_with_toy_clip_ranks_by_the_head() -> None:
    clip = ToyClip()
    red = clip.axis_names.index("red")
    objective = AestheticObjective(clip, axis_head(clip.embed_dim, red))
    reds = objective.score(Batch(prototype_images(["red circle", "red ring"]), seeds=(1, 2)))
    blues = objective.score(Batch(prototype_images(["blue square", "blue cross"]), seeds=(1, 2)))
    assert reds.value < blues.value
    # A red prototype's embedding has red = 1/sqrt(2) (colour and shape axes): score 5 + 4 / sqrt(2).
    torch.testing.assert_close(torch.tensor(reds.per_image["aesthetic"]), torch.full((2,), 5 + 4 / 2**0.5))
    assert blues.per_image["aesthetic"] == pytest.approx([5.0, 5.0], abs=1e-6)
    assert reds.value == pytest.approx(-(5 + 4 / 2**0.5), abs=1e-5)


def test_spread_penalty() -> None:
    clip = ToyClip()
    head = axis_head(clip.embed_dim, clip.axis_names.index("red"))
    images = prototype_images(["red circle", "blue square", "red ring", "green triangle"])
    plain = AestheticObjective(clip, head).score_images(images)
    penalised = AestheticObjective(clip, head, spread_weight=2.0).score_images(images)
    scores = torch.tensor(plain.per_image["aesthetic"], dtype=torch.float64)
    assert plain.value == pytest.approx(-float(scores.mean()))
    assert penalised.value == pytest.approx(-float(scores.mean()) + 2.0 * float(scores.std(unbiased=False)))
    assert penalised.components["aesthetic_std"] > 0
    with pytest.raises(ValueError):
        AestheticObjective(clip, head, spread_weight=-1.0)


def test_objective_with_tiny_open_clip() -> None:
    from lib_pinning.objectives.clip import load_clip

    ensure_open_clip()
    torch.manual_seed(1)
    encoder = load_clip(tiny_model_name(), None)
    head = random_head(32, seed=2)
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    evaluation = AestheticObjective(encoder, head).score_images(images)
    with torch.no_grad():
        expected = head(encoder.encode_images(images))
    assert evaluation.per_image["aesthetic"] == pytest.approx(expected.tolist(), abs=1e-6)
    assert evaluation.value == pytest.approx(-float(expected.double().mean()), abs=1e-6)
    with pytest.raises(ValueError, match="embeddings"):
        AestheticObjective(encoder, random_head(768)).score_images(images)


def test_objective_refuses_another_clip() -> None:
    class Named:
        name = "ViT-B-32/openai"

    with pytest.raises(ValueError, match="ViT-L-14/openai"):
        AestheticObjective.load(encoder=Named())  # type: ignore[arg-type]


def test_natural_scale() -> None:
    assert AESTHETIC_SCALE.normalise(-10.0) == 0.0 and AESTHETIC_SCALE.normalise(-1.0) == 1.0
    assert AESTHETIC_SCALE.normalise(-5.5) == pytest.approx(0.5)


def test_a_non_safetensors_file_named_safetensors_is_a_weights_error(tmp_path) -> None:
    """Not safetensors' raw SafetensorError: a WeightsError that says what to do (issue 11)."""
    fake = tmp_path / "head.safetensors"
    fake.write_bytes(b"this is not a safetensors file")
    with pytest.raises(WeightsError, match="head.safetensors is not a readable safetensors file .*delete it"):
        load_tensors(fake)
