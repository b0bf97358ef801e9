//! `kpsim report` and `kpsim calibrate`: thin layers over
//! [`kpsim::report`].

use super::{Fail, EXIT_FAILED, EXIT_OK};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kpsim::report::{self, calibrate, render, spec::Spec, Progress};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The report spec (`reports/NAME/spec.yaml`).
    spec: PathBuf,
    /// Where to write report.md, charts/, figures.csv, figures.json,
    /// metrics/ and timings.md (created if missing).
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct CalibrateArgs {
    /// Where to write the calibration (JSON).
    #[arg(long)]
    out: PathBuf,
    /// Restores per size and connects per position (fewer: faster, noisier).
    #[arg(long)]
    repetitions: Option<usize>,
    /// Small sizes and few repetitions: checks that calibration works here
    /// in seconds (the constants are too noisy to keep).
    #[arg(long)]
    quick: bool,
    /// Keep the full-sync model of an earlier calibration file taken on
    /// this same machine and measure the connect model only.
    #[arg(long, value_name = "FILE")]
    reuse_restore: Option<PathBuf>,
}

/// A bar on stderr; indicatif draws nothing when stderr is not a
/// terminal.
struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, total: usize) {
        self.0.set_length(total as u64);
    }
    fn done(&self, what: &str) {
        self.0.set_message(what.to_string());
        self.0.inc(1);
    }
}

pub fn run(a: ReportArgs) -> Result<i32, Fail> {
    let spec = Spec::load(&a.spec).map_err(|e| Fail::input(e.render()))?;
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} points  {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let r = report::run(&spec, &Bar(bar.clone())).map_err(|e| Fail {
        code: match e {
            report::ReportError::Calibration(_) | report::ReportError::Shape { .. } => {
                super::EXIT_BAD_INPUT
            }
            _ => EXIT_FAILED,
        },
        message: format!("{}: {e}", a.spec.display()),
    })?;
    bar.finish_and_clear();
    render::write_all(&r, &a.out).map_err(|e| Fail {
        code: EXIT_FAILED,
        message: format!("{}: {e}", a.out.display()),
    })?;
    eprintln!(
        "{}: {} results in {:.1} s (peak memory {}) → {}",
        spec.name,
        r.results.len(),
        r.run.seconds,
        r.run
            .peak_rss_bytes
            .map_or("unknown".into(), |b| format!("{} MiB", b / (1 << 20))),
        a.out.display()
    );
    Ok(EXIT_OK)
}

pub fn calibrate(a: CalibrateArgs) -> Result<i32, Fail> {
    let mut plan = if a.quick {
        calibrate::Plan::quick()
    } else {
        calibrate::Plan::default()
    };
    if let Some(n) = a.repetitions {
        plan.restore_repetitions = n.max(1);
        plan.connect_repetitions = n.max(1);
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let earlier = a
        .reuse_restore
        .as_deref()
        .map(kpsim::report::model::Calibration::load)
        .transpose()
        .map_err(|e| Fail::input(e.to_string()))?;
    let c = calibrate::calibrate(&plan, &command, earlier.as_ref(), &|what| {
        eprintln!("measuring {what}")
    })
    .map_err(|e| Fail {
        code: EXIT_FAILED,
        message: format!("calibrate: {e}"),
    })?;
    let mut text = serde_json::to_string_pretty(&c).expect("serialisable");
    text.push('\n');
    super::emit(Some(&a.out), text.as_bytes())?;
    for (what, line) in [("full sync", &c.restore), ("first connect", &c.connect)] {
        for (s, e) in line.held_out.iter().zip(line.held_out_errors()) {
            eprintln!(
                "{what}: held out {}: measured {:.6} s, model {:.6} s ({:+.1}%)",
                s.label,
                s.seconds,
                line.predict(s.x),
                e * 100.0
            );
        }
    }
    eprintln!("{}\n{}", c.restore_formula(), c.connect_formula());
    Ok(EXIT_OK)
}
