//! The simulated GPU memory (when [`crate::Config::memory`] is set): which models are resident,
//! what has leaked, what a running prompt holds, whether the next load fits, and the
//! out-of-memory error torch raises when it does not.
//!
//! The model is deliberately simpler than ComfyUI's: nothing is evicted to make room (the "OOM on
//! the second run" people report), so a client's memory policy (`POST /free` before a model
//! switch, retry after an OOM) makes a measurable difference. As in ComfyUI, an out-of-memory
//! error unloads every model (`unload_all_models()` in `execution.py`), and a leak survives every
//! `/free`: only a restart clears it.

use std::collections::BTreeMap;
use std::time::Duration;

/// A simulated CUDA device's memory; see [`crate::Config::memory`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// The device's total memory.
    pub vram_bytes: u64,
    /// Resident size of a model, by file name (`big.safetensors`).
    pub model_bytes: BTreeMap<String, u64>,
    /// Resident size of a model not named in `model_bytes`.
    pub default_model_bytes: u64,
    /// Added to a leaked total for every prompt the worker runs; no `/free` releases it, only a
    /// restart (`Sim::go_down`/`come_back`) does.
    pub leak_bytes_per_prompt: u64,
    /// Activation memory a prompt holds while it runs, on top of its models: taken at its first
    /// node that loads a model or samples, released when the prompt ends.
    pub working_bytes: u64,
}

impl Memory {
    /// How much VRAM the model file `name` takes once loaded.
    pub fn model_size(&self, name: &str) -> u64 {
        self.model_bytes
            .get(name)
            .copied()
            .unwrap_or(self.default_model_bytes)
    }
}

/// One `POST /free` the server accepted, with its flags, [`FreeCall::at`] after the simulator
/// started (the clock of [`crate::TimelineEntry::at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeCall {
    pub at: Duration,
    pub unload_models: bool,
    pub free_memory: bool,
}

/// What the device holds now. A restart loses it (it lives in `State`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Device {
    /// Model file name → the bytes it takes.
    resident: BTreeMap<String, u64>,
    leaked: u64,
    /// The running prompt's activation memory, once taken.
    working: u64,
}

/// Why an allocation failed, in the figures torch's `cudaMallocAsync` allocator reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shortfall {
    pub(crate) allocated: u64,
    pub(crate) requested: u64,
    pub(crate) limit: u64,
    pub(crate) free: u64,
}

impl Device {
    /// Everything allocated: resident models, leaked bytes and the running prompt's working set.
    pub(crate) fn used(&self) -> u64 {
        self.resident
            .values()
            .fold(self.leaked, |sum, b| sum.saturating_add(*b))
            .saturating_add(self.working)
    }

    /// `vram_free`: the device's memory less everything allocated.
    pub(crate) fn free(&self, memory: &Memory) -> u64 {
        memory.vram_bytes.saturating_sub(self.used())
    }

    pub(crate) fn resident(&self) -> impl Iterator<Item = &String> {
        self.resident.keys()
    }

    pub(crate) fn is_resident(&self, name: &str) -> bool {
        self.resident.contains_key(name)
    }

    pub(crate) fn leaked(&self) -> u64 {
        self.leaked
    }

    /// The bytes a node needs: the models it loads that are not resident (each once), and the
    /// prompt's working memory unless the prompt holds it already.
    pub(crate) fn request(&self, memory: &Memory, loads: &[String]) -> u64 {
        let mut names: Vec<&String> = loads.iter().filter(|n| !self.is_resident(n)).collect();
        names.sort_unstable();
        names.dedup();
        let models = names
            .iter()
            .fold(0u64, |sum, n| sum.saturating_add(memory.model_size(n)));
        let working = if self.working == 0 {
            memory.working_bytes
        } else {
            0
        };
        models.saturating_add(working)
    }

    /// Admits a node that loads `loads` or needs working memory: the models become resident and
    /// the prompt holds its working memory, or nothing changes and the shortfall says why.
    pub(crate) fn admit(&mut self, memory: &Memory, loads: &[String]) -> Result<(), Shortfall> {
        let requested = self.request(memory, loads);
        let free = self.free(memory);
        if requested > free {
            return Err(Shortfall {
                allocated: self.used(),
                requested,
                limit: memory.vram_bytes,
                free,
            });
        }
        for name in loads {
            if !self.is_resident(name) {
                self.resident.insert(name.clone(), memory.model_size(name));
            }
        }
        if self.working == 0 {
            self.working = memory.working_bytes;
        }
        Ok(())
    }

    /// `unload_all_models()`: after `/free` (`unload_models` or `free_memory`) or an OOM. The
    /// leak stays.
    pub(crate) fn unload_all(&mut self) {
        self.resident.clear();
    }

    /// A prompt ended: its working memory is released and the leak grows.
    pub(crate) fn prompt_done(&mut self, memory: &Memory) {
        self.working = 0;
        self.leaked = self.leaked.saturating_add(memory.leak_bytes_per_prompt);
    }
}

/// `str(ex)` of the `torch.OutOfMemoryError` the `cudaMallocAsync` allocator raises on device 0.
pub(crate) fn torch_message(s: &Shortfall) -> String {
    format!(
        "Allocation on device 0 would exceed allowed memory. (out of memory)\n\
         Currently allocated     : {}\n\
         Requested               : {}\n\
         Device limit            : {}\n\
         Free (according to CUDA): {}\n\
         PyTorch limit (set by user-supplied memory fraction)\n                        : {}",
        format_size(s.allocated),
        format_size(s.requested),
        format_size(s.limit),
        format_size(s.free),
        // No memory fraction set: the limit is the largest size_t.
        format_size(u64::MAX),
    )
}

