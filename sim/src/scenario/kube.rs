//! Kubernetes API objects in a scenario: `objects:` entries and `include:`
//! files (multi-document YAML, `kind: List` wrappers), read into
//! k8s-openapi types by apiVersion and kind, exactly as
//! `kubectl get -o yaml` prints them, and as strictly as
//! `kubectl apply --validate=strict`: a field the type does not know (or a
//! repeated one) is an error naming its path and place.
//!
//! Objects stream straight from the YAML events into their types: the
//! reader looks at `apiVersion` and `kind` (the first keys, as kubectl
//! prints them) and hands the rest of the mapping to the type. Only an
//! object whose `apiVersion`/`kind` come after other fields is buffered
//! first. Fields a type ignores are collected by `serde_ignored`; the error
//! of a field that does not fit its type keeps its own line and column, and
//! its path is noted by `serde_path_to_error`.

use super::error::Loc;
use super::raw::{RawKubeProxy, RawScenario, S};
use super::yaml::{did_you_mean, expected_fields, FieldPath};
use super::{syntax_error, NodeDef, Origin, PodDef, Problems, ScenarioError};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};

/// The objects found, each with the place that brought it.
#[derive(Default)]
pub struct Objects {
    pub services: Vec<(Service, Origin)>,
    pub slices: Vec<(EndpointSlice, Origin)>,
    pub pods: Vec<(PodDef, Origin)>,
    pub nodes: Vec<(NodeDef, Origin)>,
    pub kube_proxy: Option<(RawKubeProxy, Origin)>,
}

/// Kinds kpsim reads, with the apiVersion each must have.
const KINDS: &[(&str, &str)] = &[
    ("Service", "v1"),
    ("Pod", "v1"),
    ("Node", "v1"),
    ("EndpointSlice", "discovery.k8s.io/v1"),
    ("List", "v1"),
    ("KubeProxyConfiguration", "kubeproxy.config.k8s.io/v1alpha1"),
];

/// One object as read.
#[derive(Debug)]
pub struct Object {
    pub kind: String,
    pub api_version: String,
    pub name: Option<String>,
    pub body: Body,
    /// Fields the type does not know, relative to the object.
    pub ignored: Vec<FieldPath>,
}

#[derive(Debug)]
pub enum Body {
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Pod(Box<Pod>),
    Node(Box<Node>),
    KubeProxy(Box<RawKubeProxy>),
    List(Vec<S<Object>>),
    /// A kind kpsim does not read, or a known kind of another apiVersion.
    Skipped,
    /// `include: [...]`: a document of an included file that includes more.
    Includes(Vec<S<String>>),
}

thread_local! {
    /// The kind and field path of the object field whose value did not fit
    /// its type: the YAML error keeps its line and column, this adds the
    /// path. Set by the innermost failing object, taken by the loader.
    static FAILED_AT: RefCell<Option<(String, FieldPath)>> = const { RefCell::new(None) };
}

/// The kind and field path of the last object field that failed to read.
pub(crate) fn take_failure() -> Option<(String, FieldPath)> {
    FAILED_AT.with(|f| f.borrow_mut().take())
}

fn note_failure(kind: &str, path: FieldPath) {
    FAILED_AT.with(|f| {
        let mut f = f.borrow_mut();
        if f.is_none() {
            *f = Some((kind.to_string(), path));
        }
    });
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectVisitor)
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Object;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Kubernetes object (a mapping with apiVersion and kind)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object, A::Error> {
        let mut api_version: Option<String> = None;
        let mut kind: Option<String> = None;
        let mut pending: Option<String> = None;
        while api_version.is_none() || kind.is_none() {
            let Some(key) = map.next_key::<String>()? else {
                break;
            };
            match key.as_str() {
                "apiVersion" => api_version = Some(map.next_value()?),
                "kind" => kind = Some(map.next_value()?),
                "include" if api_version.is_none() && kind.is_none() => {
                    let files: Vec<S<String>> = map.next_value()?;
                    if let Some(k) = map.next_key::<String>()? {
                        return Err(de::Error::custom(format!(
                            "a document with `include:` holds nothing else, found `{k}`"
                        )));
                    }
                    return Ok(Object {
                        kind: String::new(),
                        api_version: String::new(),
                        name: None,
                        body: Body::Includes(files),
                        ignored: Vec::new(),
                    });
                }
                _ => {
                    pending = Some(key);
                    break;
                }
            }
        }
        match (api_version, kind) {
            (Some(api), Some(kind)) => {
                let rest = Rest {
                    head: vec![("apiVersion", api.clone()), ("kind", kind.clone())].into_iter(),
                    value: None,
                    pending,
                    map,
                };
                read_typed(api, kind, de::value::MapAccessDeserializer::new(rest))
            }
            (api, kind) if pending.is_some() => buffered(api, kind, pending, map),
            _ => Err(missing_kind()),
        }
    }
}

