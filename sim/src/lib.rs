//! kpsim: a deterministic Kubernetes dataplane simulator.
//!
//! The crate is layered; each layer knows only the ones below it:
//!
//! * [`prob`]: exact probabilities and the choice oracle that turns every
//!   random branch into an enumerable decision.
//! * [`wire`]: typed views over real packet bytes (IPv4, TCP, UDP, SCTP, ICMP,
//!   VXLAN), built with `pnet_packet`.
//! * [`netfilter`]: iptables rulesets (parse, print, evaluate) and the kernel's
//!   hook traversal, into which every rule language plugs as base chains.
//!   Knows nothing of Kubernetes.
//! * [`nftables`]: nftables rulesets (parse, print, evaluate) as a second
//!   rule language on the same hooks. Knows nothing of Kubernetes.
//! * [`conntrack`]: the connection-tracking table and NAT bindings.
//! * [`routing`]: interfaces, addresses, route tables, source-address choice.
//! * [`network`]: the model of a cluster's hosts and links (nodes, pods,
//!   externals, bridges, overlays), built from plain descriptions.
//! * [`proxier`]: what kube-proxy (iptables or nftables mode) writes for a
//!   set of Kubernetes objects.
//! * [`scenario`]: the scenario YAML contract: loading, validation, and the
//!   EndpointSlice controller's derivations.
//! * [`compile`]: a scenario into simulated hosts (network, rules, load
//!   balancer) and names into flows.
//! * [`trace`]: a packet's way across the simulated hosts and back.
//! * [`check`]: expectations from scenarios evaluated against traces.
//! * [`report`]: capacity what-if reports (counts from the compiler and
//!   engine, times from models calibrated on a real kernel).
//!
//! The `kpsim` binary (`src/main.rs`, `src/cli/`) is the only place that knows
//! about the command line.

pub mod check;
pub mod compile;
pub mod conntrack;
pub mod lab;
pub mod matrix;
pub mod netfilter;
pub mod network;
pub mod nftables;
pub mod prob;
pub mod proxier;
pub mod report;
pub mod routing;
pub mod scenario;
pub mod synth;
pub mod trace;
pub mod wire;

/// The machine-readable outputs, by the name `kpsim schema` takes.
pub const JSON_OUTPUTS: &[&str] = &["trace", "matrix", "matrix-modes", "check"];

/// The JSON Schema of a machine-readable output (`trace`, `matrix`,
/// `matrix-modes` for `matrix --mode A,B`, `check`), generated from the types that write it (as they serialise:
/// every field that is always written is required); `None` for another
/// name.
pub fn schema(output: &str) -> Option<schemars::Schema> {
    let generator = || {
        schemars::generate::SchemaSettings::draft2020_12()
            .for_serialize()
            .into_generator()
    };
    Some(match output {
        "trace" => generator().into_root_schema_for::<trace::json::TraceDocument>(),
        "matrix" => generator().into_root_schema_for::<matrix::MatrixDocument>(),
        "matrix-modes" => generator().into_root_schema_for::<matrix::ModeComparison>(),
        "check" => generator().into_root_schema_for::<check::CheckReport>(),
        _ => return None,
    })
}
