//! Kubernetes objects written in plain YAML, read without the YAML
//! machinery.
//!
//! A cluster written out lists its thousands of Services under `objects:`.
//! serde-saphyr reads them at a few megabytes a second, and after
//! [`super::flow_pods`] they are most of the time of reading such a file.
//! This module reads a run of such items written in a plain subset of YAML
//! into a small tree, and hands each item to the very readers serde-saphyr
//! feeds ([`Object`], and through it k8s-openapi's types and the strict
//! field checks) through a serde `Deserializer` over that tree. So the
//! values come from the same code; what this module must get right is the
//! tree, and answering each request of those readers as serde-saphyr
//! would. The tests compare the two, value by value and location by
//! location.
//!
//! The subset, line by line: ASCII; indentation by spaces; block mappings,
//! and block sequences (under a key, at the key's own indentation too, as
//! kubectl prints them); flow mappings and sequences that close on their
//! line, without a trailing comma; keys that are plain scalars YAML reads
//! as strings; values that are such scalars, `true` or `false`, unsigned
//! decimal integers, or quoted strings on one line without escapes; blank
//! and comment lines between. Anything else (a null or an empty value, a
//! key twice, a tag, a block or multi-line scalar, an inline comment, a
//! scalar YAML could read as a number, a boolean or null in some schema)
//! leaves the run to serde-saphyr, errors and all. So does a request the
//! tree does not answer exactly as serde-saphyr does: a number asked of a
//! string or a string of a number, a float, an enum, a located value
//! inside an object (`kind: List` items, `include:`).
//!
//! Like [`super::flow_pods`], it is a shortcut for [`super::pieces`], never
//! a reading of its own.

