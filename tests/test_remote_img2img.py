"""img2img over lib_pinning.remote: the init images and mask as the API takes them (PNG from memory,
pixels and mode kept), the img2img payload's fields, several init images split with the seeds, the
fake server's /img2img checks, which answer as the real handler does, and `pin` inpainting from files."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from lib_pinning.cli import main
from lib_pinning.evaluation import quantize
from lib_pinning.generator import GenerationRequest, ToyGenerator, ToySettings
from lib_pinning.options_model import PinningInputError
from lib_pinning.remote import Img2ImgImages, RemoteGenerator, RemoteSettings, ServerConfig
from lib_pinning.remote.client import RemoteError, RequestRejected, WebUIClient
from lib_pinning.remote.fake import FakeWebUI, ToyImages, img2img_refusal
from lib_pinning.remote.payload import build_payload, encode_image
from lib_pinning.store import RunStore

TOY = ToySettings(steps=6)
IMG2IMG = RemoteSettings(mode="img2img", width=64, height=64, steps=6, denoising_strength=0.6)


@pytest.fixture(scope="module")
def images() -> ToyImages:
    return ToyImages(TOY)


def gradient(mode: str = "RGB") -> Image.Image:
    y, x = np.mgrid[0:64, 0:64]
    rgba = np.stack([x * 4, y * 4, np.full_like(x, 128), (x + y) * 2], axis=-1).astype(np.uint8)
    return Image.fromarray(rgba, "RGBA").convert(mode) if mode != "RGBA" else Image.fromarray(rgba, "RGBA")


def square_mask() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (40, 40, 56, 56))
    return mask


def decoded(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


# the images ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "1", "I;16"])
def test_an_image_travels_with_its_pixels_and_mode(mode: str) -> None:
    image = gradient("RGB").convert("I;16") if mode == "I;16" else gradient("RGBA" if mode != "RGB" else "RGB")
    image = image if mode in ("RGB", "RGBA", "I;16") else image.convert(mode)
    back = decoded(encode_image(image))
    assert back.mode == image.mode
    assert np.array_equal(np.asarray(back), np.asarray(image))


def test_a_mode_png_lacks_becomes_what_the_webui_makes_of_it() -> None:
    cmyk = gradient().convert("CMYK")
    assert np.array_equal(np.asarray(decoded(encode_image(cmyk, "RGB"))), np.asarray(cmyk.convert("RGB")))
    assert np.array_equal(np.asarray(decoded(encode_image(cmyk, "L"))), np.asarray(cmyk.convert("L")))


def test_the_png_carries_no_transparency_key_or_exif() -> None:
    """The server's fix_image would turn a palette image with a transparency key into RGBA (and so
    flatten it onto the background colour) and rotate by an EXIF orientation: the local WebUI took
    the pixels as they are."""
    palette = gradient().convert("P")
    palette.info["transparency"] = 0
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate
    palette.info["exif"] = exif.tobytes()
    back = decoded(encode_image(palette))
    assert "transparency" not in back.info and "exif" not in back.info
    assert back.mode == "P" and np.array_equal(np.asarray(back), np.asarray(palette))


def test_files_are_read_once_as_before(tmp_path: Path) -> None:
    """From files (the CLI): the init image as RGB (as `pin --init-image` always sent it), the mask
    in its own mode."""
    init, mask = tmp_path / "init.png", tmp_path / "mask.png"
    gradient("RGBA").save(init)
    square_mask().save(mask)
    found = Img2ImgImages.from_files(str(init), str(mask))
    assert decoded(found.init_images[0]).mode == "RGB"
    assert np.array_equal(np.asarray(decoded(found.init_images[0])), np.asarray(gradient("RGBA").convert("RGB")))
    assert found.mask is not None and np.array_equal(np.asarray(decoded(found.mask)), np.asarray(square_mask()))


# the payload ------------------------------------------------------------------------------------------


def test_an_inpainting_payload_has_the_webuis_field_names() -> None:
    settings = IMG2IMG.replace(resize_mode=1, mask_blur_x=3, mask_blur_y=3, inpainting_fill=2, inpaint_full_res=True,
                               inpaint_full_res_padding=8, inpainting_mask_invert=1, initial_noise_multiplier=0.9,
                               image_cfg_scale=1.5)
    images = Img2ImgImages.from_images([gradient()], square_mask())
    payload = build_payload(settings, "a red circle", "", 5, 2, images)
    assert payload["init_images"] == list(images.init_images) and payload["mask"] == images.mask
    assert {k: payload[k] for k in (
        "denoising_strength", "resize_mode", "mask_blur_x", "mask_blur_y", "mask_blur", "mask_round",
        "inpainting_fill", "inpaint_full_res", "inpaint_full_res_padding", "inpainting_mask_invert",
        "initial_noise_multiplier", "image_cfg_scale", "include_init_images")} == {
        "denoising_strength": 0.6, "resize_mode": 1, "mask_blur_x": 3, "mask_blur_y": 3, "mask_blur": 3,
        "mask_round": True, "inpainting_fill": 2, "inpaint_full_res": True, "inpaint_full_res_padding": 8,
        "inpainting_mask_invert": 1, "initial_noise_multiplier": 0.9, "image_cfg_scale": 1.5,
        "include_init_images": False}
    assert img2img_refusal(payload) is None
    json.dumps(payload)  # what httpx sends


def test_without_a_mask_no_inpainting_fields_and_unset_ones_stay_the_servers() -> None:
    payload = build_payload(IMG2IMG, "a red circle", "", 5, 2, Img2ImgImages.from_images([gradient()]))
    assert "mask" not in payload and "mask_blur_x" not in payload and "inpainting_fill" not in payload
    assert "initial_noise_multiplier" not in payload and "image_cfg_scale" not in payload
    uneven = build_payload(IMG2IMG.replace(mask_blur_x=2, mask_blur_y=5), "x", "", 5, 1,
                           Img2ImgImages.from_images([gradient()], square_mask()))
    assert (uneven["mask_blur_x"], uneven["mask_blur_y"]) == (2, 5) and "mask_blur" not in uneven


def test_several_init_images_go_with_their_images_of_the_batch() -> None:
    images = Img2ImgImages(("a", "b", "c", "d"))
    assert build_payload(IMG2IMG, "x", "", 20, 2, images, offset=2)["init_images"] == ["c", "d"]
    assert build_payload(IMG2IMG, "x", "", 20, 4, images)["init_images"] == ["a", "b", "c", "d"]
    assert build_payload(IMG2IMG, "x", "", 20, 2, Img2ImgImages(("a",)), offset=2)["init_images"] == ["a"]
    assert images.fits(4) and not images.fits(3) and Img2ImgImages(("a",)).fits(3)


def test_img2img_needs_an_image_and_txt2img_takes_none(tmp_path: Path) -> None:
    with pytest.raises(PinningInputError, match="needs an init image"):
        RemoteGenerator([ServerConfig("http://127.0.0.1:9")], IMG2IMG)
    with pytest.raises(PinningInputError, match="cannot read"):
        RemoteGenerator([ServerConfig("http://127.0.0.1:9")], IMG2IMG.replace(init_image=str(tmp_path / "none.png")))
    with pytest.raises(PinningInputError, match="--mode img2img"):
        RemoteSettings(mask_image="mask.png")


# against the fake server --------------------------------------------------------------------------------


def test_the_fake_answers_bad_img2img_payloads_as_the_webui_does(images: ToyImages) -> None:
    good = build_payload(IMG2IMG, "a red circle", "", 5, 2, Img2ImgImages.from_images([gradient()], square_mask()))
    cases = [
        ({"init_images": None}, 404),  # modules/api/api.py: "Init image not found"
        ({"init_images": "not a list"}, 422),
        ({"mask_blur_x": "4.5px"}, 422),
        ({"inpaint_full_res": "yes"}, 422),
        ({"init_images": ["bm90IGFuIGltYWdl"]}, 500),  # "Invalid encoded image"
        ({"mask": "bm90IGFuIGltYWdl"}, 500),
        ({"init_images": good["init_images"] * 3}, 500),  # more init images than the batch size
    ]
    with FakeWebUI(images) as fake, httpx.Client() as client:
        for changes, status in cases:
            answer = client.post(f"{fake.url}/sdapi/v1/img2img", json={**good, **changes})
            assert answer.status_code == status, changes
        assert client.post(f"{fake.url}/sdapi/v1/img2img", json=good).status_code == 200
        assert len(fake.calls.generations) == 1


def test_an_inpainting_pool_sends_the_images_once_encoded(images: ToyImages, tmp_path: Path) -> None:
    """`pin --mode img2img --init-image --mask-image`: every request carries the same encoded
    images, the server decodes the file's pixels, and the batches are the seeds' images."""
    init, mask = tmp_path / "init.png", tmp_path / "mask.png"
    gradient().save(init)
    square_mask().save(mask)
    settings = IMG2IMG.replace(init_image=str(init), mask_image=str(mask), inpaint_full_res=True)
    local = ToyGenerator(TOY)
    requests = [GenerationRequest(f"(red:1.{i}) circle", "", (3, 4, 5)) for i in range(3)]
    with FakeWebUI(images) as a, FakeWebUI(images) as b:
        pool = RemoteGenerator([ServerConfig(a.url), ServerConfig(b.url)], settings, retry_after=0.05)
        try:
            results = pool.generate_many(requests)
        finally:
            pool.close()
        sent = [p for p in a.calls.generations + b.calls.generations if "init_images" in p]
        for fake in (a, b):  # one priming txt2img before a server's first img2img batch, none after
            made = sum("init_images" in p for p in fake.calls.generations)
            primings = [p for p in fake.calls.generations if "init_images" not in p]
            assert len(primings) == (1 if made else 0)
            assert all((p["seed"], p["batch_size"], p["steps"], p["send_images"]) == (5, 1, 1, False) for p in primings)
        assert a.calls.encode_seeds + b.calls.encode_seeds == [5, 5, 5]  # every encode from the last seed's state
    for result, request in zip(results, requests):
        assert not isinstance(result, BaseException) and result is not None
        assert torch.equal(result.images, quantize(local.generate(request).images))
    assert len(sent) == 3 and len({p["init_images"][0] for p in sent}) == 1 and len({p["mask"] for p in sent}) == 1
    assert np.array_equal(np.asarray(decoded(sent[0]["init_images"][0])), np.asarray(gradient()))
    assert np.array_equal(np.asarray(decoded(sent[0]["mask"])), np.asarray(square_mask()))
    assert sent[0]["inpaint_full_res"] is True


def test_split_seeds_carry_their_own_init_images(images: ToyImages) -> None:
    """Seeds 7, 8, 20, 21 are two requests: the first carries init images 0 and 1, the second 2 and 3."""
    given = Img2ImgImages(tuple(encode_image(Image.new("RGB", (64, 64), (60 * i, 0, 0))) for i in range(4)))
    with FakeWebUI(images) as fake:
        client = WebUIClient(ServerConfig(fake.url))
        try:
            batch = client.generate_batch(IMG2IMG, GenerationRequest("a circle", "", (7, 8, 20, 21)), given)
            with pytest.raises(RequestRejected, match="3 init images for a batch of 4"):
                client.generate_batch(IMG2IMG, GenerationRequest("a circle", "", (7, 8, 20, 21)),
                                      Img2ImgImages(given.init_images[:3]))
        finally:
            client.close()
        sent = [p for p in fake.calls.generations if "init_images" in p]
        # The second request's encode starts from the first's last seed, not the batch's: split
        # seeds are not bit-exact in img2img (the WebUI's own seeds are consecutive).
        assert fake.calls.encode_seeds == [21, 8]
    assert batch.images.shape[0] == 4
    assert [p["init_images"] for p in sent] == [list(given.init_images[:2]), list(given.init_images[2:])]
    assert [(p["seed"], p["batch_size"]) for p in sent] == [(7, 2), (20, 2)]


def test_pin_inpaints_from_files_and_resumes_with_them(tmp_path: Path, images: ToyImages,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The README's `pin --mode img2img --init-image --mask-image` line: every request of the run
    is an inpainting request with the files' pixels, and `resume` reads the files again."""
    init, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    gradient().save(init)
    square_mask().save(mask)
    argv = ["pin", "--runs-dir", str(tmp_path / "runs"), "--prompt", "red circle, blue square", "--negative-prompt", "",
            "--seed", "1", "--batch-size", "2", "--generations", "1", "--cma-lambda", "2", "--granularity", "phrase",
            "--width", "64", "--height", "64", "--steps", "6", "--mode", "img2img", "--init-image", str(init),
            "--denoising-strength", "0.6", "--mask-image", str(mask), "--inpaint-full-res", "true",
            "--cli-log", "false"]
    with FakeWebUI(images) as fake:
        assert main(["pin", "--server", fake.url, *argv[1:]]) == 0
        sent = [p for p in fake.calls.generations if "init_images" in p]
        assert len(sent) == 3  # the baseline and 2 individuals
        assert all(p["mask"] == sent[0]["mask"] and p["inpaint_full_res"] is True for p in sent)
        assert np.array_equal(np.asarray(decoded(sent[0]["mask"])), np.asarray(square_mask()))
        assert np.array_equal(np.asarray(decoded(sent[0]["init_images"][0])), np.asarray(gradient()))
    run_dir = next(line.split(":", 1)[1].strip() for line in capsys.readouterr().out.splitlines()
                   if line.startswith("run directory:"))
    settings = RunStore.open(Path(run_dir)).read_run()["generator"]["settings"]
    assert (settings["mode"], settings["mask_image"], settings["inpaint_full_res"]) == ("img2img", str(mask), True)
    described = RunStore.open(Path(run_dir)).read_run()["generator"]
    RemoteGenerator.from_description(described).close()
    mask.unlink()
    with pytest.raises(PinningInputError, match="cannot read the init image or mask"):
        RemoteGenerator.from_description(described)


def test_a_server_is_primed_again_after_a_failed_request(images: ToyImages) -> None:
    """After a failure the client no longer knows what the server's generator holds (another
    client may have used it meanwhile): the next img2img batch is primed again."""
    given = Img2ImgImages.from_images([gradient()])
    request = GenerationRequest("a circle", "", (3, 4))
    with FakeWebUI(images) as fake, httpx.Client() as other:
        client = WebUIClient(ServerConfig(fake.url))
        try:
            client.generate_batch(IMG2IMG, request, given)
            client.generate_batch(IMG2IMG, request, given)  # no priming: the server is where it was left
            fake.faults.malformed = 1
            with pytest.raises(RemoteError):
                client.generate_batch(IMG2IMG, request, given)
            other.post(f"{fake.url}/sdapi/v1/txt2img", json={"prompt": "x", "seed": 99}).raise_for_status()
            client.generate_batch(IMG2IMG, request, given)
        finally:
            client.close()
    assert fake.calls.encode_seeds == [4, 4, 4]
    assert [p["seed"] for p in fake.calls.generations if "init_images" not in p] == [4, 99, 4]
