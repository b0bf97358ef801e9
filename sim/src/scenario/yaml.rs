//! Reading YAML text: the limits that guard against hostile input, sized
//! for real clusters; field paths (`spec.ports[0].port`) and where such a
//! path sits in a file; and which known field a misspelt one probably meant.
//!
//! Reading stays streaming: Kubernetes objects are deserialized straight from
//! the YAML events into k8s-openapi types. Locations of fields are only
//! looked up again (by path, in a light tree of the file) when there is a
//! problem to report.

use super::error::Loc;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::Spanned;
use std::fmt;

/// The YAML reader's limits. They exist against alias bombs and absurd
/// nesting; the size limits are set for real clusters (50,000 Services and
/// 250,000 pods as `kubectl get -o yaml` prints them fit in one file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Nesting depth of mappings and sequences.
    pub depth: usize,
    /// Values, mappings and sequences in one file.
    pub nodes: usize,
    /// Bytes of scalar text in one file.
    pub scalar_bytes: usize,
    /// Documents (`---`) in one file.
    pub documents: usize,
    /// Aliases (`*name`) and anchors in one file.
    pub aliases: usize,
    /// Values replayed by expanding aliases, in one file.
    pub alias_expansion: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            depth: 64,
            nodes: 400_000_000,
            scalar_bytes: 8 << 30,
            documents: 1_000_000,
            aliases: 50_000,
            alias_expansion: 1_000_000,
        }
    }
}

/// The limits by the names `--yaml-limit NAME=N` takes, with what each
/// counts.
pub const LIMIT_NAMES: &[(&str, &str)] = &[
    ("depth", "nesting depth of mappings and sequences"),
    ("nodes", "values, mappings and sequences in one file"),
    ("scalar-bytes", "bytes of scalar text in one file"),
    ("documents", "documents in one file"),
    ("aliases", "aliases and anchors in one file"),
    (
        "alias-expansion",
        "values replayed by expanding aliases in one file",
    ),
];