/// torch's `format_size`: bytes up to 1 KiB, then KiB, MiB, GiB with two decimals.
#[allow(clippy::cast_precision_loss)] // two decimals of a size
pub(crate) fn format_size(size: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * 1024 * 1024;
    if size <= KIB {
        format!("{size} bytes")
    } else if size <= MIB {
        format!("{:.2} KiB", size as f64 / KIB as f64)
    } else if size <= GIB {
        format!("{:.2} MiB", size as f64 / MIB as f64)
    } else {
        format!("{:.2} GiB", size as f64 / GIB as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn memory() -> Memory {
        Memory {
            vram_bytes: 10 * GIB,
            model_bytes: [("a".to_owned(), 6 * GIB), ("b".to_owned(), 6 * GIB)].into(),
            default_model_bytes: GIB,
            leak_bytes_per_prompt: 0,
            working_bytes: GIB,
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_load_fits_up_to_the_last_byte() {
        let mut m = memory();
        let mut device = Device::default();
        m.working_bytes = 4 * GIB;
        assert_eq!(device.request(&m, &names(&["a"])), 10 * GIB);
        assert_eq!(device.admit(&m, &names(&["a"])), Ok(()));
        assert_eq!(device.free(&m), 0);
        // Already resident and working memory held: nothing more is needed.
        assert_eq!(device.request(&m, &names(&["a"])), 0);
        assert_eq!(device.admit(&m, &names(&["a", "a"])), Ok(()));
    }

    #[test]
    fn a_switch_without_free_does_not_fit_and_changes_nothing() {
        let m = memory();
        let mut device = Device::default();
        assert_eq!(device.admit(&m, &names(&["a"])), Ok(()));
        device.prompt_done(&m);
        assert_eq!(device.free(&m), 4 * GIB);
        let before = device.clone();
        assert_eq!(
            device.admit(&m, &names(&["b"])),
            Err(Shortfall {
                allocated: 6 * GIB,
                requested: 7 * GIB,
                limit: 10 * GIB,
                free: 4 * GIB
            })
        );
        assert_eq!(device, before);
        device.unload_all();
        assert_eq!(device.admit(&m, &names(&["b"])), Ok(()));
        assert_eq!(device.resident().collect::<Vec<_>>(), ["b"]);
        assert_eq!(device.used(), 7 * GIB);
    }

    #[test]
    fn models_stay_resident_side_by_side_when_they_fit() {
        let m = memory();
        let mut device = Device::default();
        // A model not named takes the default size; each name counts once.
        assert_eq!(device.request(&m, &names(&["x", "y", "x"])), 3 * GIB);
        assert_eq!(device.admit(&m, &names(&["x", "y", "x"])), Ok(()));
        device.prompt_done(&m);
        assert_eq!(device.admit(&m, &names(&["a"])), Ok(()));
        assert_eq!(device.resident().collect::<Vec<_>>(), ["a", "x", "y"]);
        assert_eq!(device.free(&m), GIB);
    }

    #[test]
    fn a_leak_grows_per_prompt_and_survives_unloading() {
        let mut m = memory();
        m.leak_bytes_per_prompt = 3 * GIB;
        let mut device = Device::default();
        for _ in 0..3 {
            assert_eq!(device.admit(&m, &[]), Ok(()));
            device.prompt_done(&m);
        }
        device.unload_all();
        assert_eq!(device.leaked(), 9 * GIB);
        assert_eq!(device.free(&m), GIB);
        assert!(device.admit(&m, &[]).is_ok(), "working memory still fits");
        device.prompt_done(&m);
        assert_eq!(device.free(&m), 0);
        let err = device.admit(&m, &[]);
        assert_eq!(err.map_err(|s| (s.requested, s.free)), Err((GIB, 0)));
        // More leak than VRAM: the figures saturate instead of wrapping.
        device.prompt_done(&m);
        assert_eq!(device.free(&m), 0);
    }

    #[test]
    fn sizes_read_like_torch() {
        assert_eq!(format_size(1024), "1024 bytes");
        assert_eq!(format_size(1025), "1.00 KiB");
        assert_eq!(format_size(640 * 1024 * 1024), "640.00 MiB");
        // Each unit runs up to and including the next one.
        assert_eq!(format_size(GIB), "1024.00 MiB");
        assert_eq!(format_size(GIB + GIB / 2), "1.50 GiB");
        assert_eq!(format_size(u64::MAX), "17179869184.00 GiB");
        let message = torch_message(&Shortfall {
            allocated: 6 * GIB,
            requested: 7 * GIB,
            limit: 10 * GIB,
            free: 4 * GIB,
        });
        assert_eq!(
            message,
            "Allocation on device 0 would exceed allowed memory. (out of memory)\n\
             Currently allocated     : 6.00 GiB\n\
             Requested               : 7.00 GiB\n\
             Device limit            : 10.00 GiB\n\
             Free (according to CUDA): 4.00 GiB\n\
             PyTorch limit (set by user-supplied memory fraction)\n                        : 17179869184.00 GiB"
        );
    }
}
