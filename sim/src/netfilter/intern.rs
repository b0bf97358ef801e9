//! Loading many rulesets that are mostly the same, sharing what they have
//! in common.
//!
//! A cluster's nodes carry nearly identical rules: a chain with the same
//! name, policy and rules on two hosts is the same chain. [`Interner`]
//! splits `iptables-restore` text into one small text per chain (its table,
//! declaration and `-A` lines) and parses each distinct chain text once;
//! every ruleset holding that chain shares its [`Rules`]. The rules are
//! numbered within the chain, and each ruleset places them with its own
//! [`Chain::rule_line_offset`] (see [`Ruleset::number_as_saved`]).
//!
//! A ruleset may also come in parts ([`Interner::load_parts`]): each table
//! as a sequence of [`Part`]s of its text, parts that recur in many
//! rulesets being the same `Part`. A part is cut into chains once; a chain
//! declared in a part with all its rules there is taken from the part as
//! it is, so a ruleset costs about the chains its parts share with others
//! (rules appended to them from other parts), not its whole text.
//!
//! Tables go the same way into engines ([`Interner::engine`]): a table
//! with the same chains in the same order as one loaded before, its rules
//! shared, is valid alike and compiles alike, so it is validated and
//! compiled once.
//!
//! Sharing is by content alone: nothing here knows why two rulesets hold
//! the same chain. Interning is safe to call from several threads; which
//! thread parsed a chain first makes no difference to the result.

use super::error::ValidateError;
use super::eval::{CompiledTable, Engine};
use super::rule::*;
use foldhash::fast::FixedState;
use hashbrown::hash_table::{self, HashTable};
use rayon::prelude::*;
use std::hash::{BuildHasher, Hash, Hasher};
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

/// Hash maps here hash megabytes of rule text per ruleset: a fast hash
/// (the input is the caller's own rules, not an adversary's).
type HashMap<K, V> = std::collections::HashMap<K, V, FixedState>;
type HashSet<K> = std::collections::HashSet<K, FixedState>;

/// Locks the chains are spread over, so threads interning different chains
/// rarely wait for each other.
const SHARDS: usize = 64;

/// Whole table texts remembered with their tables: when hosts' tables are
/// identical (often all of them), a table costs a lookup instead of being
/// cut into chains. Bounded, as each is a copy of the text: tables that all
/// differ fall through to chain sharing.
const REMEMBERED_BYTES: usize = 128 << 20;

/// Parsed chains by their own restore text, and compiled tables; see the
/// module documentation.
pub struct Interner {
    shards: Vec<Mutex<HashTable<Interned>>>,
    /// Whole tables by their text (see [`REMEMBERED_BYTES`]).
    blocks: Mutex<HashMap<String, Arc<Vec<Table>>>>,
    /// Tables validated and compiled before, by [`table_hash`].
    tables: Mutex<HashMap<u64, Vec<SharedTable>>>,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            blocks: Mutex::default(),
            tables: Mutex::default(),
        }
    }
}

/// A chain interned under its own restore text (and the text's hash).
struct Interned {
    hash: u64,
    text: String,
    chain: Chain,
}

/// A valid table and its compiled form.
struct SharedTable {
    /// The ruleset that holds the table (an engine's: holding it here
    /// costs nothing, and keeps the table's rules, and so their identity,
    /// alive).
    ruleset: Arc<Ruleset>,
    pos: usize,
    compiled: Arc<CompiledTable>,
}

impl SharedTable {
    /// Whether `table`, at `pos` in its ruleset, is this one: the same
    /// name, chains of the same names in the same order, sharing their
    /// rules (what the compiled form, and validity, depend on).
    fn is(&self, pos: usize, table: &Table) -> bool {
        let mine = &self.ruleset.tables[self.pos];
        self.pos == pos
            && mine.name == table.name
            && mine.chains.len() == table.chains.len()
            && mine
                .chains
                .iter()
                .zip(&table.chains)
                .all(|(a, b)| a.name == b.name && a.rules.shares(&b.rules))
    }
}

/// One table of a restore text, cut into chains.
struct TableText<'a> {
    name: &'a str,
    /// Per chain in declaration order: its `:` line and its `-A` lines.
    chains: Vec<(&'a str, Vec<&'a str>)>,
}

