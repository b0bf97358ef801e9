//! The scenario contract (`scenario-format.md`): loading, validation, and
//! what the EndpointSlice controller would derive.
//!
//! Loading reads the YAML with `serde-saphyr` (a maintained serde YAML
//! library that replaces the archived `serde_yaml`), keeping the location of
//! every value; Kubernetes objects (`objects:` and `include:`) are read into
//! k8s-openapi types. Validation collects every problem it finds and reports
//! them together, each with line and column.
//!
//! Deterministic allocation (documented in the format notes):
//! * pod IPs: the node's pod CIDR from `.2` upward (`.1` is `cni0`), in pod
//!   declaration order, skipping addresses already taken;
//! * cluster IPs: the service CIDR from its 10th address upward, services
//!   in (namespace, name) order, skipping taken ones;
//! * node ports and health-check node ports: one pool, from the bottom of
//!   `portRange` (30000) upward, in the same order, each service's node
//!   ports before its health-check node port (`allocation`).

mod allocation;
pub mod endpoints;
pub mod error;
mod flow_pods;
mod kube;
pub mod kubeproxy;
mod pieces;
mod plain_objects;
mod raw;
pub mod target;
mod validation;
pub mod yaml;

pub use error::{Loc, Problem, ScenarioError, Warning};
pub use target::{Entry, FlowTarget, PortRef};
pub use yaml::{FieldPath, Limits};

use crate::network::Overlay;
use crate::proxier::startup::ConntrackConfig;
use foldhash::fast::FixedState;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use raw::*;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Display;
use std::hash::Hash;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// How LoadBalancer and external IP traffic reaches nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LbDelivery {
    Direct,
    NodePort,
}

/// Which nodes the load balancer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbNodes {
    All,
    /// Nodes whose health check passes: with a local endpoint under
    /// `externalTrafficPolicy: Local`, every node otherwise.
    Healthy,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadBalancerSpec {
    pub delivery: LbDelivery,
    pub nodes: LbNodes,
    pub address: Ipv4Addr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSpec {
    pub cluster_cidr: Ipv4Net,
    pub service_cidr: Ipv4Net,
    pub network: Overlay,
    pub load_balancer: LoadBalancerSpec,
}

/// `detectLocalMode`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DetectLocalMode {
    ClusterCidr,
    NodeCidr,
    BridgeInterface,
    InterfaceNamePrefix,
}

/// kube-proxy's `mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProxyMode {
    Iptables,
    Nftables,
}

impl ProxyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Iptables => "iptables",
            ProxyMode::Nftables => "nftables",
        }
    }

    pub fn parse(s: &str) -> Option<ProxyMode> {
        match s {
            "iptables" => Some(ProxyMode::Iptables),
            "nftables" => Some(ProxyMode::Nftables),
            _ => None,
        }
    }
}

/// The modelled part of KubeProxyConfiguration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeProxy {
    /// `mode` (default iptables).
    pub mode: ProxyMode,
    pub detect_local_mode: DetectLocalMode,
    pub bridge_interface: String,
    pub interface_name_prefix: String,
    /// kube-proxy's `clusterCIDR` (defaults to `cluster.clusterCIDR`, as
    /// kubeadm configures it); `None` when the configuration sets it to
    /// `""`: kube-proxy then has no local-traffic detector in
    /// `ClusterCIDR` mode.
    pub cluster_cidr: Option<Ipv4Net>,
    /// `masqueradeAll` (iptables mode: `iptables.masqueradeAll` too).
    pub masquerade_all: bool,
    /// `iptables.masqueradeBit`.
    pub masquerade_bit: u32,
    /// nftables mode's `masqueradeAll` (`nftables.masqueradeAll` too).
    pub nftables_masquerade_all: bool,
    /// `nftables.masqueradeBit`.
    pub nftables_masquerade_bit: u32,
    pub node_port_addresses: Vec<Ipv4Net>,
    /// `nodePortAddresses: [primary]`.
    pub node_port_primary: bool,
    pub localhost_node_ports: bool,
    /// `conntrack`: the settings kube-proxy writes at start.
    pub conntrack: ConntrackConfig,
    /// `healthzBindAddress`: the address (`None`: every address) and port
    /// of kube-proxy's own `/healthz`.
    pub healthz: (Option<Ipv4Addr>, u16),
    pub port_range: (u16, u16),
    /// Real fields that were given but do not change the rules.
    pub ignored: Vec<String>,
}

/// kube-proxy's `/healthz` port (`ports.ProxyHealthzPort`).
pub const HEALTHZ_PORT: u16 = 10256;

