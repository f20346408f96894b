//! The GPU as the daemon sees it: its identity, and samples of its memory and load.
//!
//! [`Gpu`] is the seam: [`Nvml`] reads the driver through NVML (`libnvidia-ml.so.1`, loaded at
//! run time, so the daemon builds and runs anywhere), [`Recorded`] replays samples for tests.
//! Without NVML (no driver, no GPU, CI) the daemon falls back to ComfyUI's `/system_stats`
//! figures ([`from_system_stats`]) and says so once.
//!
//! Sampling is the caller's business: the runner samples only while one of its prompts
//! executes, so an idle daemon costs nothing.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;

use crate::client::SystemStats;

/// Which GPU: `--gpu 1` or `--gpu GPU-8c0e…` (NVML's UUID, as `nvidia-smi -L` prints it).
///
/// An index is NVML's, which orders devices by PCI bus id; CUDA's default order (and so
/// ComfyUI's `--cuda-device`) can differ on machines with unlike GPUs unless
/// `CUDA_DEVICE_ORDER=PCI_BUS_ID` is set. A UUID is the same everywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Index(u32),
    Uuid(String),
}

impl Selector {
    /// Parses `--gpu`: a number, or a UUID starting with `GPU-` or `MIG-`.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let t = text.trim();
        if let Ok(i) = t.parse::<u32>() {
            return Ok(Selector::Index(i));
        }
        let lower = t.to_ascii_lowercase();
        let valid = (lower.starts_with("gpu-") || lower.starts_with("mig-"))
            && t.len() <= 96
            && t[4..].chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        if valid {
            Ok(Selector::Uuid(t.to_owned()))
        } else {
            Err(format!(
                "`{text}` is not a GPU: give its index (0, 1, ...) or its UUID (`GPU-...`, as `nvidia-smi -L` prints it)"
            ))
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Index(i) => write!(f, "{i}"),
            Selector::Uuid(u) => f.write_str(u),
        }
    }
}

/// Who the GPU is, read once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    pub index: u32,
    pub name: Option<String>,
    pub uuid: Option<String>,
    pub driver_version: Option<String>,
    /// The CUDA version the driver supports, `12.4`.
    pub cuda_version: Option<String>,
    pub total_bytes: Option<u64>,
}

/// One reading of the device's memory (every process on it) and load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub used: u64,
    pub free: u64,
    pub total: u64,
    /// Percent of time a kernel ran over the driver's last sample period.
    pub utilization: Option<u32>,
}

/// A source of GPU samples.
pub trait Gpu: Send + Sync + fmt::Debug {
    /// `nvml`, or what a test calls its recording.
    fn source(&self) -> &'static str;
    fn identity(&self) -> Identity;
    /// A fresh sample; none when the device stopped answering.
    fn sample(&self) -> Option<Sample>;
}

/// A GPU read through NVML.
pub struct Nvml {
    nvml: nvml_wrapper::Nvml,
    identity: Identity,
}

impl Nvml {
    /// Opens NVML and finds the device. The error says why in words ("no NVIDIA driver ...").
    pub fn open(selector: &Selector) -> Result<Nvml, String> {
        let nvml = nvml_wrapper::Nvml::init().map_err(|e| match e {
            nvml_wrapper::error::NvmlError::LibloadingError(_) => {
                "no NVIDIA driver here (libnvidia-ml.so.1 not found)".to_owned()
            }
            nvml_wrapper::error::NvmlError::DriverNotLoaded => {
                "the NVIDIA driver is not loaded".to_owned()
            }
            e => format!("NVML did not start: {e}"),
        })?;
        let identity = {
            let device = match selector {
                Selector::Index(i) => nvml.device_by_index(*i),
                Selector::Uuid(u) => nvml.device_by_uuid(u.as_str()),
            }
            .map_err(|e| {
                let count = nvml.device_count().unwrap_or(0);
                format!("GPU {selector} not found through NVML ({e}); this machine has {count}")
            })?;
            let cuda = nvml.sys_cuda_driver_version().ok().map(|v| {
                format!(
                    "{}.{}",
                    nvml_wrapper::cuda_driver_version_major(v),
                    nvml_wrapper::cuda_driver_version_minor(v)
                )
            });
            Identity {
                index: device.index().unwrap_or(match selector {
                    Selector::Index(i) => *i,
                    Selector::Uuid(_) => 0,
                }),
                name: device.name().ok(),
                uuid: device.uuid().ok(),
                driver_version: nvml.sys_driver_version().ok(),
                cuda_version: cuda,
                total_bytes: device.memory_info().ok().map(|m| m.total),
            }
        };
        Ok(Nvml { nvml, identity })
    }
}

impl fmt::Debug for Nvml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nvml")
            .field("identity", &self.identity)
            .finish()
    }
}

