//! `--device cpu|cuda|cuda:N`.

use std::fmt;
use std::str::FromStr;

use crate::error::EngineError;

/// The device a worker runs its model on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    /// An NVIDIA GPU by its index (`CUDA_VISIBLE_DEVICES` applies).
    Cuda { ordinal: usize },
}

impl FromStr for DeviceSpec {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| EngineError::BadDevice {
            value: s.to_string(),
            reason: reason.to_string(),
        };
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda { ordinal: 0 }),
            other => match other.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map(|ordinal| DeviceSpec::Cuda { ordinal })
                    .map_err(|_| bad("the GPU index after `cuda:` must be a number")),
                None => Err(bad("unknown device kind")),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda { ordinal } => write!(f, "cuda:{ordinal}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print_back() {
        for (text, want) in [
            ("cpu", DeviceSpec::Cpu),
            ("CUDA", DeviceSpec::Cuda { ordinal: 0 }),
            ("cuda:3", DeviceSpec::Cuda { ordinal: 3 }),
        ] {
            let got: DeviceSpec = text.parse().unwrap();
            assert_eq!(got, want);
            assert_eq!(got.to_string().parse::<DeviceSpec>().unwrap(), want);
        }
        let err = "cuda:x".parse::<DeviceSpec>().unwrap_err().to_string();
        assert!(
            err.contains("\"cuda:x\"") && err.contains("cuda:N"),
            "{err}"
        );
        let err = "tpu".parse::<DeviceSpec>().unwrap_err().to_string();
        assert!(err.contains("unknown device kind"), "{err}");
    }
}
