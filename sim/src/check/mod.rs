//! Expectations of scenario checks, evaluated against traced outcomes.
//!
//! A check's flow is traced with every `statistic` branch (and every load
//! balancer choice) enumerated. A check passes only when every outcome with
//! a non-zero probability satisfies its expectation:
//! * `delivered`: the set of pods that receive it, each with some share;
//!   an outcome that reaches another pod fails, and so does an outcome that
//!   reaches no pod (a drop, a reject, no route, a closed port, a loop)
//!   unless the expectation allows one: `delivered: []`, a `dropped:` share,
//!   or a `verdict:` listing that verdict;
//! * `dropped`: the exact share of outcomes that reach no pod;
//! * `sourceSeen`: the source every receiving pod sees (`client`: the
//!   sender's own address);
//! * `reply`: whether every delivered outcome's reply gets home;
//! * `verdict`: the verdict (or one of the verdicts) of every outcome;
//! * `probability`: per pod, the total probability of reaching it. The
//!   kernel quantises `statistic` probabilities to multiples of 2^-31, so a
//!   written `1/3` matches within 1e-6;
//! * `masqueraded`: whether the source seen differs from the sender's;
//! * `snat`: whether a source NAT happened on the way (even one that kept
//!   the sender's address);
//! * `decidedBy`: the node whose nat table sent it to its endpoint;
//! * `httpStatus`: what the listener that took it answers, where kpsim
//!   models the listener (kube-proxy's health checks).

use crate::compile::{CompileError, Compiled};
use crate::prob::Probability;
use crate::scenario::{Check, SourceSeen};
use crate::trace::json::OutcomeSummary;
use crate::trace::{self, text, FlowResult, TraceError, Verdict};
use schemars::JsonSchema;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// A probability as a check writes it: `1/3`, `0.5`, `1`. Decimals are
/// read exactly (`0.5` is 1/2).
pub fn parse_probability(s: &str) -> Option<Probability> {
    let s = s.trim();
    if let Some((n, d)) = s.split_once('/') {
        let n: u64 = n.trim().parse().ok()?;
        let d: u64 = d.trim().parse().ok()?;
        return (d != 0 && n <= d).then(|| Probability::ratio(n, d));
    }
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 18 || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let int: u64 = int.parse().ok()?;
    let den = 10u64.checked_pow(frac.len() as u32)?;
    let f: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let num = int.checked_mul(den)?.checked_add(f)?;
    (num <= den).then(|| Probability::ratio(num, den))
}

/// How close a written probability must be to the kernel's.
pub const PROBABILITY_TOLERANCE: f64 = 1e-6;

/// The verdicts an outcome can have, as checks write them.
pub const VERDICTS: &[&str] = &[
    "delivered",
    "dropped",
    "rejected",
    "no-route",
    "closed-port",
    "loop",
];

/// The result of one check.
#[derive(Clone, Debug)]
pub struct CheckResult {
    pub scenario: String,
    pub check: String,
    pub passed: bool,
    /// Plain-words differences: "expected X, but Y".
    pub failures: Vec<String>,
    /// What happened, one line per outcome.
    pub summary: Vec<String>,
    /// Every outcome of the check's flow with its probability, for
    /// [`CheckResult::trace`].
    pub outcomes: Vec<(Probability, Vec<FlowResult>)>,
    /// Each outcome's result in brief, for the JSON report.
    pub summaries: Vec<(Probability, OutcomeSummary)>,
    pub label: text::FlowLabel,
}

impl CheckResult {
    /// The trace of the check's flow, at the given level of detail.
    pub fn trace(&self, c: &Compiled, detail: text::Detail) -> String {
        text::render(
            &c.cluster,
            std::slice::from_ref(&self.label),
            &self.outcomes,
            detail,
        )
    }
}

