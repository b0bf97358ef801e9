//! Reading a big scenario file's long lists on every core.
//!
//! serde-saphyr reads a few megabytes of YAML a second on one core, and a
//! cluster written out (tens of thousands of pods and Services) is mostly
//! two long block sequences under top-level keys, `pods:` and `objects:`,
//! whose items are independent of each other. So a big file is read in
//! pieces side by side: runs of those items, each as a YAML text of its own,
//! and the rest of the file with the items cut out. Every piece keeps the
//! file's lines, columns and byte offsets (what comes before it in the file
//! becomes one comment line and the same number of line breaks), so every
//! location read from a piece is the one the whole file gives.
//!
//! This is a shortcut, never a second reading of YAML. It is only taken
//! when the file is plain enough that the pieces must read as the whole
//! does: one document, no anchors or aliases, no carriage returns, limits a
//! file of its size cannot breach. It then checks what it assumed: the rest
//! of the file must hold each list's first item where the list was found,
//! and each piece exactly as many items as it was cut with. Anything else,
//! and any error at all, and the whole file is read the ordinary way, so
//! errors and their positions are always the ordinary ones.

use super::flow_pods;
use super::kube::{self, Object};
use super::plain_objects;
use super::raw::{RawPod, RawScenario, S};
use super::yaml::Limits;
use rayon::prelude::*;
use serde::de::DeserializeOwned;

/// Files smaller than this are read whole: the pieces would not pay.
const MIN_BYTES: usize = 1 << 20;

/// The top-level keys whose block sequences are read in pieces.
const KEYS: [&str; 2] = ["pods", "objects"];

/// Read a scenario file: in pieces on every core when it is big and plain
/// enough, else (and on any error) whole.
pub(super) fn read(text: &str, limits: &Limits) -> Result<RawScenario, serde_saphyr::Error> {
    let threads = rayon::current_num_threads();
    if text.len() >= MIN_BYTES && threads > 1 {
        if let Some(raw) = in_pieces(text, limits, threads) {
            return Ok(raw);
        }
    }
    serde_saphyr::from_str_with_options(text, limits.options())
}

/// A block sequence under a top-level key, as lines of the file.
#[derive(Debug, PartialEq)]
struct List {
    key: &'static str,
    /// Byte offset and line (1-based) of each item's first line.
    items: Vec<(usize, u64)>,
    /// Byte offset just past the list's last line.
    end: usize,
}

/// A run of items of one list, read on its own.
struct Piece<'a> {
    key: &'static str,
    /// Items in the run.
    count: usize,
    /// The file before the run, and the run.
    before: &'a str,
    body: &'a str,
}

/// What one piece read.
enum Part {
    Pods(Vec<RawPod>),
    Objects(Vec<S<Object>>),
}

/// `text` read in `pieces` ([`read`]); `None` when the shortcut does not
/// apply or anything fails.
fn in_pieces(text: &str, limits: &Limits, threads: usize) -> Option<RawScenario> {
    if !plain(text, limits) {
        return None;
    }
    let lists: Vec<List> = find_lists(text)?
        .into_iter()
        .filter(|l| l.items.len() > 2)
        .collect();
    if lists.is_empty() {
        return None;
    }
    let rest = without_items(text, &lists);
    let pieces = cut(text, &lists, threads);
    let (raw, parts): (_, Vec<_>) = rayon::join(
        || read_rest(&rest, limits),
        || pieces.par_iter().map(|p| read_piece(p, limits)).collect(),
    );
    let mut raw = raw?;
    if !first_items_in_place(&raw, &lists) {
        return None;
    }
    for part in parts {
        match part? {
            Part::Pods(pods) => raw.pods.extend(pods),
            Part::Objects(objects) => raw.objects.extend(objects),
        }
    }
    Some(raw)
}

/// Whether the file is plain enough for the pieces to read as the whole
/// does, and small enough for its limits that no piece could pass a limit
/// the whole would breach (each piece holds less than the whole, and a
/// file of `n` bytes holds fewer than `2n + 16` values).
fn plain(text: &str, limits: &Limits) -> bool {
    let bytes = text.as_bytes();
    let markers = |l: &[u8]| l.starts_with(b"---") || l.starts_with(b"...") || l.starts_with(b"%");
    !bytes
        .iter()
        .any(|&b| b == b'&' || b == b'*' || b == b'\r' || b == b'\t')
        && !text.starts_with('\u{feff}')
        && !bytes.split(|&b| b == b'\n').any(markers)
        && limits.depth >= 3
        && limits.documents >= 1
        && limits.scalar_bytes >= text.len()
        && limits.nodes >= text.len().saturating_mul(2).saturating_add(16)
}

