//! Pods written one to a line, read without the YAML machinery.
//!
//! A cluster written out for kpsim (by `examples/synth_yaml`, or by a
//! user's generator) lists its tens of thousands of pods as one-line flow
//! mappings: `- { name: web-1, node: node-a, labels: { app: web } }`.
//! serde-saphyr reads those at a few megabytes a second; most of the time
//! of reading such a file goes there. This module reads that one narrow
//! shape at memory speed and yields the very values serde-saphyr yields,
//! locations and all: the tests compare the two on every shape of line
//! the module accepts, value by value and location by location.
//!
//! It is a shortcut for [`super::pieces`], never a reading of its own: a
//! run of items with anything outside the shape (a quote, a comment, a key
//! it does not know or a key twice, a scalar YAML could read as a number,
//! a boolean or null, a block mapping, a trailing comma) is left whole to
//! serde-saphyr, errors and all.

use super::raw::{RawPod, S};
use serde::de::value::{Error as ValueError, MapDeserializer, SeqDeserializer};
use serde::de::{Deserialize, Deserializer, IntoDeserializer, Visitor};
use serde_saphyr::{Location, Spanned};
use std::collections::BTreeMap;

/// Where a run of items starts in the file.
#[derive(Clone, Copy, Debug)]
pub(super) struct Start {
    /// Bytes before it.
    pub byte: usize,
    /// Characters before it.
    pub char: usize,
    /// Its line, 1-based.
    pub line: usize,
}

impl Start {
    /// The position just past `before`, the file up to the run.
    pub fn after(before: &str) -> Start {
        Start {
            byte: before.len(),
            char: before.chars().count(),
            line: before.bytes().filter(|&b| b == b'\n').count() + 1,
        }
    }
}

/// The pods of `body`, a run of block-sequence items of the file starting
/// at `start`: one item per line, each a flow mapping of the accepted
/// shape, with blank and comment lines between them. `None` as soon as
/// any line is not of that shape.
pub(super) fn read(body: &str, start: Start) -> Option<Vec<RawPod>> {
    let mut pods = Vec::with_capacity(body.len() / 48);
    // The items' indentation: the first item's.
    let mut indent = None;
    for line in lines(body, start) {
        if *indent.get_or_insert(line.indent) != line.indent {
            return None;
        }
        pods.push(line.pod()?);
    }
    Some(pods)
}

/// A line of a run of items that holds something (not blank, not only a
/// comment), and where it starts in the file.
#[derive(Clone, Copy)]
pub(super) struct Line<'a> {
    /// Without its line break.
    pub text: &'a str,
    /// Its leading spaces.
    pub indent: usize,
    pub at: Start,
}

/// The lines of `body`, which starts at `start` in the file, that hold
/// something.
pub(super) fn lines(body: &str, start: Start) -> impl Iterator<Item = Line<'_>> {
    body.split_inclusive('\n')
        .scan(start, |at, line| {
            let here = *at;
            at.byte += line.len();
            at.char += if line.is_ascii() {
                line.len()
            } else {
                line.chars().count()
            };
            at.line += 1;
            let text = line.strip_suffix('\n').unwrap_or(line);
            let rest = text.trim_start_matches(' ');
            let holds = !(rest.is_empty() || rest.starts_with('#'));
            Some(holds.then(|| Line {
                text,
                indent: text.len() - rest.len(),
                at: here,
            }))
        })
        .flatten()
}

/// The keys of a pod item, one bit each, to refuse a key given twice.
const KEYS: [&str; 7] = [
    "name",
    "namespace",
    "node",
    "labels",
    "ip",
    "ready",
    "terminating",
];
const HOST_NETWORK: usize = KEYS.len();