fn missing_kind<E: de::Error>() -> E {
    E::custom("a Kubernetes object needs `apiVersion` and `kind`, as kubectl prints them")
}

/// An object whose apiVersion or kind come after other fields: read it
/// whole, then into its type.
fn buffered<'de, A: MapAccess<'de>>(
    mut api: Option<String>,
    mut kind: Option<String>,
    pending: Option<String>,
    mut map: A,
) -> Result<Object, A::Error> {
    let mut fields = serde_json::Map::new();
    let mut next = pending;
    while let Some(key) = next {
        let v: serde_json::Value = map.next_value()?;
        match key.as_str() {
            "apiVersion" => api = v.as_str().map(String::from),
            "kind" => kind = v.as_str().map(String::from),
            _ => {}
        }
        fields.insert(key, v);
        next = map.next_key()?;
    }
    let (Some(api), Some(kind)) = (api, kind) else {
        return Err(missing_kind());
    };
    read_typed(api, kind, serde_json::Value::Object(fields)).map_err(de::Error::custom)
}

/// The rest of an object's mapping after its apiVersion and kind were read:
/// those two first (as the type checks them), then any key already taken,
/// then the remaining entries straight from the YAML.
struct Rest<A> {
    head: std::vec::IntoIter<(&'static str, String)>,
    value: Option<String>,
    pending: Option<String>,
    map: A,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Rest<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        if let Some((k, v)) = self.head.next() {
            self.value = Some(v);
            return seed
                .deserialize(de::value::StrDeserializer::<A::Error>::new(k))
                .map(Some);
        }
        if let Some(k) = self.pending.take() {
            return seed
                .deserialize(de::value::StringDeserializer::<A::Error>::new(k))
                .map(Some);
        }
        self.map.next_key_seed(seed)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        match self.value.take() {
            Some(v) => seed.deserialize(de::value::StringDeserializer::<A::Error>::new(v)),
            None => self.map.next_value_seed(seed),
        }
    }
}

/// A type's fields from `de`, with the fields it ignored.
fn strict<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    kind: &str,
    de: D,
    ignored: &mut Vec<FieldPath>,
) -> Result<T, D::Error> {
    let mut found = Vec::new();
    let result = {
        let mut note = |p: serde_ignored::Path| found.push(FieldPath::from_ignored(&p));
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(de, &mut note))
    };
    match result {
        Ok(v) => {
            *ignored = found;
            Ok(v)
        }
        Err(e) => {
            note_failure(kind, FieldPath::from_error_path(e.path()));
            Err(e.into_inner())
        }
    }
}

/// The name in `metadata`, for an object kpsim skips.
#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    metadata: Option<NameOnly>,
}

#[derive(Deserialize)]
struct NameOnly {
    #[serde(default)]
    name: Option<String>,
}

/// The body of a `kind: List`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ListBody {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<IgnoredAny>,
    #[serde(default)]
    items: Vec<S<Object>>,
}