impl KubeProxy {
    /// kube-proxy's defaults (v1.34) for a cluster whose pods live in
    /// `cluster_cidr`; the scenario's `kubeProxy:` overrides them.
    pub fn defaults(cluster_cidr: Ipv4Net) -> KubeProxy {
        KubeProxy {
            mode: ProxyMode::Iptables,
            detect_local_mode: DetectLocalMode::ClusterCidr,
            bridge_interface: "cni0".into(),
            interface_name_prefix: "veth".into(),
            cluster_cidr: Some(cluster_cidr),
            masquerade_all: false,
            masquerade_bit: 14,
            nftables_masquerade_all: false,
            nftables_masquerade_bit: 14,
            node_port_addresses: Vec::new(),
            node_port_primary: false,
            localhost_node_ports: true,
            conntrack: ConntrackConfig::default(),
            healthz: (None, HEALTHZ_PORT),
            port_range: (30000, 32767),
            ignored: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeDef {
    pub name: String,
    /// The InternalIP: `eth0`'s first address.
    pub address: Ipv4Addr,
    /// Its other addresses, on `eth0` too.
    pub extra_addresses: Vec<Ipv4Addr>,
    pub pod_cidr: Ipv4Net,
    pub zone: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// CPU count, when known (`nodes[].cpus`, `status.capacity.cpu`).
    pub cpus: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalDef {
    pub name: String,
    pub address: Ipv4Addr,
    /// `routes:` (prefix, the node address it goes via), beyond the node
    /// addresses every external reaches.
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
}

/// A container port: (name, port, protocol upper case).
pub type ContainerPort = (Option<String>, u16, String);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodDef {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    pub ip: Ipv4Addr,
    pub ready: bool,
    pub terminating: bool,
    pub host_network: bool,
    pub ports: Vec<ContainerPort>,
}

/// `sourceSeen:` of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSeen {
    /// The sender's own address.
    Client,
    Addr(Ipv4Addr),
}

/// What a check expects; every field optional.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expectation {
    pub delivered: Option<BTreeSet<String>>,
    pub source_seen: Option<SourceSeen>,
    /// `Some(true)` for `ok`, `Some(false)` for `broken`.
    pub reply_ok: Option<bool>,
    /// The verdicts every outcome must have one of: delivered, dropped,
    /// rejected, no-route, closed-port, loop.
    pub verdict: Option<BTreeSet<String>>,
    /// Pod → probability (as written: `1/3`, `0.5`, `1`).
    pub probability: BTreeMap<String, String>,
    /// The share of outcomes that reach no pod (as written).
    pub dropped: Option<String>,
    pub masqueraded: Option<bool>,
    /// Whether a source NAT happened on the way.
    pub snat: Option<bool>,
    pub decided_by: Option<String>,
    /// The HTTP status a modelled listener answers (kube-proxy's health
    /// checks).
    pub http_status: Option<u16>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub name: String,
    pub from: String,
    pub to: String,
    pub target: FlowTarget,
    /// The kube-proxy modes whose behaviour the check states (`modes:`);
    /// empty: every mode. In another mode the check is skipped, not run:
    /// it describes what that mode does not do (localhost node ports,
    /// `iptables.masqueradeAll`).
    pub modes: Vec<ProxyMode>,
    pub expect: Expectation,
    pub loc: Loc,
}

impl Check {
    /// Whether the check states behaviour of kube-proxy in `mode`.
    pub fn applies_in(&self, mode: ProxyMode) -> bool {
        self.modes.is_empty() || self.modes.contains(&mode)
    }
}

/// A loaded, validated scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub path: PathBuf,
    pub name: String,
    pub description: String,
    pub cluster: ClusterSpec,
    pub kube_proxy: KubeProxy,
    pub nodes: Vec<NodeDef>,
    pub externals: Vec<ExternalDef>,
    pub pods: Vec<PodDef>,
    /// Services with cluster IPs and node ports allocated, in (namespace,
    /// name) order.
    pub services: Vec<Service>,
    /// Explicit EndpointSlices, then derived ones, in (namespace, name)
    /// order.
    pub slices: Vec<EndpointSlice>,
    pub checks: Vec<Check>,
}

/// A scenario and what was worth saying while loading it.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub scenario: Scenario,
    pub warnings: Vec<Warning>,
    /// The files it included (objects and kube-proxy configuration).
    pub included: Vec<PathBuf>,
}

/// Where something in a scenario came from: a file (0: the scenario, then
/// included files in the order read), a document of it, the path from the
/// document's root, and its place when already known (else looked up from
/// the path, only when a problem needs it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    pub file: usize,
    pub doc: usize,
    pub path: FieldPath,
    pub loc: Option<Loc>,
}

impl Origin {
    /// A place in the scenario file itself.
    fn at(loc: Loc) -> Origin {
        Origin {
            file: 0,
            doc: 0,
            path: FieldPath::default(),
            loc: Some(loc),
        }
    }
}

/// Collected problems of one scenario and the files it read.
pub(crate) struct Problems {
    list: Vec<Problem>,
    warnings: Vec<Warning>,
    /// Problems at a field of an object, placed once loading is done.
    at_fields: Vec<(Origin, FieldPath, String)>,
    /// Warnings at an object whose place is still to be looked up.
    warn_fields: Vec<(Origin, String)>,
    /// Every file read: (path, text); 0 is the scenario.
    files: Vec<(PathBuf, String)>,
    /// The file that spanned values (`S<T>`) being checked come from.
    current: usize,
    pub limits: Limits,
}

impl Problems {
    fn new(path: &Path, text: &str, limits: &Limits) -> Problems {
        Problems {
            list: Vec::new(),
            warnings: Vec::new(),
            at_fields: Vec::new(),
            warn_fields: Vec::new(),
            files: vec![(path.to_path_buf(), text.to_string())],
            current: 0,
            limits: limits.clone(),
        }
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty() && self.at_fields.is_empty()
    }

    /// Remember an included file; its id for [`Origin::file`].
    pub(crate) fn add_file(&mut self, path: PathBuf, text: String) -> usize {
        self.files.push((path, text));
        self.files.len() - 1
    }

    fn file_name(&self, file: usize) -> Option<PathBuf> {
        (file != 0).then(|| self.files[file].0.clone())
    }

    fn err<T>(&mut self, s: &S<T>, message: impl Into<String>) {
        self.at(&loc(s), message);
    }

    fn at(&mut self, loc: &Loc, message: impl Into<String>) {
        self.at_file(self.current, loc, message);
    }

    /// A problem at a place in file `file`.
    pub(crate) fn at_file(&mut self, file: usize, loc: &Loc, message: impl Into<String>) {
        self.list.push(Problem {
            file: self.file_name(file),
            loc: loc.clone(),
            message: message.into(),
        });
    }

    /// A problem about a whole object (or a scenario entry).
    pub(crate) fn at_origin(&mut self, o: &Origin, message: impl Into<String>) {
        self.field(o, &FieldPath::default(), message);
    }

    /// A problem at a field of an object, `path` relative to the object.
    pub(crate) fn field(&mut self, o: &Origin, path: &FieldPath, message: impl Into<String>) {
        match (&o.loc, path.0.is_empty()) {
            (Some(l), true) => {
                let l = l.clone();
                self.at_file(o.file, &l, message);
            }
            _ => self
                .at_fields
                .push((o.clone(), path.clone(), message.into())),
        }
    }

    /// A warning about an object.
    pub(crate) fn warn_at(&mut self, o: &Origin, message: impl Into<String>) {
        match &o.loc {
            Some(l) => self.warnings.push(Warning {
                file: self.file_name(o.file),
                loc: Some(l.clone()),
                message: message.into(),
            }),
            None => self.warn_fields.push((o.clone(), message.into())),
        }
    }