impl<'a> Line<'a> {
    /// The pod the line's flow mapping describes.
    fn pod(&self) -> Option<RawPod> {
        if !self.text.is_ascii() {
            return None;
        }
        let mut c = Cursor {
            bytes: self.text.as_bytes(),
            at: 0,
        };
        c.spaces();
        c.eat(b'-')?;
        c.space()?;
        c.eat(b'{')?;
        let (mut name, mut namespace, mut node, mut ip) = (None, None, None, None);
        let mut labels = BTreeMap::new();
        let (mut ready, mut terminating, mut host_network) = (None, None, None);
        let mut seen = 0u32;
        loop {
            c.spaces();
            let key = c.scalar()?;
            c.eat(b':')?;
            c.space()?;
            let bit = match &self.text[key.clone()] {
                "hostNetwork" => HOST_NETWORK,
                k => KEYS.iter().position(|&x| x == k)?,
            };
            if seen & (1 << bit) != 0 {
                return None;
            }
            seen |= 1 << bit;
            match bit {
                3 => labels = self.labels(&mut c)?,
                5..=7 => {
                    let v = match &self.text[c.scalar()?] {
                        "true" => true,
                        "false" => false,
                        _ => return None,
                    };
                    *[&mut ready, &mut terminating, &mut host_network][bit - 5] = Some(v);
                }
                // Not a located value: no location to build.
                1 => namespace = Some(self.text[c.value()?].to_string()),
                _ => {
                    let v = self.spanned(c.value()?);
                    match bit {
                        0 => name = Some(v),
                        2 => node = Some(v),
                        _ => ip = Some(v),
                    }
                }
            }
            c.spaces();
            if c.eat(b',').is_none() {
                c.eat(b'}')?;
                break;
            }
        }
        c.spaces();
        c.end()?;
        Some(RawPod {
            name: name?,
            namespace,
            node: node?,
            labels,
            ip,
            ready,
            terminating,
            host_network,
            ports: Vec::new(),
        })
    }

    /// `{ key: value, ... }`, maybe empty.
    fn labels(&self, c: &mut Cursor) -> Option<BTreeMap<String, String>> {
        let mut labels = BTreeMap::new();
        c.eat(b'{')?;
        c.spaces();
        if c.eat(b'}').is_some() {
            return Some(labels);
        }
        loop {
            let key = c.value()?;
            c.eat(b':')?;
            c.space()?;
            let value = c.value()?;
            let key = self.text[key].to_string();
            if labels.insert(key, self.text[value].to_string()).is_some() {
                return None;
            }
            c.spaces();
            if c.eat(b',').is_none() {
                c.eat(b'}')?;
                return Some(labels);
            }
            c.spaces();
        }
    }

    /// The string at `range` of the line, with its place in the file as
    /// serde-saphyr gives it: line and column 1-based, offsets 0-based,
    /// in characters and in bytes (the line is ASCII: they agree within it).
    fn spanned(&self, range: std::ops::Range<usize>) -> S<String> {
        let len = range.len();
        let location = location(
            self.at.line,
            range.start + 1,
            (self.at.char + range.start, len),
            (self.at.byte + range.start, len),
        );
        Spanned::new(self.text[range].to_string(), location, location)
    }
}

/// A walk over an ASCII line.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn spaces(&mut self) {
        while self.bytes.get(self.at) == Some(&b' ') {
            self.at += 1;
        }
    }

    /// At least one space.
    fn space(&mut self) -> Option<()> {
        self.eat(b' ')?;
        self.spaces();
        Some(())
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.bytes.get(self.at) == Some(&b)).then(|| self.at += 1)
    }

    fn end(&self) -> Option<()> {
        (self.at == self.bytes.len()).then_some(())
    }

    /// A plain scalar of the accepted characters: a letter or digit, then
    /// letters, digits, `.`, `_`, `/` and `-`. Whatever YAML could read as
    /// something else than this text is refused by [`Cursor::value`].
    fn scalar(&mut self) -> Option<std::ops::Range<usize>> {
        let start = self.at;
        self.at += plain_scalar_len(&self.bytes[start..])?;
        Some(start..self.at)
    }

    /// A scalar that YAML reads as the string it spells, and only as that.
    fn value(&mut self) -> Option<std::ops::Range<usize>> {
        let range = self.scalar()?;
        let text = std::str::from_utf8(&self.bytes[range.clone()]).ok()?;
        only_a_string(text).then_some(range)
    }
}

/// The length of the plain scalar of the accepted characters at the start
/// of `bytes`: a letter or digit, then letters, digits, `.`, `_`, `/` and
/// `-` (none of them a YAML indicator, in a block or in a flow). `None`
/// when `bytes` does not start with one.
pub(super) fn plain_scalar_len(bytes: &[u8]) -> Option<usize> {
    if !bytes.first()?.is_ascii_alphanumeric() {
        return None;
    }
    let len = bytes
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-')))
        .unwrap_or(bytes.len());
    Some(len)
}

/// Whether a plain scalar of [`Cursor::scalar`]'s characters (it starts
/// with a letter or digit) is a string to every YAML schema: not null or a
/// boolean in any spelling YAML 1.1 or 1.2 knows, and no number in any
/// base, with or without `_` between digits.
pub(super) fn only_a_string(s: &str) -> bool {
    const WORDS: [&str; 11] = [
        "null", "true", "false", "yes", "no", "on", "off", "y", "n", "inf", "nan",
    ];
    let lower = s.to_ascii_lowercase();
    let digits: String = lower.chars().filter(|&c| c != '_').collect();
    !(WORDS.contains(&lower.as_str())
        || digits.parse::<f64>().is_ok()
        || ["0x", "0o", "0b"].iter().any(|p| digits.starts_with(p)))
}

