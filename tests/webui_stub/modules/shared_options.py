"""Stand-in for modules/shared_options.py (v1.10.1 82a973c0): the built-in settings the stand-in reads.

Same keys, defaults and infotext labels as the WebUI for the subset of settings that the
stand-in's processing, samplers and image saving consult (the WebUI has a few hundred more; an
extension reading one that is missing here gets AttributeError, as it would for a setting the
WebUI does not have). Line numbers are those of the v1.10.1 file. 1.8 differences: `k_sched_type`
(v1.8.0 modules/shared_options.py:L365) exists only before 1.9, where the "Schedule type"
dropdown replaced it; `skip_early_cond`, `beta_dist_alpha/beta` are 1.10+.
"""

from __future__ import annotations

import os

import modules
from modules import paths
from modules.options import OptionInfo, options_section

default_output_dir = os.path.join(paths.data_path, "outputs")

restricted_opts = {
    "samples_filename_pattern",
    "directories_filename_pattern",
    "outdir_samples",
    "outdir_txt2img_samples",
    "outdir_img2img_samples",
    "outdir_extras_samples",
    "outdir_grids",
    "outdir_txt2img_grids",
    "outdir_save",
    "outdir_init_images",
}
"""modules/shared_options.py:L12."""

options_templates: dict[str, OptionInfo] = {}

options_templates.update(options_section(("saving-images", "Saving images/grids", "saving"), {
    "samples_save": OptionInfo(True, "Always save all generated images"),  # L35
    "samples_format": OptionInfo("png", "File format for images"),  # L36
    "samples_filename_pattern": OptionInfo("", "Images filename pattern"),  # L37
    "save_images_add_number": OptionInfo(True, "Add number to filename when saving"),  # L38
    "save_images_replace_action": OptionInfo("Replace", "Saving the image to an existing file"),  # L39
    "grid_save": OptionInfo(True, "Always save all generated image grids"),  # L40
    "grid_format": OptionInfo("png", "File format for grids"),  # L41
    "grid_only_if_multiple": OptionInfo(True, "Do not save grids consisting of one picture"),  # L43
    "grid_prevent_empty_spots": OptionInfo(False, "Prevent empty spots in grid (when set to autodetect)"),  # L44
    "n_rows": OptionInfo(-1, "Grid row count; use -1 for autodetect and 0 for it to be same as batch size"),  # L46
    "grid_background_color": OptionInfo("#ffffff", "Background color for image grids"),  # L50
    "save_images_before_face_restoration": OptionInfo(False, "Save a copy of image before doing face restoration."),  # L52
    "save_images_before_highres_fix": OptionInfo(False, "Save a copy of image before applying highres fix."),  # L53
    "save_images_before_color_correction": OptionInfo(False, "Save a copy of image before applying color correction to img2img results"),  # L54
    "save_mask": OptionInfo(False, "For inpainting, save a copy of the greyscale mask"),  # L55
    "save_mask_composite": OptionInfo(False, "For inpainting, save a masked composite"),  # L56
    "jpeg_quality": OptionInfo(80, "Quality for saved jpeg and avif images"),  # L57
    "webp_lossless": OptionInfo(False, "Use lossless compression for webp images"),  # L58
    "export_for_4chan": OptionInfo(True, "Save copy of large images as JPG"),  # L59
    "img_downscale_threshold": OptionInfo(4.0, "File size limit for the above option, MB"),  # L60
    "target_side_length": OptionInfo(4000, "Width/height limit for the above option, in pixels"),  # L61
    "save_init_img": OptionInfo(False, "Save init images when using img2img"),  # L68
    "save_incomplete_images": OptionInfo(False, "Save incomplete images"),  # L73
}))

options_templates.update(options_section(("saving-paths", "Paths for saving", "saving"), {
    "outdir_samples": OptionInfo("", "Output directory for images; if empty, defaults to three directories below"),  # L80
    "outdir_txt2img_samples": OptionInfo(os.path.join(default_output_dir, "txt2img-images"), "Output directory for txt2img images"),  # L81
    "outdir_img2img_samples": OptionInfo(os.path.join(default_output_dir, "img2img-images"), "Output directory for img2img images"),  # L82
    "outdir_grids": OptionInfo("", "Output directory for grids; if empty, defaults to two directories below"),  # L84
    "outdir_txt2img_grids": OptionInfo(os.path.join(default_output_dir, "txt2img-grids"), "Output directory for txt2img grids"),  # L85
    "outdir_img2img_grids": OptionInfo(os.path.join(default_output_dir, "img2img-grids"), "Output directory for img2img grids"),  # L86
}))

options_templates.update(options_section(("saving-to-dirs", "Saving to a directory", "saving"), {
    "save_to_dirs": OptionInfo(True, "Save images to a subdirectory"),  # L92
    "grid_save_to_dirs": OptionInfo(True, "Save grids to a subdirectory"),  # L93
    "directories_filename_pattern": OptionInfo("[date]", "Directory name pattern"),  # L95
}))

