//! Writing a ruleset the way `nft list ruleset` prints it (nft 1.0):
//! sets and maps first, then chains, each in the order given; elements
//! sorted by key (the kernel lists a hash set in its hash order, which is
//! random per set; an interval set in ascending order, as here), wrapped
//! as nft wraps them.

use super::model::*;
use super::parse::time_text;
use crate::netfilter::{Hook, Policy};
use std::fmt::Write;

impl Ruleset {
    /// The text `nft list ruleset` shows; `nft -f` loads it.
    pub fn to_nft(&self) -> String {
        let mut out = String::new();
        for t in &self.tables {
            write_table(&mut out, t);
        }
        out
    }

    /// Number every rule with its line in [`Ruleset::to_nft`]'s text (what
    /// `kpsim rules` prints), as if that text had been read.
    pub fn number_as_listed(&mut self) {
        let mut line = 0;
        for t in &mut self.tables {
            if let Some(text) = &t.opaque {
                line += text.lines().count();
                continue;
            }
            let mut head = String::new();
            let saved = std::mem::take(&mut t.chains);
            write_table(&mut head, t);
            t.chains = saved;
            // The table without its chains: its lines up to the last set
            // block, then each chain's own lines.
            line += head.lines().count() - 1;
            let sets = !t.sets.is_empty();
            for (i, c) in t.chains.iter_mut().enumerate() {
                if i > 0 || sets {
                    line += 1; // the blank line between blocks
                }
                line += 1; // chain NAME {
                line += usize::from(c.comment.is_some()) + usize::from(c.base.is_some());
                for r in &mut c.rules {
                    line += 1;
                    r.line = line;
                }
                line += 1; // }
            }
            line += 1; // the table's }
        }
    }
}

fn write_table(out: &mut String, t: &Table) {
    if let Some(text) = &t.opaque {
        out.push_str(text);
        out.push('\n');
        return;
    }
    let _ = writeln!(out, "table {} {} {{", t.family.as_str(), t.name);
    if let Some(c) = &t.comment {
        let _ = writeln!(out, "\tcomment \"{c}\"");
    }
    let blocks = t.sets.len() + t.chains.len();
    let mut n = 0;
    for s in &t.sets {
        write_set(out, s);
        n += 1;
        if n < blocks {
            out.push('\n');
        }
    }
    for c in &t.chains {
        write_chain(out, t, c);
        n += 1;
        if n < blocks {
            out.push('\n');
        }
    }
    out.push_str("}\n");
}

/// A sort key for elements: each part's first number.
fn value_start(v: &Value) -> (u64, u64) {
    match v {
        Value::Addr(a) => (u32::from(*a) as u64, 0),
        Value::Net(n) => (u32::from(n.network()) as u64, 1),
        Value::AddrRange(a, _) => (u32::from(*a) as u64, 2),
        Value::Int(n, _) | Value::IntRange(n, _, _) | Value::Flags(n, _) => (*n, 0),
        Value::Str(_) => (0, 0),
    }
}

/// The order `nft list` prints keys in: by each part's first number.
fn key_order(a: &[Value], b: &[Value]) -> std::cmp::Ordering {
    let ka: Vec<(u64, u64)> = a.iter().map(value_start).collect();
    let kb: Vec<(u64, u64)> = b.iter().map(value_start).collect();
    ka.cmp(&kb).then_with(|| a.cmp(b))
}

/// Elements in printing order.
pub fn sorted_elements(s: &Set) -> Vec<&Element> {
    let mut v: Vec<&Element> = s.elements.iter().collect();
    v.sort_by(|a, b| key_order(&a.key, &b.key));
    v
}

/// An anonymous set's keys in printing order.
pub fn sort_keys(keys: &mut [Vec<Value>]) {
    keys.sort_by(|a, b| key_order(a, b));
}

/// nft's `calculate_delim`: addresses two to a line, small integers
/// sixteen, anything else (concatenations, names) one.
fn per_line(s: &Set) -> usize {
    match s.key.as_slice() {
        [DataType::Ipv4Addr] => 2,
        [DataType::InetProto | DataType::InetService | DataType::Mark] => 16,
        _ => 1,
    }
}

fn write_set(out: &mut String, s: &Set) {
    let _ = writeln!(out, "\t{} {} {{", if s.map { "map" } else { "set" }, s.name);
    let key: Vec<&str> = s.key.iter().map(|k| k.as_str()).collect();
    let _ = write!(out, "\t\ttype {}", key.join(" . "));
    if let Some(d) = s.data {
        let _ = write!(out, " : {}", d.as_str());
    }
    out.push('\n');
    if let Some(n) = s.size {
        let _ = writeln!(out, "\t\tsize {n}");
    }
    if !s.flags.is_empty() {
        let _ = writeln!(out, "\t\tflags {}", s.flags.join(","));
    }
    if let Some(t) = s.timeout {
        let _ = writeln!(out, "\t\ttimeout {}", time_text(t));
    }
    if let Some(c) = &s.comment {
        let _ = writeln!(out, "\t\tcomment \"{c}\"");
    }
    if !s.elements.is_empty() {
        out.push_str("\t\telements = { ");
        let per = per_line(s);
        for (i, e) in sorted_elements(s).iter().enumerate() {
            if i > 0 {
                if i % per == 0 {
                    out.push_str(",\n\t\t\t     ");
                } else {
                    out.push_str(", ");
                }
            }
            let _ = write!(out, "{e}");
        }
        out.push_str(" }\n");
    }
    out.push_str("\t}\n");
}

/// nft's `prio2str`: a standard priority name, with an offset of up to
/// 10, where that name applies to the hook (`dstnat` only at
/// prerouting, `srcnat` only at postrouting).
pub fn priority_text(hook: Hook, prio: i32) -> String {
    const STD: [(i32, &str); 6] = [
        (-300, "raw"),
        (-150, "mangle"),
        (-100, "dstnat"),
        (0, "filter"),
        (50, "security"),
        (100, "srcnat"),
    ];
    for (v, name) in STD {
        let fits = match name {
            "dstnat" => hook == Hook::Prerouting,
            "srcnat" => hook == Hook::Postrouting,
            _ => true,
        };
        if fits && (prio - v).abs() <= 10 {
            let off = prio - v;
            return match off.cmp(&0) {
                std::cmp::Ordering::Equal => name.to_string(),
                std::cmp::Ordering::Greater => format!("{name} + {off}"),
                std::cmp::Ordering::Less => format!("{name} - {}", -off),
            };
        }
    }
    prio.to_string()
}

pub fn hook_name(h: Hook) -> &'static str {
    match h {
        Hook::Prerouting => "prerouting",
        Hook::Input => "input",
        Hook::Forward => "forward",
        Hook::Output => "output",
        Hook::Postrouting => "postrouting",
    }
}

fn write_chain(out: &mut String, _t: &Table, c: &Chain) {
    let _ = writeln!(out, "\tchain {} {{", c.name);
    if let Some(cm) = &c.comment {
        let _ = writeln!(out, "\t\tcomment \"{cm}\"");
    }
    if let Some(b) = &c.base {
        let _ = writeln!(
            out,
            "\t\ttype {} hook {} priority {}; policy {};",
            b.kind.as_str(),
            hook_name(b.hook),
            priority_text(b.hook, b.priority),
            match b.policy {
                Policy::Accept => "accept",
                Policy::Drop => "drop",
            }
        );
    }
    for r in &c.rules {
        let _ = writeln!(out, "\t\t{}", r.text);
    }
    out.push_str("\t}\n");
}
