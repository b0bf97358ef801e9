//! Commands, arguments and exit codes.
//!
//! Exit codes: 0 success; 1 a check or expectation failed; 2 bad input
//! (the error says which file, line and column, and what was expected).

mod check;
mod config;
mod diff;
mod graph;
mod lab;
mod matrix;
mod report;
mod schema;
mod trace;

use clap::{Parser, Subcommand};
use kpsim::compile::{compile_owned, Compiled};
use kpsim::scenario::{Limits, ProxyMode, Scenario};
use std::collections::BTreeMap;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_BAD_INPUT: i32 = 2;

/// kpsim: what kube-proxy's rules do to a packet, without a cluster.
///
/// A scenario (nodes, pods, Kubernetes objects, kube-proxy settings) is
/// compiled into simulated nodes carrying the rules kube-proxy would write
/// (iptables or nftables mode); packets are traced hop by hop through
/// netfilter, conntrack and routing, and back. Every load-balancing branch
/// is enumerated with its exact probability.
#[derive(Parser, Debug)]
#[command(name = "kpsim", version, about, long_about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Raise (or lower) a limit of the YAML reader, which guards against
    /// alias bombs and absurd nesting: depth, nodes, scalar-bytes,
    /// documents, aliases, alias-expansion (repeatable, or comma-separated
    /// in KPSIM_YAML_LIMIT). The defaults fit 50,000 Services and 250,000
    /// pods as kubectl prints them.
    #[arg(
        long = "yaml-limit",
        global = true,
        env = "KPSIM_YAML_LIMIT",
        value_delimiter = ',',
        value_name = "NAME=N"
    )]
    yaml_limit: Vec<String>,
}

/// The YAML limits of this run (set once from `--yaml-limit`).
static LIMITS: OnceLock<Limits> = OnceLock::new();

/// The YAML limits of this run.
pub fn limits() -> &'static Limits {
    LIMITS.get_or_init(Limits::default)
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Trace one flow (and optionally more, sharing conntrack state) from a
    /// sender to a target: every host, hook, rule, NAT and route, then the
    /// reply, then what the pod saw.
    Trace(trace::TraceArgs),
    /// Every sender (externals, nodes, a pod on each node) against every
    /// service entry point: who receives it, which source they see, whether
    /// the reply gets home.
    Matrix(matrix::MatrixArgs),
    /// A node's ruleset as `iptables-save` prints it (loadable by
    /// `iptables-restore`), or in nftables mode as `nft list ruleset`
    /// prints kube-proxy's table (loadable by `nft -f`).
    Rules(RulesArgs),
    /// The KubeProxyConfiguration kube-proxy runs with (the scenario's
    /// settings, kube-proxy's defaults filled in) and each node's kernel
    /// settings (sysctls) with who sets them and why, to compare with a
    /// live node.
    Config(config::ConfigArgs),
    /// The topology, or a node's chain-jump graph, as Graphviz DOT.
    Graph(graph::GraphArgs),
    /// Run the `checks:` of every scenario under the given files or folders.
    Check(check::CheckArgs),
    /// Which flows change outcome between two scenarios (or two rule dumps).
    Diff(diff::DiffArgs),
    /// Rebuild scenarios out of real network namespaces (root only), load
    /// each node's generated rules with iptables-restore, open real
    /// connections for every check and matrix cell, and compare the
    /// kernel's outcome with kpsim's.
    ///
    /// Each flow is tried until every outcome kpsim calls possible should
    /// have shown (a miss by chance below one in a million); the kernel must
    /// do nothing kpsim calls impossible, and its frequencies must pass a
    /// chi-square test against kpsim's probabilities. Namespaces are named
    /// kpsim-lab-<pid>-... and removed afterwards, also on Ctrl-C; nothing
    /// is attached to the root namespace. Exit 0 when the kernel agrees
    /// everywhere, 1 on a disagreement. Where the machine cannot run it (not
    /// root, no iptables or conntrack tool) it prints SKIPPED and exits 0, or
    /// 1 with --require.
    Lab(lab::LabArgs),
    /// A capacity what-if report from a spec: rule and chain counts,
    /// iptables-restore bytes, first-packet work, conntrack and SNAT
    /// headroom, kube-proxy's metrics, per point, variant and node, with
    /// SVG charts and modelled times (report.md, figures.csv/json).
    Report(report::ReportArgs),
    /// Measure the time models on the real kernel (root, network
    /// namespaces): iptables-restore of kube-proxy inputs of several sizes
    /// and TCP connects through long KUBE-SERVICES chains.
    Calibrate(report::CalibrateArgs),
    /// Print the JSON Schema of a machine-readable output: `trace` (trace
    /// --format json), `matrix` (matrix --format json) or `check` (check
    /// --format json). Generated from the types that write the output.
    Schema(schema::SchemaArgs),
}