/// The block sequences under [`KEYS`] at the top level: a line `pods:` at
/// column 0 (nothing after it but a comment), its items the lines that
/// start with a dash at the first item's indentation, up to the next line
/// at column 0 that is not one of them, a comment or blank. `None` when a
/// line of the list is less indented than its items, or a key is there
/// twice: not a shape to cut.
fn find_lists(text: &str) -> Option<Vec<List>> {
    let mut lists: Vec<List> = Vec::new();
    // The list being collected, and its items' indentation once known.
    let mut open: Option<(List, Option<usize>)> = None;
    let mut offset = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let at = offset;
        offset += line.len();
        let content = line.trim_end_matches('\n');
        let indent = content.len() - content.trim_start_matches(' ').len();
        let blank = content.trim().is_empty() || content.trim_start().starts_with('#');
        if let Some((list, dash)) = &mut open {
            if blank {
                continue;
            }
            let item = is_item(&content[indent..]);
            match *dash {
                None if item => *dash = Some(indent),
                None => return None,
                Some(d) if indent == d && item => {}
                Some(d) if indent > d => continue,
                Some(_) if indent == 0 => {
                    list.end = at;
                    lists.push(open.take().expect("open").0);
                }
                Some(_) => return None,
            }
            if let Some((list, _)) = &mut open {
                list.items.push((at, n as u64 + 1));
                continue;
            }
        }
        if indent == 0 {
            if let Some(key) = list_key(content) {
                if lists.iter().any(|l| l.key == key) {
                    return None;
                }
                let list = List {
                    key,
                    items: Vec::new(),
                    end: text.len(),
                };
                open = Some((list, None));
            }
        }
    }
    if let Some((list, _)) = open {
        lists.push(list);
    }
    Some(lists)
}

/// Whether a line (from its first non-space) starts a sequence item.
fn is_item(s: &str) -> bool {
    s == "-" || s.starts_with("- ")
}

/// The key of [`KEYS`] a top-level line opens a block sequence under
/// (`pods:`, maybe a comment after it).
fn list_key(line: &str) -> Option<&'static str> {
    KEYS.into_iter().find(|k| {
        line.strip_prefix(k)
            .and_then(|r| r.strip_prefix(':'))
            .is_some_and(|r| {
                let after = r.trim_start_matches(' ');
                after.is_empty() || (after.starts_with('#') && r.starts_with(' '))
            })
    })
}

/// The file with each list's items after the first turned into comment
/// lines (each line's first byte, a space, a dash or a `#`, becomes `#`):
/// lines, columns and offsets stay as they were. A list that runs to the
/// end of the file has its items after the first cut off instead: nothing
/// after them has a place to keep, and megabytes of comments take time to
/// read too.
fn without_items(text: &str, lists: &[List]) -> String {
    let last = lists.iter().find(|l| l.end == text.len());
    let kept = last.map_or(text.len(), |l| l.items[1].0);
    let mut bytes = text.as_bytes()[..kept].to_vec();
    for list in lists.iter().filter(|l| l.end < text.len()) {
        let mut at = list.items[1].0;
        for line in text[at..list.end].split_inclusive('\n') {
            if !line.starts_with('\n') {
                bytes[at] = b'#';
            }
            at += line.len();
        }
    }
    String::from_utf8(bytes).expect("only ASCII bytes at line starts were replaced")
}

/// Each list's items after the first, cut into runs of about equal work:
/// two runs per thread over all lists, so that threads finish together
/// (items of different lists read at different speeds); more would cost
/// more padding than they save.
fn cut<'a>(text: &'a str, lists: &[List], threads: usize) -> Vec<Piece<'a>> {
    let work: Vec<usize> = lists.iter().map(|l| work(text, l)).collect();
    let total: usize = work.iter().sum();
    let mut pieces = Vec::new();
    for (list, work) in lists.iter().zip(work) {
        let items = &list.items[1..];
        let bytes = list.end - items[0].0;
        let runs = (2 * threads * work)
            .div_ceil(total.max(1))
            .clamp(1, items.len());
        let mut first = 0;
        for r in 1..=runs {
            if first == items.len() {
                break;
            }
            // The run ends at the first item past its share of the bytes.
            let goal = items[0].0 + bytes * r / runs;
            let last = if r == runs {
                items.len()
            } else {
                items.partition_point(|&(at, _)| at < goal).max(first + 1)
            };
            let start = items[first].0;
            let end = items.get(last).map_or(list.end, |&(at, _)| at);
            pieces.push(Piece {
                key: list.key,
                count: last - first,
                before: &text[..start],
                body: &text[start..end],
            });
            first = last;
        }
    }
    pieces
}