use super::flow_pods::{lines, location, only_a_string, plain_scalar_len, Line, Start};
use super::kube::{self, Object};
use super::raw::S;
use serde::de::value::{Error, StrDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// The objects of `body`, a run of block-sequence items of the file
/// starting at `start`, each an object in the plain subset, nesting at
/// most `depth` collections deep counting the sequence. `None` as soon as
/// anything is outside the subset, or an object does not read.
pub(super) fn read(body: &str, start: Start, depth: usize) -> Option<Vec<S<Object>>> {
    if !body.is_ascii() {
        return None;
    }
    let lines: Vec<Line> = lines(body, start).collect();
    let mut reader = Reader {
        lines: &lines,
        at: 0,
        depth,
    };
    let items = reader.items()?;
    let objects = items
        .into_iter()
        .map(|(node, at)| {
            let object = Object::deserialize(De(&node)).ok()?;
            Some(Spanned::new(object, at, at))
        })
        .collect::<Option<Vec<_>>>();
    if objects.is_none() {
        // A failed object leaves a note for this thread's next object.
        kube::take_failure();
    }
    objects
}

/// A value as this module reads it.
#[derive(Debug, PartialEq)]
enum Node<'a> {
    /// A string in every schema: a plain scalar of the accepted
    /// characters, or a quoted one.
    Str(&'a str),
    /// An unsigned decimal integer, as written (no sign, no leading zero).
    Int(u64),
    Bool(bool),
    Map(Vec<(&'a str, Node<'a>)>),
    Seq(Vec<Node<'a>>),
}

/// Where a sequence item's content starts: past `- ` and spaces, when the
/// line has a dash at `indent` and something after it.
fn item_content(line: &Line, indent: usize) -> Option<usize> {
    let rest = line.text.get(indent..)?.strip_prefix("- ")?;
    let content = rest.trim_start_matches(' ');
    (!content.is_empty()).then(|| line.text.len() - content.len())
}

fn is_item(line: &Line, indent: usize) -> bool {
    let rest = &line.text.as_bytes()[indent.min(line.text.len())..];
    rest.starts_with(b"- ") || rest == b"-"
}

/// The length of the key at the start of `s` (`key:` then a space or the
/// end of the line), when there is one.
fn key_len(s: &str) -> Option<usize> {
    let len = plain_scalar_len(s.as_bytes())?;
    let after = s.as_bytes().get(len..)?;
    let is_key = after.first() == Some(&b':') && matches!(after.get(1), None | Some(b' '));
    (is_key && only_a_string(&s[..len])).then_some(len)
}

/// A scalar at the start of `s`, with its length.
fn scalar(s: &str) -> Option<(Node<'_>, usize)> {
    let bytes = s.as_bytes();
    match bytes.first()? {
        &q @ (b'"' | b'\'') => {
            let len = bytes[1..].iter().position(|&b| b == q)?;
            let inner = &s[1..1 + len];
            // Escapes (`\` in double quotes, `''` in single ones) and
            // control characters are left to serde-saphyr.
            let plain = inner.bytes().all(|b| b >= b' ' && b != b'\\' && b != 0x7f);
            let doubled = bytes.get(len + 2) == Some(&q);
            (plain && !doubled).then_some((Node::Str(inner), len + 2))
        }
        _ => {
            let len = plain_scalar_len(bytes)?;
            let text = &s[..len];
            let node = match text {
                "true" => Node::Bool(true),
                "false" => Node::Bool(false),
                _ if text.bytes().all(|b| b.is_ascii_digit()) => {
                    if len > 1 && text.starts_with('0') || len > 18 {
                        return None;
                    }
                    Node::Int(text.parse().ok()?)
                }
                _ if only_a_string(text) => Node::Str(text),
                _ => return None,
            };
            Some((node, len))
        }
    }
}

/// Reads the lines as a tree, line by line.
struct Reader<'l, 'a> {
    lines: &'l [Line<'a>],
    /// The next line to read.
    at: usize,
    /// How deep collections may nest, counting the items' sequence.
    depth: usize,
}

impl<'a> Reader<'_, 'a> {
    fn line(&self) -> Option<Line<'a>> {
        self.lines.get(self.at).copied()
    }

    /// The items: lines with a dash at the first line's indentation, each
    /// item a mapping, with its location as serde-saphyr gives it (a block
    /// mapping's is its first key's place, zero long).
    fn items(&mut self) -> Option<Vec<(Node<'a>, serde_saphyr::Location)>> {
        let indent = self.line()?.indent;
        let mut items = Vec::new();
        while let Some(line) = self.line() {
            if line.indent != indent {
                return None;
            }
            let col = item_content(&line, indent)?;
            let node = self.node_at(col, 2)?;
            if !matches!(node, Node::Map(_)) {
                return None;
            }
            // A flow mapping is located at its `{`, one long.
            let len = usize::from(line.text.as_bytes()[col] == b'{');
            let at = location(
                line.at.line,
                col + 1,
                (line.at.char + col, len),
                (line.at.byte + col, len),
            );
            items.push((node, at));
        }
        Some(items)
    }

    /// The value that starts at column `col` of the current line, at
    /// nesting `depth`: a flow collection or a scalar ending the line, or a
    /// block mapping whose first key is there.
    fn node_at(&mut self, col: usize, depth: usize) -> Option<Node<'a>> {
        let line = self.line()?;
        let rest = &line.text[col..];
        if key_len(rest).is_some() {
            return self.block_map(col, depth);
        }
        self.at += 1;
        end_of_line(rest, depth, self.depth)
    }

    /// A block collection whose lines start at the current one, indented
    /// `indent`.
    fn block(&mut self, indent: usize, depth: usize) -> Option<Node<'a>> {
        if is_item(&self.line()?, indent) {
            self.block_seq(indent, depth)
        } else {
            self.block_map(indent, depth)
        }
    }

    fn block_seq(&mut self, indent: usize, depth: usize) -> Option<Node<'a>> {
        if depth > self.depth {
            return None;
        }
        let mut items = Vec::new();
        while let Some(line) = self.line() {
            if line.indent != indent || !is_item(&line, indent) {
                break;
            }
            let col = item_content(&line, indent)?;
            items.push(self.node_at(col, depth + 1)?);
        }
        Some(Node::Seq(items))
    }

    /// A block mapping whose keys sit at column `col`, the first on the
    /// current line.
    fn block_map(&mut self, col: usize, depth: usize) -> Option<Node<'a>> {
        if depth > self.depth {
            return None;
        }
        let mut entries: Vec<(&'a str, Node<'a>)> = Vec::new();
        loop {
            let line = self.line()?;
            let rest = &line.text[col..];
            let len = key_len(rest)?;
            let key = &rest[..len];
            if entries.iter().any(|(k, _)| *k == key) {
                return None;
            }
            let value = rest[len + 1..].trim_start_matches(' ');
            let node = if value.is_empty() {
                // The value is on the lines below: more indented, or a
                // sequence at the key's own indentation.
                self.at += 1;
                let next = self.line()?;
                if next.indent > col || next.indent == col && is_item(&next, col) {
                    self.block(next.indent, depth + 1)?
                } else {
                    return None;
                }
            } else {
                self.at += 1;
                end_of_line(value, depth + 1, self.depth)?
            };
            entries.push((key, node));
            match self.line() {
                Some(next) if next.indent == col && !is_item(&next, col) => continue,
                Some(next) if next.indent > col => return None,
                _ => return Some(Node::Map(entries)),
            }
        }
    }
}