/// `--rules NODE=FILE`: replace a node's generated rules with a dump.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RulesOverride {
    /// Use an `iptables-save` dump taken from a live node instead of the
    /// generated rules (repeatable): `--rules node-a=node-a.rules`.
    #[arg(long = "rules", value_name = "NODE=FILE")]
    pub rules: Vec<String>,
    /// kube-proxy's mode, iptables or nftables, instead of the scenario's
    /// `kubeProxy.mode` (matrix takes two, comma separated, to compare).
    #[arg(long, value_name = "MODE")]
    pub mode: Option<String>,
}

#[derive(clap::Args, Debug)]
struct RulesArgs {
    /// The scenario file.
    scenario: PathBuf,
    /// The node whose rules to print.
    #[arg(long)]
    node: String,
    /// auto (nft list ruleset text for a node in nftables mode,
    /// iptables-save otherwise), iptables-save, or nft.
    #[arg(long, default_value = "auto", value_parser = ["auto", "iptables-save", "nft"])]
    format: String,
    #[command(flatten)]
    overrides: RulesOverride,
}

/// A failure that ends the command with an exit code and a message.
#[derive(Debug)]
pub struct Fail {
    pub code: i32,
    pub message: String,
}

impl Fail {
    pub fn input(message: impl Into<String>) -> Fail {
        Fail {
            code: EXIT_BAD_INPUT,
            message: message.into(),
        }
    }
}

pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    EXIT_OK
                }
                _ => EXIT_BAD_INPUT,
            };
        }
    };
    let mut limits = Limits::default();
    for l in &cli.yaml_limit {
        if let Err(e) = limits.set_from(l) {
            eprintln!("{e}");
            return EXIT_BAD_INPUT;
        }
    }
    let _ = LIMITS.set(limits);
    let result = match cli.command {
        Command::Trace(a) => trace::run(a),
        Command::Matrix(a) => matrix::run(a),
        Command::Rules(a) => rules(a),
        Command::Config(a) => config::run(a),
        Command::Graph(a) => graph::run(a),
        Command::Check(a) => check::run(a),
        Command::Diff(a) => diff::run(a),
        Command::Lab(a) => lab::run(a),
        Command::Report(a) => report::run(a),
        Command::Calibrate(a) => report::calibrate(a),
        Command::Schema(a) => schema::run(a),
    };
    match result {
        Ok(code) => code,
        Err(f) => {
            eprintln!("{}", f.message);
            f.code
        }
    }
}

/// Load a scenario, printing warnings to stderr; errors rendered with
/// source spans.
pub fn load(path: &Path) -> Result<Scenario, Fail> {
    match Scenario::load_with(path, limits()) {
        Ok(l) => {
            for w in &l.warnings {
                eprintln!("{}", w.render(path));
            }
            let mut s = l.scenario;
            s.path = path.to_path_buf();
            Ok(s)
        }
        Err(e) => Err(Fail::input(e.render())),
    }
}

/// Read `--rules NODE=FILE` arguments.
pub fn overrides(o: &RulesOverride) -> Result<BTreeMap<String, (String, String)>, Fail> {
    let mut map = BTreeMap::new();
    for r in &o.rules {
        let (node, file) = r
            .split_once('=')
            .ok_or_else(|| Fail::input(format!("--rules {r:?}: expected NODE=FILE")))?;
        let text = std::fs::read_to_string(file)
            .map_err(|e| Fail::input(format!("--rules {node}={file}: cannot read: {e}")))?;
        map.insert(node.to_string(), (file.to_string(), text));
    }
    Ok(map)
}