impl Limits {
    /// Set one limit by name (`depth`, `nodes`, ...).
    pub fn set(&mut self, name: &str, value: usize) -> Result<(), String> {
        let slot = match name {
            "depth" => &mut self.depth,
            "nodes" => &mut self.nodes,
            "scalar-bytes" => &mut self.scalar_bytes,
            "documents" => &mut self.documents,
            "aliases" => &mut self.aliases,
            "alias-expansion" => &mut self.alias_expansion,
            other => {
                return Err(format!(
                    "unknown YAML limit {other:?} (known: {})",
                    LIMIT_NAMES
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        };
        *slot = value;
        Ok(())
    }

    /// Parse `NAME=N`.
    pub fn set_from(&mut self, arg: &str) -> Result<(), String> {
        let (name, value) = arg
            .split_once('=')
            .ok_or_else(|| format!("--yaml-limit {arg:?}: expected NAME=N"))?;
        let value: usize = value
            .trim()
            .replace('_', "")
            .parse()
            .map_err(|_| format!("--yaml-limit {arg:?}: {value:?} is not a number"))?;
        self.set(name.trim(), value)
    }

    /// serde-saphyr options: these limits, YAML 1.2 core schema booleans
    /// (only `true`/`false`, so a label value `on` stays a string, as JSON
    /// would have it), duplicate keys refused.
    pub fn options(&self) -> serde_saphyr::Options {
        let mut budget = serde_saphyr::Budget::default();
        budget.max_depth = self.depth;
        budget.max_nodes = self.nodes;
        // Every node is at most a start and an end event, plus document and
        // stream markers: the node limit is the one that speaks.
        budget.max_events = self
            .nodes
            .saturating_mul(2)
            .saturating_add(4 * self.documents + 8);
        budget.max_total_scalar_bytes = self.scalar_bytes;
        budget.max_documents = self.documents;
        budget.max_aliases = self.aliases;
        budget.max_anchors = self.aliases;
        budget.max_recorded_anchor_events = self.alias_expansion;
        let mut o = serde_saphyr::Options::default();
        o.budget = Some(budget);
        o.alias_limits.max_total_replayed_events = self.alias_expansion;
        o.strict_booleans = true;
        o.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
        o
    }

    /// A breached limit in words, with how to raise it; `None` when the
    /// error is not about a limit.
    pub fn explain(&self, e: &serde_saphyr::Error) -> Option<String> {
        use serde_saphyr::Error as E;
        let (name, value) = match e.without_snippet() {
            E::AliasError { error, .. } => return self.explain(error),
            E::Budget { breach, .. } => match breach {
                BudgetBreach::Depth { .. } => ("depth", self.depth),
                BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. } => ("nodes", self.nodes),
                BudgetBreach::ScalarBytes { .. } => ("scalar-bytes", self.scalar_bytes),
                BudgetBreach::Documents { .. } => ("documents", self.documents),
                BudgetBreach::Aliases { .. } | BudgetBreach::Anchors { .. } => {
                    ("aliases", self.aliases)
                }
                BudgetBreach::AliasAnchorRatio { aliases, anchors } => {
                    return Some(format!(
                        "the YAML uses {aliases} aliases for {anchors} anchors, the shape of an alias bomb; refused"
                    ))
                }
                // Replayed and recorded anchor events, property
                // interpolation: what aliases make of small text.
                _ => ("alias-expansion", self.alias_expansion),
            },
            E::AliasReplayLimitExceeded { .. } | E::AliasExpansionLimitExceeded { .. } => {
                ("alias-expansion", self.alias_expansion)
            }
            E::AliasReplayStackDepthExceeded { .. } => ("depth", self.depth),
            _ => return None,
        };
        let what = LIMIT_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, w)| *w);
        Some(format!(
            "YAML limit reached: more than {value} {what} (limit `{name}`); if the file is meant to be this large, raise it with --yaml-limit {name}=N or KPSIM_YAML_LIMIT={name}=N"
        ))
    }
}

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path from an object (or document) root to a field, printed as the API
/// server prints it: `spec.ports[0].targetPort`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    pub fn key(&self, k: &str) -> FieldPath {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_string()));
        p
    }

    pub fn index(&self, i: usize) -> FieldPath {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    /// `self` followed by `rest`.
    pub fn join(&self, rest: &FieldPath) -> FieldPath {
        let mut p = self.clone();
        p.0.extend(rest.0.iter().cloned());
        p
    }

    /// The path without its last step, and that step's key.
    pub fn split_last_key(&self) -> Option<(FieldPath, &str)> {
        match self.0.split_last()? {
            (Seg::Key(k), rest) => Some((FieldPath(rest.to_vec()), k.as_str())),
            _ => None,
        }
    }

    /// From serde_ignored's path (its `?` steps for `Option` and newtypes
    /// are not fields).
    pub fn from_ignored(p: &serde_ignored::Path) -> FieldPath {
        fn walk(p: &serde_ignored::Path, out: &mut Vec<Seg>) {
            use serde_ignored::Path as P;
            match p {
                P::Root => {}
                P::Seq { parent, index } => {
                    walk(parent, out);
                    out.push(Seg::Index(*index));
                }
                P::Map { parent, key } => {
                    walk(parent, out);
                    out.push(Seg::Key(key.clone()));
                }
                P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
                    walk(parent, out)
                }
            }
        }
        let mut v = Vec::new();
        walk(p, &mut v);
        FieldPath(v)
    }

    /// From serde_path_to_error's path.
    pub fn from_error_path(p: &serde_path_to_error::Path) -> FieldPath {
        use serde_path_to_error::Segment as S;
        FieldPath(
            p.iter()
                .filter_map(|s| match s {
                    S::Seq { index } => Some(Seg::Index(*index)),
                    S::Map { key } => Some(Seg::Key(key.clone())),
                    S::Enum { variant } => Some(Seg::Key(variant.clone())),
                    S::Unknown => None,
                })
                .collect(),
        )
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// The known name closest to a misspelt one, when it is close enough to be
/// what was meant (case differences count as near misses).
pub fn did_you_mean<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    known
        .into_iter()
        .map(|k| {
            let d = strsim::damerau_levenshtein(&lower, &k.to_ascii_lowercase());
            let case_only = usize::from(k != word);
            (d * 2 + case_only, k)
        })
        .filter(|(d, k)| *d / 2 <= (k.len().max(word.len()) / 4).max(1) && *d > 0)
        .min()
        .map(|(_, k)| k)
}