/// What all outcomes of a flow add up to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Pod → total probability of receiving it.
    pub delivered: BTreeMap<String, Probability>,
    /// Distinct sources seen by receiving pods.
    pub sources: BTreeSet<std::net::Ipv4Addr>,
    /// Distinct reply results of delivered outcomes.
    pub replies: BTreeSet<bool>,
    pub verdicts: BTreeSet<&'static str>,
    pub decided_by: BTreeSet<String>,
    /// Whether a source NAT happened, per delivered outcome.
    pub snat: BTreeSet<bool>,
    /// Outcomes that reach no pod, by verdict: their total probability and
    /// the reason of the first.
    pub lost: BTreeMap<Verdict, (Probability, String)>,
    pub client: std::net::Ipv4Addr,
    /// HTTP statuses the receiving listeners answer (kube-proxy's).
    pub http_status: BTreeSet<u16>,
}

pub fn observe(c: &Compiled, results: &[(Probability, Vec<FlowResult>)]) -> Observed {
    let mut o = Observed {
        delivered: BTreeMap::new(),
        sources: BTreeSet::new(),
        replies: BTreeSet::new(),
        verdicts: BTreeSet::new(),
        decided_by: BTreeSet::new(),
        http_status: BTreeSet::new(),
        snat: BTreeSet::new(),
        lost: BTreeMap::new(),
        client: results
            .first()
            .and_then(|(_, r)| r.last())
            .map(|r| r.sent.src)
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
    };
    for (p, flows) in results {
        let Some(r) = flows.last() else { continue };
        o.verdicts.insert(r.forward.verdict.as_str());
        if let Some(n) = r.decided_by() {
            o.decided_by.insert(c.cluster.host_name(n).to_string());
        }
        if let (Some(pod), Some(seen)) = (r.delivered_to(), r.seen()) {
            let e = o
                .delivered
                .entry(pod.to_string())
                .or_insert_with(Probability::zero);
            *e = &*e + p;
            o.sources.insert(seen.src);
            if let Some(a) = &r.forward.served {
                o.http_status.insert(a.status);
            }
            o.snat.insert(r.snat());
            if let Some(ok) = r.reply_ok {
                o.replies.insert(ok);
            }
        } else {
            let (total, _) = o
                .lost
                .entry(r.forward.verdict)
                .or_insert_with(|| (Probability::zero(), r.forward.reason.clone()));
            *total = &*total + p;
        }
    }
    o
}

/// "all outcomes", or "1/2 (0.5) of the outcomes".
fn share(p: &Probability) -> String {
    if p.is_one() {
        "all outcomes".into()
    } else {
        format!("{} of the outcomes", text::prob_text(p))
    }
}

fn set_text<T: std::fmt::Display>(s: impl IntoIterator<Item = T>) -> String {
    let v: Vec<String> = s.into_iter().map(|x| x.to_string()).collect();
    if v.is_empty() {
        "nothing".into()
    } else {
        v.join(", ")
    }
}