fn read_typed<'de, D: Deserializer<'de>>(
    api_version: String,
    kind: String,
    de: D,
) -> Result<Object, D::Error> {
    let mut ignored = Vec::new();
    let known = KINDS
        .iter()
        .any(|(k, want)| *k == kind && *want == api_version);
    let (body, name) = if !known {
        let n = Named::deserialize(de)?;
        (Body::Skipped, n.metadata.and_then(|m| m.name))
    } else {
        match kind.as_str() {
            "Service" => {
                let s: Service = strict(&kind, de, &mut ignored)?;
                let name = s.metadata.name.clone();
                (Body::Service(Box::new(s)), name)
            }
            "EndpointSlice" => {
                let s: EndpointSlice = strict(&kind, de, &mut ignored)?;
                let name = s.metadata.name.clone();
                (Body::EndpointSlice(Box::new(s)), name)
            }
            "Pod" => {
                let s: Pod = strict(&kind, de, &mut ignored)?;
                let name = s.metadata.name.clone();
                (Body::Pod(Box::new(s)), name)
            }
            "Node" => {
                let s: Node = strict(&kind, de, &mut ignored)?;
                let name = s.metadata.name.clone();
                (Body::Node(Box::new(s)), name)
            }
            "KubeProxyConfiguration" => {
                let k: RawKubeProxy = strict(&kind, de, &mut ignored)?;
                (Body::KubeProxy(Box::new(k)), None)
            }
            _ => {
                let l = ListBody::deserialize(de)?;
                (Body::List(l.items), None)
            }
        }
    };
    Ok(Object {
        kind,
        api_version,
        name,
        body,
        ignored,
    })
}

/// The fields the object's type knows at `parent`.
fn known_fields(kind: &str, parent: &FieldPath) -> Option<&'static [&'static str]> {
    match kind {
        "Service" => expected_fields::<Service>(parent),
        "EndpointSlice" => expected_fields::<EndpointSlice>(parent),
        "Pod" => expected_fields::<Pod>(parent),
        "Node" => expected_fields::<Node>(parent),
        "KubeProxyConfiguration" => expected_fields::<RawKubeProxy>(parent),
        _ => None,
    }
}

/// "unknown field "spec.externalTraficPolicy"; did you mean "externalTrafficPolicy"?"
pub(crate) fn unknown_field(kind: &str, path: &FieldPath) -> String {
    let mut m = format!("unknown field \"{path}\"");
    if let Some((parent, key)) = path.split_last_key() {
        if let Some(fields) = known_fields(kind, &parent) {
            if let Some(near) = did_you_mean(key, fields.iter().copied()) {
                m.push_str(&format!("; did you mean \"{near}\"?"));
            }
        }
    }
    m
}

pub fn collect_objects(
    raw: &mut RawScenario,
    base: &Path,
    path: &Path,
    p: &mut Problems,
) -> Result<Objects, ScenarioError> {
    let mut out = Objects::default();
    for (i, o) in std::mem::take(&mut raw.objects).into_iter().enumerate() {
        let origin = Origin {
            file: 0,
            doc: 0,
            path: FieldPath::default().key("objects").index(i),
            loc: Some(Loc::from_location(&o.referenced)),
        };
        add(o.value, &origin, &mut out, p);
    }
    let mut stack = vec![canonical(path)];
    for inc in &raw.include {
        include(inc, 0, base, &mut stack, &mut out, p)?;
    }
    if let Some(kp) = &raw.kube_proxy {
        if let Some(inc) = &kp.value.include {
            let file = base.join(&inc.value);
            if let Some(text) = read(&file, 0, inc, p) {
                let parsed: RawKubeProxy =
                    serde_saphyr::from_str_with_options(&text, p.limits.options())
                        .map_err(|e| syntax_error(&file, &text, &e, &p.limits))?;
                let id = p.add_file(file, text);
                let origin = Origin {
                    file: id,
                    doc: 0,
                    path: FieldPath::default(),
                    loc: None,
                };
                out.kube_proxy = Some((parsed, origin));
            }
        }
    }
    Ok(out)
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// An included file's text; a file that cannot be read is a problem at the
/// `include:` entry that names it.
fn read(file: &Path, from: usize, at: &S<String>, p: &mut Problems) -> Option<String> {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            p.at_file(
                from,
                &Loc::from_location(&at.referenced),
                format!("include: cannot read {}: {e}", file.display()),
            );
            return None;
        }
    };
    match String::from_utf8(bytes) {
        Ok(t) => Some(t),
        Err(e) => {
            p.at_file(
                from,
                &Loc::from_location(&at.referenced),
                format!(
                    "include: {} is not UTF-8 text (invalid byte at offset {})",
                    file.display(),
                    e.utf8_error().valid_up_to()
                ),
            );
            None
        }
    }
}

