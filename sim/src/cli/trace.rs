//! `kpsim trace`.

use super::{compiled, emit, Fail, RulesOverride, EXIT_OK};
use kpsim::trace::{self, json, pcapng, text};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct TraceArgs {
    /// The scenario file.
    scenario: PathBuf,
    /// The sender: a pod, node or external by name, or one of their
    /// addresses.
    #[arg(long)]
    from: String,
    /// The target: NAME:PORT, IP:PORT or service/NS/NAME:PORT, optionally
    /// with /tcp, /udp or /sctp (default tcp).
    #[arg(long)]
    to: String,
    /// The protocol, when not given in --to.
    #[arg(long, value_parser = ["tcp", "udp", "sctp"])]
    proto: Option<String>,
    /// The sender's source port (default 40000; later flows count up).
    #[arg(long)]
    sport: Option<u16>,
    /// More flows after the first, sharing conntrack and session-affinity
    /// state: `--then TO` (same sender) or `--then FROM=TO`; flow i is sent
    /// at i seconds.
    #[arg(long, value_name = "[FROM=]TO")]
    then: Vec<String>,
    /// Output: a story (text), the machine-readable form (json), or every
    /// packet on every host interface it crossed, with a comment saying
    /// what happened there (pcapng, needs --output; `pcap` is accepted as
    /// another name for it).
    #[arg(long, default_value = "text", value_parser = ["text", "json", "pcapng", "pcap"])]
    format: String,
    /// How much of the story to tell (text): one line per host with what
    /// changed and load-balancing as a tree (minimal), the hooks that did
    /// something with their deciding rules (summary), or every hook, table,
    /// rule, route and conntrack step (full).
    #[arg(long, default_value = "full", value_parser = ["minimal", "summary", "full"])]
    detail: String,
    /// Write the output to this file instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Follow one path drawn from a seeded generator instead of enumerating
    /// every load-balancing branch.
    #[arg(long)]
    seed: Option<u64>,
    /// Also show the rules that did not match and why (walks chains
    /// linearly).
    #[arg(long)]
    explain_misses: bool,
    #[command(flatten)]
    overrides: RulesOverride,
}

pub fn run(a: TraceArgs) -> Result<i32, Fail> {
    let detail: text::Detail = a.detail.parse().map_err(Fail::input)?;
    let mut c = compiled(&a.scenario, &a.overrides)?;
    c.cluster.opts.explain_misses = a.explain_misses;
    let with_proto = |to: &str| match &a.proto {
        Some(p) if !to.ends_with("/tcp") && !to.ends_with("/udp") && !to.ends_with("/sctp") => {
            format!("{to}/{p}")
        }
        _ => to.to_string(),
    };
    let mut pairs = vec![(a.from.clone(), with_proto(&a.to))];
    for t in &a.then {
        match t.split_once('=') {
            Some((f, to)) => pairs.push((f.to_string(), with_proto(to))),
            None => pairs.push((a.from.clone(), with_proto(t))),
        }
    }
    let mut flows = Vec::new();
    for (i, (from, to)) in pairs.iter().enumerate() {
        let sport = a.sport.map(|p| p.wrapping_add(i as u16));
        let f = c
            .flow(from, to, sport, i as u64)
            .map_err(|e| Fail::input(format!("{}: {e}", a.scenario.display())))?;
        flows.push(f);
    }
    let results = match a.seed {
        None => trace::trace(&c.cluster, &flows),
        Some(seed) => trace::trace_seeded(&c.cluster, &flows, seed)
            .map(|r| vec![(kpsim::prob::Probability::one(), r)]),
    }
    .map_err(|e| Fail::input(format!("{}: {e}", a.scenario.display())))?;
    let labels: Vec<text::FlowLabel> = pairs
        .iter()
        .map(|(f, t)| text::FlowLabel {
            from: f.clone(),
            to: t.clone(),
        })
        .collect();
    let mut notes = String::new();
    for n in &c.notes {
        notes.push_str(&format!("note: {}: {}\n", n.service, n.note));
    }
    match a.format.as_str() {
        "json" => {
            let doc = json::render(&c.cluster, &labels, &results);
            let s = serde_json::to_string_pretty(&doc).expect("the trace serialises") + "\n";
            emit(a.output.as_deref(), s.as_bytes())?;
        }
        "pcapng" | "pcap" => {
            let Some(out) = a.output.as_deref() else {
                return Err(Fail::input(format!(
                    "--format {} needs --output FILE",
                    a.format
                )));
            };
            emit(Some(out), &pcapng::write(&c.cluster, &results))?;
        }
        _ => {
            let s = notes + &text::render(&c.cluster, &labels, &results, detail);
            emit(a.output.as_deref(), s.as_bytes())?;
        }
    }
    Ok(EXIT_OK)
}