impl Interner {
    /// The ruleset `text` describes, its chains shared with every equal
    /// chain interned before, in the order `iptables-save` prints them
    /// ([`Ruleset::sort_as_saved`]); numbered within chains, otherwise
    /// unnumbered (call [`Ruleset::number_as_saved`]) and not validated.
    ///
    /// `None` when the text is not the plain form this handles (comments,
    /// counters on rules, anything unexpected) or does not parse: load it
    /// with [`Ruleset::load`] instead, which also names the offending line.
    pub fn load(&self, text: &str) -> Option<Ruleset> {
        let mut rs = Ruleset::default();
        for block in text.split_inclusive("\nCOMMIT\n") {
            rs.tables.extend(self.block(block)?);
        }
        Some(rs)
    }

    /// The tables of `block` (one table's text, as a rule), as seen before
    /// or interned chain by chain now.
    fn block(&self, block: &str) -> Option<Vec<Table>> {
        let seen = self
            .blocks
            .lock()
            .expect("not poisoned")
            .get(block)
            .cloned();
        if let Some(tables) = seen {
            return Some(Vec::clone(&tables));
        }
        let mut tables = Vec::new();
        for t in split(block)? {
            let mut table = empty_table(t.name)?;
            table.chains = t
                .chains
                .par_iter()
                .map(|(decl, rules)| self.chain(t.name, decl, rules))
                .collect::<Option<Vec<Chain>>>()?;
            tables.push(table);
        }
        let mut sorted = Ruleset {
            header_comments: Vec::new(),
            tables,
        };
        sorted.sort_as_saved();
        let tables = sorted.tables;
        let mut blocks = self.blocks.lock().expect("not poisoned");
        if blocks.keys().map(String::len).sum::<usize>() + block.len() <= REMEMBERED_BYTES {
            blocks.insert(block.to_string(), Arc::new(tables.clone()));
        }
        Some(tables)
    }

    /// The ruleset whose tables are given in parts (table name, its parts
    /// in order): what [`Interner::load`] gives for the text with each
    /// table's parts' declarations and rules. `None` as for `load`, and
    /// when a part is not of the table it is given for.
    pub fn load_parts(&self, tables: &[(&str, Vec<Arc<Part>>)]) -> Option<Ruleset> {
        // Tables apart, in parallel.
        let mut rs = Ruleset {
            tables: tables
                .par_iter()
                .map(|(name, parts)| self.table_of_parts(name, parts))
                .collect::<Option<_>>()?,
            ..Ruleset::default()
        };
        rs.sort_as_saved();
        Some(rs)
    }

    fn table_of_parts(&self, name: &str, parts: &[Arc<Part>]) -> Option<Table> {
        // Parts new to this interner are parsed in parallel.
        let cuts: Vec<&CutPart> = parts
            .par_iter()
            .map(|p| (p.table == name).then(|| p.cut(self))?)
            .collect::<Option<_>>()?;
        // Rules appended from other parts, by chain: (part, its lines).
        let mut appended: HashMap<&str, Vec<PartLines>> = HashMap::default();
        for (i, cut) in cuts.iter().enumerate() {
            for (chain, lines) in &cut.appended {
                let chain = parts[i].line(chain);
                appended.entry(chain).or_default().push((i, lines));
            }
        }
        let mut table = empty_table(name)?;
        let mut declared: HashSet<&str> = HashSet::default();
        for cut in &cuts {
            for (chain, _, _) in &cut.declared {
                if !declared.insert(&chain.name) {
                    return None;
                }
            }
        }
        // Rules for a chain no part declares.
        if appended.keys().any(|c| !declared.contains(c)) {
            return None;
        }
        // Each part's chains, in parallel, kept in part order.
        let chains: Vec<Vec<Chain>> = cuts
            .par_iter()
            .enumerate()
            .map(|(i, cut)| {
                cut.declared
                    .iter()
                    .map(
                        |(chain, decl, own)| match appended.get(chain.name.as_str()) {
                            None => Some(chain.clone()),
                            Some(more) => {
                                // The chain's rules from every part, in part order.
                                let mut from: Vec<PartLines> = more.clone();
                                from.push((i, own));
                                from.sort_by_key(|(p, _)| *p);
                                let lines: Vec<&str> = from
                                    .iter()
                                    .flat_map(|(p, rs)| rs.iter().map(|r| parts[*p].line(r)))
                                    .collect();
                                self.chain(name, parts[i].line(decl), &lines)
                            }
                        },
                    )
                    .collect()
            })
            .collect::<Option<_>>()?;
        table.chains.reserve(declared.len());
        table.chains.extend(chains.into_iter().flatten());
        Some(table)
    }