fn include(
    inc: &S<String>,
    from: usize,
    base: &Path,
    stack: &mut Vec<PathBuf>,
    out: &mut Objects,
    p: &mut Problems,
) -> Result<(), ScenarioError> {
    let file = base.join(&inc.value);
    let canon = canonical(&file);
    if stack.contains(&canon) {
        p.at_file(
            from,
            &Loc::from_location(&inc.referenced),
            format!(
                "include cycle: {} is already being included",
                file.display()
            ),
        );
        return Ok(());
    }
    let Some(text) = read(&file, from, inc, p) else {
        return Ok(());
    };
    take_failure();
    let docs: Vec<Object> = serde_saphyr::from_multiple_with_options(&text, p.limits.options())
        .map_err(|e| syntax_error(&file, &text, &e, &p.limits))?;
    let id = p.add_file(file.clone(), text);
    stack.push(canon);
    for (doc, d) in docs.into_iter().enumerate() {
        if let Body::Includes(nested) = &d.body {
            let nested_base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
            for n in nested {
                include(n, id, &nested_base, stack, out, p)?;
            }
            continue;
        }
        // Where the document starts is looked up only if a problem needs it.
        let origin = Origin {
            file: id,
            doc,
            path: FieldPath::default(),
            loc: None,
        };
        add(d, &origin, out, p);
    }
    stack.pop();
    Ok(())
}

fn add(o: Object, origin: &Origin, out: &mut Objects, p: &mut Problems) {
    let name = o.name.as_deref().unwrap_or("?");
    let (kind, api) = (o.kind.as_str(), o.api_version.as_str());
    for f in &o.ignored {
        p.field(
            origin,
            f,
            format!("{kind} {name}: {}", unknown_field(kind, f)),
        );
    }
    match o.body {
        Body::Skipped => match KINDS.iter().find(|(k, _)| *k == kind) {
            None => p.warn_at(
                origin,
                format!("skipping {kind} {name} ({api}): kpsim reads Service, EndpointSlice, Pod, Node, KubeProxyConfiguration and List objects"),
            ),
            Some((_, want)) => p.field(
                origin,
                &FieldPath::default().key("apiVersion"),
                format!("{kind} {name}: apiVersion {api:?} is not supported (expected {want})"),
            ),
        },
        Body::List(items) => {
            for (i, item) in items.into_iter().enumerate() {
                let at = Origin {
                    file: origin.file,
                    doc: origin.doc,
                    path: origin.path.key("items").index(i),
                    loc: Some(Loc::from_location(&item.referenced)),
                };
                add(item.value, &at, out, p);
            }
        }
        Body::Includes(_) => p.at_origin(
            origin,
            "include: is only allowed as a document of an included file or the scenario's `include:` list",
        ),
        Body::Service(s) => {
            super::validation::service(&s, origin, p);
            out.services.push((*s, origin.clone()));
        }
        Body::EndpointSlice(s) => {
            super::validation::endpoint_slice(&s, origin, p);
            out.slices.push((*s, origin.clone()));
        }
        Body::Pod(pod) => {
            super::validation::pod(&pod, origin, p);
            if let Some(pd) = pod_def(&pod, origin, p) {
                out.pods.push((pd, origin.clone()));
            }
        }
        Body::Node(node) => {
            super::validation::node(&node, origin, p);
            if let Some(nd) = node_def(&node, origin, p) {
                out.nodes.push((nd, origin.clone()));
            }
        }
        Body::KubeProxy(k) => out.kube_proxy = Some((*k, origin.clone())),
    }
}