/// A flow collection or a scalar that is all of `s` but trailing spaces.
fn end_of_line(s: &str, depth: usize, max: usize) -> Option<Node<'_>> {
    let mut flow = Flow { s, at: 0, max };
    let node = flow.node(depth)?;
    flow.spaces();
    (flow.at == s.len()).then_some(node)
}

/// A walk over flow collections on one line.
struct Flow<'a> {
    s: &'a str,
    at: usize,
    max: usize,
}

impl<'a> Flow<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.at).copied()
    }

    fn spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek() == Some(b)).then(|| self.at += 1)
    }

    fn node(&mut self, depth: usize) -> Option<Node<'a>> {
        match self.peek()? {
            b'{' | b'[' if depth > self.max => None,
            b'{' => self.map(depth),
            b'[' => self.seq(depth),
            _ => {
                let (node, len) = scalar(&self.s[self.at..])?;
                self.at += len;
                Some(node)
            }
        }
    }

    fn map(&mut self, depth: usize) -> Option<Node<'a>> {
        self.eat(b'{')?;
        self.spaces();
        let mut entries: Vec<(&'a str, Node<'a>)> = Vec::new();
        if self.eat(b'}').is_some() {
            return Some(Node::Map(entries));
        }
        loop {
            let len = key_len(&self.s[self.at..])?;
            let key = &self.s[self.at..self.at + len];
            self.at += len + 1;
            self.eat(b' ')?;
            self.spaces();
            if entries.iter().any(|(k, _)| *k == key) {
                return None;
            }
            let value = self.node(depth + 1)?;
            entries.push((key, value));
            if self.next_or_end(b'}')? {
                return Some(Node::Map(entries));
            }
        }
    }

    fn seq(&mut self, depth: usize) -> Option<Node<'a>> {
        self.eat(b'[')?;
        self.spaces();
        let mut items = Vec::new();
        if self.eat(b']').is_some() {
            return Some(Node::Seq(items));
        }
        loop {
            items.push(self.node(depth + 1)?);
            if self.next_or_end(b']')? {
                return Some(Node::Seq(items));
            }
        }
    }

    /// After an entry: `,` and the next (`false`), or the `close` (`true`).
    fn next_or_end(&mut self, close: u8) -> Option<bool> {
        self.spaces();
        if self.eat(b',').is_some() {
            self.spaces();
            return Some(false);
        }
        self.eat(close).map(|()| true)
    }
}

/// A node handed to serde readers, answering as serde-saphyr does, or
/// refusing (which leaves the run to serde-saphyr).
struct De<'n, 'a>(&'n Node<'a>);

fn refused<T>() -> Result<T, Error> {
    Err(de::Error::custom("left to serde-saphyr"))
}

/// Integer requests: the number if it fits the type asked.
macro_rules! integers {
    ($($method:ident $visit:ident $ty:ty),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            match self.0 {
                Node::Int(n) => match <$ty>::try_from(*n) {
                    Ok(n) => v.$visit(n),
                    Err(_) => refused(),
                },
                _ => refused(),
            }
        }
    )*};
}