/// Compare one check's expectation with what was observed.
pub fn judge(check: &Check, o: &Observed) -> Vec<String> {
    let e = &check.expect;
    let mut fails = Vec::new();
    if let Some(want) = &e.delivered {
        let got: BTreeSet<String> = o.delivered.keys().cloned().collect();
        if &got != want {
            fails.push(format!(
                "expected it to be delivered to [{}], but it reaches [{}]",
                want.iter().cloned().collect::<Vec<_>>().join(", "),
                got.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    if let Some(want) = &e.source_seen {
        let want_addr = match want {
            SourceSeen::Client => o.client,
            SourceSeen::Addr(a) => *a,
        };
        let label = match want {
            SourceSeen::Client => format!("the client's own address {}", o.client),
            SourceSeen::Addr(a) => a.to_string(),
        };
        if o.sources.is_empty() {
            fails.push(format!(
                "expected the pod to see source {label}, but no pod receives it"
            ));
        } else if o.sources.iter().any(|s| *s != want_addr) {
            fails.push(format!(
                "expected the pod to see source {label}, but it sees {}{}",
                set_text(&o.sources),
                if o.sources.iter().all(|s| *s != o.client) {
                    " (the client address was masqueraded)"
                } else {
                    ""
                }
            ));
        }
    }
    if let Some(want) = e.reply_ok {
        let word = |b: bool| if b { "ok" } else { "broken" };
        if o.replies.is_empty() {
            fails.push(format!(
                "expected reply {}, but nothing was delivered to answer",
                word(want)
            ));
        } else if o.replies.iter().any(|r| *r != want) {
            fails.push(format!(
                "expected reply {}, but it is {}",
                word(want),
                set_text(o.replies.iter().map(|b| word(*b)))
            ));
        }
    }
    if let Some(want) = &e.verdict {
        if o.verdicts.iter().any(|v| !want.contains(*v)) {
            fails.push(format!(
                "expected verdict {}, but got {}",
                want.iter().cloned().collect::<Vec<_>>().join(" or "),
                set_text(&o.verdicts)
            ));
        }
    }
    lost_outcomes(e, o, &mut fails);
    for (pod, want) in &e.probability {
        let want_p = parse_probability(want).map_or(f64::NAN, |p| p.to_f64());
        let got = o.delivered.get(pod).map_or(0.0, |p| p.to_f64());
        if (want_p - got).abs() > PROBABILITY_TOLERANCE || want_p.is_nan() {
            fails.push(format!(
                "expected {pod} with probability {want}, but it is {got:.6}"
            ));
        }
    }
    if let Some(want) = e.masqueraded {
        let masq = o.sources.iter().any(|s| *s != o.client);
        if o.sources.is_empty() {
            fails.push("expected a masquerade verdict, but no pod receives it".into());
        } else if masq != want {
            fails.push(format!(
                "expected masqueraded: {want}, but the pod sees {}",
                set_text(&o.sources)
            ));
        }
    }
    if let Some(want) = e.http_status {
        if o.http_status.is_empty() || o.http_status.iter().any(|s| *s != want) {
            fails.push(format!(
                "expected an HTTP {want} answer, but {}",
                if o.http_status.is_empty() {
                    "no modelled listener answers it".to_string()
                } else {
                    format!("the answer is {}", set_text(&o.http_status))
                }
            ));
        }
    }
    if let Some(want) = e.snat {
        if o.snat.is_empty() {
            fails.push("expected a source NAT verdict, but no pod receives it".into());
        } else if o.snat.contains(&!want) {
            fails.push(format!(
                "expected snat: {want}, but {} on the way",
                if want {
                    "no source NAT happens"
                } else {
                    "a source NAT happens"
                }
            ));
        }
    }
    if let Some(want) = &e.decided_by {
        if !o.decided_by.contains(want) || o.decided_by.len() != 1 {
            fails.push(format!(
                "expected {want}'s rules to choose the endpoint, but it was {}",
                set_text(&o.decided_by)
            ));
        }
    }
    fails
}

/// Outcomes that reach no pod fail a check unless it allows them:
/// `delivered: []`, a `dropped:` share, or a `verdict:` naming theirs (the
/// verdict rule itself is judged above). A `dropped:` share must match.
fn lost_outcomes(e: &crate::scenario::Expectation, o: &Observed, fails: &mut Vec<String>) {
    let allowed = e.verdict.is_some()
        || e.delivered.as_ref().is_some_and(|d| d.is_empty())
        || e.dropped.is_some();
    // Nothing reached a pod that `delivered` names: its own failure says
    // so already, with where the traffic went instead.
    let said = e.delivered.as_ref().is_some_and(|d| !d.is_empty()) && o.delivered.is_empty();
    if !allowed && !said {
        for (verdict, (p, why)) in &o.lost {
            let ending = if *verdict == Verdict::Dropped {
                "are dropped".to_string()
            } else {
                format!("end {}", verdict.as_str())
            };
            fails.push(format!(
                "{} {ending} instead of reaching a pod ({why}); say `dropped: {}` if that is expected",
                share(p),
                p.exact_string()
            ));
        }
    }
    if let Some(want) = &e.dropped {
        let total = o
            .lost
            .values()
            .fold(Probability::zero(), |acc, (p, _)| &acc + p);
        let want_p = parse_probability(want).map_or(f64::NAN, |p| p.to_f64());
        if (want_p - total.to_f64()).abs() > PROBABILITY_TOLERANCE || want_p.is_nan() {
            fails.push(format!(
                "expected dropped: {want}, but {} reach no pod",
                if total.is_zero() {
                    "no outcomes".to_string()
                } else {
                    share(&total)
                }
            ));
        }
    }
}

/// Why a check could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Trace(#[from] TraceError),
}

/// Trace a check's flow and judge it.
pub fn run_check(c: &Compiled, check: &Check) -> Result<CheckResult, RunError> {
    let flow = c.flow(&check.from, &check.to, None, 0)?;
    let results = trace::trace(&c.cluster, std::slice::from_ref(&flow))?;
    let o = observe(c, &results);
    let failures = judge(check, &o);
    let summary = results
        .iter()
        .map(|(p, r)| {
            format!(
                "{} {}",
                text::prob_text(p),
                r.last()
                    .map(|r| text::summary_line(&c.cluster, r))
                    .unwrap_or_default()
            )
        })
        .collect();
    let summaries = results
        .iter()
        .filter_map(|(p, r)| Some((p.clone(), OutcomeSummary::of(&c.cluster, r.last()?))))
        .collect();
    Ok(CheckResult {
        scenario: c.scenario.name.clone(),
        check: check.name.clone(),
        passed: failures.is_empty(),
        failures,
        summary,
        outcomes: results,
        summaries,
        label: text::FlowLabel {
            from: check.from.clone(),
            to: check.to.clone(),
        },
    })
}

/// `kpsim check --format json`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct CheckReport {
    pub summary: ReportSummary,
    /// Every file looked at, in path order.
    pub files: Vec<FileReport>,
}

#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
pub struct ReportSummary {
    pub files: usize,
    pub checks: usize,
    pub passed: usize,
    pub failed: usize,
    /// Checks not run: they state another kube-proxy mode's behaviour.
    pub skipped: usize,
    /// Files that could not be read or run (bad input).
    pub errors: usize,
}

/// One file and what became of it.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct FileReport {
    pub file: String,
    pub status: FileStatus,
    /// The scenario's name, when it loaded.
    pub scenario: Option<String>,
    /// Why it could not be run (status `error`), every problem with its
    /// file, line and column.
    pub error: Option<String>,
    /// For an included file: the scenario that includes it.
    pub included_by: Option<String>,
    pub checks: Vec<CheckDoc>,
    /// Checks not run in this kube-proxy mode (`modes:`).
    pub skipped: Vec<SkippedCheck>,
}

/// A check that states another kube-proxy mode's behaviour, so it was not
/// run in this one.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct SkippedCheck {
    pub name: String,
    /// The modes it states (`iptables`, `nftables`).
    pub modes: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FileStatus {
    /// A scenario whose checks ran.
    Checked,
    /// Not a scenario itself: a file of objects a scenario of the run
    /// includes.
    Included,
    /// Could not be read or run.
    Error,
}

/// One check and its verdict.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct CheckDoc {
    pub name: String,
    pub from: String,
    pub to: String,
    pub passed: bool,
    /// What differs from the expectation, in plain words.
    pub failures: Vec<String>,
    /// Every outcome of the flow.
    pub outcomes: Vec<CheckOutcome>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct CheckOutcome {
    pub probability: f64,
    pub probability_exact: String,
    #[serde(flatten)]
    pub result: OutcomeSummary,
}

impl CheckDoc {
    pub fn of(check: &Check, r: &CheckResult) -> CheckDoc {
        CheckDoc {
            name: r.check.clone(),
            from: check.from.clone(),
            to: check.to.clone(),
            passed: r.passed,
            failures: r.failures.clone(),
            outcomes: r
                .summaries
                .iter()
                .map(|(p, o)| CheckOutcome {
                    probability: p.to_f64(),
                    probability_exact: p.exact_string(),
                    result: o.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_parse_exactly() {
        assert_eq!(parse_probability("1/3"), Some(Probability::ratio(1, 3)));
        assert_eq!(parse_probability("0.5"), Some(Probability::ratio(1, 2)));
        assert_eq!(parse_probability("1"), Some(Probability::one()));
        assert_eq!(parse_probability("1.5"), None);
        assert_eq!(parse_probability("x"), None);
        assert_eq!(parse_probability("2/1"), None);
    }
}