/// A Pod object as the simulator sees it: node from spec.nodeName, IP from
/// status.podIP, ready from the Ready condition, terminating from
/// metadata.deletionTimestamp.
fn pod_def(pod: &Pod, origin: &Origin, p: &mut Problems) -> Option<PodDef> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.as_ref()?;
    let status = pod.status.clone().unwrap_or_default();
    if matches!(status.phase.as_deref(), Some("Succeeded") | Some("Failed")) {
        p.warn_at(
            origin,
            format!(
                "pod {name}: phase {} — not running, skipped",
                status.phase.unwrap_or_default()
            ),
        );
        return None;
    }
    let Some(node) = spec.node_name.clone() else {
        p.warn_at(
            origin,
            format!("pod {name}: not scheduled (no spec.nodeName), skipped"),
        );
        return None;
    };
    let Some(ip) = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok()) else {
        p.warn_at(
            origin,
            format!("pod {name}: no IPv4 status.podIP yet, skipped"),
        );
        return None;
    };
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    // Out-of-range ports were reported by validation; they answer nothing.
    let ports = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|cp| {
            Some((
                cp.name.clone(),
                u16::try_from(cp.container_port).ok().filter(|p| *p > 0)?,
                cp.protocol.clone().unwrap_or_else(|| "TCP".into()),
            ))
        })
        .collect();
    Some(PodDef {
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name,
        node,
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        ip,
        ready,
        terminating: pod.metadata.deletion_timestamp.is_some(),
        host_network: spec.host_network.unwrap_or(false),
        ports,
    })
}

/// A Node object: InternalIP, spec.podCIDR, the zone label; its other
/// IPv4 addresses (a second InternalIP, ExternalIPs) and its CPU count
/// (`status.capacity.cpu`).
fn node_def(node: &Node, origin: &Origin, p: &mut Problems) -> Option<NodeDef> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let status = node.status.as_ref();
    let ipv4 = |types: &[&str]| -> Vec<std::net::Ipv4Addr> {
        status
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| types.contains(&a.type_.as_str()))
            .filter_map(|a| a.address.parse().ok())
            .collect()
    };
    let internal = ipv4(&["InternalIP"]);
    let address = internal.first().copied();
    let pod_cidr = node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .and_then(|c| c.parse::<ipnet::Ipv4Net>().ok());
    let (Some(address), Some(pod_cidr)) = (address, pod_cidr) else {
        p.at_origin(origin, format!("Node {name}: needs an IPv4 InternalIP in status.addresses and an IPv4 spec.podCIDR"));
        return None;
    };
    let mut extra_addresses: Vec<std::net::Ipv4Addr> = internal[1..].to_vec();
    for a in ipv4(&["ExternalIP"]) {
        if a != address && !extra_addresses.contains(&a) {
            extra_addresses.push(a);
        }
    }
    let cpus = status
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("cpu"))
        .map(|q| q.0.as_str());
    let cpus = match cpus {
        None => None,
        Some(q) => match cpu_count(q) {
            Some(n) => Some(n),
            None => {
                p.at_origin(
                    origin,
                    format!("Node {name}: status.capacity.cpu {q:?} is not a whole number of CPUs"),
                );
                None
            }
        },
    };
    let labels = node.metadata.labels.clone().unwrap_or_default();
    Some(NodeDef {
        zone: labels.get("topology.kubernetes.io/zone").cloned(),
        name,
        address,
        extra_addresses,
        pod_cidr: pod_cidr.trunc(),
        labels,
        cpus,
    })
}

/// A CPU quantity as kubelet reports capacity: `4`, or `4000m`.
fn cpu_count(q: &str) -> Option<u32> {
    match q.strip_suffix('m') {
        Some(milli) => milli
            .parse::<u32>()
            .ok()
            .filter(|m| m % 1000 == 0 && *m > 0)
            .map(|m| m / 1000),
        None => q.parse().ok().filter(|n| *n > 0),
    }
}
