//! Kernel outcomes against kpsim's predictions, for one flow.
//!
//! kpsim predicts a distribution over outcomes; the kernel gives samples.
//! They agree when every sample is an outcome kpsim calls possible, every
//! outcome kpsim calls possible was seen (the number of tries is chosen so
//! that missing one by chance is below one in a million), and the sample
//! frequencies pass a chi-square test against the predicted probabilities
//! at a significance of 1e-4 (loose on purpose: it catches a wrong
//! probability, not sampling noise).

use super::agent::ClientResult;
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

/// How the client's attempt ended, in the classes both sides can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ending {
    /// The pod's answer came home.
    Answered,
    /// Refused (reset or port unreachable).
    Refused,
    /// Nothing usable came back: a drop, an unreachable, a broken reply.
    Silent,
}

/// One outcome, comparable across kpsim and the kernel.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Outcome {
    /// The pod that received the request, and the source it saw.
    pub reached: Option<(String, Ipv4Addr)>,
    pub ending: Ending,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reached {
            Some((pod, src)) => write!(f, "{pod} sees {src}")?,
            None => f.write_str("no pod")?,
        }
        let e = match self.ending {
            Ending::Answered => "reply ok",
            Ending::Refused => "refused",
            Ending::Silent => "no answer",
        };
        write!(f, ", {e}")
    }
}

/// The outcomes of one try: a single connection, or a sequence of
/// connections from the same client (session affinity shows in the second).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Outcomes(pub Vec<Outcome>);

impl fmt::Display for Outcomes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, o) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; then ")?;
            }
            write!(f, "{o}")?;
        }
        Ok(())
    }
}

/// What the kernel did on one try.
pub fn kernel_outcome(reached: Option<(String, Ipv4Addr)>, client: &ClientResult) -> Outcome {
    let ending = match client {
        ClientResult::Answered(_) => Ending::Answered,
        ClientResult::Refused => Ending::Refused,
        ClientResult::Unreachable | ClientResult::Timeout | ClientResult::Error(_) => {
            Ending::Silent
        }
    };
    Outcome { reached, ending }
}

/// Tries needed so that an outcome of probability `p_min` among `k` is
/// missed with probability below 1e-6.
pub fn tries_needed(p_min: f64, k: usize) -> usize {
    if k <= 1 || p_min >= 1.0 {
        return 1;
    }
    let n = (1e-6 / k as f64).ln() / (1.0 - p_min).ln();
    (n.ceil() as usize).clamp(1, 400)
}

/// Critical chi-square values at significance 1e-4, by degrees of freedom.
const CHI2_1E4: [f64; 10] = [
    15.14, 18.42, 21.11, 23.51, 25.74, 27.86, 29.88, 31.83, 33.72, 35.56,
];

/// The verdict on one flow.
#[derive(Clone, Debug, PartialEq)]
pub struct Agreement {
    pub tries: usize,
    /// Empty when the kernel agrees.
    pub problems: Vec<String>,
    /// Kernel counts per outcome.
    pub seen: BTreeMap<Outcomes, usize>,
}

/// Compare kernel samples with kpsim's distribution (probabilities as
/// f64, summing to 1). `silent_or_refused` outcomes: a broken reply may end
/// either way in the kernel (a reset or a timeout), so it matches both.
pub fn judge(predicted: &BTreeMap<Outcomes, f64>, samples: &[Outcomes]) -> Agreement {
    let mut seen: BTreeMap<Outcomes, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    for s in samples {
        let key = match_prediction(predicted, s).unwrap_or_else(|| s.clone());
        *seen.entry(key).or_default() += 1;
    }
    for (o, n) in &seen {
        if !predicted.contains_key(o) {
            problems.push(format!(
                "the kernel did what kpsim calls impossible: {o} ({n} of {})",
                samples.len()
            ));
        }
    }
    for (o, p) in predicted {
        if *p > 0.0 && !seen.contains_key(o) && samples.len() >= tries_needed(*p, predicted.len()) {
            problems.push(format!(
                "kpsim predicts {o} with probability {p:.4}, the kernel never did in {} tries",
                samples.len()
            ));
        }
    }
    if problems.is_empty() && predicted.len() > 1 {
        let n = samples.len() as f64;
        let chi2: f64 = predicted
            .iter()
            .map(|(o, p)| {
                let expected = p * n;
                let got = *seen.get(o).unwrap_or(&0) as f64;
                (got - expected).powi(2) / expected
            })
            .sum();
        let df = predicted.len() - 1;
        let critical = CHI2_1E4[(df - 1).min(CHI2_1E4.len() - 1)];
        if chi2 > critical {
            problems.push(format!(
                "frequencies differ from kpsim's probabilities: chi-square {chi2:.1} > {critical} ({df} degrees of freedom)"
            ));
        }
    }
    Agreement {
        tries: samples.len(),
        problems,
        seen,
    }
}

