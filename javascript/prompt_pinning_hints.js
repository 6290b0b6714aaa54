// Tooltips of the Prompt pinning script's UI. Generated from lib_pinning/options.py by
// `python -m lib_pinning.webui.hints`: do not edit by hand (a test checks the two agree).
(function() {
    var byLabel = {
        "Target images": "Images the batch should land on. Leave empty to use the unpinned prompt's first batch as the target.",
        "Weight units": "What gets its own weight: each word (default: the finest unit a reader edits; commas and punctuation carry no meaning worth a dimension), each comma-separated phrase (fewest dimensions, fastest), or each CLIP token (the original tool's behaviour, most dimensions).",
        "Image loss": "nearest_mode (default): every image should look like one and the same target image (without target images: one of the unpinned prompt's own images), and each like some target, so the batch pins to one of the prompt's pictures and a black or over-emphasised batch scores badly; variety: mean + std of FLIP over the pairs within the batch, i.e. how much the images vary across seeds, whatever they show; target_distance: image-to-target pairs only (closeness to all the targets); all_pairs: every pair of targets and images together (the original tool's loss).",
        "Image loss weight": "Weight of the FLIP image loss in the total fitness. Allowed: a number in [0, 1000].",
        "Distance penalty weight": "Weight of a penalty on the mean squared change of the weights from the prompt's own (0 disables): keeps the pinned prompt close to what you wrote. Allowed: a number in [0, 1000].",
        "Target masks": "Optional greyscale masks, none or one per target image in the same order (an all-white mask for a target that counts everywhere): white areas count, black ones are ignored, greys count partly. Masks and targets must have the size of the generated images.",
        "Aesthetic weight": "Weight of the LAION aesthetic score (CLIP ViT-L/14 + the improved aesthetic predictor) in the total fitness: higher-rated images are preferred (0 disables; the first use downloads about 1.7 GB of weights). Allowed: a number in [0, 1000].",
        "Aesthetic spread penalty": "Penalty on the spread (std) of the aesthetic scores within a batch, relative to their mean: favours batches whose images are all good over a few great and a few poor ones. Allowed: a number in [0, 10].",
        "Pin to tags": "Comma-separated tags the images should match, with emphasis weights as in a prompt, e.g. 'red hair, (smile:1.2)'. Scored by CLIP similarity (empty disables).",
        "Pin away from tags": "Comma-separated tags the images should not match, same syntax as the tags.",
        "Tag weight": "Weight of the tag similarity in the total fitness (used when tags are given). Allowed: a number in [0, 1000].",
        "CLIP model": "CLIP model that scores the tags (architecture/weights). The aesthetic score always uses ViT-L-14/openai, which it was trained on; ViT-B-32 is faster for tags alone.",
        "Models folder": "Folder for the CLIP and aesthetic weights (downloaded and verified there on first use). Empty: the WebUI's models folder (models/PromptPinning), or ~/.cache/sd-prompt-pinning outside the WebUI.",
        "Pin to booru tags": "Comma-separated booru tags every image should carry, scored by a WD14 tagger, with emphasis weights as in a prompt and an optional confidence threshold after @, e.g. 'smile, (outdoors:1.5), long_hair@0.5'. Escape a tag's own brackets: 'hatsune_miku_\\(vocaloid\\)'. Empty disables.",
        "Pin away from booru tags": "Comma-separated booru tags no image should carry, same syntax, e.g. 'lowres, text'.",
        "Booru tag weight": "Weight of the booru tags (the share of images carrying each wanted tag and lacking each unwanted one) in the total fitness (used when booru tags are given). Allowed: a number in [0, 1000].",
        "Tagger model": "WD14 tagger: wd-vit-tagger-v3, wd-swinv2-tagger-v3, wd-eva02-large-tagger-v3 (and the other SmilingWolf v3 and wd-v1-4-*-v2 models), or a folder holding model.onnx and selected_tags.csv. Found in the WebUI tagger extension's folders, else in the models folder (taggers/<name>/).",
        "General tag threshold": "Confidence from which a general or rating tag counts as present (WD14 captions use 0.35). Allowed: a number in [0.01, 0.99].",
        "Character tag threshold": "Confidence from which a character tag counts as present (WD14 captions use 0.85). Allowed: a number in [0.01, 0.99].",
        "Tag threshold softness": "How soft the thresholds are: a tag counts sigmoid((confidence - threshold) / softness), so the search sees progress before a tag crosses its threshold. Smaller is closer to a hard count. Allowed: a number in [0.001, 1].",
        "Combine objectives": "weighted_sum: one fitness, the weighted sum of the objectives (each normalised to its natural range, so the weights compare importance); pareto: each objective separately with multi-objective CMA-ES (the report shows the Pareto front; the run's best is still the lowest weighted sum).",
        "CMA seed": "Seed of the search. Empty: derived from the image seed, so a run is reproducible. Allowed: an integer in [0, 4294967295] (or empty for automatic).",
        "Generations": "Number of CMA-ES generations. Empty: 16 * floor(ln N) for N weights (at least 16). Allowed: an integer in [1, 10000] (or empty for automatic).",
        "Max batches": "Budget: the run stops once it has generated this many batches, the baseline included (a repeat of an already generated prompt costs nothing and does not count). Empty: no limit but the generations. A stopped run can be resumed with a larger budget. Allowed: an integer in [1, 1000000] (or empty for automatic).",
        "Max minutes": "Budget: the run stops after the batch in progress once it has run this long (all the sessions of a resumed run together). Empty: no limit. Allowed: a number in [0.01, 100000] (or empty for automatic).",
        "Stop when settled": "Stop before the last generation once more batches cannot help: the loss reached its floor (0); the best parents have all scored like the best for Patience generations (a plateau); nothing improved for Stagnation generations; every batch of a generation scored the same; or the search shrank below the weights' resolution. Off: run every generation (the budget still applies).",
        "Patience": "Generations in a row in which the best parents (mu of them) all score within the tolerance of the best so far, with no improvement, before the run stops: the search sits on a plateau and its moves are decided by ties. Allowed: an integer in [1, 1000].",
        "Stagnation": "Generations without an improvement of the best by more than the tolerance before the run stops, plateau or not. Empty: a quarter of the generations, at least 5. Allowed: an integer in [1, 10000] (or empty for automatic).",
        "Loss tolerance": "Loss differences below this count as equal (tolfun): smaller improvements are not improvements, and a loss this close to 0 has reached its floor. Losses run from 0 (perfect batch) to about 1; 0.001 is below what 8-bit rounding of the images moves. Allowed: a number in [0, 1].",
        "Weight tolerance": "The run stops when the search distribution's largest standard deviation of a weight is below this (tolx): rendered weights have 3 decimals, so below half of 0.001 every proposal renders (nearly) the same prompt. Allowed: a number in [0, 1].",
        "Search space": "units: one weight per unit; groups: runs of neighbouring units (tags) share one weight, a low-dimensional search that long prompts can afford; auto: groups above the Groups above size, units below.",
        "Groups": "Number of weight groups of the groups search space (positive and negative prompt separately, in proportion to their units). Empty: automatic (see the README). Allowed: an integer in [1, 1000] (or empty for automatic).",
        "Groups above": "With the auto search space, prompts with more units than this are searched in groups. Allowed: an integer in [1, 100000].",
        "Initial centroid radius": "The search starts from a point drawn uniformly in [-r, r] per weight around the prompt's own weights; 0 (default) starts exactly at the prompt. The original tool used 0.25, a random start that only adds noise (docs/benchmarks.md). Allowed: a number in [0, 2].",
        "Initial std": "Initial standard deviation (sigma) of the CMA-ES search distribution, in weight units; CMA-ES adapts it as it goes. 0.2 is a visible but moderate change of emphasis; the original tool's 0.05 barely changes an image and needs several times more batches (docs/benchmarks.md). Allowed: a number in [0.001, 2].",
        "Lowest weight": "No weight the search changes goes below this (the search reflects off it). 0 (default) lets a word fade out entirely, which the default image loss already penalises when the picture changes; a negative weight would invert the word, so there is no lower floor than 0. Raise it (e.g. 0.2) to keep every word present. Weights you wrote yourself stay as written until the search changes them. Allowed: a number in [0, 1].",
        "Highest weight": "No weight the search changes goes above this (the search reflects off it). 2 (default): SD 1.5 images start to fry past about 1.5 and are fried at 2 on most models, so nothing worth finding lies beyond, and the image guard catches the fried batches between; 1.5 keeps an SD 1.5 search clear of frying, SDXL and Pony models bear 1.6-1.8. 10 (the largest) is in effect no bound, as before. Allowed: a number in [1, 10].",
        "Size limit": "Largest allowed squared distance of the weight offsets from the prompt (0 disables). Enables the multi-objective strategy with a closest-valid penalty. Allowed: a number in [0, 10].",
        "Size limit error": "Tolerance around the size limit. Empty: size limit / 100. Allowed: a number in [0, 10] (or empty for automatic).",
        "Size limit weight": "Penalty weight for exceeding the size limit. Empty: size limit * 10. Allowed: a number in [0, 1000000] (or empty for automatic).",
        "Lambda": "Children per generation. Empty: int(4 + 3 ln N). Allowed: an integer in [2, 1000] (or empty for automatic).",
        "Mu": "Parents kept from the lambda children. Empty: int(lambda / 2). Allowed: an integer in [1, 1000] (or empty for automatic).",
        "Recombination weights": "How fast the parents' recombination weights decrease with rank.",
        "cs": "Cumulation constant for the step size. Empty: (mueff + 2) / (N + mueff + 3). Allowed: a number in [1e-09, 1] (or empty for automatic).",
        "damps": "Damping for the step size. Empty: 1 + 2 max(0, sqrt((mueff - 1) / (N + 1)) - 1) + cs. Allowed: a number in [1e-09, 1000] (or empty for automatic).",
        "ccum": "Cumulation constant for the covariance matrix. Empty: 4 / (N + 4). Allowed: a number in [1e-09, 1] (or empty for automatic).",
        "ccov1": "Learning rate of the rank-one update. Empty: 2 / ((N + 1.3)^2 + mueff). Allowed: a number in [0, 1] (or empty for automatic).",
        "ccovmu": "Learning rate of the rank-mu update. Empty: 2 (mueff - 2 + 1/mueff) / ((N + 2)^2 + mueff). Allowed: a number in [0, 1] (or empty for automatic).",
        "Hyperbatch weights": "With a hyperbatch sampler, weight the loss of image pairs by the level of the split tree at which they parted.",
        "Hyperbatch weights for other samplers": "Apply the split-tree weighting to plain samplers too, using the tree a hyperbatch sampler would have used (the images are independent then, so this only re-weights pairs).",
        "Hyperbatch weight type": "Per tree level K: Geometric X^(scale/K), Exponential X*(0.5+scale)^K, Polynomial (1+X)^(scale*K).",
        "Hyperbatch weight scale": "The scale in the hyperbatch weight formula. Allowed: a number in [0, 10].",
        "Degenerate-image guard": "Recognise broken images (NaN/non-finite, black, flat, fried by over-emphasis): a batch with any is penalised so the search moves away, and never chosen as the best. Off, they are still recorded and shown in the report, but scored like any image.",
        "Black level": "An image is black when 99% of its pixels are darker than this in every channel (0 to 1; 0.03 is about 8/255). 0 disables the check. Allowed: a number in [0, 0.5].",
        "Flat image std": "An image is flat (near-constant) when every channel's standard deviation is below this (0 to 1; 0.01 is a gradient spanning under 9/255). 0 disables the check. Allowed: a number in [0, 0.25].",
        "Fried saturation": "An image is fried when its mean saturation is at least this, half its channel values are clipped, and it has no detail (see Fried detail). Allowed: a number in [0, 1].",
        "Fried detail": "A saturated, clipped image is fried when its detail (99th percentile of its high-pass response at 64 px) is below this. 0 disables the fried check. Allowed: a number in [0, 1].",
        "Start from run": "A previous run (its folder, or its id or number in the runs folder; in the WebUI either tab's, txt2img or img2img) whose weight map's cluster the search starts from: the prompt is the old run's rendered at the cluster's centre, the seeds are the old run's, the initial std the cluster's spread. Empty (default): start at the prompt as written.",
        "Start from cluster": "With Start from run: the cluster of its weight map (C0, C1, ... in its report) to start from. Allowed: an integer in [0, 10000].",
        "Log generations to the console": "Log each generation's fitness statistics (min, mean, max, sigma) to the console.",
        "Also generate on the extra servers": "WebUI only: spread each generation's individuals over this WebUI and the servers listed in Settings -> Prompt pinning -> Extra servers (same checkpoint and sampler, checked at start); the records are those this WebUI alone would make. The command line's pin --server does this.",
        "Sensitivity sweep after the search (batches)": "0 (default): off. Else, once the search has finished, this many extra batches measure each unit's influence around the best: each unit's weight is moved up and down by 0.2 at the run's seeds (2 batches per unit, least certain units first; a budget beyond 2 per unit adds seed sets after the run's), and its slope gets a 95% interval measured rather than fitted. The result goes into influence.json, the report's influence section and the summary. Not counted in Max batches; an interrupted sweep is dropped and the search's result kept. Allowed: an integer in [0, 1000]."
    };
    var byElemId = {
        "target_images": "Images the batch should land on. Leave empty to use the unpinned prompt's first batch as the target.",
        "granularity": "What gets its own weight: each word (default: the finest unit a reader edits; commas and punctuation carry no meaning worth a dimension), each comma-separated phrase (fewest dimensions, fastest), or each CLIP token (the original tool's behaviour, most dimensions).",
        "flip_loss": "nearest_mode (default): every image should look like one and the same target image (without target images: one of the unpinned prompt's own images), and each like some target, so the batch pins to one of the prompt's pictures and a black or over-emphasised batch scores badly; variety: mean + std of FLIP over the pairs within the batch, i.e. how much the images vary across seeds, whatever they show; target_distance: image-to-target pairs only (closeness to all the targets); all_pairs: every pair of targets and images together (the original tool's loss).",
        "flip_weight": "Weight of the FLIP image loss in the total fitness. Allowed: a number in [0, 1000].",
        "distance_weight": "Weight of a penalty on the mean squared change of the weights from the prompt's own (0 disables): keeps the pinned prompt close to what you wrote. Allowed: a number in [0, 1000].",
        "target_masks": "Optional greyscale masks, none or one per target image in the same order (an all-white mask for a target that counts everywhere): white areas count, black ones are ignored, greys count partly. Masks and targets must have the size of the generated images.",
        "aesthetic_weight": "Weight of the LAION aesthetic score (CLIP ViT-L/14 + the improved aesthetic predictor) in the total fitness: higher-rated images are preferred (0 disables; the first use downloads about 1.7 GB of weights). Allowed: a number in [0, 1000].",
        "aesthetic_spread_weight": "Penalty on the spread (std) of the aesthetic scores within a batch, relative to their mean: favours batches whose images are all good over a few great and a few poor ones. Allowed: a number in [0, 10].",
        "tags": "Comma-separated tags the images should match, with emphasis weights as in a prompt, e.g. 'red hair, (smile:1.2)'. Scored by CLIP similarity (empty disables).",
        "negative_tags": "Comma-separated tags the images should not match, same syntax as the tags.",
        "tag_weight": "Weight of the tag similarity in the total fitness (used when tags are given). Allowed: a number in [0, 1000].",
        "clip_model": "CLIP model that scores the tags (architecture/weights). The aesthetic score always uses ViT-L-14/openai, which it was trained on; ViT-B-32 is faster for tags alone.",
        "models_dir": "Folder for the CLIP and aesthetic weights (downloaded and verified there on first use). Empty: the WebUI's models folder (models/PromptPinning), or ~/.cache/sd-prompt-pinning outside the WebUI.",
        "tagger_tags": "Comma-separated booru tags every image should carry, scored by a WD14 tagger, with emphasis weights as in a prompt and an optional confidence threshold after @, e.g. 'smile, (outdoors:1.5), long_hair@0.5'. Escape a tag's own brackets: 'hatsune_miku_\\(vocaloid\\)'. Empty disables.",
        "tagger_negative_tags": "Comma-separated booru tags no image should carry, same syntax, e.g. 'lowres, text'.",
        "tagger_weight": "Weight of the booru tags (the share of images carrying each wanted tag and lacking each unwanted one) in the total fitness (used when booru tags are given). Allowed: a number in [0, 1000].",
        "tagger_model": "WD14 tagger: wd-vit-tagger-v3, wd-swinv2-tagger-v3, wd-eva02-large-tagger-v3 (and the other SmilingWolf v3 and wd-v1-4-*-v2 models), or a folder holding model.onnx and selected_tags.csv. Found in the WebUI tagger extension's folders, else in the models folder (taggers/<name>/).",
        "tagger_general_threshold": "Confidence from which a general or rating tag counts as present (WD14 captions use 0.35). Allowed: a number in [0.01, 0.99].",
        "tagger_character_threshold": "Confidence from which a character tag counts as present (WD14 captions use 0.85). Allowed: a number in [0.01, 0.99].",
        "tagger_temperature": "How soft the thresholds are: a tag counts sigmoid((confidence - threshold) / softness), so the search sees progress before a tag crosses its threshold. Smaller is closer to a hard count. Allowed: a number in [0.001, 1].",
        "combine": "weighted_sum: one fitness, the weighted sum of the objectives (each normalised to its natural range, so the weights compare importance); pareto: each objective separately with multi-objective CMA-ES (the report shows the Pareto front; the run's best is still the lowest weighted sum).",
        "cma_seed": "Seed of the search. Empty: derived from the image seed, so a run is reproducible. Allowed: an integer in [0, 4294967295] (or empty for automatic).",
        "generations": "Number of CMA-ES generations. Empty: 16 * floor(ln N) for N weights (at least 16). Allowed: an integer in [1, 10000] (or empty for automatic).",
        "max_batches": "Budget: the run stops once it has generated this many batches, the baseline included (a repeat of an already generated prompt costs nothing and does not count). Empty: no limit but the generations. A stopped run can be resumed with a larger budget. Allowed: an integer in [1, 1000000] (or empty for automatic).",
        "max_minutes": "Budget: the run stops after the batch in progress once it has run this long (all the sessions of a resumed run together). Empty: no limit. Allowed: a number in [0.01, 100000] (or empty for automatic).",
        "stop_early": "Stop before the last generation once more batches cannot help: the loss reached its floor (0); the best parents have all scored like the best for Patience generations (a plateau); nothing improved for Stagnation generations; every batch of a generation scored the same; or the search shrank below the weights' resolution. Off: run every generation (the budget still applies).",
        "stop_patience": "Generations in a row in which the best parents (mu of them) all score within the tolerance of the best so far, with no improvement, before the run stops: the search sits on a plateau and its moves are decided by ties. Allowed: an integer in [1, 1000].",
        "stop_stagnation": "Generations without an improvement of the best by more than the tolerance before the run stops, plateau or not. Empty: a quarter of the generations, at least 5. Allowed: an integer in [1, 10000] (or empty for automatic).",
        "stop_tolerance": "Loss differences below this count as equal (tolfun): smaller improvements are not improvements, and a loss this close to 0 has reached its floor. Losses run from 0 (perfect batch) to about 1; 0.001 is below what 8-bit rounding of the images moves. Allowed: a number in [0, 1].",
        "stop_tolx": "The run stops when the search distribution's largest standard deviation of a weight is below this (tolx): rendered weights have 3 decimals, so below half of 0.001 every proposal renders (nearly) the same prompt. Allowed: a number in [0, 1].",
        "search_space": "units: one weight per unit; groups: runs of neighbouring units (tags) share one weight, a low-dimensional search that long prompts can afford; auto: groups above the Groups above size, units below.",
        "search_groups": "Number of weight groups of the groups search space (positive and negative prompt separately, in proportion to their units). Empty: automatic (see the README). Allowed: an integer in [1, 1000] (or empty for automatic).",
        "groups_above": "With the auto search space, prompts with more units than this are searched in groups. Allowed: an integer in [1, 100000].",
        "centroid_radius": "The search starts from a point drawn uniformly in [-r, r] per weight around the prompt's own weights; 0 (default) starts exactly at the prompt. The original tool used 0.25, a random start that only adds noise (docs/benchmarks.md). Allowed: a number in [0, 2].",
        "initial_std": "Initial standard deviation (sigma) of the CMA-ES search distribution, in weight units; CMA-ES adapts it as it goes. 0.2 is a visible but moderate change of emphasis; the original tool's 0.05 barely changes an image and needs several times more batches (docs/benchmarks.md). Allowed: a number in [0.001, 2].",
        "weight_min": "No weight the search changes goes below this (the search reflects off it). 0 (default) lets a word fade out entirely, which the default image loss already penalises when the picture changes; a negative weight would invert the word, so there is no lower floor than 0. Raise it (e.g. 0.2) to keep every word present. Weights you wrote yourself stay as written until the search changes them. Allowed: a number in [0, 1].",
        "weight_max": "No weight the search changes goes above this (the search reflects off it). 2 (default): SD 1.5 images start to fry past about 1.5 and are fried at 2 on most models, so nothing worth finding lies beyond, and the image guard catches the fried batches between; 1.5 keeps an SD 1.5 search clear of frying, SDXL and Pony models bear 1.6-1.8. 10 (the largest) is in effect no bound, as before. Allowed: a number in [1, 10].",
        "size_limit": "Largest allowed squared distance of the weight offsets from the prompt (0 disables). Enables the multi-objective strategy with a closest-valid penalty. Allowed: a number in [0, 10].",
        "size_limit_error": "Tolerance around the size limit. Empty: size limit / 100. Allowed: a number in [0, 10] (or empty for automatic).",
        "size_limit_weight": "Penalty weight for exceeding the size limit. Empty: size limit * 10. Allowed: a number in [0, 1000000] (or empty for automatic).",
        "cma_lambda": "Children per generation. Empty: int(4 + 3 ln N). Allowed: an integer in [2, 1000] (or empty for automatic).",
        "cma_mu": "Parents kept from the lambda children. Empty: int(lambda / 2). Allowed: an integer in [1, 1000] (or empty for automatic).",
        "cma_weights": "How fast the parents' recombination weights decrease with rank.",
        "cma_cs": "Cumulation constant for the step size. Empty: (mueff + 2) / (N + mueff + 3). Allowed: a number in [1e-09, 1] (or empty for automatic).",
        "cma_damps": "Damping for the step size. Empty: 1 + 2 max(0, sqrt((mueff - 1) / (N + 1)) - 1) + cs. Allowed: a number in [1e-09, 1000] (or empty for automatic).",
        "cma_ccum": "Cumulation constant for the covariance matrix. Empty: 4 / (N + 4). Allowed: a number in [1e-09, 1] (or empty for automatic).",
        "cma_ccov1": "Learning rate of the rank-one update. Empty: 2 / ((N + 1.3)^2 + mueff). Allowed: a number in [0, 1] (or empty for automatic).",
        "cma_ccovmu": "Learning rate of the rank-mu update. Empty: 2 (mueff - 2 + 1/mueff) / ((N + 2)^2 + mueff). Allowed: a number in [0, 1] (or empty for automatic).",
        "hyperbatch_weights": "With a hyperbatch sampler, weight the loss of image pairs by the level of the split tree at which they parted.",
        "hyperbatch_weights_any_sampler": "Apply the split-tree weighting to plain samplers too, using the tree a hyperbatch sampler would have used (the images are independent then, so this only re-weights pairs).",
        "hyperbatch_weight_type": "Per tree level K: Geometric X^(scale/K), Exponential X*(0.5+scale)^K, Polynomial (1+X)^(scale*K).",
        "hyperbatch_weight_scale": "The scale in the hyperbatch weight formula. Allowed: a number in [0, 10].",
        "guard": "Recognise broken images (NaN/non-finite, black, flat, fried by over-emphasis): a batch with any is penalised so the search moves away, and never chosen as the best. Off, they are still recorded and shown in the report, but scored like any image.",
        "guard_black_level": "An image is black when 99% of its pixels are darker than this in every channel (0 to 1; 0.03 is about 8/255). 0 disables the check. Allowed: a number in [0, 0.5].",
        "guard_flat_std": "An image is flat (near-constant) when every channel's standard deviation is below this (0 to 1; 0.01 is a gradient spanning under 9/255). 0 disables the check. Allowed: a number in [0, 0.25].",
        "guard_fried_saturation": "An image is fried when its mean saturation is at least this, half its channel values are clipped, and it has no detail (see Fried detail). Allowed: a number in [0, 1].",
        "guard_fried_detail": "A saturated, clipped image is fried when its detail (99th percentile of its high-pass response at 64 px) is below this. 0 disables the fried check. Allowed: a number in [0, 1].",
        "from_run": "A previous run (its folder, or its id or number in the runs folder; in the WebUI either tab's, txt2img or img2img) whose weight map's cluster the search starts from: the prompt is the old run's rendered at the cluster's centre, the seeds are the old run's, the initial std the cluster's spread. Empty (default): start at the prompt as written.",
        "from_cluster": "With Start from run: the cluster of its weight map (C0, C1, ... in its report) to start from. Allowed: an integer in [0, 10000].",
        "cli_log": "Log each generation's fitness statistics (min, mean, max, sigma) to the console.",
        "extra_servers": "WebUI only: spread each generation's individuals over this WebUI and the servers listed in Settings -> Prompt pinning -> Extra servers (same checkpoint and sampler, checked at start); the records are those this WebUI alone would make. The command line's pin --server does this.",
        "sweep_batches": "0 (default): off. Else, once the search has finished, this many extra batches measure each unit's influence around the best: each unit's weight is moved up and down by 0.2 at the run's seeds (2 batches per unit, least certain units first; a budget beyond 2 per unit adds seed sets after the run's), and its slope gets a 95% interval measured rather than fitted. The result goes into influence.json, the report's influence section and the summary. Not counted in Max batches; an interrupted sweep is dropped and the search's result kept. Allowed: an integer in [0, 1000].",
        "group_objective": "What the search minimises: the weights of the image loss, the aesthetic score, CLIP tags and the distance penalty, target masks, and the CLIP model and weights folder.",
        "group_stopping": "When the run stops before its last generation: plateau patience, stagnation, the loss and weight tolerances. The budget (Max batches, Max minutes) is at the top.",
        "group_cma": "The CMA-ES search: starting point and step size, population (lambda, mu), learning rates and the size limit. Empty fields use the standard CMA-ES defaults for the number of weights.",
        "group_hyperbatch": "How image pairs from a hyperbatch sampler are weighted by where they split.",
        "group_guard": "Recognises broken images (NaN, black, flat, fried by over-emphasis): batches with any are penalised and never chosen as the best; the thresholds of each check.",
        "group_advanced": "Logging and other options that do not change the result.",
        "plan": "How many batches the run will generate at most: the baseline, then generations x lambda, capped by Max batches; the stopping rule may end it sooner. With a time estimate from the last run.",
        "plan_button": "Count the planned batches for the prompts and options as they are now."
    };
    var slug = "prompt_pinning";

    // The WebUI's hints.js shows titles[label] on the element whose text is the label.
    if (typeof titles === "undefined") {
        window.titles = {};
    }
    Object.assign(titles, byLabel);

    // A translated label matches no key: put the tooltip on the component by its elem_id too.
    function applyByElemId() {
        var app = typeof gradioApp === "function" ? gradioApp() : document;
        ["txt2img", "img2img"].forEach(function(tab) {
            Object.keys(byElemId).forEach(function(key) {
                var element = app.getElementById("script_" + tab + "_" + slug + "_" + key);
                if (element && !element.title) {
                    element.title = byElemId[key];
                }
            });
        });
    }
    if (typeof onUiLoaded === "function") {
        onUiLoaded(applyByElemId);
    }
})();