options_templates.update(options_section(("face-restoration", "Face restoration", "postprocessing"), {
    "face_restoration": OptionInfo(False, "Restore faces", infotext="Face restoration"),  # L111
    "face_restoration_model": OptionInfo("CodeFormer", "Face restoration model"),  # L112
}))

options_templates.update(options_section(("system", "System", "system"), {
    "multiple_tqdm": OptionInfo(True, "Add a second progress bar to the console that shows progress for an entire job."),  # L124
}))

options_templates.update(options_section(("sd", "Stable Diffusion", "sd"), {
    "sd_model_checkpoint": OptionInfo(None, "Stable Diffusion checkpoint", infotext="Model hash"),  # L171
    "enable_quantization": OptionInfo(False, "Enable quantization in K samplers for sharper and cleaner results. This may change existing seeds"),  # L176
    "emphasis": OptionInfo("Original", "Emphasis mode", infotext="Emphasis"),  # L177
    "CLIP_stop_at_last_layers": OptionInfo(1, "Clip skip", infotext="Clip skip"),  # L181
    "randn_source": OptionInfo("GPU", "Random number generator source.", infotext="RNG"),  # L183
    "tiling": OptionInfo(False, "Tiling", infotext="Tiling"),  # L184
    "hires_fix_refiner_pass": OptionInfo("second pass", "Hires fix: which pass to enable refiner for", infotext="Hires refiner"),  # L185
}))

options_templates.update(options_section(("sdxl", "Stable Diffusion XL", "sd"), {
    "sdxl_crop_top": OptionInfo(0, "crop top coordinate"),  # L189
    "sdxl_crop_left": OptionInfo(0, "crop left coordinate"),  # L190
}))

options_templates.update(options_section(("vae", "VAE", "sd"), {
    "sd_vae_encode_method": OptionInfo("Full", "VAE type for encode", infotext="VAE Encoder"),  # L211
    "sd_vae_decode_method": OptionInfo("Full", "VAE type for decode", infotext="VAE Decoder"),  # L212
}))

options_templates.update(options_section(("img2img", "img2img", "sd"), {
    "inpainting_mask_weight": OptionInfo(1.0, "Inpainting conditioning mask strength", infotext="Conditional mask weight"),  # L216
    "initial_noise_multiplier": OptionInfo(1.0, "Noise multiplier for img2img", infotext="Noise multiplier"),  # L217
    "img2img_extra_noise": OptionInfo(0.0, "Extra noise multiplier for img2img and hires fix", infotext="Extra noise"),  # L218
    "img2img_color_correction": OptionInfo(False, "Apply color correction to img2img results to match original colors."),  # L219
    "img2img_fix_steps": OptionInfo(False, "With img2img, do exactly the amount of steps the slider specifies."),  # L220
    "img2img_background_color": OptionInfo("#ffffff", "With img2img, fill transparent parts of the input image with this color."),  # L221
    "return_mask": OptionInfo(False, "For inpainting, include the greyscale mask in results for web"),  # L226
    "return_mask_composite": OptionInfo(False, "For inpainting, include masked composite in results for web"),  # L227
    "overlay_inpaint": OptionInfo(True, "Overlay original for inpaint"),  # L229
}))

options_templates.update(options_section(("optimizations", "Optimizations", "sd"), {
    "s_min_uncond": OptionInfo(0.0, "Negative Guidance minimum sigma", infotext="NGMS"),  # L234
    "s_min_uncond_all": OptionInfo(False, "Negative Guidance minimum sigma all steps", infotext="NGMS all steps"),  # L235
    "token_merging_ratio": OptionInfo(0.0, "Token merging ratio", infotext="Token merging ratio"),  # L236
    "token_merging_ratio_img2img": OptionInfo(0.0, "Token merging ratio for img2img"),  # L237
    "token_merging_ratio_hr": OptionInfo(0.0, "Token merging ratio for high-res pass", infotext="Token merging ratio hr"),  # L238
    "pad_cond_uncond": OptionInfo(False, "Pad prompt/negative prompt", infotext="Pad conds"),  # L239
    "pad_cond_uncond_v0": OptionInfo(False, "Pad prompt/negative prompt (v0)", infotext="Pad conds v0"),  # L240
    "persistent_cond_cache": OptionInfo(True, "Persistent cond cache"),  # L241
    "batch_cond_uncond": OptionInfo(True, "Batch cond/uncond"),  # L242
    "fp8_storage": OptionInfo("Disable", "FP8 weight"),  # L243
    "cache_fp16_weight": OptionInfo(False, "Cache FP16 weight for LoRA"),  # L244
}))