/// The modes `--mode` names (none: the scenario's own).
pub fn modes(mode: Option<&str>) -> Result<Vec<ProxyMode>, Fail> {
    let Some(m) = mode else {
        return Ok(Vec::new());
    };
    m.split(',')
        .map(|x| {
            ProxyMode::parse(x.trim())
                .ok_or_else(|| Fail::input(format!("--mode {x:?}: expected iptables or nftables")))
        })
        .collect()
}

/// The one mode `--mode` names, if any.
pub fn single_mode(mode: Option<&str>) -> Result<Option<ProxyMode>, Fail> {
    let m = modes(mode)?;
    if m.len() > 1 {
        return Err(Fail::input(
            "--mode takes one mode here (matrix compares two)",
        ));
    }
    Ok(m.first().copied())
}

/// Load and compile (in `--mode`'s mode, if given).
pub fn compiled(path: &Path, o: &RulesOverride) -> Result<ManuallyDrop<Compiled>, Fail> {
    compiled_in(path, o, single_mode(o.mode.as_deref())?)
}

/// Load and compile in `mode` (the scenario's own when `None`). A
/// `--rules` dump without a single rule is accepted (a node may have
/// none), but said aloud: it is more often the wrong file.
///
/// The compilation is never dropped: a command uses it until the process
/// exits, and freeing a large cluster's rules one allocation at a time
/// would cost a good part of what building them did, for nothing.
pub fn compiled_in(
    path: &Path,
    o: &RulesOverride,
    mode: Option<ProxyMode>,
) -> Result<ManuallyDrop<Compiled>, Fail> {
    // The dumps are read while the scenario is: a node's dump is tens of
    // megabytes, read and checked as UTF-8 by one thread.
    let (s, ov) = rayon::join(|| load(path), || overrides(o));
    let mut s = s?;
    if let Some(m) = mode {
        s.kube_proxy.mode = m;
    }
    let ov = ov?;
    let c = compile_owned(s, &ov).map_err(|e| Fail::input(format!("{}: {e}", path.display())))?;
    for (i, node) in c.scenario.nodes.iter().enumerate() {
        let Some((file, _)) = ov.get(&node.name) else {
            continue;
        };
        let no_iptables = c
            .rules(i)
            .tables
            .iter()
            .all(|t| t.chains.iter().all(|ch| ch.rules.is_empty()));
        let no_nft = c.nft_rules(i).is_none_or(|rs| {
            rs.tables
                .iter()
                .all(|t| t.opaque.is_none() && t.chains.iter().all(|ch| ch.rules.is_empty()))
        });
        if no_iptables && no_nft {
            eprintln!(
                "warning: --rules {}={file}: the dump holds no rules at all; {} is traced as a host without netfilter rules",
                node.name, node.name
            );
        }
    }
    Ok(ManuallyDrop::new(c))
}

/// The position of node `name` in the scenario, or a bad-input failure
/// listing the nodes.
pub fn node_index(s: &Scenario, name: &str) -> Result<usize, Fail> {
    s.nodes.iter().position(|n| n.name == name).ok_or_else(|| {
        Fail::input(format!(
            "--node {name}: no such node (nodes: {})",
            s.nodes
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

fn rules(a: RulesArgs) -> Result<i32, Fail> {
    let c = compiled(&a.scenario, &a.overrides)?;
    let i = node_index(&c.scenario, &a.node)?;
    let nft = c.nft_rules(i);
    match (a.format.as_str(), nft) {
        ("nft", None) => {
            return Err(Fail::input(format!(
                "--format nft: node {} has no nftables rules (kube-proxy in iptables mode)",
                a.node
            )))
        }
        ("nft" | "auto", Some(rs)) => print!("{}", rs.to_nft()),
        _ => print!("{}", c.rules(i).to_iptables_save()),
    }
    Ok(EXIT_OK)
}

/// Write to a file or stdout.
pub fn emit(output: Option<&Path>, bytes: &[u8]) -> Result<(), Fail> {
    use std::io::Write;
    match output {
        Some(p) => std::fs::write(p, bytes)
            .map_err(|e| Fail::input(format!("{}: cannot write: {e}", p.display()))),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)
                .map_err(|e| Fail::input(format!("cannot write to stdout: {e}")))
        }
    }
}