impl Gpu for Nvml {
    fn source(&self) -> &'static str {
        "nvml"
    }

    fn identity(&self) -> Identity {
        self.identity.clone()
    }

    fn sample(&self) -> Option<Sample> {
        // The handle is looked up per sample (a table lookup in the driver): a `Device`
        // borrows the library, and this keeps `Nvml` free of self-references.
        let device = self.nvml.device_by_index(self.identity.index).ok()?;
        let m = device.memory_info().ok()?;
        Some(Sample {
            used: m.used,
            free: m.free,
            total: m.total,
            utilization: device.utilization_rates().ok().map(|u| u.gpu),
        })
    }
}

/// Samples replayed in order (the last one repeats), for tests and benchmarks.
#[derive(Debug)]
pub struct Recorded {
    identity: Identity,
    samples: Mutex<VecDeque<Sample>>,
}

impl Recorded {
    pub fn new(identity: Identity, samples: impl IntoIterator<Item = Sample>) -> Self {
        Self {
            identity,
            samples: Mutex::new(samples.into_iter().collect()),
        }
    }
}

impl Gpu for Recorded {
    fn source(&self) -> &'static str {
        "recorded"
    }

    fn identity(&self) -> Identity {
        self.identity.clone()
    }

    fn sample(&self) -> Option<Sample> {
        let mut q = self.samples.lock().ok()?;
        if q.len() > 1 {
            q.pop_front()
        } else {
            q.front().copied()
        }
    }
}

/// The figures ComfyUI's `/system_stats` gives for the device, when it is a GPU: a CPU
/// "device" reports the machine's RAM, which says nothing about VRAM.
pub fn from_system_stats(stats: &SystemStats, index: u32) -> Option<Sample> {
    let dev = stats
        .devices
        .iter()
        .find(|d| d.index == Some(u64::from(index)))
        .or(stats.devices.first())?;
    if dev.kind == "cpu" || dev.vram_total == 0 {
        return None;
    }
    Some(Sample {
        used: dev.vram_total.saturating_sub(dev.vram_free),
        free: dev.vram_free,
        total: dev.vram_total,
        utilization: None,
    })
}

/// What was sampled while a job executed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peak {
    pub samples: u32,
    pub max_used: u64,
    pub util_sum: u64,
    pub util_samples: u32,
    pub max_util: u32,
}

impl Peak {
    pub fn add(&mut self, s: &Sample) {
        self.samples += 1;
        self.max_used = self.max_used.max(s.used);
        if let Some(u) = s.utilization {
            self.util_sum += u64::from(u);
            self.util_samples += 1;
            self.max_util = self.max_util.max(u);
        }
    }

    pub fn mean_util(&self) -> Option<u32> {
        (self.util_samples > 0).then(|| (self.util_sum / u64::from(self.util_samples)) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_indexes_or_uuids_and_anything_else_is_refused_with_help() {
        assert_eq!(Selector::parse("2"), Ok(Selector::Index(2)));
        assert_eq!(
            Selector::parse("GPU-8c0e3b1a-0000-4f5e-9d2c-1234567890ab"),
            Ok(Selector::Uuid(
                "GPU-8c0e3b1a-0000-4f5e-9d2c-1234567890ab".into()
            ))
        );
        assert!(matches!(
            Selector::parse("MIG-1f2e3d4c"),
            Ok(Selector::Uuid(_))
        ));
        for bad in ["", "-1", "gpu0", "GPU-zz", "cuda:0", "GPU-../x"] {
            let e = Selector::parse(bad).err().unwrap_or_default();
            assert!(e.contains("nvidia-smi -L"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_recording_replays_in_order_then_holds_its_last_sample() {
        let s = |used| Sample {
            used,
            free: 100 - used,
            total: 100,
            utilization: Some(used as u32),
        };
        let r = Recorded::new(Identity::default(), [s(10), s(60), s(30)]);
        let got: Vec<u64> = (0..5).filter_map(|_| r.sample()).map(|x| x.used).collect();
        assert_eq!(got, [10, 60, 30, 30, 30]);
        let mut p = Peak::default();
        for x in [s(10), s(60), s(30)] {
            p.add(&x);
        }
        assert_eq!((p.max_used, p.max_util, p.mean_util()), (60, 60, Some(33)));
    }

    #[test]
    fn system_stats_figures_count_only_for_a_gpu() {
        // The shape of a CPU ComfyUI's answer (shared/comfyui/system_stats.json).
        let cpu: SystemStats = serde_json::from_str(
            r#"{"system": {"os": "posix", "comfyui_version": "0.3.64"},
                "devices": [{"name": "cpu", "type": "cpu", "index": null,
                             "vram_total": 25276514304, "vram_free": 23782821888}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(from_system_stats(&cpu, 0), None);
        let mut gpu = cpu.clone();
        gpu.devices[0].kind = "cuda".into();
        gpu.devices[0].index = Some(0);
        gpu.devices[0].vram_total = 1000;
        gpu.devices[0].vram_free = 250;
        assert_eq!(
            from_system_stats(&gpu, 0),
            Some(Sample {
                used: 750,
                free: 250,
                total: 1000,
                utilization: None
            })
        );
    }
}