/// How many times faster than serde-saphyr [`plain_objects`] reads objects
/// (measured on the 10,000 Services of `scripts/bench-vs-kernel`).
const PLAIN_OBJECTS_SPEEDUP: usize = 7;

/// About how much reading a list's items after the first takes, in bytes
/// serde-saphyr reads in that time: pods written one to a line
/// ([`flow_pods`]) read some twenty times faster than YAML at large, plain
/// objects ([`plain_objects`]) [`PLAIN_OBJECTS_SPEEDUP`] times.
fn work(text: &str, list: &List) -> usize {
    let (start, bytes) = (list.items[1].0, list.end - list.items[1].0);
    let second = list.items.get(2).map_or(list.end, |&(at, _)| at);
    let one_line = &text[start..second];
    let at = || flow_pods::Start::after(&text[..start]);
    if list.key == "pods" && flow_pods::read(one_line, at()).is_some() {
        bytes / 20
    } else if list.key == "objects"
        && plain_objects::read(one_line, at(), plain_depth(&Limits::default())).is_some()
    {
        bytes / PLAIN_OBJECTS_SPEEDUP
    } else {
        bytes
    }
}

/// The file without the cut items, read whole.
fn read_rest(rest: &str, limits: &Limits) -> Option<RawScenario> {
    quietly(serde_saphyr::from_str_with_options(rest, limits.options()))
}

/// What stands before a piece in its own text: `before` (the file up to
/// the piece) as one comment line and as many line breaks, the same bytes
/// and characters long, so that lines, columns, byte and character offsets
/// in the piece are the file's. The comment is `#` and `before`'s other
/// characters in order, less one ASCII character (whose place `#` takes).
fn padding(before: &str) -> Option<String> {
    let breaks = before.bytes().filter(|&b| b == b'\n').count();
    let mut out = String::with_capacity(before.len());
    if before.len() > breaks {
        // The first ASCII character other than a line break (a whole
        // character: no byte of a longer one is ASCII).
        let skip = before.bytes().position(|b| b != b'\n' && b.is_ascii())?;
        out.push('#');
        for part in [&before[..skip], &before[skip + 1..]] {
            part.split('\n').for_each(|line| out.push_str(line));
        }
    }
    out.extend(std::iter::repeat_n('\n', breaks));
    Some(out)
}

/// One run of items, read as a sequence placed where it is in the file.
/// Its items sit one level shallower than in the file, so it may nest one
/// level less.
fn read_piece(p: &Piece, limits: &Limits) -> Option<Part> {
    let start = || flow_pods::Start::after(p.before);
    if p.key == "pods" {
        if let Some(pods) = flow_pods::read(p.body, start()) {
            return (pods.len() == p.count).then_some(Part::Pods(pods));
        }
    } else if let Some(objects) = plain_objects::read(p.body, start(), plain_depth(limits)) {
        return (objects.len() == p.count).then_some(Part::Objects(objects));
    }
    let mut text = String::with_capacity(p.before.len() + p.body.len());
    text.push_str(&padding(p.before)?);
    text.push_str(p.body);
    let limits = Limits {
        depth: limits.depth - 1,
        ..limits.clone()
    };
    let part = match p.key {
        "pods" => Part::Pods(items(&text, &limits, p.count)?),
        _ => Part::Objects(items(&text, &limits, p.count)?),
    };
    Some(part)
}

/// How deep [`plain_objects`] may nest a piece's collections, counting
/// the piece's sequence: one level less than the file allows, as the piece
/// sits one level shallower, and one more for whatever way serde-saphyr
/// counts (the nesting it accepts, serde-saphyr would too).
fn plain_depth(limits: &Limits) -> usize {
    limits.depth.saturating_sub(2)
}

/// A piece's items, when it holds exactly `count`.
fn items<T: DeserializeOwned>(text: &str, limits: &Limits, count: usize) -> Option<Vec<T>> {
    let items: Vec<T> = quietly(serde_saphyr::from_str_with_options(text, limits.options()))?;
    (items.len() == count).then_some(items)
}

/// A read's value; on failure, nothing, and no note of the failure left
/// for this thread's next read of an object ([`kube::take_failure`]).
fn quietly<T>(read: Result<T, serde_saphyr::Error>) -> Option<T> {
    match read {
        Ok(v) => Some(v),
        Err(_) => {
            kube::take_failure();
            None
        }
    }
}