    /// Give every problem and warning still waiting its place: each file
    /// with such problems is read once more as a light tree of keys.
    fn place(&mut self) {
        let mut by_file: BTreeMap<usize, Vec<(usize, FieldPath, Option<Loc>)>> = BTreeMap::new();
        let pending: Vec<(Origin, FieldPath)> = self
            .at_fields
            .iter()
            .map(|(o, f, _)| (o.clone(), f.clone()))
            .chain(
                self.warn_fields
                    .iter()
                    .map(|(o, _)| (o.clone(), FieldPath::default())),
            )
            .collect();
        for (o, f) in &pending {
            by_file
                .entry(o.file)
                .or_default()
                .push((o.doc, o.path.join(f), o.loc.clone()));
        }
        let mut placed: BTreeMap<(usize, usize, FieldPath), Loc> = BTreeMap::new();
        for (file, wanted) in by_file {
            let locator = yaml::Locator::new(&self.files[file].1, &self.limits);
            for (doc, path, fallback) in wanted {
                let l = locator
                    .as_ref()
                    .and_then(|l| l.find(doc, &path))
                    .or(fallback)
                    .unwrap_or_default();
                placed.insert((file, doc, path), l);
            }
        }
        let at = |o: &Origin, f: &FieldPath| {
            placed
                .get(&(o.file, o.doc, o.path.join(f)))
                .cloned()
                .unwrap_or_default()
        };
        for (o, f, message) in std::mem::take(&mut self.at_fields) {
            let l = at(&o, &f);
            self.at_file(o.file, &l, message);
        }
        for (o, message) in std::mem::take(&mut self.warn_fields) {
            let l = at(&o, &FieldPath::default());
            self.warnings.push(Warning {
                file: self.file_name(o.file),
                loc: Some(l),
                message,
            });
        }
    }
}

fn loc<T>(s: &S<T>) -> Loc {
    Loc::from_location(&s.referenced)
}

/// Turn a serde-saphyr error into ours, with its location: a breached
/// limit in words, a field of a Kubernetes object with its path, an unknown
/// key with the known one it probably meant.
pub(crate) fn syntax_error(
    path: &Path,
    text: &str,
    e: &serde_saphyr::Error,
    limits: &Limits,
) -> ScenarioError {
    let l = e.location();
    let (line, column, offset, len) = match &l {
        Some(l) if l.line() > 0 => {
            let x = Loc::from_location(l);
            (x.line, x.column, x.offset, x.len)
        }
        _ => (1, 1, 0, 1),
    };
    let failed = kube::take_failure();
    let message = match (limits.explain(e), e.without_snippet()) {
        (Some(words), _) => words,
        (None, serde_saphyr::Error::DuplicateMappingKey { key, .. }) => {
            let key = key.clone().unwrap_or_default();
            match failed {
                Some((kind, at)) => {
                    format!("{kind}: duplicate field \"{}\"", at.key(&key))
                }
                None => format!("duplicate key `{key}`"),
            }
        }
        (
            None,
            serde_saphyr::Error::SerdeUnknownField {
                field, expected, ..
            },
        ) => {
            let mut m = format!("unknown field `{field}`, expected one of {}", {
                expected
                    .iter()
                    .map(|x| format!("`{x}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            if let Some(near) = yaml::did_you_mean(field, expected.iter().copied()) {
                m.push_str(&format!("; did you mean `{near}`?"));
            }
            match failed {
                Some((kind, at)) => format!("{kind}: \"{at}\": {m}"),
                None => m,
            }
        }
        (None, _) => {
            let m = bare_message(e);
            match failed {
                Some((kind, at)) if !at.0.is_empty() => format!("{kind}: \"{at}\": {m}"),
                Some((kind, _)) => format!("{kind}: {m}"),
                None => m,
            }
        }
    };
    ScenarioError::Syntax {
        path: path.to_path_buf(),
        line,
        column,
        message,
        source_text: text.to_string(),
        offset: offset.min(text.len()),
        len,
    }
}

/// serde-saphyr's message without snippet, location prefix or suffix
/// (ours says it already).
fn bare_message(e: &serde_saphyr::Error) -> String {
    let full = e.without_snippet().to_string();
    let mut message = full.lines().next().unwrap_or("").trim().to_string();
    for prefix in ["error: ", "Error: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            message = rest.to_string();
        }
    }
    if let Some(rest) = message.strip_prefix("line ") {
        if let Some((_, after)) = rest.split_once(": ") {
            message = after.to_string();
        }
    }
    if let Some(i) = message.rfind(" at line ") {
        message.truncate(i);
    }
    message
}

impl Scenario {
    /// Load and validate a scenario file, with the default YAML limits.
    pub fn load(path: &Path) -> Result<Loaded, ScenarioError> {
        Scenario::load_with(path, &Limits::default())
    }

    /// Load and validate a scenario file.
    pub fn load_with(path: &Path, limits: &Limits) -> Result<Loaded, ScenarioError> {
        let bytes = std::fs::read(path).map_err(|source| ScenarioError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| ScenarioError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            ),
        })?;
        Scenario::from_str_with(&text, path, limits)
    }

    /// Load from text; `path` names the file in errors and anchors
    /// `include:` paths.
    pub fn from_str(text: &str, path: &Path) -> Result<Loaded, ScenarioError> {
        Scenario::from_str_with(text, path, &Limits::default())
    }

    /// [`Scenario::from_str`] with the given YAML limits.
    pub fn from_str_with(
        text: &str,
        path: &Path,
        limits: &Limits,
    ) -> Result<Loaded, ScenarioError> {
        kube::take_failure();
        let mut raw: RawScenario =
            pieces::read(text, limits).map_err(|e| syntax_error(path, text, &e, limits))?;
        let mut p = Problems::new(path, text, limits);
        let base = path.parent().unwrap_or(Path::new("."));
        let objects = kube::collect_objects(&mut raw, base, path, &mut p)?;
        let built = build(raw, objects, path, &mut p);
        p.place();
        if !p.is_empty() {
            p.list.sort_by(|a, b| {
                (a.file.is_some(), &a.file, a.loc.line, a.loc.column).cmp(&(
                    b.file.is_some(),
                    &b.file,
                    b.loc.line,
                    b.loc.column,
                ))
            });
            p.list.dedup();
            let included = p
                .files
                .iter()
                .skip(1)
                .filter(|(f, _)| p.list.iter().any(|x| x.file.as_ref() == Some(f)))
                .cloned()
                .collect();
            return Err(ScenarioError::Invalid {
                path: path.to_path_buf(),
                problems: p.list,
                source_text: text.to_string(),
                included,
            });
        }
        Ok(Loaded {
            scenario: built.expect("no problems means a scenario"),
            warnings: p.warnings,
            included: p.files.into_iter().skip(1).map(|(f, _)| f).collect(),
        })
    }

    pub fn node(&self, name: &str) -> Option<&NodeDef> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn pod(&self, name: &str) -> Option<&PodDef> {
        self.pods.iter().find(|p| p.name == name)
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| {
            s.metadata.namespace.as_deref().unwrap_or("default") == namespace
                && s.metadata.name.as_deref() == Some(name)
        })
    }

    /// A service by bare name (any namespace, first in order).
    pub fn service_named(&self, name: &str) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
    }

    /// What `to:` targets can name in this scenario.
    pub fn targets(&self) -> target::Scope<'_> {
        target::Scope {
            nodes: &self.nodes,
            externals: &self.externals,
            pods: &self.pods,
            services: &self.services,
        }
    }
}