/// The field names a type expects at `path` (the parent of a misspelt
/// field), as its serde `Deserialize` declares them; `None` where the type
/// takes any key (a label map) or the path leads nowhere.
///
/// It asks the type itself: a probe deserializer walks down the path and
/// stops at the `deserialize_struct` call that lists the fields.
pub fn expected_fields<T: de::DeserializeOwned>(
    path: &FieldPath,
) -> Option<&'static [&'static str]> {
    let found = std::cell::Cell::new(None);
    let _ = T::deserialize(Probe {
        rest: &path.0,
        found: &found,
    });
    found.get()
}

#[derive(Debug)]
struct ProbeDone;

impl fmt::Display for ProbeDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("probe done")
    }
}

impl std::error::Error for ProbeDone {}

impl de::Error for ProbeDone {
    fn custom<T: fmt::Display>(_: T) -> Self {
        ProbeDone
    }
}

struct Probe<'a> {
    rest: &'a [Seg],
    found: &'a std::cell::Cell<Option<&'static [&'static str]>>,
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = ProbeDone;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, ProbeDone> {
        Err(ProbeDone)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ProbeDone> {
        match self.rest.split_first() {
            None => {
                self.found.set(Some(fields));
                Err(ProbeDone)
            }
            Some((Seg::Key(k), rest)) => visitor.visit_map(OneEntry {
                key: Some(k),
                value: Probe {
                    rest,
                    found: self.found,
                },
            }),
            Some(_) => Err(ProbeDone),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeDone> {
        match self.rest.split_first() {
            Some((Seg::Key(k), rest)) => visitor.visit_map(OneEntry {
                key: Some(k),
                value: Probe {
                    rest,
                    found: self.found,
                },
            }),
            _ => Err(ProbeDone),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeDone> {
        match self.rest.split_first() {
            Some((Seg::Index(_), rest)) => visitor.visit_seq(OneElement(Some(Probe {
                rest,
                found: self.found,
            }))),
            _ => Err(ProbeDone),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeDone> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, ProbeDone> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct enum identifier ignored_any
    }
}

struct OneEntry<'a> {
    key: Option<&'a str>,
    value: Probe<'a>,
}

impl<'de> MapAccess<'de> for OneEntry<'_> {
    type Error = ProbeDone;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ProbeDone> {
        match self.key.take() {
            Some(k) => seed
                .deserialize(de::value::StrDeserializer::<ProbeDone>::new(k))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, ProbeDone> {
        seed.deserialize(Probe {
            rest: self.value.rest,
            found: self.value.found,
        })
    }
}

struct OneElement<'a>(Option<Probe<'a>>);

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = ProbeDone;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ProbeDone> {
        match self.0.take() {
            Some(p) => seed.deserialize(p).map(Some),
            None => Ok(None),
        }
    }
}

/// A YAML document as a light tree that only remembers where each key is,
/// read when a problem's field path must be turned into a line and column.
enum Tree {
    Map(Vec<(Spanned<KeyText>, Tree)>),
    Seq(Vec<Tree>),
    Leaf,
}

/// A mapping key as text (YAML keys may be numbers or booleans).
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyText, E> {
                Ok(KeyText(String::new()))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tree;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Tree, A::Error> {
                let mut v = Vec::new();
                while let Some(k) = m.next_key::<Spanned<KeyText>>()? {
                    v.push((k, m.next_value::<Tree>()?));
                }
                Ok(Tree::Map(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Tree, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = s.next_element::<Tree>()? {
                    v.push(x);
                }
                Ok(Tree::Seq(v))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Tree, D::Error> {
                Tree::deserialize(d)
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Tree, D::Error> {
                Tree::deserialize(d)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_i128<E>(self, _: i128) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_u128<E>(self, _: u128) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_str<E>(self, _: &str) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_bytes<E>(self, _: &[u8]) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_none<E>(self) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_unit<E>(self) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
        }
        d.deserialize_any(V)
    }
}

/// Where field paths sit in one file's text.
pub struct Locator {
    docs: Vec<Tree>,
}

impl Locator {
    /// Read the file's documents (empty documents are skipped, as when the
    /// file was first read, so document numbers agree).
    pub fn new(text: &str, limits: &Limits) -> Option<Locator> {
        serde_saphyr::from_multiple_with_options::<Tree>(text, limits.options())
            .ok()
            .map(|docs| Locator { docs })
    }

    /// The place of the key that ends `path` in document `doc` (for an
    /// index: the element's first key; for the empty path: the document's
    /// first key). Where the path leaves the text, the deepest place found
    /// on the way.
    pub fn find(&self, doc: usize, path: &FieldPath) -> Option<Loc> {
        let mut node = self.docs.get(doc)?;
        let mut at = first_key(node);
        for seg in &path.0 {
            match (seg, node) {
                (Seg::Key(k), Tree::Map(entries)) => {
                    let Some((key, value)) = entries.iter().find(|(key, _)| key.value.0 == *k)
                    else {
                        return at;
                    };
                    at = Some(Loc::from_location(&key.referenced));
                    node = value;
                }
                (Seg::Index(i), Tree::Seq(items)) => {
                    let Some(item) = items.get(*i) else {
                        return at;
                    };
                    at = first_key(item).or(at);
                    node = item;
                }
                _ => return at,
            }
        }
        at
    }
}

fn first_key(t: &Tree) -> Option<Loc> {
    match t {
        Tree::Map(entries) => entries
            .first()
            .map(|(k, _)| Loc::from_location(&k.referenced)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;

    #[test]
    fn suggestions_are_near_misses_only() {
        let known = ["externalTrafficPolicy", "internalTrafficPolicy", "type"];
        assert_eq!(
            did_you_mean("externalTraficPolicy", known),
            Some("externalTrafficPolicy")
        );
        assert_eq!(did_you_mean("Type", known), Some("type"));
        assert_eq!(did_you_mean("frobnicate", known), None);
        assert_eq!(did_you_mean("lables", ["labels", "name"]), Some("labels"));
        assert_eq!(
            did_you_mean("selectr", ["selector", "ports"]),
            Some("selector")
        );
    }

    #[test]
    fn the_type_says_which_fields_it_expects() {
        let spec = expected_fields::<Service>(&FieldPath::default().key("spec")).unwrap();
        assert!(spec.contains(&"externalTrafficPolicy"));
        let port =
            expected_fields::<Service>(&FieldPath::default().key("spec").key("ports").index(0))
                .unwrap();
        assert!(port.contains(&"targetPort"));
        // Labels take any key.
        assert_eq!(
            expected_fields::<Service>(&FieldPath::default().key("metadata").key("labels")),
            None
        );
    }

    #[test]
    fn paths_are_found_in_the_text() {
        let text = "a: 1\n---\nitems:\n  - spec:\n      ports:\n        - { port: 80, targetport: 8080 }\n";
        let l = Locator::new(text, &Limits::default()).unwrap();
        let p = FieldPath::default()
            .key("items")
            .index(0)
            .key("spec")
            .key("ports")
            .index(0)
            .key("targetport");
        let at = l.find(1, &p).unwrap();
        assert_eq!((at.line, at.column), (6, 23));
        assert_eq!(p.to_string(), "items[0].spec.ports[0].targetport");
        // Off the text: the deepest place on the way.
        let items = l
            .find(1, &FieldPath::default().key("items").key("nope"))
            .unwrap();
        assert_eq!((items.line, items.column), (3, 1));
        let first = l.find(0, &FieldPath::default()).unwrap();
        assert_eq!((first.line, first.column), (1, 1));
    }

    #[test]
    fn limits_are_named_in_words() {
        let mut limits = Limits::default();
        limits.set_from("nodes=10").unwrap();
        let text = "a: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]\n";
        let e = serde_saphyr::from_str_with_options::<serde_json::Value>(text, limits.options())
            .unwrap_err();
        let words = limits.explain(&e).unwrap();
        assert!(
            words.contains("more than 10 values, mappings and sequences"),
            "{words}"
        );
        assert!(words.contains("--yaml-limit nodes=N"), "{words}");
        assert!(limits
            .set_from("nodez=1")
            .unwrap_err()
            .contains("unknown YAML limit"));
    }
}