/// Whether the rest of the file read each list's first item, and only it,
/// where the list was found: the lines cut out were the list's, not part
/// of something else.
fn first_items_in_place(raw: &RawScenario, lists: &[List]) -> bool {
    lists.iter().all(|l| {
        let (first, next) = (l.items[0].1, l.items[1].1);
        let line = match l.key {
            "pods" => match &raw.pods[..] {
                [pod] => pod.name.referenced.line(),
                _ => return false,
            },
            _ => match &raw.objects[..] {
                [object] => object.referenced.line(),
                _ => return false,
            },
        };
        (first..next).contains(&line)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pieces' reading, whatever the file's size and the threads.
    fn pieces(text: &str, threads: usize) -> Option<RawScenario> {
        in_pieces(text, &Limits::default(), threads)
    }

    fn whole(text: &str) -> RawScenario {
        serde_saphyr::from_str_with_options(text, Limits::default().options()).unwrap()
    }

    const FILE: &str = "\
scenario: s   # é
cluster: { clusterCIDR: 10.244.0.0/16, serviceCIDR: 10.96.0.0/12 }
nodes:
  - { name: a, address: 192.168.0.10, podCIDR: 10.244.0.0/24 }
pods:
  # the web pods
  - { name: w1, node: a, labels: { app: web } }
  - name: w2
    node: a
    labels:
      app: web

  - {name: w3, node: a}
# between
  - { name: w4, node: a, ip: 10.244.0.9 }
objects:
- apiVersion: v1
  kind: Service
  metadata: { name: web }
  spec: { selector: { app: web }, ports: [{ port: 80 }] }
- apiVersion: v1
  kind: Service
  metadata:
    name: db
  spec: { ports: [{ port: 5432 }] }
- { apiVersion: v1, kind: Service, metadata: { name: c }, spec: { ports: [{ port: 1 }] } }
checks:
  - name: c
    from: w1
    to: web:80
    expect: { delivered: [w1] }
";

    #[test]
    fn padding_keeps_bytes_characters_and_lines() {
        for before in [
            "",
            "\n\n",
            "é\nab\n",
            "a",
            "\u{1f30d}x\n  - y\n",
            "ab\ncd\n",
        ] {
            let pad = padding(before).unwrap();
            let lines = |s: &str| s.matches('\n').count();
            assert_eq!(
                (pad.len(), pad.chars().count(), lines(&pad)),
                (before.len(), before.chars().count(), lines(before)),
                "{before:?}"
            );
            assert!(pad.is_empty() || pad.starts_with('#') || pad.starts_with('\n'));
            assert!(pad
                .trim_start_matches('#')
                .trim_end_matches('\n')
                .find('\n')
                .is_none());
        }
        assert_eq!(padding("é\nab\n").unwrap(), "#éb\n\n");
        assert_eq!(padding("é\n"), None);
    }

    #[test]
    fn lists_are_found_with_their_items() {
        let lists = find_lists(FILE).unwrap();
        let lines = |l: &List| l.items.iter().map(|i| i.1).collect::<Vec<_>>();
        assert_eq!(lists.len(), 2);
        assert_eq!(
            (lists[0].key, lines(&lists[0])),
            ("pods", vec![7, 8, 13, 15])
        );
        assert_eq!(
            (lists[1].key, lines(&lists[1])),
            ("objects", vec![17, 21, 26])
        );
        assert!(FILE[lists[1].end..].starts_with("checks:"));
    }

    #[test]
    fn a_list_running_to_the_end_is_cut_off_the_rest() {
        let text = &FILE[..FILE.find("checks:").unwrap()];
        let lists = find_lists(text).unwrap();
        let rest = without_items(text, &lists);
        assert_eq!(rest.len(), lists[1].items[1].0);
        assert_eq!(
            rest.len(),
            FILE.find("- apiVersion: v1\n  kind: Service\n  metadata:\n")
                .unwrap()
        );
        assert!(rest.contains("\n# - {name: w3, node: a}\n"));
        let want = format!("{:?}", whole(text));
        assert_eq!(format!("{:?}", pieces(text, 2).unwrap()), want);
    }

    #[test]
    fn pieces_read_as_the_whole_file_reads_locations_and_all() {
        let want = format!("{:?}", whole(FILE));
        for threads in 1..=6 {
            let got = pieces(FILE, threads).expect("this file reads in pieces");
            assert_eq!(format!("{got:?}"), want, "{threads} threads");
        }
    }

    #[test]
    fn a_list_that_is_not_one_is_read_whole() {
        // `pods:` at column 0 inside a quoted scalar is no list: the rest of
        // the file does not hold its first item where it was found.
        let objects = FILE.find("objects:").unwrap()..FILE.find("checks:").unwrap();
        let mut quoted = FILE.to_string();
        quoted.replace_range(objects, "");
        let quoted = quoted.replace(
            "scenario: s   # é\n",
            "scenario: s\ndescription: \"x\nobjects:\n  - a\n  - { apiVersion: v1, kind: Pod }\n  - { apiVersion: v1, kind: Pod }\n\"\n",
        );
        let w: RawScenario =
            serde_saphyr::from_str_with_options(&quoted, Limits::default().options()).unwrap();
        assert!(w
            .description
            .unwrap()
            .contains("objects: - a - { apiVersion"));
        let lists = find_lists(&quoted).unwrap();
        assert_eq!(
            lists.iter().map(|l| l.key).collect::<Vec<_>>(),
            ["objects", "pods"]
        );
        assert!(pieces(&quoted, 2).is_none());
    }

    #[test]
    fn files_that_are_not_plain_are_read_whole() {
        for not_plain in [
            FILE.replace("labels: { app: web } }", "labels: &l { app: web } }"),
            FILE.replace("\n", "\r\n"),
            format!("---\n{FILE}"),
            FILE.replace("  - {name: w3", "\t- {name: w3"),
        ] {
            assert!(pieces(&not_plain, 2).is_none(), "{not_plain}");
        }
        let tight = Limits {
            nodes: FILE.len(),
            ..Limits::default()
        };
        assert!(in_pieces(FILE, &tight, 2).is_none());
    }

    #[test]
    fn any_error_is_left_to_the_whole_reading() {
        for broken in [
            FILE.replace("{ name: w4, node: a,", "{ name: w4, node: a, nope: 1,"),
            FILE.replace("metadata: { name: c }", "metadata: { name: c, bad: [ }"),
            FILE.replace(
                "  - {name: w3, node: a}",
                "  - {name: w3, node: a}\n  - {name: w3, nodes: a}",
            ),
        ] {
            assert!(pieces(&broken, 3).is_none(), "{broken}");
        }
    }

    #[test]
    fn an_item_less_indented_than_the_list_stops_the_cutting() {
        let odd = FILE.replace("  - {name: w3, node: a}", " - {name: w3, node: a}");
        assert!(find_lists(&odd).is_none());
    }

    #[test]
    fn a_big_file_reads_in_pieces_as_it_reads_whole() {
        let mut text = String::from(
            "scenario: big\ncluster: { clusterCIDR: 10.244.0.0/16, serviceCIDR: 10.96.0.0/12 }\npods:\n",
        );
        let mut k = 0;
        while text.len() < MIN_BYTES + 4096 {
            text.push_str(&format!(
                "  - {{ name: p{k}, node: n{}, labels: {{ app: a{} }} }}\n",
                k % 7,
                k / 3
            ));
            k += 1;
        }
        text.push_str("objects:\n");
        for k in 0..400 {
            text.push_str(&format!(
                "  - apiVersion: v1\n    kind: Service\n    metadata: {{ name: s{k} }}\n    spec:\n      ports: [{{ port: {} }}]\n",
                k + 1
            ));
        }
        // Both lists take their shortcuts.
        let (pods, objects) = text.split_once("objects:\n").unwrap();
        let body = |s: &str| s[s.find("  - ").unwrap()..].to_string();
        let start = flow_pods::Start::after("");
        assert!(flow_pods::read(&body(pods), start).is_some());
        assert!(plain_objects::read(objects, start, plain_depth(&Limits::default())).is_some());
        let want = format!("{:?}", whole(&text));
        for threads in [2, 3, 8] {
            let got = pieces(&text, threads).expect("a plain file reads in pieces");
            assert_eq!(format!("{got:?}"), want);
        }
        assert_eq!(
            format!("{:?}", read(&text, &Limits::default()).unwrap()),
            want
        );
    }

    /// Every bundled scenario reads the same in pieces as whole, when it
    /// reads in pieces at all.
    #[test]
    fn bundled_scenarios_read_alike_in_pieces() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut read_in_pieces = 0;
        for dir in [
            "scenarios",
            "book/scenarios",
            "book/answers",
            "book/exercises",
        ] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                if path.extension().is_none_or(|x| x != "yaml") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let Some(got) = pieces(&text, 3) else {
                    continue;
                };
                read_in_pieces += 1;
                assert_eq!(
                    format!("{got:?}"),
                    format!("{:?}", whole(&text)),
                    "{}",
                    path.display()
                );
            }
        }
        assert!(read_in_pieces > 0, "some bundled scenario has lists to cut");
    }
}