fn parse_net(p: &mut Problems, s: &S<String>, what: &str) -> Option<Ipv4Net> {
    match s.value.trim().parse::<Ipv4Net>() {
        Ok(n) => Some(n.trunc()),
        Err(_) => {
            p.err(
                s,
                format!(
                    "{what}: expected an IPv4 prefix like 10.244.0.0/16, got {:?}",
                    s.value
                ),
            );
            None
        }
    }
}

fn parse_addr(p: &mut Problems, s: &S<String>, what: &str) -> Option<Ipv4Addr> {
    match s.value.trim().parse::<Ipv4Addr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.err(
                s,
                format!("{what}: expected an IPv4 address, got {:?}", s.value),
            );
            None
        }
    }
}

fn build(
    mut raw: RawScenario,
    objects: kube::Objects,
    _path: &Path,
    p: &mut Problems,
) -> Option<Scenario> {
    let cluster_cidr = parse_net(p, &raw.cluster.cluster_cidr, "clusterCIDR");
    let service_cidr = parse_net(p, &raw.cluster.service_cidr, "serviceCIDR");
    let network = match raw.cluster.network.as_ref().map(|n| n.value.as_str()) {
        None | Some("routed") => Overlay::Routed,
        Some("vxlan") => Overlay::Vxlan,
        Some(other) => {
            let n = raw.cluster.network.as_ref().expect("some");
            p.err(
                n,
                format!("network: expected routed or vxlan, got {other:?}"),
            );
            Overlay::Routed
        }
    };
    let lb = load_balancer(p, raw.cluster.load_balancer.as_ref());
    let (kp_raw, kp_origin) = match (&objects.kube_proxy, &raw.kube_proxy) {
        (Some((k, o)), _) => (Some(k), Some(o.clone())),
        (None, Some(k)) => (Some(&k.value), Some(Origin::at(loc(k)))),
        (None, None) => (None, None),
    };
    let kp = kube_proxy(p, kp_raw, kp_origin, cluster_cidr);

    // Nodes: the scenario's, then Node objects.
    let mut nodes = Vec::new();
    let mut node_locs = Vec::new();
    for n in &raw.nodes {
        let (Some(address), Some(pod_cidr)) = (
            parse_addr(p, &n.address, "address"),
            parse_net(p, &n.pod_cidr, "podCIDR"),
        ) else {
            continue;
        };
        let mut labels = n.labels.clone();
        if let Some(z) = &n.zone {
            labels.insert("topology.kubernetes.io/zone".into(), z.clone());
        }
        let extra_addresses = n
            .extra_addresses
            .iter()
            .filter_map(|a| parse_addr(p, a, "extraAddresses"))
            .collect();
        let cpus = n.cpus.as_ref().and_then(|c| match u32::try_from(c.value) {
            Ok(v) if v > 0 => Some(v),
            _ => {
                p.err(
                    c,
                    format!("cpus: expected a positive number, got {}", c.value),
                );
                None
            }
        });
        nodes.push(NodeDef {
            name: n.name.value.clone(),
            address,
            extra_addresses,
            pod_cidr,
            zone: n.zone.clone(),
            labels,
            cpus,
        });
        node_locs.push(Origin::at(loc(&n.name)));
    }
    for (n, l) in objects.nodes {
        nodes.push(n);
        node_locs.push(l);
    }
    check_unique(
        p,
        nodes.iter().map(|n| n.name.as_str()).zip(node_locs.iter()),
        "node name",
    );
    check_unique(
        p,
        nodes.iter().map(|n| n.address).zip(node_locs.iter()),
        "node address",
    );
    if let Some(cc) = cluster_cidr {
        for (n, l) in nodes.iter().zip(&node_locs) {
            if !cc.contains(&n.pod_cidr) {
                p.at_origin(
                    l,
                    format!(
                        "node {}: podCIDR {} is outside clusterCIDR {cc}",
                        n.name, n.pod_cidr
                    ),
                );
            }
        }
    }
    for (i, a) in nodes.iter().enumerate() {
        for b in &nodes[i + 1..] {
            if a.pod_cidr.contains(&b.pod_cidr.network())
                || b.pod_cidr.contains(&a.pod_cidr.network())
            {
                p.at_origin(
                    &node_locs[i],
                    format!(
                        "podCIDR {} of {} overlaps podCIDR {} of {}",
                        a.pod_cidr, a.name, b.pod_cidr, b.name
                    ),
                );
            }
        }
    }

    let mut externals = Vec::new();
    let mut ext_locs = Vec::new();
    for e in &raw.externals {
        if let Some(address) = parse_addr(p, &e.address, "address") {
            externals.push(ExternalDef {
                name: e.name.value.clone(),
                address,
                routes: external_routes(p, &e.routes, &nodes),
            });
            ext_locs.push(Origin::at(loc(&e.name)));
        }
    }
    check_unique(
        p,
        externals
            .iter()
            .map(|e| e.name.as_str())
            .zip(ext_locs.iter()),
        "external name",
    );

    if let (Some(cc), Some(sc)) = (cluster_cidr, service_cidr) {
        let nodes_at: Vec<_> = nodes.iter().zip(&node_locs).collect();
        let externals_at: Vec<_> = externals.iter().zip(&ext_locs).collect();
        validation::networks(
            p,
            cc,
            (sc, &Origin::at(loc(&raw.cluster.service_cidr))),
            &nodes_at,
            &externals_at,
            &lb,
        );
    }

    let pods = pods(p, std::mem::take(&mut raw.pods), objects.pods, &nodes);
    let mut located = objects.services;
    allocate_services(p, &mut located, service_cidr, &kp);
    let explicit: Vec<EndpointSlice> = objects.slices.into_iter().map(|(s, _)| s).collect();
    let derived = endpoints::derive(&located, &explicit, &pods, p);
    let services: Vec<Service> = located.into_iter().map(|(s, _)| s).collect();
    let mut derived = derived;
    let node_at = nodes_by_name(&nodes);
    endpoints::set_zones(&mut derived, |n| {
        node_at.get(n).and_then(|&x| nodes[x].zone.clone())
    });
    endpoints::set_hints(&mut derived, &services);
    let mut slices = explicit;
    slices.extend(derived);
    slices.sort_by(|a, b| {
        (a.metadata.namespace.as_deref(), a.metadata.name.as_deref())
            .cmp(&(b.metadata.namespace.as_deref(), b.metadata.name.as_deref()))
    });

    // Every address must be unique across hosts.
    let mut owners: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    for n in &nodes {
        owners.insert(n.address, format!("node {}", n.name));
    }
    for (e, l) in externals.iter().zip(&ext_locs) {
        if let Some(o) = owners.insert(e.address, format!("external {}", e.name)) {
            p.at_origin(
                l,
                format!(
                    "address {} of external {} is already used by {o}",
                    e.address, e.name
                ),
            );
        }
    }

    let checks = checks(p, &raw.checks, &nodes, &externals, &pods, &services);
    let scenario = Scenario {
        path: PathBuf::new(),
        name: raw.scenario.value.clone(),
        description: raw.description.clone().unwrap_or_default(),
        cluster: ClusterSpec {
            cluster_cidr: cluster_cidr?,
            service_cidr: service_cidr?,
            network,
            load_balancer: lb,
        },
        kube_proxy: kp,
        nodes,
        externals,
        pods,
        services,
        slices,
        checks,
    };
    Some(scenario)
}