/// serde-saphyr's [`Location`] has no public constructor; its public
/// `Deserialize` is the way to make one. `chars` and `bytes` are the
/// offset and length of the value in characters and in bytes.
pub(super) fn location(
    line: usize,
    column: usize,
    chars: (usize, usize),
    bytes: (usize, usize),
) -> Location {
    let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    let span = Field::Map(vec![
        ("offset", Field::Number(n(chars.0))),
        ("len", Field::Number(n(chars.1))),
        ("byte_info", Field::Pair(n(bytes.0), n(bytes.1))),
    ]);
    let fields = vec![
        ("line", Field::Number(n(line))),
        ("column", Field::Number(n(column))),
        ("span", span),
        ("source_id", Field::Number(0)),
    ];
    Location::deserialize(Field::Map(fields)).expect("serde-saphyr reads its own location's fields")
}

/// A field of a location, as serde reads it.
enum Field {
    Number(u32),
    Pair(u32, u32),
    Map(Vec<(&'static str, Field)>),
}

impl IntoDeserializer<'_, ValueError> for Field {
    type Deserializer = Field;
    fn into_deserializer(self) -> Field {
        self
    }
}

impl<'de> Deserializer<'de> for Field {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ValueError> {
        match self {
            Field::Number(n) => v.visit_u32(n),
            Field::Pair(a, b) => v.visit_seq(SeqDeserializer::new([a, b].into_iter())),
            Field::Map(fields) => v.visit_map(MapDeserializer::new(fields.into_iter())),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::yaml::Limits;
    use proptest::prelude::*;

    #[derive(Debug, serde::Deserialize)]
    struct Pods {
        pods: Vec<RawPod>,
    }

    /// What serde-saphyr reads from `prefix`, `pods:` and `body`, and what
    /// this module reads from `body` placed there.
    fn both(prefix: &str, body: &str) -> (String, Option<String>) {
        let before = format!("{prefix}pods:\n");
        let text = format!("{before}{body}");
        let whole: Pods =
            serde_saphyr::from_str_with_options(&text, Limits::default().options()).unwrap();
        let fast = read(body, Start::after(&before));
        (format!("{:?}", whole.pods), fast.map(|p| format!("{p:?}")))
    }

    /// A prefix with characters of several byte lengths, so that character
    /// and byte offsets differ.
    const PREFIX: &str = "# é, ü and 🌍 before the pods\nscenario: x\n";

    #[test]
    fn accepted_lines_read_as_serde_saphyr_reads_them() {
        for body in [
            "  - { name: p1, node: n1 }\n",
            "  - {name: p1, node: n1}\n",
            "- { node: n1, name: p1, namespace: kube-system, ip: 10.244.0.9, ready: false, terminating: true, hostNetwork: true, labels: { app: web, app.kubernetes.io/name: x_y, tier: a-b } }\n",
            "  -   {  name:   p1 ,  node:  n1 ,labels: {} }  \n",
            "  - { name: p1, node: n1, labels: {a: b,c: d} }\n  - { name: p2, node: n1 }",
            "  # the web pods\n  - { name: w1, node: a }\n\n# between\n  - { name: w2, node: a, ip: 10.244.0.9 }\n",
            "    - { name: ep-0, node: node-0, labels: { app: svc-0 } }\n    - { name: ep-1, node: node-1, labels: { app: svc-0 } }\n",
        ] {
            for prefix in ["", PREFIX] {
                let (whole, fast) = both(prefix, body);
                assert_eq!(fast.as_ref(), Some(&whole), "{prefix}{body}");
            }
        }
    }

    #[test]
    fn anything_else_is_left_to_serde_saphyr() {
        for line in [
            "- { name: \"p1\", node: n1 }",
            "- { name: 'p1', node: n1 }",
            "- { name: p1, node: n1 } # a comment",
            "- { name: p1, node: n1, nope: 1 }",
            "- { name: p1, node: n1, name: p2 }",
            "- { name: p1, node: n1, ports: [{ containerPort: 80 }] }",
            "- { name: 123, node: n1 }",
            "- { name: 1_000, node: n1 }",
            "- { name: 1e5, node: n1 }",
            "- { name: 0x1F, node: n1 }",
            "- { name: 0o17, node: n1 }",
            "- { name: 1., node: n1 }",
            "- { name: null, node: n1 }",
            "- { name: p1, node: n1, namespace: Null }",
            "- { name: true, node: n1 }",
            "- { name: yes, node: n1 }",
            "- { name: p1, node: n1, ready: yes }",
            "- { name: p1, node: n1, ready: True }",
            "- { name: p1, node: n1, labels: { a: 1 } }",
            "- { name: p1, node: n1, labels: { a: b, a: c } }",
            "- { name: p1, node: n1, labels: { a: b, } }",
            "- { name: p1, node: n1, }",
            "- { name: p1 }",
            "- { }",
            "- name: p1",
            "-{ name: p1, node: n1 }",
            "- { name: p1, node:n1 }",
            "- { name: p1,\n    node: n1 }",
            "- { name: é, node: n1 }",
            "- { name: p1, node: n1 }\n  - { name: p2, node: n1 }",
            "- { name: p1, node: n1 } x",
            "- { name: p1, node: n1 }}",
            "- { name: p1:x, node: n1 }",
            "- { name: p1, node: n1, ip: ~ }",
        ] {
            assert!(read(line, Start::after("pods:\n")).is_none(), "{line}");
        }
    }

    /// serde-saphyr's `Location` built field by field is the one it gives.
    #[test]
    fn a_location_built_is_the_one_read() {
        let text = "# é\npods:\n  - { name: p1, node: n1 }\n";
        let whole: Pods = serde_saphyr::from_str(text).unwrap();
        let at = text.find("p1").unwrap();
        let built = location(3, 13, (at - 1, 2), (at, 2));
        assert_eq!(whole.pods[0].name.referenced, built);
        assert_eq!(whole.pods[0].name.defined, built);
    }

    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z][a-z0-9-]{0,8}",
            "[a-z]{1,4}\\.[a-z]{1,4}/[a-z_]{1,5}",
            "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
            "[0-9][0-9a-z._-]{0,5}",
            Just("y".to_string()),
            Just("null".to_string()),
            Just("true".to_string()),
        ]
    }

