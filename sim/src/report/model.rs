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

/// The shape of a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    /// `seconds = intercept + slope × x`.
    Linear,
    /// `seconds = intercept × x^slope` (a straight line in log–log;
    /// for costs that grow faster than their input, like
    /// `iptables-restore` with the nf_tables backend).
    Power,
}

/// A line fitted to samples, and its test on samples it never saw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Line {
    /// What x is (`bytes`, `rules`).
    pub x: String,
    pub form: Form,
    pub intercept: f64,
    pub slope: f64,
    pub fitted: Vec<Sample>,
    pub held_out: Vec<Sample>,
}

/// Least squares of y on x: (intercept, slope).
fn least_squares(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (my - slope * mx, slope)
}

impl Line {
    pub fn predict(&self, x: f64) -> f64 {
        match self.form {
            Form::Linear => self.intercept + self.slope * x,
            Form::Power => self.intercept * x.max(1.0).powf(self.slope),
        }
    }

    /// Fit the samples (least squares; in log–log for [`Form::Power`]).
    pub fn fit(x: &str, form: Form, fitted: Vec<Sample>, held_out: Vec<Sample>) -> Line {
        let (intercept, slope) = match form {
            Form::Linear => {
                least_squares(&fitted.iter().map(|s| (s.x, s.seconds)).collect::<Vec<_>>())
            }
            Form::Power => {
                let (a, k) = least_squares(
                    &fitted
                        .iter()
                        .map(|s| (s.x.max(1.0).ln(), s.seconds.max(1e-12).ln()))
                        .collect::<Vec<_>>(),
                );
                (a.exp(), k)
            }
        };
        Line {
            x: x.to_string(),
            form,
            intercept,
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
        formula(
            "t_sync",
            &self.restore,
            "restore bytes",
            (1 << 20) as f64,
            "MiB",
        )
    }

    /// The first-packet model with its constants, in words.
    pub fn connect_formula(&self) -> String {
        formula(
            "t_connect",
            &self.connect,
            "rules tried",
            1000.0,
            "1000 rules",
        )
    }
}

/// A model in words: linear as `a + b per unit × x`, power as
/// `c × (x / unit)^k` with `c` the time at one unit.
fn formula(t: &str, l: &Line, x: &str, unit: f64, unit_name: &str) -> String {
    let time = |s: f64| {
        if s.abs() >= 1.0 {
            format!("{s:.3} s")
        } else if s.abs() >= 1e-3 {
            format!("{:.3} ms", s * 1e3)
        } else {
            format!("{:.3} µs", s * 1e6)
        }
    };
    match l.form {
        Form::Linear => format!(
            "{t} = {} + {} per {unit_name} × {x}",
            time(l.intercept),
            time(l.slope * unit)
        ),
        Form::Power => format!(
            "{t} = {} × ({x} / {unit_name})^{:.3}",
            time(l.intercept * unit.powf(l.slope)),
            l.slope
        ),
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
            Form::Linear,
            vec![s(0.0, 1.0), s(10.0, 3.0), s(20.0, 5.0)],
            vec![s(30.0, 7.7)],
        );
        assert!((l.slope - 0.2).abs() < 1e-12 && (l.intercept - 1.0).abs() < 1e-12);
        let e = l.held_out_errors();
        assert!((e[0] - (7.0 - 7.7) / 7.7).abs() < 1e-12);
    }

    #[test]
    fn a_power_law_is_a_line_in_log_log() {
        let l = Line::fit(
            "bytes",
            Form::Power,
            vec![s(10.0, 2.0), s(100.0, 200.0), s(1000.0, 20000.0)],
            vec![],
        );
        assert!((l.slope - 2.0).abs() < 1e-9 && (l.intercept - 0.02).abs() < 1e-9);
        assert!((l.predict(50.0) - 50.0).abs() < 1e-6);
    }
}