/// The nodes' names, for "known: ..." in errors.
fn node_names(nodes: &[NodeDef]) -> String {
    nodes
        .iter()
        .map(|n| n.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An external's `routes:`: a prefix via a node (by name or address).
fn external_routes(
    p: &mut Problems,
    raw: &[RawRoute],
    nodes: &[NodeDef],
) -> Vec<(Ipv4Net, Ipv4Addr)> {
    let mut out = Vec::new();
    for r in raw {
        let Some(dst) = parse_net(p, &r.to, "routes.to") else {
            continue;
        };
        let via = nodes
            .iter()
            .find(|n| n.name == r.via.value)
            .map(|n| n.address)
            .or_else(|| {
                let a: Ipv4Addr = r.via.value.parse().ok()?;
                nodes
                    .iter()
                    .any(|n| n.address == a || n.extra_addresses.contains(&a))
                    .then_some(a)
            });
        match via {
            Some(v) => out.push((dst, v)),
            None => p.err(
                &r.via,
                format!(
                    "routes.via: {:?} is not a node or a node's address (known: {})",
                    r.via.value,
                    node_names(nodes)
                ),
            ),
        }
    }
    out
}

/// Nodes by name, the first of a name (as a search in order finds it).
fn nodes_by_name(nodes: &[NodeDef]) -> HashMap<&str, usize, FixedState> {
    let mut at: HashMap<&str, usize, FixedState> = HashMap::default();
    for (i, n) in nodes.iter().enumerate() {
        at.entry(n.name.as_str()).or_insert(i);
    }
    at
}

/// Each key that comes again after its first time is an error at its
/// origin. Keys are hashed (a cluster has tens of thousands of pods) and
/// written out only for an error.
fn check_unique<'a, K: Hash + Eq + Display>(
    p: &mut Problems,
    items: impl Iterator<Item = (K, &'a Origin)>,
    what: &str,
) {
    let mut seen: HashSet<K, FixedState> = HashSet::default();
    for (k, l) in items {
        if seen.contains(&k) {
            p.at_origin(l, format!("duplicate {what} {:?}", k.to_string()));
        } else {
            seen.insert(k);
        }
    }
}

fn load_balancer(p: &mut Problems, raw: Option<&RawLoadBalancer>) -> LoadBalancerSpec {
    let mut spec = LoadBalancerSpec {
        delivery: LbDelivery::Direct,
        nodes: LbNodes::Healthy,
        address: Ipv4Addr::new(198, 51, 100, 10),
    };
    let Some(raw) = raw else {
        return spec;
    };
    if let Some(d) = &raw.delivery {
        spec.delivery = match d.value.as_str() {
            "direct" => LbDelivery::Direct,
            "nodePort" => LbDelivery::NodePort,
            other => {
                p.err(
                    d,
                    format!("delivery: expected direct or nodePort, got {other:?}"),
                );
                LbDelivery::Direct
            }
        };
    }
    if let Some(n) = &raw.nodes {
        spec.nodes = match n.value.as_str() {
            "all" => LbNodes::All,
            "healthy" => LbNodes::Healthy,
            other => {
                p.err(n, format!("nodes: expected all or healthy, got {other:?}"));
                LbNodes::Healthy
            }
        };
    }
    if let Some(a) = &raw.address {
        if let Some(addr) = parse_addr(p, a, "address") {
            spec.address = addr;
        }
    }
    spec
}

fn kube_proxy(
    p: &mut Problems,
    raw: Option<&RawKubeProxy>,
    at: Option<Origin>,
    cluster_cidr: Option<Ipv4Net>,
) -> KubeProxy {
    let default_cidr = cluster_cidr.unwrap_or_else(|| "10.244.0.0/16".parse().expect("literal"));
    let Some(r) = raw else {
        return KubeProxy::defaults(default_cidr);
    };
    let at = at.unwrap_or(Origin::at(Loc::default()));
    // Spanned values of a configuration read from its own file point there.
    p.current = at.file;
    let kp = kube_proxy_fields(p, r, &at, default_cidr);
    p.current = 0;
    kp
}

fn kube_proxy_fields(
    p: &mut Problems,
    r: &RawKubeProxy,
    at: &Origin,
    default_cidr: Ipv4Net,
) -> KubeProxy {
    let mut kp = KubeProxy::defaults(default_cidr);
    if let Some(k) = r.kind.as_deref().filter(|k| *k != "KubeProxyConfiguration") {
        p.field(
            at,
            &FieldPath::default().key("kind"),
            format!("kubeProxy: kind {k:?} is not KubeProxyConfiguration"),
        );
    }
    if let Some(a) = r
        .api_version
        .as_deref()
        .filter(|a| !a.starts_with("kubeproxy.config.k8s.io/"))
    {
        p.field(
            at,
            &FieldPath::default().key("apiVersion"),
            format!("kubeProxy: apiVersion {a:?} is not kubeproxy.config.k8s.io/v1alpha1"),
        );
    }
    if let Some(m) = &r.mode {
        match m.value.as_str() {
            "iptables" | "" => kp.mode = ProxyMode::Iptables,
            "nftables" => kp.mode = ProxyMode::Nftables,
            "ipvs" => p.err(
                m,
                "mode ipvs: kpsim reproduces iptables and nftables modes only".to_string(),
            ),
            other => p.err(
                m,
                format!("mode: expected iptables, nftables or ipvs, got {other:?}"),
            ),
        }
    }
    if let Some(m) = &r.detect_local_mode {
        kp.detect_local_mode = match m.value.as_str() {
            "ClusterCIDR" | "" => DetectLocalMode::ClusterCidr,
            "NodeCIDR" => DetectLocalMode::NodeCidr,
            "BridgeInterface" => DetectLocalMode::BridgeInterface,
            "InterfaceNamePrefix" => DetectLocalMode::InterfaceNamePrefix,
            other => {
                p.err(m, format!("detectLocalMode: expected ClusterCIDR, NodeCIDR, BridgeInterface or InterfaceNamePrefix, got {other:?}"));
                DetectLocalMode::ClusterCidr
            }
        };
    }
    if let Some(d) = &r.detect_local {
        if let Some(b) = &d.bridge_interface {
            kp.bridge_interface = b.clone();
        }
        if let Some(i) = &d.interface_name_prefix {
            kp.interface_name_prefix = i.clone();
        }
    }
    if let Some(c) = &r.cluster_cidr {
        kp.cluster_cidr = if c.value.trim().is_empty() {
            None
        } else {
            parse_net(p, c, "clusterCIDR").or(kp.cluster_cidr)
        };
    }
    let ipt = r.iptables.as_ref();
    kp.masquerade_all = r
        .masquerade_all
        .or(ipt.and_then(|i| i.masquerade_all))
        .or(r.linux.as_ref().and_then(|l| l.masquerade_all))
        .unwrap_or(false);
    let nft = r.nftables.as_ref();
    kp.nftables_masquerade_all = r
        .masquerade_all
        .or(nft.and_then(|n| n.masquerade_all))
        .or(r.linux.as_ref().and_then(|l| l.masquerade_all))
        .unwrap_or(false);
    for (bit, into) in [
        (
            ipt.and_then(|i| i.masquerade_bit.as_ref()),
            &mut kp.masquerade_bit,
        ),
        (
            nft.and_then(|n| n.masquerade_bit.as_ref()),
            &mut kp.nftables_masquerade_bit,
        ),
    ] {
        let Some(bit) = bit else {
            continue;
        };
        if (0..=31).contains(&bit.value) {
            *into = bit.value as u32;
        } else {
            p.err(
                bit,
                format!("masqueradeBit: expected 0-31, got {}", bit.value),
            );
        }
    }
    if let Some(l) = ipt.and_then(|i| i.localhost_node_ports) {
        kp.localhost_node_ports = l;
    }
    if let Some(h) = &r.healthz_bind_address {
        kp.healthz = healthz_bind_address(p, h);
    }
    let conntrack = r
        .conntrack
        .as_ref()
        .or(r.linux.as_ref().and_then(|l| l.conntrack.as_ref()));
    if let Some(c) = conntrack {
        kp.conntrack = conntrack_config(p, c);
    }
    let addresses = r.node_port_addresses.as_deref().unwrap_or_default();
    for a in addresses {
        if a.value == "primary" {
            kp.node_port_primary = true;
            if addresses.len() > 1 {
                // kube-proxy's validation refuses the mix.
                p.err(a, "nodePortAddresses: can't use both 'primary' and CIDRs");
            }
        } else if let Some(n) = parse_net(p, a, "nodePortAddresses") {
            kp.node_port_addresses.push(n);
        }
    }
    if let Some(pr) = &r.port_range {
        let parsed = pr
            .value
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
            .or_else(|| pr.value.trim().parse().ok().map(|a: u16| (a, a)));
        match parsed {
            Some((a, b)) if a <= b => kp.port_range = (a, b),
            _ => p.err(
                pr,
                format!(
                    "portRange: expected FIRST-LAST like 30000-32767, got {:?}",
                    pr.value
                ),
            ),
        }
    }
    kp.ignored = r.ignored().into_iter().map(String::from).collect();
    if !kp.ignored.is_empty() {
        p.warn_at(
            at,
            format!(
                "kubeProxy fields accepted but not modelled: {}",
                kp.ignored.join(", ")
            ),
        );
    }
    kp
}

/// `healthzBindAddress`: `IP:PORT`, or an `IP` alone (kube-proxy appends
/// its port); `0.0.0.0` or empty means every address.
fn healthz_bind_address(p: &mut Problems, h: &S<String>) -> (Option<Ipv4Addr>, u16) {
    let v = h.value.trim();
    if v.is_empty() {
        return (None, HEALTHZ_PORT);
    }
    let (ip, port) = match v.rsplit_once(':') {
        Some((ip, port)) => (ip, port.parse::<u16>().ok()),
        None => (v, Some(HEALTHZ_PORT)),
    };
    match (ip.parse::<Ipv4Addr>(), port) {
        (Ok(a), Some(port)) if port > 0 => ((!a.is_unspecified()).then_some(a), port),
        _ => {
            p.err(
                h,
                format!(
                    "healthzBindAddress: expected IP:PORT like 0.0.0.0:10256, got {:?}",
                    h.value
                ),
            );
            (None, HEALTHZ_PORT)
        }
    }
}

/// `conntrack`, defaults filled in as kube-proxy's defaulting does.
fn conntrack_config(p: &mut Problems, c: &RawConntrack) -> ConntrackConfig {
    let mut out = ConntrackConfig::default();
    let int32 = |p: &mut Problems, v: &Option<S<i64>>, what: &str, default: i32| match v {
        Some(n) if (0..=i64::from(i32::MAX)).contains(&n.value) => n.value as i32,
        Some(n) => {
            p.err(
                n,
                format!("conntrack.{what}: expected 0-2147483647, got {}", n.value),
            );
            default
        }
        None => default,
    };
    out.max_per_core = int32(p, &c.max_per_core, "maxPerCore", out.max_per_core);
    out.min = int32(p, &c.min, "min", out.min);
    let secs = |p: &mut Problems, v: &Option<S<String>>, what: &str, default: u64| match v {
        Some(d) => match go_duration_seconds(&d.value) {
            Some(s) => s,
            None => {
                p.err(
                    d,
                    format!(
                        "conntrack.{what}: expected a duration like 24h0m0s or 300s, got {:?}",
                        d.value
                    ),
                );
                default
            }
        },
        None => default,
    };
    out.tcp_established_timeout = secs(
        p,
        &c.tcp_established_timeout,
        "tcpEstablishedTimeout",
        out.tcp_established_timeout,
    );
    out.tcp_close_wait_timeout = secs(
        p,
        &c.tcp_close_wait_timeout,
        "tcpCloseWaitTimeout",
        out.tcp_close_wait_timeout,
    );
    out.udp_timeout = secs(p, &c.udp_timeout, "udpTimeout", out.udp_timeout);
    out.udp_stream_timeout = secs(
        p,
        &c.udp_stream_timeout,
        "udpStreamTimeout",
        out.udp_stream_timeout,
    );
    out.tcp_be_liberal = c.tcp_be_liberal.unwrap_or(false);
    out
}

/// A Go duration (`time.ParseDuration`, as `metav1.Duration` reads it:
/// `24h0m0s`, `1.5h`, `100ms`, `0`); `None` when malformed or negative.
pub(crate) fn go_duration(s: &str) -> Option<std::time::Duration> {
    let ns = go_parse_duration::parse_duration(s.trim()).ok()?;
    u64::try_from(ns).ok().map(std::time::Duration::from_nanos)
}

/// A Go duration in whole seconds, as kube-proxy divides it when it writes
/// a sysctl.
pub(crate) fn go_duration_seconds(s: &str) -> Option<u64> {
    go_duration(s).map(|d| d.as_secs())
}

fn pods(
    p: &mut Problems,
    raw: Vec<RawPod>,
    from_objects: Vec<(PodDef, Origin)>,
    nodes: &[NodeDef],
) -> Vec<PodDef> {
    let node_at = nodes_by_name(nodes);
    let mut taken: HashSet<Ipv4Addr, FixedState> = nodes
        .iter()
        .map(|n| crate::network::bridge_address(&n.pod_cidr))
        .collect();
    for r in &raw {
        if let Some(ip) = &r.ip {
            if let Ok(a) = ip.value.parse() {
                taken.insert(a);
            }
        }
    }
    for (pd, _) in &from_objects {
        taken.insert(pd.ip);
    }
    // Per node, how many of its pod addresses are known to be taken: an
    // address is never freed, so the lowest free one is never below the
    // last one handed out, and the search goes on from there.
    let mut searched = vec![0usize; nodes.len()];
    let mut out: Vec<(PodDef, Origin)> = Vec::with_capacity(raw.len() + from_objects.len());
    for r in raw {
        let Some(&n) = node_at.get(r.node.value.as_str()) else {
            p.err(
                &r.node,
                format!(
                    "pod {}: unknown node {:?} (known: {})",
                    r.name.value,
                    r.node.value,
                    node_names(nodes)
                ),
            );
            continue;
        };
        let node = &nodes[n];
        let host_network = r.host_network.unwrap_or(false);
        let ip = if host_network {
            node.address
        } else if let Some(ip) = &r.ip {
            let Some(a) = parse_addr(p, ip, "ip") else {
                continue;
            };
            if let Err(why) = validation::pod_address(a, node) {
                p.err(ip, format!("pod {}: {why}", r.name.value));
            }
            a
        } else {
            let net = node.pod_cidr;
            let found = net
                .hosts()
                .skip(1 + searched[n])
                .enumerate()
                .find(|(_, a)| !taken.contains(a));
            match found {
                Some((k, a)) => {
                    searched[n] += k + 1;
                    taken.insert(a);
                    a
                }
                None => {
                    p.err(
                        &r.name,
                        format!("pod {}: no free address left in {}", r.name.value, net),
                    );
                    continue;
                }
            }
        };
        let mut ports = Vec::new();
        for cp in &r.ports {
            if !(1..=65535).contains(&cp.container_port.value) {
                p.err(&cp.container_port, "containerPort: expected 1-65535");
                continue;
            }
            if let Some(pr) = &cp.protocol {
                if let Err(e) = validation::protocol(&pr.value) {
                    p.err(pr, e);
                    continue;
                }
            }
            ports.push((
                cp.name.clone(),
                cp.container_port.value as u16,
                cp.protocol
                    .as_ref()
                    .map_or_else(|| "TCP".into(), |pr| pr.value.clone()),
            ));
        }
        let origin = Origin::at(loc(&r.name));
        out.push((
            PodDef {
                namespace: r.namespace.unwrap_or_else(|| "default".into()),
                name: r.name.value,
                node: node.name.clone(),
                labels: r.labels,
                ip,
                ready: r.ready.unwrap_or(true),
                terminating: r.terminating.unwrap_or(false),
                host_network,
                ports,
            },
            origin,
        ));
    }
    for (pd, l) in from_objects {
        let Some(node) = node_at.get(pd.node.as_str()).map(|&n| &nodes[n]) else {
            p.field(
                &l,
                &FieldPath::default().key("spec").key("nodeName"),
                format!("pod {}: unknown node {:?}", pd.name, pd.node),
            );
            continue;
        };
        if !pd.host_network {
            if let Err(why) = validation::pod_address(pd.ip, node) {
                p.field(
                    &l,
                    &FieldPath::default().key("status").key("podIP"),
                    format!("pod {}: {why}", pd.name),
                );
            }
        }
        out.push((pd, l));
    }
    check_unique(
        p,
        out.iter()
            .map(|(pd, l)| (format!("{}/{}", pd.namespace, pd.name), l)),
        "pod",
    );
    check_unique(
        p,
        out.iter().map(|(pd, l)| (pd.name.as_str(), l)),
        "pod name (names must be unique across namespaces to be usable in checks)",
    );
    check_unique(
        p,
        out.iter()
            .filter(|(pd, _)| !pd.host_network)
            .map(|(pd, l)| (pd.ip, l)),
        "pod IP",
    );
    out.into_iter().map(|(pd, _)| pd).collect()
}

/// Fill in missing cluster IPs, node ports and health-check node ports;
/// check the given ones.
fn allocate_services(
    p: &mut Problems,
    services: &mut [(Service, Origin)],
    service_cidr: Option<Ipv4Net>,
    kp: &KubeProxy,
) {
    services.sort_by(|(a, _), (b, _)| {
        (
            a.metadata.namespace.as_deref().unwrap_or("default"),
            a.metadata.name.as_deref(),
        )
            .cmp(&(
                b.metadata.namespace.as_deref().unwrap_or("default"),
                b.metadata.name.as_deref(),
            ))
    });
    let mut taken_ips: BTreeSet<Ipv4Addr> = BTreeSet::new();
    let svc_name = |s: &Service| {
        format!(
            "{}/{}",
            s.metadata.namespace.as_deref().unwrap_or("default"),
            s.metadata.name.as_deref().unwrap_or("")
        )
    };
    check_unique(p, services.iter().map(|(s, l)| (svc_name(s), l)), "service");
    let spec_at = FieldPath::default().key("spec");
    for (s, l) in services.iter() {
        let Some(spec) = &s.spec else { continue };
        if let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && *ip != "None")
        {
            let at = spec_at.key("clusterIP");
            match ip.parse::<Ipv4Addr>() {
                Ok(a) => {
                    if let Some(sc) = service_cidr {
                        if !sc.contains(&a) {
                            p.field(
                                l,
                                &at,
                                format!(
                                    "service {}: clusterIP {a} is outside serviceCIDR {sc}",
                                    svc_name(s)
                                ),
                            );
                        }
                    }
                    if !taken_ips.insert(a) {
                        p.field(
                            l,
                            &at,
                            format!("service {}: clusterIP {a} is used twice", svc_name(s)),
                        );
                    }
                }
                Err(_) => p.field(
                    l,
                    &at,
                    format!(
                        "service {}: clusterIP {ip:?} is not an IPv4 address",
                        svc_name(s)
                    ),
                ),
            }
        }
    }
    let mut next_ip = service_cidr.map(|n| u32::from(n.network()) + 10);
    for (s, l) in services.iter_mut() {
        let spec = s.spec.get_or_insert_with(Default::default);
        let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
        if ty != "ExternalName" && spec.cluster_ip.as_deref().is_none_or(str::is_empty) {
            if let (Some(sc), Some(n)) = (service_cidr, next_ip.as_mut()) {
                while taken_ips.contains(&Ipv4Addr::from(*n)) {
                    *n += 1;
                }
                let a = Ipv4Addr::from(*n);
                if sc.contains(&a) {
                    taken_ips.insert(a);
                    spec.cluster_ip = Some(a.to_string());
                    spec.cluster_ips = Some(vec![a.to_string()]);
                } else {
                    // The name written out only for an error.
                    let name = svc_name(s);
                    p.at_origin(l, format!("service {name}: serviceCIDR {sc} is full"));
                }
            }
        }
    }
    allocation::node_ports(p, services, svc_name, kp.port_range);
}

/// `httpStatus`: an HTTP status code.
fn http_status(p: &mut Problems, h: &S<i64>) -> Option<u16> {
    match u16::try_from(h.value) {
        Ok(v) if (100..=599).contains(&v) => Some(v),
        _ => {
            p.err(
                h,
                format!(
                    "httpStatus: expected an HTTP status like 200, got {}",
                    h.value
                ),
            );
            None
        }
    }
}

fn checks(
    p: &mut Problems,
    raw: &[RawCheck],
    nodes: &[NodeDef],
    externals: &[ExternalDef],
    pods: &[PodDef],
    services: &[Service],
) -> Vec<Check> {
    let known = |name: &str| {
        nodes.iter().any(|n| n.name == name)
            || externals.iter().any(|e| e.name == name)
            || pods.iter().any(|x| x.name == name)
    };
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    for c in raw {
        if !names.insert(c.name.value.clone()) {
            p.err(&c.name, format!("duplicate check name {:?}", c.name.value));
        }
        if !known(&c.from.value) && c.from.value.parse::<Ipv4Addr>().is_err() {
            p.err(
                &c.from,
                format!(
                    "from: {:?} is not a pod, node or external of this scenario",
                    c.from.value
                ),
            );
        }
        let target = match FlowTarget::parse(&c.to.value) {
            Ok(t) => t,
            Err(e) => {
                p.err(&c.to, format!("to: {e}"));
                continue;
            }
        };
        let scope = target::Scope {
            nodes,
            externals,
            pods,
            services,
        };
        if let Err(e) = scope.resolve(&target) {
            p.err(&c.to, format!("to: {e}"));
        }
        let e = &c.expect;
        let mut expect = Expectation::default();
        if let Some(d) = &e.delivered {
            for pod in &d.value {
                if !pods.iter().any(|x| &x.name == pod) && pod != crate::compile::KUBE_PROXY {
                    p.err(
                        d,
                        format!("delivered: {pod:?} is not a pod of this scenario"),
                    );
                }
            }
            expect.delivered = Some(d.value.iter().cloned().collect());
        }
        if let Some(s) = &e.source_seen {
            expect.source_seen = match s.value.as_str() {
                "client" => Some(SourceSeen::Client),
                v => match v.parse() {
                    Ok(a) => Some(SourceSeen::Addr(a)),
                    Err(_) => {
                        p.err(
                            s,
                            format!("sourceSeen: expected an IPv4 address or `client`, got {v:?}"),
                        );
                        None
                    }
                },
            };
        }
        if let Some(r) = &e.reply {
            expect.reply_ok = match r.value.as_str() {
                "ok" => Some(true),
                "broken" => Some(false),
                v => {
                    p.err(r, format!("reply: expected ok or broken, got {v:?}"));
                    None
                }
            };
        }
        if let Some(v) = &e.verdict {
            let words = v.value.items();
            for w in &words {
                if !crate::check::VERDICTS.contains(&w.as_str()) {
                    p.err(
                        v,
                        format!(
                            "verdict: expected one or a list of {}, got {w:?}",
                            crate::check::VERDICTS.join(", ")
                        ),
                    );
                }
            }
            expect.verdict = Some(words.into_iter().collect());
        }
        let probability = |p: &mut Problems, prob: &S<String>, what: &str| {
            if crate::check::parse_probability(&prob.value).is_none() {
                p.err(
                    prob,
                    format!(
                        "{what}: expected a number in [0, 1] or a fraction like 1/3, got {:?}",
                        prob.value
                    ),
                );
            }
        };
        for (pod, prob) in e.probability.iter().flatten() {
            probability(p, prob, "probability");
            expect.probability.insert(pod.clone(), prob.value.clone());
        }
        if let Some(d) = &e.dropped {
            probability(p, d, "dropped");
            expect.dropped = Some(d.value.clone());
        }
        expect.masqueraded = e.masqueraded;
        expect.http_status = e.http_status.as_ref().and_then(|h| http_status(p, h));
        expect.snat = e.snat;
        if let Some(d) = &e.decided_by {
            if !nodes.iter().any(|n| n.name == d.value) {
                p.err(d, format!("decidedBy: {:?} is not a node", d.value));
            }
            expect.decided_by = Some(d.value.clone());
        }
        let mut modes = Vec::new();
        if let Some(m) = &c.modes {
            for name in &m.value {
                match ProxyMode::parse(name) {
                    Some(mode) if !modes.contains(&mode) => modes.push(mode),
                    Some(_) => p.err(m, format!("modes: {name:?} is named twice")),
                    None => p.err(
                        m,
                        format!("modes: {name:?} is not a kube-proxy mode (iptables, nftables)"),
                    ),
                }
            }
            if m.value.is_empty() {
                p.err(
                    m,
                    "modes: name at least one mode (iptables, nftables), or leave it out",
                );
            }
        }
        out.push(Check {
            name: c.name.value.clone(),
            from: c.from.value.clone(),
            to: c.to.value.clone(),
            target,
            modes,
            expect,
            loc: loc(&c.name),
        });
    }
    out
}

#[cfg(test)]
mod tests;