    /// `ruleset` validated and in an engine. A table whose chains (names,
    /// order, shared rules) are those of a table loaded here before reuses
    /// that table's validation and compiled form.
    pub fn engine(&self, ruleset: Ruleset) -> Result<Engine, ValidateError> {
        let ruleset = Arc::new(ruleset);
        // Tables apart, in parallel; the first table in error (in order)
        // is the error.
        let each: Vec<Result<KnownOrNew, ValidateError>> = ruleset
            .tables
            .par_iter()
            .enumerate()
            .map(|(pos, t)| {
                let hash = table_hash(pos, t);
                Ok(match self.known(hash, pos, t) {
                    Some(c) => (hash, c, false),
                    None => (hash, Arc::new(compiled(pos, t)?), true),
                })
            })
            .collect();
        let mut tables = Vec::with_capacity(ruleset.tables.len());
        let mut new = Vec::new();
        for (pos, (t, each)) in ruleset.tables.iter().zip(each).enumerate() {
            let (hash, compiled, is_new) = each?;
            if is_new {
                new.push((hash, pos, compiled.clone()));
            }
            tables.push((t.name, compiled));
        }
        if !new.is_empty() {
            let mut known = self.tables.lock().expect("not poisoned");
            for (hash, pos, compiled) in new {
                known.entry(hash).or_default().push(SharedTable {
                    ruleset: ruleset.clone(),
                    pos,
                    compiled,
                });
            }
        }
        Ok(Engine::with_tables(ruleset, tables))
    }

    /// Table `pos` of a ruleset as compiled before, if it was.
    fn known(&self, hash: u64, pos: usize, table: &Table) -> Option<Arc<CompiledTable>> {
        let tables = self.tables.lock().expect("not poisoned");
        let same = tables.get(&hash)?.iter().find(|s| s.is(pos, table))?;
        Some(same.compiled.clone())
    }

    /// The chain declared by `decl` with `rules`, from the interned chains
    /// or parsed (and interned) now.
    fn chain(&self, table: &str, decl: &str, rules: &[&str]) -> Option<Chain> {
        // The text is hashed once, for its shard and its place in it. The
        // shard is chosen by middle bits: the table places entries by the
        // low ones and tags them with the top seven.
        let text = chain_text(table, decl, rules);
        let hash = FixedState::default().hash_one(text.as_str());
        let shard = &self.shards[(hash >> 32) as usize % SHARDS];
        let same = |e: &Interned| e.hash == hash && e.text == text;
        if let Some(e) = shard.lock().expect("not poisoned").find(hash, same) {
            return Some(e.chain.clone());
        }
        // Parsed outside the lock; a chain parsed twice at once is the same
        // chain either way, and the first one stored is kept.
        let chain = parse_chain(table, decl, rules, &text)?;
        let mut shard = shard.lock().expect("not poisoned");
        let entry = shard.entry(hash, same, |e| e.hash);
        Some(match entry {
            hash_table::Entry::Occupied(e) => e.get().chain.clone(),
            hash_table::Entry::Vacant(e) => {
                let e = e.insert(Interned { hash, text, chain });
                e.get().chain.clone()
            }
        })
    }
}

/// A table of a ruleset being made an engine: its hash, its compiled
/// form, and whether that was compiled now (rather than found).
type KnownOrNew = (u64, Arc<CompiledTable>, bool);

/// A part of one table's `iptables-restore` text: chain declarations
/// (`:NAME POLICY [p:b]`) and `-A` lines, one per line, as written. A
/// table given in parts is the table whose text declares each part's
/// chains and holds each part's rules, parts in order (every declaration
/// before every rule, as `iptables-restore` reads them).
pub struct Part {
    table: String,
    text: String,
    /// The part cut into chains, the first time it is used.
    cut: OnceLock<Option<CutPart>>,
}

impl Part {
    /// Part of table `table`'s text.
    pub fn new(table: &str, text: String) -> Part {
        Part {
            table: table.to_string(),
            text,
            cut: OnceLock::new(),
        }
    }
}

/// Lines of a chain in one of a table's parts: (the part's place, the
/// lines in its text).
type PartLines<'a> = (usize, &'a [Range<usize>]);

