"""Stand-in for modules/images.py (v1.10.1 82a973c0): saving images, grids, resizing.

`save_image` keeps the WebUI's signature, return value ((fullfn, txt_fullfn)), callbacks
(before_image_saved / image_saved), PNG infotext and sequential numbering; its filename patterns
understand the tokens [seed], [prompt_spaces], [prompt_words], [steps], [sampler], [date] (the
WebUI knows about forty more). JPEG/WebP EXIF infotext and the 4chan JPEG copy are not written.
`resize_image` supports resize modes 0-2 with PIL's Lanczos (no upscaler models).
"""

from __future__ import annotations

import datetime
import math
import os
import re
from typing import Any

from PIL import Image, ImageColor, PngImagePlugin

from modules import script_callbacks
from modules.shared import opts

LANCZOS = Image.Resampling.LANCZOS


def image_grid(imgs: list[Image.Image], batch_size: int = 1, rows: int | None = None) -> Image.Image:
    """modules/images.py:L36: the images in a grid (rows from the n_rows setting by default)."""
    if rows is None:
        if opts.n_rows > 0:
            rows = opts.n_rows
        elif opts.n_rows == 0:
            rows = batch_size
        elif opts.grid_prevent_empty_spots:
            rows = math.floor(math.sqrt(len(imgs)))
            while len(imgs) % rows != 0:
                rows -= 1
        else:
            rows = round(math.sqrt(len(imgs)))
    if rows > len(imgs):
        rows = len(imgs)
    cols = math.ceil(len(imgs) / rows)
    params = script_callbacks.ImageGridLoopParams(imgs, cols, rows)
    script_callbacks.image_grid_callback(params)
    w, h = map(max, zip(*(img.size for img in imgs)))
    grid_background_color = ImageColor.getcolor(opts.grid_background_color, "RGB")
    grid = Image.new("RGB", size=(params.cols * w, params.rows * h), color=grid_background_color)
    for i, img in enumerate(params.imgs):
        img_w, img_h = img.size
        w_offset, h_offset = 0 if img_w == w else (w - img_w) // 2, 0 if img_h == h else (h - img_h) // 2
        grid.paste(img, box=(i % params.cols * w + w_offset, i // params.cols * h + h_offset))
    return grid


def resize_image(resize_mode: int, im: Image.Image, width: int, height: int, upscaler_name: str | None = None) -> Image.Image:
    """modules/images.py:L252: 0 = stretch, 1 = crop and resize, 2 = resize and fill.

    The WebUI upscales with an upscaler model when enlarging; the stand-in always uses Lanczos
    and rejects an upscaler name.
    """
    if upscaler_name not in (None, "None", "Lanczos"):
        raise NotImplementedError(f"the WebUI stand-in has no upscaler models ({upscaler_name!r})")

    def resize(im: Image.Image, w: int, h: int) -> Image.Image:
        return im.resize((w, h), resample=LANCZOS)

    if resize_mode == 0:
        return resize(im, width, height)
    ratio = width / height
    src_ratio = im.width / im.height
    if resize_mode == 1:
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
        resized = resize(im, src_w, src_h)
        res = Image.new("RGB", (width, height))
        res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        return res
    src_w = width if ratio < src_ratio else im.width * height // im.height
    src_h = height if ratio >= src_ratio else im.height * width // im.width
    resized = resize(im, src_w, src_h)
    res = Image.new("RGB", (width, height))
    res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if ratio < src_ratio:
        fill_height = height // 2 - src_h // 2
        if fill_height > 0:
            res.paste(resized.resize((width, fill_height), box=(0, 0, width, 0)), box=(0, 0))
            res.paste(resized.resize((width, fill_height), box=(0, resized.height, width, resized.height)),
                      box=(0, fill_height + src_h))
    elif ratio > src_ratio:
        fill_width = width // 2 - src_w // 2
        if fill_width > 0:
            res.paste(resized.resize((fill_width, height), box=(0, 0, 0, height)), box=(0, 0))
            res.paste(resized.resize((fill_width, height), box=(resized.width, 0, resized.width, height)),
                      box=(fill_width + src_w, 0))
    return res


class FilenameGenerator:
    """modules/images.py:L381: expands [token] patterns in file and directory names (a subset)."""

    def __init__(self, p: Any, seed: Any, prompt: Any, image: Any, basename: str = "") -> None:
        self.p = p
        self.seed = seed
        self.prompt = prompt
        self.image = image
        self.basename = basename

    def _value(self, token: str) -> str | None:
        prompt = self.prompt or ""
        if token == "seed":
            return str(self.seed) if self.seed is not None else None
        if token == "prompt_spaces":
            return _sanitize(prompt)
        if token == "prompt_words":
            words = [x for x in re.split(r"[\s,()\[\]:|]+", prompt) if x]
            return _sanitize(" ".join(words[:8]) or "empty prompt")
        if token == "steps":
            return str(getattr(self.p, "steps", ""))
        if token == "sampler":
            return _sanitize(str(getattr(self.p, "sampler_name", "")))
        if token == "date":
            return datetime.datetime.now().strftime("%Y-%m-%d")
        return None

    def apply(self, x: str) -> str:
        def replace(m: re.Match[str]) -> str:
            value = self._value(m.group(1).lower())
            return m.group(0) if value is None else value

        return re.sub(r"\[(\w+)]", replace, x)


def _sanitize(text: str) -> str:
    text = re.sub(r'[\\/:*?"<>|\n\r\t]', "_", text).strip()
    return text[:128]


def get_next_sequence_number(path: str, basename: str) -> int:
    """modules/images.py:L543: the next free leading number among the files in `path`."""
    result = -1
    if basename != "":
        basename = f"{basename}-"
    prefix_length = len(basename)
    for p in os.listdir(path):
        if p.startswith(basename):
            parts = os.path.splitext(p[prefix_length:])[0].split("-")
            try:
                result = max(int(parts[0]), result)
            except ValueError:
                pass
    return result + 1


def save_image_with_geninfo(image: Image.Image, geninfo: str | None, filename: str, extension: str | None = None,
                            existing_pnginfo: dict[str, Any] | None = None, pnginfo_section_name: str = "parameters") -> None:
    """modules/images.py:L565: write the file; PNGs carry the infotext in a text chunk."""
    if extension is None:
        extension = os.path.splitext(filename)[1]
    image_format = Image.registered_extensions()[extension]
    if extension.lower() == ".png":
        existing_pnginfo = existing_pnginfo or {}
        if opts.enable_pnginfo:
            existing_pnginfo[pnginfo_section_name] = geninfo
            pnginfo_data = PngImagePlugin.PngInfo()
            for k, v in existing_pnginfo.items():
                pnginfo_data.add_text(k, str(v))
        else:
            pnginfo_data = None
        image.save(filename, format=image_format, pnginfo=pnginfo_data)
    else:
        if image.mode == "RGBA":
            image = image.convert("RGB")
        image.save(filename, format=image_format, quality=opts.jpeg_quality)


def save_image(image: Image.Image, path: str, basename: str, seed: Any = None, prompt: str | None = None,
               extension: str = "png", info: Any = None, short_filename: bool = False, no_prompt: bool = False,
               grid: bool = False, pnginfo_section_name: str = "parameters", p: Any = None,
               existing_info: dict[str, Any] | None = None, forced_filename: str | None = None, suffix: str = "",
               save_to_dirs: bool | None = None) -> tuple[str, str | None]:
    """modules/images.py:L624: save `image` under `path`; returns (fullfn, txt_fullfn)."""
    namegen = FilenameGenerator(p, seed, prompt, image, basename=basename)
    if save_to_dirs is None:
        save_to_dirs = (grid and opts.grid_save_to_dirs) or (not grid and opts.save_to_dirs and not no_prompt)
    if save_to_dirs:
        dirname = namegen.apply(opts.directories_filename_pattern or "[prompt_words]").lstrip(" ").rstrip("\\ /")
        path = os.path.join(path, dirname)
    os.makedirs(path, exist_ok=True)
    if forced_filename is None:
        if short_filename or seed is None:
            file_decoration = ""
        elif opts.save_to_dirs:
            file_decoration = opts.samples_filename_pattern or "[seed]"
        else:
            file_decoration = opts.samples_filename_pattern or "[seed]-[prompt_spaces]"
        file_decoration = namegen.apply(file_decoration) + suffix
        add_number = opts.save_images_add_number or file_decoration == ""
        if file_decoration != "" and add_number:
            file_decoration = f"-{file_decoration}"
        if add_number:
            basecount = get_next_sequence_number(path, basename)
            fullfn = ""
            for i in range(500):
                fn = f"{basecount + i:05}" if basename == "" else f"{basename}-{basecount + i:04}"
                fullfn = os.path.join(path, f"{fn}{file_decoration}.{extension}")
                if not os.path.exists(fullfn):
                    break
        else:
            fullfn = os.path.join(path, f"{file_decoration}.{extension}")
    else:
        fullfn = os.path.join(path, f"{forced_filename}.{extension}")
    pnginfo = existing_info or {}
    if info is not None:
        pnginfo[pnginfo_section_name] = info
    params = script_callbacks.ImageSaveParams(image, p, fullfn, pnginfo)
    script_callbacks.before_image_saved_callback(params)
    image = params.image
    fullfn = params.filename
    info = params.pnginfo.get(pnginfo_section_name, None)
    fullfn_without_extension, ext = os.path.splitext(params.filename)
    temp_file_path = f"{fullfn_without_extension}.tmp"
    save_image_with_geninfo(image, info, temp_file_path, ext, existing_pnginfo=params.pnginfo,
                            pnginfo_section_name=pnginfo_section_name)
    os.replace(temp_file_path, fullfn)
    image.already_saved_as = fullfn
    if opts.save_txt and info is not None:
        txt_fullfn: str | None = f"{fullfn_without_extension}.txt"
        with open(txt_fullfn, "w", encoding="utf8") as file:
            file.write(f"{info}\n")
    else:
        txt_fullfn = None
    script_callbacks.image_saved_callback(params)
    return fullfn, txt_fullfn


def read_info_from_image(image: Image.Image) -> tuple[str | None, dict[str, Any]]:
    """modules/images.py:L777: (infotext, other PNG info) of an image."""
    items = (image.info or {}).copy()
    geninfo = items.pop("parameters", None)
    return geninfo, items


def flatten(img: Image.Image, bgcolor: str) -> Image.Image:
    """modules/images.py:L841: composite an RGBA image over `bgcolor`; return RGB."""
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, bgcolor)
        background.paste(img, mask=img)
        img = background
    return img.convert("RGB")
