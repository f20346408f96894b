//! comfy-sim: a ComfyUI protocol simulator.