/// A part's lines by chain.
struct CutPart {
    /// The chains declared in the part, in order: with the part's own
    /// rules for them (as lines of the text, and interned).
    declared: Vec<(Chain, Range<usize>, Vec<Range<usize>>)>,
    /// Rules for chains the part does not declare, by chain.
    appended: Vec<(Range<usize>, Vec<Range<usize>>)>,
}

impl Part {
    fn line(&self, r: &Range<usize>) -> &str {
        &self.text[r.clone()]
    }

    /// The part's chains, or `None` when a line is not a declaration or
    /// a rule, a chain is declared twice or a chain does not parse.
    fn cut(&self, interner: &Interner) -> Option<&CutPart> {
        self.cut
            .get_or_init(|| {
                let mut declared: Vec<(Range<usize>, Vec<Range<usize>>)> = Vec::new();
                let mut appended: Vec<(Range<usize>, Vec<Range<usize>>)> = Vec::new();
                let mut by_name: HashMap<&str, (bool, usize)> = HashMap::default();
                let base = self.text.as_ptr() as usize;
                let range = |s: &str| {
                    let start = s.as_ptr() as usize - base;
                    start..start + s.len()
                };
                for line in self.text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    if let Some(decl) = line.strip_prefix(':') {
                        let name = decl.split_whitespace().next()?;
                        if by_name.insert(name, (true, declared.len())).is_some() {
                            return None;
                        }
                        declared.push((range(line), Vec::new()));
                    } else {
                        let chain = line.strip_prefix("-A ")?.split_whitespace().next()?;
                        let lines = match by_name.get(chain) {
                            Some(&(true, i)) => &mut declared[i].1,
                            Some(&(false, i)) => &mut appended[i].1,
                            None => {
                                by_name.insert(chain, (false, appended.len()));
                                appended.push((range(chain), Vec::new()));
                                &mut appended.last_mut().expect("pushed").1
                            }
                        };
                        lines.push(range(line));
                    }
                }
                let declared = declared
                    .into_iter()
                    .map(|(decl, rules)| {
                        let lines: Vec<&str> = rules.iter().map(|r| self.line(r)).collect();
                        let chain = interner.chain(&self.table, self.line(&decl), &lines)?;
                        Some((chain, decl, rules))
                    })
                    .collect::<Option<_>>()?;
                Some(CutPart { declared, appended })
            })
            .as_ref()
    }
}

/// Table `pos` of a ruleset validated and compiled.
fn compiled(pos: usize, table: &Table) -> Result<CompiledTable, ValidateError> {
    match CompiledTable::build(pos, table) {
        Ok(compiled) => {
            table.validate_compiled(&compiled)?;
            Ok(compiled)
        }
        // A jump to a missing chain: validation says where.
        Err(_) => Err(table
            .validate()
            .expect_err("a table whose jumps do not resolve is invalid")),
    }
}

/// Cut a restore text into tables and chains, keeping lines as written.
fn split(text: &str) -> Option<Vec<TableText<'_>>> {
    let mut tables = Vec::new();
    let mut current: Option<(TableText, HashMap<&str, usize>)> = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(name) = line.strip_prefix('*') {
            if current.is_some() {
                return None;
            }
            let table = TableText {
                name,
                chains: Vec::new(),
            };
            current = Some((table, HashMap::default()));
        } else if line == "COMMIT" {
            tables.push(current.take()?.0);
        } else {
            let (table, by_name) = current.as_mut()?;
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next()?;
                if by_name.insert(name, table.chains.len()).is_some() {
                    return None;
                }
                table.chains.push((line, Vec::new()));
            } else {
                let chain = line.strip_prefix("-A ")?.split_whitespace().next()?;
                table.chains[*by_name.get(chain)?].1.push(line);
            }
        }
    }
    current.is_none().then_some(tables)
}

/// An empty table named `name` (checked by the parser, which knows the
/// table names).
fn empty_table(name: &str) -> Option<Table> {
    let rs = Ruleset::parse(&format!("*{name}\nCOMMIT\n")).ok()?;
    rs.tables.into_iter().next()
}

/// A chain's own restore text: the key it is interned under, and what is
/// parsed when it is new.
fn chain_text(table: &str, decl: &str, rules: &[&str]) -> String {
    let len = table.len() + decl.len() + rules.iter().map(|r| r.len() + 1).sum::<usize>() + 10;
    let mut s = String::with_capacity(len);
    s.push('*');
    for part in [table, decl].iter().chain(rules) {
        s.push_str(part);
        s.push('\n');
    }
    s.push_str("COMMIT\n");
    s
}