/// A broken reply shows in the kernel as a refusal or as silence: each
/// step of a sample may stand for either.
fn match_prediction(predicted: &BTreeMap<Outcomes, f64>, s: &Outcomes) -> Option<Outcomes> {
    let mut candidates: Vec<Vec<Outcome>> = vec![Vec::new()];
    for o in &s.0 {
        let mut alternatives = vec![o.clone()];
        if o.reached.is_some() && o.ending == Ending::Refused {
            alternatives.push(Outcome {
                reached: o.reached.clone(),
                ending: Ending::Silent,
            });
        }
        candidates = candidates
            .into_iter()
            .flat_map(|prefix| {
                alternatives.iter().map(move |a| {
                    let mut v = prefix.clone();
                    v.push(a.clone());
                    v
                })
            })
            .collect();
    }
    candidates
        .into_iter()
        .map(Outcomes)
        .find(|c| predicted.contains_key(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(pod: &str, src: &str, ending: Ending) -> Outcomes {
        Outcomes(vec![Outcome {
            reached: Some((pod.into(), src.parse().unwrap())),
            ending,
        }])
    }

    fn thirds() -> BTreeMap<Outcomes, f64> {
        ["a", "b", "c"]
            .iter()
            .map(|p| (o(p, "10.0.0.1", Ending::Answered), 1.0 / 3.0))
            .collect()
    }

    #[test]
    fn tries_cover_rare_outcomes() {
        assert_eq!(tries_needed(1.0, 1), 1);
        let n = tries_needed(1.0 / 3.0, 3);
        assert!((2.0f64 / 3.0).powi(n as i32) * 3.0 < 1e-6);
        assert!((2.0f64 / 3.0).powi(n as i32 - 1) * 3.0 >= 1e-6);
    }

    #[test]
    fn even_samples_agree() {
        let p = thirds();
        let keys: Vec<Outcomes> = p.keys().cloned().collect();
        let samples: Vec<Outcomes> = (0..36).map(|i| keys[i % 3].clone()).collect();
        assert_eq!(judge(&p, &samples).problems, Vec::<String>::new());
    }

    #[test]
    fn an_impossible_outcome_a_missing_one_and_a_skew_are_each_reported() {
        let p = thirds();
        let keys: Vec<Outcomes> = p.keys().cloned().collect();
        let mut samples: Vec<Outcomes> = (0..36).map(|i| keys[i % 3].clone()).collect();
        samples[0] = o("d", "10.0.0.1", Ending::Answered);
        let a = judge(&p, &samples);
        assert!(
            a.problems[0].contains("impossible: d sees 10.0.0.1"),
            "{a:?}"
        );
        let only_two: Vec<Outcomes> = (0..40).map(|i| keys[i % 2].clone()).collect();
        let a = judge(&p, &only_two);
        assert!(a.problems[0].contains("never did in 40 tries"), "{a:?}");
        let skewed: Vec<Outcomes> = (0..300)
            .map(|i| {
                keys[if i % 10 == 0 {
                    1
                } else if i % 10 == 1 {
                    2
                } else {
                    0
                }]
                .clone()
            })
            .collect();
        let a = judge(&p, &skewed);
        assert!(a.problems[0].contains("chi-square"), "{a:?}");
    }

    #[test]
    fn a_broken_reply_may_be_refused_or_silent() {
        let p: BTreeMap<Outcomes, f64> = [(o("a", "10.0.0.1", Ending::Silent), 1.0)].into();
        let a = judge(&p, &[o("a", "10.0.0.1", Ending::Refused)]);
        assert!(a.problems.is_empty(), "{a:?}");
    }

    #[test]
    fn sequences_match_step_by_step() {
        let pair = |a: &str, b: &str| {
            let mut v = o(a, "10.0.0.1", Ending::Answered).0;
            v.extend(o(b, "10.0.0.1", Ending::Answered).0);
            Outcomes(v)
        };
        let p: BTreeMap<Outcomes, f64> = [(pair("a", "a"), 0.5), (pair("b", "b"), 0.5)].into();
        let sticky: Vec<Outcomes> = (0..30)
            .map(|i| {
                if i % 2 == 0 {
                    pair("a", "a")
                } else {
                    pair("b", "b")
                }
            })
            .collect();
        assert!(judge(&p, &sticky).problems.is_empty());
        let mut loose = sticky.clone();
        loose[3] = pair("b", "a");
        let a = judge(&p, &loose);
        assert!(
            a.problems[0].contains("impossible: b sees 10.0.0.1, reply ok; then a sees"),
            "{a:?}"
        );
    }
}
