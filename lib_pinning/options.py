"""One typed definition of every pinning option.

Each option is a dataclass field carrying an `OptionSpec`: default, allowed range or choices, UI
label, help text, UI group and infotext key. The WebUI script builds its components from these
specs, the CLI builds its argparse flags from them, infotext is written and read back through them,
and validation errors name the option and its allowed range. Adding an option means adding one
field here and nothing else.

The machinery (OptionSpec, OptionsModel, the input errors) is lib_pinning.options_model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Granularity = Literal["token", "word", "phrase"]
FlipLoss = Literal["nearest_mode", "variety", "target_distance", "all_pairs"]
CmaWeights = Literal["superlinear", "linear", "equal"]
HyperbatchWeightType = Literal["Geometric", "Exponential", "Polynomial"]

from lib_pinning.options_model import OptionError, OptionsModel, option


@dataclass(frozen=True)
class PinningOptions(OptionsModel):
    """Options of one pinning run (the WebUI's script UI; the CLI's pinning flags)."""

    target_images: tuple[str, ...] = option(
        (),
        label="Target images",
        help="Images the batch should land on. Leave empty to use the unpinned prompt's first batch "
        "as the target.",
        infotext=None,
    )
    granularity: Granularity = option(
        "word",
        label="Weight units",
        help="What gets its own weight: each word (default: the finest unit a reader edits; commas "
        "and punctuation carry no meaning worth a dimension), each comma-separated phrase (fewest "
        "dimensions, fastest), or each CLIP token (the original tool's behaviour, most dimensions).",
        infotext="Pin units",
    )
    flip_loss: FlipLoss = option(
        "nearest_mode",
        label="Image loss",
        help="nearest_mode (default): every image should look like one and the same target image "
        "(without target images: one of the unpinned prompt's own images), and each like some "
        "target, so the batch pins to one of the prompt's pictures and a black or over-emphasised "
        "batch scores badly; variety: mean + std of FLIP over the pairs within the batch, i.e. how "
        "much the images vary across seeds, whatever they show; target_distance: image-to-target "
        "pairs only (closeness to all the targets); all_pairs: every pair of targets and images "
        "together (the original tool's loss).",
        infotext="Pin loss",
    )
    flip_weight: float = option(
        1.0,
        label="Image loss weight",
        help="Weight of the FLIP image loss in the total fitness.",
        infotext="Pin loss weight",
        group="objective",
        minimum=0.0,
        maximum=1000.0,
        step=0.01,
    )
    distance_weight: float = option(
        0.0,
        label="Distance penalty weight",
        help="Weight of a penalty on the mean squared change of the weights from the prompt's own "
        "(0 disables): keeps the pinned prompt close to what you wrote.",
        infotext="Pin distance weight",
        group="objective",
        minimum=0.0,
        maximum=1000.0,
        step=0.01,
    )
    target_masks: tuple[str, ...] = option(
        (),
        label="Target masks",
        help="Optional greyscale masks, none or one per target image in the same order (an all-white "
        "mask for a target that counts everywhere): white areas count, black ones are ignored, greys "
        "count partly. Masks and targets must have the size of the generated images.",
        infotext=None,
        group="objective",
    )
    aesthetic_weight: float = option(
        0.0,
        label="Aesthetic weight",
        help="Weight of the LAION aesthetic score (CLIP ViT-L/14 + the improved aesthetic predictor) "
        "in the total fitness: higher-rated images are preferred (0 disables; the first use downloads "
        "about 1.7 GB of weights).",
        infotext="Pin aesthetic weight",
        group="objective",
        minimum=0.0,
        maximum=1000.0,
        step=0.01,
    )
    aesthetic_spread_weight: float = option(
        0.0,
        label="Aesthetic spread penalty",
        help="Penalty on the spread (std) of the aesthetic scores within a batch, relative to their "
        "mean: favours batches whose images are all good over a few great and a few poor ones.",
        infotext="Pin aesthetic spread",
        group="objective",
        minimum=0.0,
        maximum=10.0,
        step=0.01,
    )
    tags: str = option(
        "",
        label="Pin to tags",
        help="Comma-separated tags the images should match, with emphasis weights as in a prompt, "
        "e.g. 'red hair, (smile:1.2)'. Scored by CLIP similarity (empty disables).",
        infotext="Pin tags",
        group="objective",
    )
    negative_tags: str = option(
        "",
        label="Pin away from tags",
        help="Comma-separated tags the images should not match, same syntax as the tags.",
        infotext="Pin negative tags",
        group="objective",
    )
    tag_weight: float = option(
        1.0,
        label="Tag weight",
        help="Weight of the tag similarity in the total fitness (used when tags are given).",
        infotext="Pin tag weight",
        group="objective",
        minimum=0.0,
        maximum=1000.0,
        step=0.01,
    )
    clip_model: Literal["ViT-L-14/openai", "ViT-B-32/openai"] = option(
        "ViT-L-14/openai",
        label="CLIP model",
        help="CLIP model that scores the tags (architecture/weights). The aesthetic score always "
        "uses ViT-L-14/openai, which it was trained on; ViT-B-32 is faster for tags alone.",
        infotext="Pin CLIP model",
        group="objective",
    )
    models_dir: str = option(
        "",
        label="Models folder",
        help="Folder for the CLIP and aesthetic weights (downloaded and verified there on first use). "
        "Empty: the WebUI's models folder (models/PromptPinning), or ~/.cache/sd-prompt-pinning "
        "outside the WebUI.",
        infotext=None,
        group="objective",
    )
    # -- pin to booru tags with a WD14 tagger (lib_pinning.objectives.tagger) --
    tagger_tags: str = option(
        "",
        label="Pin to booru tags",
        help="Comma-separated booru tags every image should carry, scored by a WD14 tagger, with "
        "emphasis weights as in a prompt and an optional confidence threshold after @, e.g. "
        "'smile, (outdoors:1.5), long_hair@0.5'. Escape a tag's own brackets: "
        "'hatsune_miku_\\(vocaloid\\)'. Empty disables.",
        infotext="Pin booru tags",
        group="objective",
        cli_aliases=("booru_tags",),
    )
    tagger_negative_tags: str = option(
        "",
        label="Pin away from booru tags",
        help="Comma-separated booru tags no image should carry, same syntax, e.g. 'lowres, text'.",
        infotext="Pin negative booru tags",
        group="objective",
        cli_aliases=("booru_negative_tags",),
    )
    tagger_weight: float = option(
        1.0,
        label="Booru tag weight",
        help="Weight of the booru tags (the share of images carrying each wanted tag and lacking "
        "each unwanted one) in the total fitness (used when booru tags are given).",
        infotext="Pin booru tag weight",
        group="objective",
        minimum=0.0,
        maximum=1000.0,
        step=0.01,
    )
    tagger_model: str = option(
        "wd-vit-tagger-v3",
        label="Tagger model",
        help="WD14 tagger: wd-vit-tagger-v3, wd-swinv2-tagger-v3, wd-eva02-large-tagger-v3 (and the "
        "other SmilingWolf v3 and wd-v1-4-*-v2 models), or a folder holding model.onnx and "
        "selected_tags.csv. Found in the WebUI tagger extension's folders, else in the models folder "
        "(taggers/<name>/).",
        infotext="Pin tagger",
        group="objective",
    )
    tagger_general_threshold: float = option(
        0.35,
        label="General tag threshold",
        help="Confidence from which a general or rating tag counts as present (WD14 captions use 0.35).",
        infotext="Pin tagger threshold",
        group="objective",
        minimum=0.01,
        maximum=0.99,
        step=0.01,
    )
    tagger_character_threshold: float = option(
        0.85,
        label="Character tag threshold",
        help="Confidence from which a character tag counts as present (WD14 captions use 0.85).",
        infotext="Pin tagger character threshold",
        group="objective",
        minimum=0.01,
        maximum=0.99,
        step=0.01,
    )
    tagger_temperature: float = option(
        0.05,
        label="Tag threshold softness",
        help="How soft the thresholds are: a tag counts sigmoid((confidence - threshold) / softness), "
        "so the search sees progress before a tag crosses its threshold. Smaller is closer to a hard count.",
        infotext="Pin tagger softness",
        group="objective",
        minimum=0.001,
        maximum=1.0,
        step=0.001,
    )
    combine: Literal["weighted_sum", "pareto"] = option(
        "weighted_sum",
        label="Combine objectives",
        help="weighted_sum: one fitness, the weighted sum of the objectives (each normalised to its "
        "natural range, so the weights compare importance); pareto: each objective separately with "
        "multi-objective CMA-ES (the report shows the Pareto front; the run's best is still the "
        "lowest weighted sum).",
        infotext="Pin combine",
        group="objective",
    )
    cma_seed: int | None = option(
        None,
        label="CMA seed",
        help="Seed of the search. Empty: derived from the image seed, so a run is reproducible.",
        infotext="Pin CMA seed",
        minimum=0,
        maximum=2**32 - 1,
    )
    generations: int | None = option(
        None,
        label="Generations",
        help="Number of CMA-ES generations. Empty: 16 * floor(ln N) for N weights (at least 16).",
        infotext="Pin generations",
        minimum=1,
        maximum=10000,
    )
    # -- when the run stops, and the search space of long prompts (lib_pinning.stopping, optimizer) --
    max_batches: int | None = option(
        None,
        label="Max batches",
        help="Budget: the run stops once it has generated this many batches, the baseline included "
        "(a repeat of an already generated prompt costs nothing and does not count). Empty: no limit "
        "but the generations. A stopped run can be resumed with a larger budget.",
        infotext="Pin max batches",
        minimum=1,
        maximum=1000000,
    )
    max_minutes: float | None = option(
        None,
        label="Max minutes",
        help="Budget: the run stops after the batch in progress once it has run this long (all the "
        "sessions of a resumed run together). Empty: no limit.",
        infotext="Pin max minutes",
        minimum=0.01,
        maximum=100000.0,
    )
    stop_early: bool = option(
        True,
        label="Stop when settled",
        help="Stop before the last generation once more batches cannot help: the loss reached its "
        "floor (0); the best parents have all scored like the best for Patience generations (a "
        "plateau); nothing improved for Stagnation generations; every batch of a generation scored "
        "the same; or the search shrank below the weights' resolution. Off: run every generation "
        "(the budget still applies).",
        infotext="Pin stop early",
    )
    stop_patience: int = option(
        2,
        label="Patience",
        help="Generations in a row in which the best parents (mu of them) all score within the "
        "tolerance of the best so far, with no improvement, before the run stops: the search sits on "
        "a plateau and its moves are decided by ties.",
        infotext="Pin patience",
        group="stopping",
        minimum=1,
        maximum=1000,
    )
    stop_stagnation: int | None = option(
        None,
        label="Stagnation",
        help="Generations without an improvement of the best by more than the tolerance before the "
        "run stops, plateau or not. Empty: a quarter of the generations, at least 5.",
        infotext="Pin stagnation",
        group="stopping",
        minimum=1,
        maximum=10000,
    )
    stop_tolerance: float = option(
        0.001,
        label="Loss tolerance",
        help="Loss differences below this count as equal (tolfun): smaller improvements are not "
        "improvements, and a loss this close to 0 has reached its floor. Losses run from 0 (perfect "
        "batch) to about 1; 0.001 is below what 8-bit rounding of the images moves.",
        infotext="Pin tolerance",
        group="stopping",
        minimum=0.0,
        maximum=1.0,
        step=0.0001,
    )
    stop_tolx: float = option(
        0.0005,
        label="Weight tolerance",
        help="The run stops when the search distribution's largest standard deviation of a weight is "
        "below this (tolx): rendered weights have 3 decimals, so below half of 0.001 every proposal "
        "renders (nearly) the same prompt.",
        infotext="Pin tolx",
        group="stopping",
        minimum=0.0,
        maximum=1.0,
        step=0.0001,
    )
    search_space: Literal["auto", "units", "groups"] = option(
        "auto",
        label="Search space",
        help="units: one weight per unit; groups: runs of neighbouring units (tags) share one weight, "
        "a low-dimensional search that long prompts can afford; auto: groups above the Groups above "
        "size, units below.",
        infotext="Pin search space",
        group="cma",
    )
    search_groups: int | None = option(
        None,
        label="Groups",
        help="Number of weight groups of the groups search space (positive and negative prompt "
        "separately, in proportion to their units). Empty: automatic (see the README).",
        infotext="Pin groups",
        group="cma",
        minimum=1,
        maximum=1000,
    )
    groups_above: int = option(
        40,
        label="Groups above",
        help="With the auto search space, prompts with more units than this are searched in groups.",
        infotext="Pin groups above",
        group="cma",
        minimum=1,
        maximum=100000,
    )
    centroid_radius: float = option(
        0.0,
        label="Initial centroid radius",
        help="The search starts from a point drawn uniformly in [-r, r] per weight around the "
        "prompt's own weights; 0 (default) starts exactly at the prompt. The original tool used "
        "0.25, a random start that only adds noise (docs/benchmarks.md).",
        infotext="Pin centroid radius",
        group="cma",
        minimum=0.0,
        maximum=2.0,
        step=0.001,
    )
    initial_std: float = option(
        0.2,
        label="Initial std",
        help="Initial standard deviation (sigma) of the CMA-ES search distribution, in weight units; "
        "CMA-ES adapts it as it goes. 0.2 is a visible but moderate change of emphasis; the original "
        "tool's 0.05 barely changes an image and needs several times more batches (docs/benchmarks.md).",
        infotext="Pin initial std",
        group="cma",
        minimum=0.001,
        maximum=2.0,
        step=0.001,
    )
    weight_min: float = option(
        0.0,
        label="Lowest weight",
        help="No weight the search changes goes below this (the search reflects off it). 0 "
        "(default) lets a word fade out entirely, which the default image loss already penalises "
        "when the picture changes; a negative weight would invert the word, so there is no lower "
        "floor than 0. Raise it (e.g. 0.2) to keep every word present. Weights you wrote yourself "
        "stay as written until the search changes them.",
        infotext="Pin weight min",
        group="cma",
        minimum=0.0,
        maximum=1.0,
        step=0.05,
    )
    weight_max: float = option(
        2.0,
        label="Highest weight",
        help="No weight the search changes goes above this (the search reflects off it). 2 "
        "(default): SD 1.5 images start to fry past about 1.5 and are fried at 2 on most models, "
        "so nothing worth finding lies beyond, and the image guard catches the fried batches "
        "between; 1.5 keeps an SD 1.5 search clear of frying, SDXL and Pony models bear 1.6-1.8. 10 (the largest) is in effect no bound, as before.",
        infotext="Pin weight max",
        group="cma",
        minimum=1.0,
        maximum=10.0,
        step=0.05,
    )
    size_limit: float = option(
        0.0,
        label="Size limit",
        help="Largest allowed squared distance of the weight offsets from the prompt (0 disables). "
        "Enables the multi-objective strategy with a closest-valid penalty.",
        infotext="Pin size limit",
        group="cma",
        minimum=0.0,
        maximum=10.0,
        step=0.001,
    )
    size_limit_error: float | None = option(
        None,
        label="Size limit error",
        help="Tolerance around the size limit. Empty: size limit / 100.",
        infotext="Pin size limit error",
        group="cma",
        minimum=0.0,
        maximum=10.0,
        step=0.001,
    )
    size_limit_weight: float | None = option(
        None,
        label="Size limit weight",
        help="Penalty weight for exceeding the size limit. Empty: size limit * 10.",
        infotext="Pin size limit weight",
        group="cma",
        minimum=0.0,
        maximum=1e6,
        step=0.1,
    )
    cma_lambda: int | None = option(
        None,
        label="Lambda",
        help="Children per generation. Empty: int(4 + 3 ln N).",
        infotext="Pin lambda",
        group="cma",
        minimum=2,
        maximum=1000,
    )
    cma_mu: int | None = option(
        None,
        label="Mu",
        help="Parents kept from the lambda children. Empty: int(lambda / 2).",
        infotext="Pin mu",
        group="cma",
        minimum=1,
        maximum=1000,
    )
    cma_weights: CmaWeights = option(
        "superlinear",
        label="Recombination weights",
        help="How fast the parents' recombination weights decrease with rank.",
        infotext="Pin CMA weights",
        group="cma",
    )
    cma_cs: float | None = option(
        None,
        label="cs",
        help="Cumulation constant for the step size. Empty: (mueff + 2) / (N + mueff + 3).",
        infotext="Pin cs",
        group="cma",
        minimum=1e-9,
        maximum=1.0,
    )
    cma_damps: float | None = option(
        None,
        label="damps",
        help="Damping for the step size. Empty: 1 + 2 max(0, sqrt((mueff - 1) / (N + 1)) - 1) + cs.",
        infotext="Pin damps",
        group="cma",
        minimum=1e-9,
        maximum=1e3,
    )
    cma_ccum: float | None = option(
        None,
        label="ccum",
        help="Cumulation constant for the covariance matrix. Empty: 4 / (N + 4).",
        infotext="Pin ccum",
        group="cma",
        minimum=1e-9,
        maximum=1.0,
    )
    cma_ccov1: float | None = option(
        None,
        label="ccov1",
        help="Learning rate of the rank-one update. Empty: 2 / ((N + 1.3)^2 + mueff).",
        infotext="Pin ccov1",
        group="cma",
        minimum=0.0,
        maximum=1.0,
    )
    cma_ccovmu: float | None = option(
        None,
        label="ccovmu",
        help="Learning rate of the rank-mu update. Empty: 2 (mueff - 2 + 1/mueff) / ((N + 2)^2 + mueff).",
        infotext="Pin ccovmu",
        group="cma",
        minimum=0.0,
        maximum=1.0,
    )
    hyperbatch_weights: bool = option(
        True,
        label="Hyperbatch weights",
        help="With a hyperbatch sampler, weight the loss of image pairs by the level of the split "
        "tree at which they parted.",
        infotext="Pin hyperbatch weights",
        group="hyperbatch",
    )
    hyperbatch_weights_any_sampler: bool = option(
        False,
        label="Hyperbatch weights for other samplers",
        help="Apply the split-tree weighting to plain samplers too, using the tree a hyperbatch "
        "sampler would have used (the images are independent then, so this only re-weights pairs).",
        infotext="Pin hyperbatch weights any sampler",
        group="hyperbatch",
    )
    hyperbatch_weight_type: HyperbatchWeightType = option(
        "Geometric",
        label="Hyperbatch weight type",
        help="Per tree level K: Geometric X^(scale/K), Exponential X*(0.5+scale)^K, "
        "Polynomial (1+X)^(scale*K).",
        infotext="Pin hyperbatch weight type",
        group="hyperbatch",
    )
    hyperbatch_weight_scale: float = option(
        1.0,
        label="Hyperbatch weight scale",
        help="The scale in the hyperbatch weight formula.",
        infotext="Pin hyperbatch weight scale",
        group="hyperbatch",
        minimum=0.0,
        maximum=10.0,
        step=0.01,
    )
    guard: bool = option(
        True,
        label="Degenerate-image guard",
        help="Recognise broken images (NaN/non-finite, black, flat, fried by over-emphasis): a batch "
        "with any is penalised so the search moves away, and never chosen as the best. Off, they are "
        "still recorded and shown in the report, but scored like any image.",
        infotext="Pin guard",
        group="guard",
    )
    guard_black_level: float = option(
        0.03,
        label="Black level",
        help="An image is black when 99% of its pixels are darker than this in every channel "
        "(0 to 1; 0.03 is about 8/255). 0 disables the check.",
        infotext="Pin guard black",
        group="guard",
        minimum=0.0,
        maximum=0.5,
        step=0.005,
    )
    guard_flat_std: float = option(
        0.01,
        label="Flat image std",
        help="An image is flat (near-constant) when every channel's standard deviation is below "
        "this (0 to 1; 0.01 is a gradient spanning under 9/255). 0 disables the check.",
        infotext="Pin guard flat",
        group="guard",
        minimum=0.0,
        maximum=0.25,
        step=0.001,
    )
    guard_fried_saturation: float = option(
        0.8,
        label="Fried saturation",
        help="An image is fried when its mean saturation is at least this, half its channel values "
        "are clipped, and it has no detail (see Fried detail).",
        infotext="Pin guard fried saturation",
        group="guard",
        minimum=0.0,
        maximum=1.0,
        step=0.01,
    )
    guard_fried_detail: float = option(
        0.06,
        label="Fried detail",
        help="A saturated, clipped image is fried when its detail (99th percentile of its high-pass "
        "response at 64 px) is below this. 0 disables the fried check.",
        infotext="Pin guard fried detail",
        group="guard",
        minimum=0.0,
        maximum=1.0,
        step=0.005,
    )
    from_run: str = option(
        "",
        label="Start from run",
        help="A previous run (its folder, or its id or number in the runs folder; in the WebUI either "
        "tab's, txt2img or img2img) whose weight map's "
        "cluster the search starts from: the prompt is the old run's rendered at the cluster's "
        "centre, the seeds are the old run's, the initial std the cluster's spread. Empty (default): "
        "start at the prompt as written.",
        infotext="Pin from run",
        group="cma",
    )
    from_cluster: int = option(
        0,
        label="Start from cluster",
        help="With Start from run: the cluster of its weight map (C0, C1, ... in its report) to start "
        "from.",
        infotext="Pin from cluster",
        group="cma",
        minimum=0,
        maximum=10000,
    )
    cli_log: bool = option(
        True,
        label="Log generations to the console",
        help="Log each generation's fitness statistics (min, mean, max, sigma) to the console.",
        infotext=None,
        group="advanced",
    )
    extra_servers: bool = option(
        False,
        label="Also generate on the extra servers",
        help="WebUI only: spread each generation's individuals over this WebUI and the servers listed in "
        "Settings -> Prompt pinning -> Extra servers (same checkpoint and sampler, checked at start); the "
        "records are those this WebUI alone would make. The command line's pin --server does this.",
        infotext=None,
        group="advanced",
    )
    # Last in the order: the WebUI passes the components positionally, and an option added at the
    # end leaves every earlier position of the API's positional form where it was.
    sweep_batches: int = option(
        0,
        label="Sensitivity sweep after the search (batches)",
        help="0 (default): off. Else, once the search has finished, this many extra batches measure each "
        "unit's influence around the best: each unit's weight is moved up and down by 0.2 at the run's "
        "seeds (2 batches per unit, least certain units first; a budget beyond 2 per unit adds seed sets "
        "after the run's), and its slope gets a 95% interval measured rather than fitted. The result goes "
        "into influence.json, the report's influence section and the summary. Not counted in Max batches; "
        "an interrupted sweep is dropped and the search's result kept.",
        infotext="Pin sweep batches",
        group="stopping",
        minimum=0,
        maximum=1000,
        step=2,
    )

    def _check_combination(self) -> None:
        if self.weight_min >= self.weight_max:
            raise OptionError(
                "weight_max", self.spec("weight_max").label,
                f"{self.weight_max} must exceed the lowest weight ({self.weight_min})",
            )
        if self.cma_mu is not None and self.cma_lambda is not None and self.cma_mu > self.cma_lambda:
            raise OptionError(
                "cma_mu", self.spec("cma_mu").label, f"{self.cma_mu} exceeds lambda ({self.cma_lambda})"
            )
        self._check_masks()
        if self.sweep_batches % 2:
            raise OptionError(
                "sweep_batches", self.spec("sweep_batches").label,
                f"{self.sweep_batches} is odd: a sweep spends 2 batches per unit and seed set (its weight up "
                "and down at the same seeds), so give an even number, or 0 for no sweep",
            )

    def _check_masks(self) -> None:
        """Masks belong to targets and to the image-to-target loss; anything else would be ignored."""
        if not self.target_masks:
            return
        label = self.spec("target_masks").label
        if not self.target_images:
            raise OptionError(
                "target_masks", label,
                f"{len(self.target_masks)} mask(s) but no target images: masks weight the target images' "
                "pixels, so give the target images too, or remove the masks",
            )
        if len(self.target_masks) != len(self.target_images):
            raise OptionError(
                "target_masks", label,
                f"{len(self.target_masks)} mask(s) for {len(self.target_images)} target image(s): give one "
                "mask per target in the same order (an all-white mask for a target that counts everywhere)",
            )
        if self.flip_loss != "target_distance":
            raise OptionError(
                "target_masks", label,
                "masks apply to the image-to-target loss: set Image loss (flip_loss) to 'target_distance' "
                f"(it is {self.flip_loss!r}), or remove the masks",
            )

    def default_generations(self, dim: int) -> int:
        """16 * floor(ln N) (the original's default), at least 16 so tiny prompts still search."""
        return self.generations or max(16, int(16 * math.floor(math.log(max(dim, 1)))))
