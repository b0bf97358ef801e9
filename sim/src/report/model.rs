//! Time models: what the counts cost on a real kernel. Counts are exact;
//! times are not — they are straight lines fitted to measurements taken
//! by `kpsim calibrate` on a real kernel, stored with where they were
//! taken (kernel, iptables, CPU) and how well they predicted a
//! measurement left out of the fit.
//!
//! * full sync: `seconds = a + b × bytes` of the `iptables-restore` input;
//! * first packet: `seconds = c + d × rules tried` for a TCP connect.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where and how a calibration was measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// `uname -r`.
    pub kernel: String,
    /// `iptables --version`.
    pub iptables: String,
    /// `/proc/cpuinfo` model name.
    pub cpu: String,
    /// CPUs online.
    pub cpus: usize,
    /// The command that produced the file.
    pub command: String,
}

/// One measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// What was measured (`services=5000` or `position 2500 of 10000`).
    pub label: String,
    /// The model's input (bytes or rules).
    pub x: f64,
    /// Median seconds over the repetitions.
    pub seconds: f64,
    pub repetitions: usize,
}

/// A straight line fitted to samples, and its test on a held-out one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Line {
    /// What x is (`bytes`, `rules`).
    pub x: String,
    pub intercept: f64,
    pub slope: f64,
    pub fitted: Vec<Sample>,
    pub held_out: Vec<Sample>,
}

impl Line {
    pub fn predict(&self, x: f64) -> f64 {
        self.intercept + self.slope * x
    }

    /// Least squares through the samples.
    pub fn fit(x: &str, fitted: Vec<Sample>, held_out: Vec<Sample>) -> Line {
        let n = fitted.len() as f64;
        let mx = fitted.iter().map(|s| s.x).sum::<f64>() / n;
        let my = fitted.iter().map(|s| s.seconds).sum::<f64>() / n;
        let sxy: f64 = fitted.iter().map(|s| (s.x - mx) * (s.seconds - my)).sum();
        let sxx: f64 = fitted.iter().map(|s| (s.x - mx).powi(2)).sum();
        let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        Line {
            x: x.to_string(),
            intercept: my - slope * mx,
            slope,
            fitted,
            held_out,
        }
    }

    /// Relative error of the prediction on each held-out sample.
    pub fn held_out_errors(&self) -> Vec<f64> {
        self.held_out
            .iter()
            .map(|s| (self.predict(s.x) - s.seconds) / s.seconds)
            .collect()
    }
}

/// A calibration file (`reports/calibration.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub provenance: Provenance,
    /// Full sync: seconds of `iptables-restore --noflush` replacing a
    /// node's kube-proxy rules, against bytes of input.
    pub restore: Line,
    /// First packet: seconds of a TCP connect through the node's rules,
    /// against rules tried (counted by kpsim's engine for the same flow).
    pub connect: Line,
}

#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    #[error("{path}: cannot read the calibration: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: not a calibration file: {message}")]
    Format {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

impl Calibration {
    pub fn load(path: &Path) -> Result<Calibration, CalibrationError> {
        let text = std::fs::read_to_string(path).map_err(|source| CalibrationError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| CalibrationError::Format {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
    }

    /// One line saying where the constants come from, for chart captions.
    pub fn source(&self) -> String {
        format!(
            "calibrated on Linux {}, {}, {} ({} CPUs)",
            self.provenance.kernel,
            self.provenance.iptables,
            self.provenance.cpu,
            self.provenance.cpus
        )
    }

    /// The sync model with its constants, in words.
    pub fn restore_formula(&self) -> String {
        format!(
            "t_sync = {:.3} ms + {:.3} µs/KiB × restore bytes",
            self.restore.intercept * 1e3,
            self.restore.slope * 1024.0 * 1e6
        )
    }

    /// The first-packet model with its constants, in words.
    pub fn connect_formula(&self) -> String {
        format!(
            "t_connect = {:.1} µs + {:.2} ns/rule × rules tried",
            self.connect.intercept * 1e6,
            self.connect.slope * 1e9
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: f64, y: f64) -> Sample {
        Sample {
            label: String::new(),
            x,
            seconds: y,
            repetitions: 1,
        }
    }

    #[test]
    fn a_line_through_exact_points_predicts_the_held_out_one() {
        let l = Line::fit(
            "bytes",
            vec![s(0.0, 1.0), s(10.0, 3.0), s(20.0, 5.0)],
            vec![s(30.0, 7.7)],
        );
        assert!((l.slope - 0.2).abs() < 1e-12 && (l.intercept - 1.0).abs() < 1e-12);
        let e = l.held_out_errors();
        assert!((e[0] - (7.0 - 7.7) / 7.7).abs() < 1e-12);
    }
}