impl<'de> Deserializer<'de> for De<'_, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.0 {
            Node::Str(s) => v.visit_str(s),
            Node::Int(n) => v.visit_u64(*n),
            Node::Bool(b) => v.visit_bool(*b),
            Node::Map(m) => v.visit_map(Entries {
                entries: m.iter(),
                value: None,
            }),
            Node::Seq(s) => v.visit_seq(Items(s.iter())),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.0 {
            Node::Bool(b) => v.visit_bool(*b),
            _ => refused(),
        }
    }

    integers! {
        deserialize_i8 visit_i8 i8, deserialize_i16 visit_i16 i16,
        deserialize_i32 visit_i32 i32, deserialize_i64 visit_i64 i64,
        deserialize_u8 visit_u8 u8, deserialize_u16 visit_u16 u16,
        deserialize_u32 visit_u32 u32, deserialize_u64 visit_u64 u64,
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.0 {
            Node::Str(s) => v.visit_str(s),
            _ => refused(),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_str(v)
    }

    /// No node is null.
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_some(self)
    }

    /// serde-saphyr's `Spanned` asks by this name for a location the tree
    /// does not keep.
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, Error> {
        if name == "__yaml_spanned" {
            return refused();
        }
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.0 {
            Node::Seq(s) => v.visit_seq(Items(s.iter())),
            _ => refused(),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, Error> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        v: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        match self.0 {
            Node::Map(m) => v.visit_map(Entries {
                entries: m.iter(),
                value: None,
            }),
            _ => refused(),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(v)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        self.deserialize_any(v)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, Error> {
        refused()
    }
    fn deserialize_f64<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, Error> {
        refused()
    }
    fn deserialize_i128<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, Error> {
        refused()
    }
    fn deserialize_u128<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, Error> {
        refused()
    }
    fn deserialize_char<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, Error> {
        refused()
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, Error> {
        refused()
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, Error> {
        refused()
    }
    fn deserialize_unit<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, Error> {
        refused()
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _v: V,
    ) -> Result<V::Value, Error> {
        refused()
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _v: V,
    ) -> Result<V::Value, Error> {
        refused()
    }
}

/// A mapping's entries, keys as strings.
struct Entries<'n, 'a> {
    entries: std::slice::Iter<'n, (&'a str, Node<'a>)>,
    value: Option<&'n Node<'a>>,
}

impl<'de> MapAccess<'de> for Entries<'_, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        seed.deserialize(StrDeserializer::<Error>::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(De(value)),
            None => refused(),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// A sequence's items.
struct Items<'n, 'a>(std::slice::Iter<'n, Node<'a>>);

impl<'de> SeqAccess<'de> for Items<'_, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0.next().map(|n| seed.deserialize(De(n))).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::yaml::Limits;
    use proptest::prelude::*;

    #[derive(Debug, serde::Deserialize)]
    struct Objects {
        objects: Vec<S<Object>>,
    }

    fn show(objects: &[S<Object>]) -> String {
        objects
            .iter()
            .map(|o| format!("{:?} at {:?} / {:?}\n", o.value, o.referenced, o.defined))
            .collect()
    }

    fn depth() -> usize {
        Limits::default().depth - 2
    }

    /// What serde-saphyr reads from `prefix`, `objects:` and `body`, and
    /// what this module reads from `body` placed there (`None` when
    /// serde-saphyr refuses the file).
    fn both(prefix: &str, body: &str) -> (Option<String>, Option<String>) {
        let before = format!("{prefix}objects:\n");
        let text = format!("{before}{body}");
        let whole: Option<Objects> =
            serde_saphyr::from_str_with_options(&text, Limits::default().options()).ok();
        kube::take_failure();
        let fast = read(body, Start::after(&before), depth());
        (whole.map(|w| show(&w.objects)), fast.map(|o| show(&o)))
    }

    const PREFIX: &str = "# é, ü and 🌍 before the objects\nscenario: x\n";

    /// As `kubectl get -o yaml` prints them (sequences at their key's
    /// indentation, quoted timestamps and versions), and as generators
    /// write them (flow mappings on a line).
    const ACCEPTED: [&str; 8] = [
        "  - apiVersion: v1\n    kind: Service\n    metadata: { name: svc-0, namespace: default }\n    spec: { type: NodePort, clusterIP: 10.96.0.10, selector: { app: svc-0 }, ports: [{ name: http, port: 80, targetPort: 8080, nodePort: 30000 }] }\n  - apiVersion: v1\n    kind: Service\n    metadata: { name: svc-1, namespace: default }\n    spec: { type: ClusterIP, clusterIP: 10.96.0.11, selector: { app: svc-1 }, ports: [{ name: http, port: 80, targetPort: 8080 }] }\n",
        "- apiVersion: v1\n  kind: Service\n  metadata:\n    annotations:\n      example.com/owner: team-a\n    creationTimestamp: \"2024-05-01T10:00:00Z\"\n    labels:\n      app.kubernetes.io/name: web\n    name: web\n    namespace: shop\n    resourceVersion: \"4242\"\n    uid: c9d4c1e7-7f1a-4f53-9f5e-1c2d3e4f5a6b\n  spec:\n    allocateLoadBalancerNodePorts: true\n    clusterIP: 10.96.12.34\n    clusterIPs:\n    - 10.96.12.34\n    externalTrafficPolicy: Local\n    healthCheckNodePort: 32000\n    internalTrafficPolicy: Cluster\n    ipFamilies:\n    - IPv4\n    ipFamilyPolicy: SingleStack\n    loadBalancerSourceRanges: ['203.0.113.0/24', \"198.51.100.0/24\"]\n    ports:\n    - name: http\n      nodePort: 31080\n      port: 80\n      protocol: TCP\n      targetPort: http\n    selector:\n      app: web\n    sessionAffinity: ClientIP\n    sessionAffinityConfig:\n      clientIP:\n        timeoutSeconds: 10800\n    type: LoadBalancer\n  status:\n    loadBalancer:\n      ingress:\n      - ip: 203.0.113.10\n        ipMode: VIP\n",
        "- apiVersion: discovery.k8s.io/v1\n  kind: EndpointSlice\n  metadata:\n    name: web-abc\n    namespace: shop\n    labels:\n      kubernetes.io/service-name: web\n  addressType: IPv4\n  endpoints:\n  - addresses:\n    - 10.244.1.5\n    conditions:\n      ready: true\n      serving: true\n      terminating: false\n    nodeName: node-a\n    zone: zone-a\n  - addresses: [10.244.2.7]\n    conditions: { ready: false }\n    nodeName: node-b\n  ports:\n  - name: http\n    port: 8080\n    protocol: TCP\n",
        "- apiVersion: v1\n  kind: Pod\n  metadata: { name: client, namespace: default, labels: { app: client } }\n  spec:\n    nodeName: node-a\n    hostNetwork: false\n    containers:\n    - name: c\n      image: busybox\n      resources:\n        limits: { cpu: 500m, memory: 64Mi }\n      ports:\n      - containerPort: 8080\n        protocol: TCP\n  status: { podIP: 10.244.1.9, phase: Running, podIPs: [{ ip: 10.244.1.9 }] }\n",
        "- apiVersion: v1\n  kind: Node\n  metadata: { name: node-z, labels: { topology.kubernetes.io/zone: zone-b } }\n  spec: { podCIDR: 10.244.9.0/24 }\n  status:\n    addresses:\n    - { type: InternalIP, address: 192.168.0.99 }\n",
        // A kind kpsim skips; fields before apiVersion and kind; a field
        // the type does not know.
        "- { apiVersion: v1, kind: ConfigMap, metadata: { name: cm }, data: { a: b } }\n- metadata: { name: late }\n  apiVersion: v1\n  kind: Service\n  spec: { clusterIP: 10.96.0.99, ports: [{ port: 53, protocol: UDP }] }\n- apiVersion: v1\n  kind: Service\n  metadata: { name: odd }\n  spec: { clusterIP: 10.96.0.98, frobnicate: { x: z }, ports: [{ port: 1 }] }\n",
        // Comments, blank lines, extra spaces.
        "    # the first\n    -   apiVersion: v1\n        kind:   Service\n\n        metadata:   {name: a,namespace: b}   \n# between\n    - apiVersion: v1\n      kind: Service\n      metadata: {   }\n      spec: { ports: [ ] }\n",
        "- apiVersion: v1\n  kind: Service\n  metadata:\n    name: deep\n  spec:\n    ports:\n      - name: a\n        port: 1\n      - { name: b, port: 2 }\n    selector: {}\n",
    ];

    #[test]
    fn accepted_objects_read_as_serde_saphyr_reads_them() {
        for body in ACCEPTED {
            for prefix in ["", PREFIX] {
                let (whole, fast) = both(prefix, body);
                assert!(whole.is_some(), "serde-saphyr reads {body}");
                assert_eq!(fast, whole, "{prefix}{body}");
            }
        }
    }

    #[test]
    fn anything_else_is_left_to_serde_saphyr() {
        let service = |spec: &str| {
            format!(
                "- apiVersion: v1\n  kind: Service\n  metadata: {{ name: web }}\n  spec: {spec}\n"
            )
        };
        let mut bodies: Vec<String> = [
            "{ clusterIP: \"a\\\"b\" }",
            "{ clusterIP: 'it''s' }",
            "{ clusterIP: ~ }",
            "{ clusterIP: null }",
            "{ clusterIP: Null }",
            "{ clusterIP: yes }",
            "{ clusterIP: on }",
            "{ clusterIP: a, clusterIP: b }",
            "{ clusterIP: a, }",
            "{ clusterIP:a }",
            "{ clusterIP: 10 }",
            "{ clusterIP: !!str a }",
            "{ clusterIP: a b }",
            "{ clusterIP: a:b }",
            "{ clusterIP: é }",
            "{ ports: [{ port: 0080 }] }",
            "{ ports: [{ port: -1 }] }",
            "{ ports: [{ port: 1.5 }] }",
            "{ ports: [{ port: 1e3 }] }",
            "{ ports: [{ port: 1_000 }] }",
            "{ ports: [{ port: 0x50 }] }",
            "{ ports: [{ port: \"80\" }] }",
            "{ ports: [{ port: 99999999999 }] }",
            "{ ports: [{ port: 80 }, ] }",
            "{ publishNotReadyAddresses: True }",
            "{ publishNotReadyAddresses: yes }",
            "{ 80: a }",
            "{ clusterIP: a } # a comment",
            "{ clusterIP: a }}",
            "{ clusterIP: a, ports: [\n    { port: 80 }] }",
            "\n    clusterIP:",
            "\n    clusterIP: |\n      a",
            "\n    clusterIP: >\n      a",
            "\n    clusterIP: a\n    clusterIP: b",
            "\n    clusterIP: a\n      more: b",
            "\n    ? clusterIP\n    : a",
            "\n    ports:\n    - - 80",
            "\n    ports:\n    -\n      port: 80",
            "\n    clusterIP: a\n   stray: b",
        ]
        .iter()
        .map(|spec| service(spec))
        .collect();
        bodies.extend(
            [
                "- apiVersion: v1\n  kind: List\n  items:\n  - apiVersion: v1\n    kind: Service\n    metadata: { name: a }\n",
                "- include: [more.yaml]\n",
                "- 42\n",
                "- apiVersion: v1\n  kind: Service\n  metadata: { name: a }\n - apiVersion: v1\n",
                "- apiVersion: v1\n  kind: Service\n  metadata: { name: a }\n    extra: 1\n",
                "- { apiVersion: v1, kind: Service, metadata: { name: 123 } }\n",
                "- { apiVersion: v1, kind: Service, metadata: { name: a, labels: { a: 1 } } }\n",
                "- { apiVersion: v1, kind: Service, metadata: { name: a, labels: { a: b, a: c } } }\n",
                "- apiVersion: v1\n  kind: Service\n  metadata:\n    labels:\n      a: b\n      a: c\n",
            ]
            .map(String::from),
        );
        for body in &bodies {
            assert!(
                read(body, Start::after("objects:\n"), depth()).is_none(),
                "{body}"
            );
        }
    }

    /// Nesting deeper than allowed is left to serde-saphyr, which names
    /// the limit.
    #[test]
    fn deep_nesting_is_left_to_serde_saphyr() {
        let body = "- apiVersion: v1\n  kind: ConfigMap\n  data: { a: { b: [ [ c ] ] } }\n";
        assert!(read(body, Start::after("objects:\n"), 6).is_some());
        assert!(read(body, Start::after("objects:\n"), 5).is_none());
    }

    /// A scalar for a field of the kind `good` gives, mostly, else any of
    /// the spellings YAML reads otherwise.
    fn scalar(good: BoxedStrategy<String>) -> impl Strategy<Value = String> {
        let odd = prop_oneof![
            Just("80".to_string()),
            Just("0080".to_string()),
            Just("\"80\"".to_string()),
            Just("'x'".to_string()),
            Just("true".to_string()),
            Just("on".to_string()),
            Just("1e3".to_string()),
            Just("10.96.0.1".to_string()),
            Just("65536".to_string()),
            Just("null".to_string()),
            Just("a b".to_string()),
        ];
        prop_oneof![6 => good, 1 => odd]
    }

    fn text() -> BoxedStrategy<String> {
        "[a-z][a-z0-9.-]{0,6}".boxed()
    }

    fn number() -> BoxedStrategy<String> {
        (1u32..70000).prop_map(|n| n.to_string()).boxed()
    }

    fn boolean() -> BoxedStrategy<String> {
        prop_oneof![Just("true".to_string()), Just("false".to_string())].boxed()
    }

    /// A service whose parts are written in block or flow style at random.
    fn service() -> impl Strategy<Value = String> {
        (
            scalar(text()),
            scalar(text()),
            scalar(number()),
            scalar(prop_oneof![text(), number()].boxed()),
            scalar(boolean()),
            any::<[bool; 4]>(),
        )
            .prop_map(|(name, ip, port, target, publish, flow)| {
                let metadata = if flow[0] {
                    format!("  metadata: {{ name: {name}, labels: {{ app: {name} }} }}\n")
                } else {
                    format!("  metadata:\n    name: {name}\n    labels:\n      app: {name}\n")
                };
                let port_entry = if flow[2] {
                    format!("[{{ port: {port}, targetPort: {target} }}]")
                } else {
                    format!("\n    - port: {port}\n      targetPort: {target}")
                };
                let spec = if flow[1] {
                    format!("  spec: {{ clusterIP: {ip}, publishNotReadyAddresses: {publish}, ports: {} }}\n",
                        if flow[2] { port_entry.clone() } else { format!("[{{ port: {port}, targetPort: {target} }}]") })
                } else {
                    format!("  spec:\n    clusterIP: {ip}\n    publishNotReadyAddresses: {publish}\n    ports: {port_entry}\n")
                };
                let head = if flow[3] { "- apiVersion: v1\n  kind: Service\n" } else { "- kind: Service\n  apiVersion: v1\n" };
                format!("{head}{metadata}{spec}")
            })
    }

    /// Whatever the module reads, it reads as serde-saphyr does; and it
    /// reads a good share of what it is given (a test that proves nothing
    /// when every object is refused would pass too).
    #[test]
    fn never_reads_other_than_serde_saphyr() {
        use proptest::test_runner::{Config, TestRunner};
        let mut runner = TestRunner::new(Config {
            cases: 512,
            failure_persistence: None,
            ..Config::default()
        });
        let read_ones = std::cell::Cell::new(0);
        runner
            .run(&prop::collection::vec(service(), 1..4), |services| {
                let body = services.concat();
                let (whole, fast) = both(PREFIX, &body);
                if let Some(fast) = fast {
                    prop_assert_eq!(Some(fast), whole, "{}", body);
                    read_ones.set(read_ones.get() + 1);
                }
                Ok(())
            })
            .unwrap();
        assert!(
            read_ones.get() > 512 / 10,
            "read {} of 512",
            read_ones.get()
        );
    }
}