options_templates.update(options_section(("compatibility", "Compatibility", "sd"), {
    "use_old_karras_scheduler_sigmas": OptionInfo(False, "Use old karras scheduler sigmas (0.1 to 10)."),  # L250
    "no_dpmpp_sde_batch_determinism": OptionInfo(False, "Do not make DPM++ SDE deterministic across different batch sizes."),  # L251
    "hires_fix_use_firstpass_conds": OptionInfo(False, "For hires fix, calculate conds of second pass using extra networks of first pass."),  # L253
    "use_old_scheduling": OptionInfo(False, "Use old prompt editing timelines.", infotext="Old prompt editing timelines"),  # L254
    "refiner_switch_by_sample_steps": OptionInfo(False, "Switch to refiner by sampling steps instead of model timesteps. Old behavior for refiner.", infotext="Refiner switch by sampling steps"),  # L256
}))

options_templates.update(options_section(("ui", "User interface", "ui"), {
    "return_grid": OptionInfo(True, "Show grid in gallery"),  # L307
    "enable_reloading_ui_scripts": OptionInfo(False, "Reload UI scripts when using Reload UI option"),  # L342
}))

options_templates.update(options_section(("infotext", "Infotext", "ui"), {
    "enable_pnginfo": OptionInfo(True, "Write infotext to metadata of the generated image"),  # L352
    "save_txt": OptionInfo(False, "Create a text file with infotext next to every generated image"),  # L353
    "add_model_name_to_info": OptionInfo(True, "Add model name to infotext"),  # L355
    "add_model_hash_to_info": OptionInfo(True, "Add model hash to infotext"),  # L356
    "add_vae_name_to_info": OptionInfo(True, "Add VAE name to infotext"),  # L357
    "add_vae_hash_to_info": OptionInfo(True, "Add VAE hash to infotext"),  # L358
    "add_user_name_to_info": OptionInfo(False, "Add user name to infotext when authenticated"),  # L359
    "add_version_to_infotext": OptionInfo(True, "Add program version to infotext"),  # L360
    "infotext_skip_pasting": OptionInfo([], "Disregard fields from pasted infotext"),  # L362
    "infotext_styles": OptionInfo("Apply if any", "Infer styles from prompts of pasted infotext"),  # L363
}))

options_templates.update(options_section(("ui", "Live previews", "ui"), {
    "live_previews_enable": OptionInfo(True, "Show live previews of the created image"),  # L374
    "live_previews_image_format": OptionInfo("png", "Live preview file format"),  # L375
    "show_progress_grid": OptionInfo(True, "Show previews of all images generated in a batch as a grid"),  # L376
    "show_progress_every_n_steps": OptionInfo(10, "Live preview display period"),  # L377
    "show_progress_type": OptionInfo("Approx NN", "Live preview method"),  # L378
    "live_preview_content": OptionInfo("Prompt", "Live preview subject"),  # L380
    "live_preview_fast_interrupt": OptionInfo(False, "Return image with chosen live preview method on interrupt"),  # L382
}))

_sampler_params = {
    "hide_samplers": OptionInfo([], "Hide samplers in user interface").needs_reload_ui(),  # L388
    "eta_ddim": OptionInfo(0.0, "Eta for DDIM", infotext="Eta DDIM"),  # L389
    "eta_ancestral": OptionInfo(1.0, "Eta for k-diffusion samplers", infotext="Eta"),  # L390
    "s_churn": OptionInfo(0.0, "sigma churn", infotext="Sigma churn"),  # L392
    "s_tmin": OptionInfo(0.0, "sigma tmin", infotext="Sigma tmin"),  # L393
    "s_tmax": OptionInfo(0.0, "sigma tmax", infotext="Sigma tmax"),  # L394
    "s_noise": OptionInfo(1.0, "sigma noise", infotext="Sigma noise"),  # L395
}
if not modules.version_at_least(1, 9):
    _sampler_params["k_sched_type"] = OptionInfo("Automatic", "Scheduler type", infotext="Schedule type")  # v1.8.0 L365
_sampler_params.update({
    "sigma_min": OptionInfo(0.0, "sigma min", infotext="Schedule min sigma"),  # L396
    "sigma_max": OptionInfo(0.0, "sigma max", infotext="Schedule max sigma"),  # L397
    "rho": OptionInfo(0.0, "rho", infotext="Schedule rho"),  # L398
    "eta_noise_seed_delta": OptionInfo(0, "Eta noise seed delta", infotext="ENSD"),  # L399
    "always_discard_next_to_last_sigma": OptionInfo(False, "Always discard next-to-last sigma", infotext="Discard penultimate sigma"),  # L400
    "sgm_noise_multiplier": OptionInfo(False, "SGM noise multiplier", infotext="SGM noise multiplier"),  # L401
})
if modules.version_at_least(1, 10):
    _sampler_params.update({
        "skip_early_cond": OptionInfo(0.0, "Ignore negative prompt during early sampling", infotext="Skip Early CFG"),  # L407
        "beta_dist_alpha": OptionInfo(0.6, "Beta scheduler - alpha", infotext="Beta scheduler alpha"),  # L408
        "beta_dist_beta": OptionInfo(0.6, "Beta scheduler - beta", infotext="Beta scheduler beta"),  # L409
    })
options_templates.update(options_section(("sampler-params", "Sampler parameters", "sd"), _sampler_params))