    fn entry() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("name"),
            Just("node"),
            Just("namespace"),
            Just("ip"),
            Just("ready"),
            Just("terminating"),
            Just("hostNetwork"),
            Just("labels"),
            Just("other"),
        ];
        let bool_or = prop_oneof![
            Just("true".to_string()),
            Just("false".to_string()),
            scalar()
        ];
        let labels = prop::collection::vec((scalar(), scalar()), 0..3).prop_map(|kv| {
            let items: Vec<String> = kv.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            format!("{{ {} }}", items.join(", "))
        });
        (key, scalar(), bool_or, labels).prop_map(|(k, s, b, l)| match k {
            "labels" => format!("{k}: {l}"),
            "ready" | "terminating" | "hostNetwork" => format!("{k}: {b}"),
            _ => format!("{k}: {s}"),
        })
    }

    /// Whatever line of near-accepted shape: either this module reads it
    /// as serde-saphyr does, or it leaves it alone; and it does read a
    /// good share of them (else the comparison would prove nothing).
    #[test]
    fn never_reads_other_than_serde_saphyr() {
        use proptest::test_runner::{Config, TestRunner};
        let lines = (
            prop::collection::vec(entry(), 0..6),
            prop::collection::vec(" {0,2}", 4),
        )
            .prop_map(|(entries, spaces)| {
                let mut fields = vec!["name: p0".to_string(), "node: n0".to_string()];
                fields.extend(entries);
                let sep = format!("{},{} ", spaces[1], spaces[2]);
                format!("  - {{{}{}{}}}\n", spaces[0], fields.join(&sep), spaces[3])
            });
        let mut runner = TestRunner::new(Config {
            cases: 512,
            ..Config::default()
        });
        let (tried, read_here) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
        runner
            .run(&lines, |line| {
                tried.set(tried.get() + 1);
                let before = format!("{PREFIX}pods:\n");
                let text = format!("{before}{line}");
                let whole: Result<Pods, _> =
                    serde_saphyr::from_str_with_options(&text, Limits::default().options());
                if let Some(fast) = read(&line, Start::after(&before)) {
                    read_here.set(read_here.get() + 1);
                    let whole = whole.expect("what this module reads, serde-saphyr reads");
                    prop_assert_eq!(format!("{fast:?}"), format!("{:?}", whole.pods), "{}", line);
                }
                Ok(())
            })
            .unwrap();
        let (read_here, tried) = (read_here.get(), tried.get());
        assert!(
            read_here * 5 > tried,
            "{read_here} of {tried} lines read here"
        );
    }
}
