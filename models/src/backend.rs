//! Backend choice: burn's Flex CPU backend by default; CUDA (burn-cuda) behind
//! the `cuda` feature, used only when a driver is found at run time.

/// The CPU backend with autodiff, what every analysis runs on by default.
pub type Cpu = burn::backend::Autodiff<burn::backend::Flex>;

/// The CUDA backend with autodiff.
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Autodiff<burn::backend::Cuda>;

/// Which device the user asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DevicePref {
    /// CUDA when built with it and a driver is present, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA, or an error when unavailable.
    Cuda,
}

impl std::str::FromStr for DevicePref {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda),
            other => Err(format!("unknown device `{other}`; expected auto, cpu or cuda")),
        }
    }
}

/// Whether a CUDA driver library can be found, looked up the way cudarc does
/// (by name through the loader's search path), without touching the GPU.
pub fn cuda_driver_present() -> bool {
    let dirs = ["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/nvidia/lib64", "/usr/local/cuda/lib64", "/usr/lib/wsl/lib"];
    let mut candidates: Vec<std::path::PathBuf> = dirs.iter().map(std::path::PathBuf::from).collect();
    if let Ok(ld) = std::env::var("LD_LIBRARY_PATH") {
        candidates.extend(ld.split(':').filter(|s| !s.is_empty()).map(std::path::PathBuf::from));
    }
    candidates.iter().any(|d| {
        std::fs::read_dir(d)
            .map(|it| it.flatten().any(|e| e.file_name().to_string_lossy().starts_with("libcuda.so")))
            .unwrap_or(false)
    })
}

/// Whether this build has the CUDA backend.
pub const fn cuda_built() -> bool {
    cfg!(feature = "cuda")
}