/// Parse a chain (its lines, and `text`, its [`chain_text`]), its rules
/// numbered 1, 2, … within the chain.
fn parse_chain(table: &str, decl: &str, rules: &[&str], text: &str) -> Option<Chain> {
    let alone = Chain::parse_alone(table, decl, rules);
    let mut chain = match alone {
        Some(chain) => chain,
        None => {
            let rs = Ruleset::parse(text).ok()?;
            rs.tables.into_iter().next()?.chains.into_iter().next()?
        }
    };
    chain.rules.number_within_chain();
    chain.line = 0;
    Some(chain)
}

/// A table's identity for [`SharedTable::is`]: its place, name, and its
/// chains' names and rule lists.
fn table_hash(pos: usize, table: &Table) -> u64 {
    let mut h = FixedState::default().build_hasher();
    (pos, table.name).hash(&mut h);
    for c in &table.chains {
        c.name.hash(&mut h);
        c.rules.id().hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "*filter\n:INPUT ACCEPT [0:0]\n:X - [0:0]\n:Y - [0:0]\n-A INPUT -j X\n-A X -s 10.0.0.0/8 -j Y\n-A INPUT -j Y\n-A Y -j ACCEPT\nCOMMIT\n";

    /// Equal chains of two rulesets are one list; different ones are not.
    #[test]
    fn equal_chains_are_shared() {
        let b = A.replace("-A Y -j ACCEPT", "-A Y -j DROP");
        let interner = Interner::default();
        let ra = interner.load(A).unwrap();
        let rb = interner.load(&b).unwrap();
        let (ca, cb) = (&ra.tables[0].chains, &rb.tables[0].chains);
        assert!(ca[0].rules.shares(&cb[0].rules));
        assert!(ca[1].rules.shares(&cb[1].rules));
        assert!(!ca[2].rules.shares(&cb[2].rules));
    }

    /// A chain read alone is the chain its text gives, read whole: for
    /// every chain of a real kube-proxy node's dump and of `A`.
    #[test]
    fn a_chain_read_alone_is_the_chain_read_whole() {
        let dumps = [
            include_str!("../../tests/data/iptables/kube-proxy-node.txt"),
            include_str!("../../tests/data/kernel/ipset-rules.txt"),
            A,
        ];
        let mut read = 0;
        for dump in dumps {
            let mut table = "";
            let mut chains: Vec<(&str, Vec<&str>)> = Vec::new();
            for line in dump.lines().chain(["*end"]) {
                if let Some(t) = line.strip_prefix('*') {
                    for (decl, rules) in chains.drain(..) {
                        let whole = Ruleset::parse(&chain_text(table, decl, &rules)).unwrap();
                        let want = whole.tables[0].chains[0].clone();
                        assert_eq!(
                            Chain::parse_alone(table, decl, &rules),
                            Some(want),
                            "{decl}"
                        );
                        read += 1;
                    }
                    table = t;
                } else if line.starts_with(':') {
                    chains.push((line, Vec::new()));
                } else if let Some(rest) = line.strip_prefix("-A ") {
                    let name = rest.split_whitespace().next().unwrap();
                    let decl = chains
                        .iter_mut()
                        .find(|(d, _)| d[1..].split_whitespace().next() == Some(name));
                    decl.unwrap().1.push(line);
                }
            }
        }
        assert!(read >= 30, "{read} chains");
        // Not the plain shape, or not a chain of its own: left to the whole
        // reading (which refuses most of these).
        for (decl, rules) in [
            (":X - [0:0]", vec!["-A Y -j ACCEPT"]),
            (":X - [0:0]", vec!["# a comment"]),
            (":X - [0:0]", vec!["-I X -j ACCEPT"]),
            (":X - [0:0]", vec!["-A X -j ACCEPT\n-A X -j DROP"]),
            (":X - [0:0]", vec!["-A X --nope"]),
            (":X ACCEPT [0:0]", vec![]),
            (":INPUT - [0:0]", vec![]),
            ("X - [0:0]", vec![]),
        ] {
            assert_eq!(
                Chain::parse_alone("filter", decl, &rules),
                None,
                "{decl} {rules:?}"
            );
        }
        assert_eq!(Chain::parse_alone("nope", ":X - [0:0]", &[]), None);
    }

    /// Interned or parsed whole, a ruleset prints and numbers the same.
    #[test]
    fn interning_changes_nothing_visible() {
        let interner = Interner::default();
        let mut shared = interner.load(A).unwrap();
        let mut parsed = Ruleset::load(A).unwrap();
        for rs in [&mut shared, &mut parsed] {
            rs.sort_as_saved();
            rs.number_as_saved();
        }
        assert_eq!(shared, parsed);
        assert_eq!(shared.to_iptables_save(), parsed.to_iptables_save());
    }

    /// Equal tables are compiled once; an invalid one is refused.
    #[test]
    fn equal_tables_compile_once() {
        let interner = Interner::default();
        let load = |text: &str| {
            let mut rs = interner.load(text).unwrap();
            rs.sort_as_saved();
            rs.number_as_saved();
            interner.engine(rs)
        };
        let compiled = || -> usize { interner.tables.lock().unwrap().values().map(Vec::len).sum() };
        load(A).unwrap();
        load(A).unwrap();
        assert_eq!(compiled(), 1);
        let b = A.replace("-A Y -j ACCEPT", "-A Y -j DROP");
        let e = load(&b).unwrap();
        assert_eq!(compiled(), 2);
        assert_eq!(
            e.ruleset().to_iptables_save(),
            Ruleset::load(&b).unwrap().to_iptables_save()
        );
        assert!(load(&A.replace("-A Y -j ACCEPT", "-A Y -j X")).is_err());
        assert_eq!(compiled(), 2);
    }

    /// A table given in parts is the table of the whole text, whichever
    /// part declares a chain and whichever parts append to it; parts the
    /// interner cannot take are refused as whole texts are.
    #[test]
    fn parts_load_as_the_whole_text() {
        let interner = Interner::default();
        let part = |text: &str| Arc::new(Part::new("filter", text.to_string()));
        let head = part(":INPUT ACCEPT [0:0]\n:X - [0:0]\n-A INPUT -j X\n");
        // Y declared here with one rule, appended to by the next part.
        let middle = part(":Y - [0:0]\n-A X -s 10.0.0.0/8 -j Y\n-A Y -j ACCEPT\n");
        let tail = part("-A INPUT -j Y\n-A Y -j DROP\n");
        let whole = "*filter\n:INPUT ACCEPT [0:0]\n:X - [0:0]\n:Y - [0:0]\n-A INPUT -j X\n-A X -s 10.0.0.0/8 -j Y\n-A Y -j ACCEPT\n-A INPUT -j Y\n-A Y -j DROP\nCOMMIT\n";
        let tables = [("filter", vec![head.clone(), middle.clone(), tail.clone()])];
        let mut parts = interner.load_parts(&tables).unwrap();
        let mut text = interner.load(whole).unwrap();
        for rs in [&mut parts, &mut text] {
            rs.number_as_saved();
        }
        assert_eq!(parts, text);
        // Whole chains of a part are the chains of the text.
        let again = interner.load_parts(&tables).unwrap();
        for (a, b) in again.tables[0].chains.iter().zip(&text.tables[0].chains) {
            assert!(a.rules.shares(&b.rules), "{}", a.name);
        }
        for bad in [
            // Y declared twice; Z never.
            vec![head.clone(), middle.clone(), middle.clone()],
            vec![head.clone(), part("-A Z -j ACCEPT\n")],
            vec![head.clone(), part("*filter\n")],
            vec![head.clone(), Arc::new(Part::new("nat", String::new()))],
        ] {
            assert!(interner.load_parts(&[("filter", bad)]).is_none());
        }
    }

    /// What the interner does not handle is left to `Ruleset::load`.
    #[test]
    fn unusual_or_broken_text_is_refused() {
        let interner = Interner::default();
        for bad in [
            "# comment\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n",
            "*filter\n:INPUT ACCEPT [0:0]\n[1:2] -A INPUT -j ACCEPT\nCOMMIT\n",
            "*filter\n:INPUT ACCEPT [0:0]\n-A NOPE -j ACCEPT\nCOMMIT\n",
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n",
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m nosuch -j ACCEPT\nCOMMIT\n",
        ] {
            assert!(interner.load(bad).is_none(), "{bad}");
        }
    }
}
