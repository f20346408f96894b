//! comfyd: the job-directory daemon and its ComfyUI client.
