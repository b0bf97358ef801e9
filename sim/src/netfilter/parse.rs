//! Parsing `iptables-save` text (and `iptables-restore` input as kube-proxy
//! writes it) into a [`Ruleset`].
//!
//! Accepted: `# comments`, `*table`, `:CHAIN POLICY [p:b]` (policy `-` for
//! user chains), `[p:b] -A CHAIN ...` rules with options in any order (as
//! `iptables-restore` accepts them), `COMMIT`. Commands other than `-A`
//! (`-I`, `-D`, `-X`, `-F`, `-N`) never appear in save output and are
//! refused by name. Unknown match modules, targets and options are errors
//! naming the thing and the line: a dump from a live node either loads
//! exactly or says what it could not understand.
//!
//! The parser is a hand-written tokenizer over each line (quotes and
//! backslash escapes as `iptables-restore` reads them), no regular
//! expressions. Tokens and options borrow from the text (a token is copied
//! only when it holds an escape), and chain lookup is by a fast hash map:
//! a rule costs the allocations of what it keeps, not of how it was
//! written, so a node's 250,000-line dump parses in a fraction of the time
//! `iptables-restore --test` takes over it.

use super::error::{ParseError, ParseErrorKind as K};
use super::rule::*;
use foldhash::fast::FixedState;
use ipnet::Ipv4Net;
use rayon::prelude::*;
use std::borrow::Cow;
use std::net::Ipv4Addr;

/// Chain names by position in their table: a fast hash (the text is the
/// user's own rules, not an adversary's).
type HashMap<K, V> = std::collections::HashMap<K, V, FixedState>;

type PResult<T> = Result<T, K>;

impl Ruleset {
    /// Parse `iptables-save` output. Does not validate jumps (see
    /// [`Ruleset::load`]).
    ///
    /// Reads as a single pass from top to bottom would, first error by
    /// line included, but mostly in parallel:
    /// 1. the text is cut into stretches of whole lines, and each line is
    ///    told apart (structure or rule) and chain declarations are read,
    ///    stretch by stretch in parallel;
    /// 2. the structure (tables, declarations, comments) is applied in
    ///    order, one line of ten in a kube-proxy dump;
    /// 3. each rule line is given the chain it appends to, stretch by
    ///    stretch in parallel, against what its table declared above it;
    /// 4. the rules are read, chain by chain in parallel, each chain's
    ///    rules straight into its list.
    pub fn parse(text: &str) -> Result<Ruleset, ParseError> {
        Parser::parse(text, STRETCH_BYTES)
    }
}

impl Chain {
    /// One chain of table `table` read on its own, from its declaration
    /// line (`:NAME POLICY [p:b]`) and its `-A NAME` lines: the chain
    /// [`Ruleset::parse`] reads from `*table`, those lines and `COMMIT`,
    /// its rules numbered by their line in that text. `None` when the
    /// lines are not all of that plain shape or do not parse; the caller
    /// then reads the text whole, for its answer and its error.
    ///
    /// What interning a generated table does tens of thousands of times:
    /// without the two passes, their parallel hand-out and their maps, a
    /// small chain reads several times faster.
    pub(crate) fn parse_alone(table: &str, decl: &str, rules: &[&str]) -> Option<Chain> {
        let table = table_name(table.trim()).ok()?;
        let decl = decl
            .trim()
            .strip_prefix(':')
            .filter(|d| !d.contains('\n'))?;
        let declared = chain_decl(decl).ok()?;
        if policy_error(table, &declared).is_some() {
            return None;
        }
        let name = declared.name;
        let mut tokens = Vec::new();
        let mut list = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let line = r.trim();
            if !line.starts_with("-A") || line.contains('\n') {
                return None;
            }
            if appended_chain(line).as_deref() != Some(name) {
                return None;
            }
            tokenize(line, &mut tokens).ok()?;
            let (appended, rule) = parse_rule(&tokens, i + 3).ok()?;
            if appended != name {
                return None;
            }
            list.push(rule);
        }
        Some(declared.chain(2, list.into()))
    }
}

/// The parser's state as the structure is applied in line order.
#[derive(Default)]
struct Parser<'a> {
    rs: Ruleset,
    /// The table being read.
    current: Option<Table>,
    /// Per table in order (the current one last), its chains by name, as
    /// declared so far.
    names: Vec<HashMap<&'a str, Position>>,
    /// Per table in order, its chain declarations and their lines: made
    /// into chains, in parallel, once their rules are read.
    declared: Vec<Vec<(Declared<'a>, usize)>>,
    /// Per table in order, the lines it spans.
    spans: Vec<Span>,
    /// Comment lines seen since the last COMMIT.
    pending_comments: Vec<String>,
    /// Per `*table` line in order, the chain declarations that follow it,
    /// so that the table's chain list and name map are sized once rather
    /// than grown by doubling (a kube-proxy nat table declares tens of
    /// thousands of chains).
    declarations: std::vec::IntoIter<usize>,
}

/// Where a chain was declared: its position in its table, and the line.
#[derive(Clone, Copy)]
struct Position {
    pos: usize,
    line: usize,
}

/// A table's lines: from its `*table` line to its `COMMIT` line (`None`
/// while no COMMIT has closed it).
#[derive(Clone, Copy)]
struct Span {
    start: usize,
    end: Option<usize>,
}

impl Span {
    fn holds(&self, line: usize) -> bool {
        self.start < line && self.end.is_none_or(|end| line < end)
    }
}

/// An `-A` line and the chain it appends to (a table's position among the
/// tables read, the chain's in that table), parsed in the last pass.
struct RuleLine<'a> {
    line: usize,
    text: &'a str,
    table: u32,
    chain: u32,
}

/// Chains parsed in one go by one thread: enough rules that handing them
/// out costs little.
const CHAINS_PER_TASK: usize = 256;

impl<'a> Parser<'a> {
    /// [`Ruleset::parse`], with the text cut into stretches of about
    /// `stretch_bytes` (tests cut small texts finely).
    fn parse(text: &'a str, stretch_bytes: usize) -> Result<Ruleset, ParseError> {
        let mut scans: Vec<Scan<'a>> = stretches(text, stretch_bytes)
            .into_par_iter()
            .map(Scan::new)
            .collect();
        // The line before each stretch's first.
        let bases: Vec<usize> = scans
            .iter()
            .scan(0, |n, s| {
                let base = *n;
                *n += s.lines;
                Some(base)
            })
            .collect();
        let mut p = Parser::default();
        let structure_error = p.structure(&mut scans, &bases).err();
        let until = structure_error.as_ref().map_or(usize::MAX, |e| e.line);
        let (lines, rule_error) = p.resolve(&scans, &bases, until);
        // Whichever stops a reading from the top first; on one line (a
        // last rule line of a table without COMMIT), the rule's.
        let earlier = match (rule_error, structure_error) {
            (Some(r), Some(s)) => Some(if r.line <= s.line { r } else { s }),
            (r, s) => r.or(s),
        };
        p.rules(lines, earlier)
    }

    /// Apply the structure lines in order, up to the first error.
    fn structure(&mut self, scans: &mut [Scan<'a>], bases: &[usize]) -> Result<(), ParseError> {
        self.declarations = declarations(scans).into_iter();
        for (scan, base) in scans.iter_mut().zip(bases) {
            for (i, s) in std::mem::take(&mut scan.structure) {
                let line = base + i as usize + 1;
                self.apply(s, line)
                    .map_err(|kind| ParseError { line, kind })?;
            }
        }
        if let Some(t) = &self.current {
            let last = bases
                .last()
                .zip(scans.last())
                .map_or(0, |(b, s)| b + s.lines);
            return Err(ParseError {
                line: last.max(1),
                kind: K::MissingCommit(t.name.to_string()),
            });
        }
        if let Some(last) = self.rs.tables.last_mut() {
            last.trailer_comments
                .extend(std::mem::take(&mut self.pending_comments));
        }
        Ok(())
    }

    /// The chain each rule line up to line `until` appends to, stretch by
    /// stretch in parallel: the rule lines in order, up to the first that
    /// has none, and that line's error.
    fn resolve(
        &self,
        scans: &[Scan<'a>],
        bases: &[usize],
        until: usize,
    ) -> (Vec<Vec<RuleLine<'a>>>, Option<ParseError>) {
        let per_stretch: Vec<(Vec<RuleLine<'a>>, Option<ParseError>)> = scans
            .par_iter()
            .zip(bases)
            .map(|(scan, &base)| {
                let mut out = Vec::with_capacity(scan.rules.len());
                // A dump lists a chain's rules together: most lines append
                // to the chain the line before did, found without hashing
                // its name again.
                let mut last: Option<(usize, &str, usize)> = None;
                for (i, text, appended) in &scan.rules {
                    let line = base + *i as usize + 1;
                    if line > until {
                        break;
                    }
                    let cached = match (last, appended) {
                        (Some((table, name, pos)), Some(a)) if name == a => {
                            self.spans[table].holds(line).then_some((table, pos))
                        }
                        _ => None,
                    };
                    let found = cached.map_or_else(|| self.chain_of(text, appended, line), Ok);
                    match found {
                        Ok((table, chain)) => {
                            if let Some(Cow::Borrowed(name)) = appended {
                                last = Some((table, name, chain));
                            }
                            out.push(RuleLine {
                                line,
                                text,
                                table: table as u32,
                                chain: chain as u32,
                            });
                        }
                        Err(kind) => return (out, Some(ParseError { line, kind })),
                    }
                }
                (out, None)
            })
            .collect();
        let mut lines = Vec::with_capacity(per_stretch.len());
        for (out, error) in per_stretch {
            lines.push(out);
            if error.is_some() {
                return (lines, error);
            }
        }
        (lines, None)
    }

    /// The table (its position) and chain (its position there) that rule
    /// line `text` (number `line`, appending to `appended` when the scan
    /// could tell) appends to: a chain its table declared above it.
    fn chain_of(
        &self,
        text: &str,
        appended: &Option<Cow<'a, str>>,
        line: usize,
    ) -> PResult<(usize, usize)> {
        let table = self
            .spans
            .iter()
            .rposition(|s| s.start < line)
            .filter(|&t| self.spans[t].holds(line))
            .ok_or_else(|| K::OutsideTable(first_word(text)))?;
        let declared = |name: &str| {
            self.names[table]
                .get(name)
                .filter(|d| d.line < line)
                .map(|d| (table, d.pos))
        };
        if let Some(found) = appended.as_deref().and_then(declared) {
            return Ok(found);
        }
        // Unusual or wrong: read the whole rule now, so that its own
        // errors come first, as a reading line by line has it.
        let mut tokens = Vec::new();
        tokenize(text, &mut tokens)?;
        let (name, _) = parse_rule(&tokens, line)?;
        declared(&name).ok_or_else(|| K::UndeclaredChain(name.into_owned()))
    }

    /// The last pass: parse each chain's rule lines (`lines`, in line
    /// order) into its rules; fail with the first problem by line,
    /// `earlier` (the structure's or a rule line's chain) included.
    fn rules(
        mut self,
        lines: Vec<Vec<RuleLine<'a>>>,
        earlier: Option<ParseError>,
    ) -> Result<Ruleset, ParseError> {
        // Rule lines grouped by chain, in line order within each chain:
        // chain `g` (numbered across tables) has `order[starts[g]..starts[g
        // + 1]]`, each a (stretch, position) in `lines`.
        let bases: Vec<usize> = self
            .names
            .iter()
            .scan(0, |n, t| {
                let base = *n;
                *n += t.len();
                Some(base)
            })
            .collect();
        let chains = bases
            .last()
            .map_or(0, |b| b + self.names.last().map_or(0, |t| t.len()));
        let global = |r: &RuleLine| bases[r.table as usize] + r.chain as usize;
        let mut starts = vec![0usize; chains + 1];
        for r in lines.iter().flatten() {
            starts[global(r) + 1] += 1;
        }
        for g in 0..chains {
            starts[g + 1] += starts[g];
        }
        let mut fill = starts.clone();
        let mut order = vec![(0u32, 0u32); starts[chains]];
        for (s, stretch) in lines.iter().enumerate() {
            for (i, r) in stretch.iter().enumerate() {
                let g = global(r);
                order[fill[g]] = (s as u32, i as u32);
                fill[g] += 1;
            }
        }
        let parsed: Vec<Result<Rules, ParseError>> = (0..chains)
            .into_par_iter()
            .with_min_len(CHAINS_PER_TASK)
            .map_init(Vec::new, |tokens, g| {
                let mine = &order[starts[g]..starts[g + 1]];
                let mut rules = Vec::with_capacity(mine.len());
                for &(s, i) in mine {
                    let r = &lines[s as usize][i as usize];
                    let at = |kind| ParseError { line: r.line, kind };
                    tokenize(r.text, tokens).map_err(at)?;
                    rules.push(parse_rule(tokens, r.line).map_err(at)?.1);
                }
                Ok(Rules::from(rules))
            })
            .collect();
        // The first error by line, of any pass.
        let first = parsed
            .iter()
            .filter_map(|p| p.as_ref().err())
            .chain(earlier.as_ref())
            .min_by_key(|e| e.line);
        if let Some(e) = first {
            return Err(e.clone());
        }
        let mut parsed = parsed.into_iter().map(|p| p.expect("no errors"));
        for (table, declared) in self.rs.tables.iter_mut().zip(self.declared) {
            let rules: Vec<Rules> = parsed.by_ref().take(declared.len()).collect();
            table.chains = declared
                .into_par_iter()
                .zip(rules)
                .map(|((d, line), rules)| d.chain(line, rules))
                .collect();
        }
        Ok(self.rs)
    }

    /// Apply a structure line (number `line`) in its place.
    fn apply(&mut self, structure: Structure<'a>, line: usize) -> PResult<()> {
        let trimmed = match structure {
            Structure::Line(text) => text,
            Structure::Declaration(text, read) => return self.declare(text, read, line),
        };
        if trimmed.starts_with('#') {
            match (&self.current, self.rs.tables.is_empty()) {
                (None, true) => self.rs.header_comments.push(trimmed.to_string()),
                (None, false) => self.pending_comments.push(trimmed.to_string()),
                (Some(_), _) => {}
            }
            return Ok(());
        }
        if let Some(name) = trimmed.strip_prefix('*') {
            if let Some(t) = &self.current {
                return Err(K::MissingCommit(t.name.to_string()));
            }
            let name = table_name(name.trim())?;
            if let Some(prev) = self.rs.tables.last_mut() {
                prev.trailer_comments
                    .extend(std::mem::take(&mut self.pending_comments));
            } else {
                self.rs
                    .header_comments
                    .extend(std::mem::take(&mut self.pending_comments));
            }
            let chains = self.declarations.next().unwrap_or(0);
            self.current = Some(Table {
                name,
                chains: Vec::new(),
                trailer_comments: Vec::new(),
                line,
            });
            self.names.push(HashMap::with_capacity_and_hasher(
                chains,
                FixedState::default(),
            ));
            self.declared.push(Vec::with_capacity(chains));
            self.spans.push(Span {
                start: line,
                end: None,
            });
            return Ok(());
        }
        debug_assert_eq!(trimmed, "COMMIT", "scan gives only these as lines");
        let t = self
            .current
            .take()
            .ok_or_else(|| K::OutsideTable("COMMIT".into()))?;
        self.rs.tables.push(t);
        if let Some(span) = self.spans.last_mut() {
            span.end = Some(line);
        }
        Ok(())
    }

    /// A chain declaration (the line `text`, read as `read`), number
    /// `line`.
    fn declare(&mut self, text: &str, read: PResult<Declared<'a>>, line: usize) -> PResult<()> {
        let (Some(table), Some(chains), Some(list)) = (
            &self.current,
            self.names.last_mut(),
            self.declared.last_mut(),
        ) else {
            return Err(K::OutsideTable(first_word(text)));
        };
        let declared = read?;
        if chains.contains_key(declared.name) {
            return Err(K::DuplicateChain(declared.name.to_string()));
        }
        if let Some(wrong) = policy_error(table.name, &declared) {
            return Err(wrong);
        }
        chains.insert(
            declared.name,
            Position {
                pos: list.len(),
                line,
            },
        );
        list.push((declared, line));
        Ok(())
    }
}

/// One stretch of text, scanned: what each line is, as far as the line
/// alone tells. Lines are numbered from 0 within the stretch.
struct Scan<'a> {
    /// Lines in the stretch.
    lines: usize,
    /// Comments, `*table`, `COMMIT` and chain declarations.
    structure: Vec<(u32, Structure<'a>)>,
    /// Rule lines (trimmed), with the chain each appends to when that is
    /// plain to see.
    rules: Vec<(u32, &'a str, Option<Cow<'a, str>>)>,
}

impl<'a> Scan<'a> {
    fn new(stretch: &'a str) -> Scan<'a> {
        // Sized from the start: grown by doubling, the lists of a large
        // dump would each be copied and their memory touched twice over.
        let mut scan = Scan {
            lines: 0,
            structure: Vec::new(),
            rules: Vec::with_capacity(line_count(stretch)),
        };
        for (i, raw) in stretch.lines().enumerate() {
            scan.lines = i + 1;
            match scan_line(raw) {
                Some(Scanned::Structure(s)) => scan.structure.push((i as u32, s)),
                Some(Scanned::Rule(text, chain)) => scan.rules.push((i as u32, text, chain)),
                None => {}
            }
        }
        scan
    }
}

/// What a line is, as far as the line alone tells.
enum Scanned<'a> {
    Structure(Structure<'a>),
    /// Anything else is a rule line (trimmed), with the chain it appends
    /// to when that is plain to see.
    Rule(&'a str, Option<Cow<'a, str>>),
}

/// A line of a dump's structure (trimmed).
enum Structure<'a> {
    /// A comment, `*table` or `COMMIT`.
    Line(&'a str),
    /// A chain declaration, and what it declares or what is wrong with
    /// it.
    Declaration(&'a str, PResult<Declared<'a>>),
}

/// Scan one line of text; `None` for a blank one.
fn scan_line(raw: &str) -> Option<Scanned<'_>> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        None
    } else if let Some(decl) = trimmed.strip_prefix(':') {
        let read = chain_decl(decl);
        Some(Scanned::Structure(Structure::Declaration(trimmed, read)))
    } else if trimmed.starts_with(['#', '*']) || trimmed == "COMMIT" {
        Some(Scanned::Structure(Structure::Line(trimmed)))
    } else {
        Some(Scanned::Rule(trimmed, appended_chain(trimmed)))
    }
}

/// Per `*table` line among the scanned stretches, the number of chain
/// declarations after it and before the next one.
fn declarations(scans: &[Scan]) -> Vec<usize> {
    let mut counts = Vec::new();
    for (_, s) in scans.iter().flat_map(|scan| &scan.structure) {
        match s {
            Structure::Line(text) if text.starts_with('*') => counts.push(0),
            Structure::Declaration(..) => {
                if let Some(n) = counts.last_mut() {
                    *n += 1;
                }
            }
            Structure::Line(_) => {}
        }
    }
    counts
}

/// Bytes of text one thread scans at a time.
const STRETCH_BYTES: usize = 1 << 18;

/// The text cut into stretches of whole lines, each of at least `bytes`
/// bytes but the last (and each but the last ends with its newline), so
/// that each reads alone as it reads in the whole.
fn stretches(text: &str, bytes: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > bytes {
        let cut = rest.as_bytes()[bytes..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| bytes + i + 1);
        let (stretch, after) = rest.split_at(cut);
        out.push(stretch);
        rest = after;
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// The number of lines of `text` (a last line without its newline
/// counts).
fn line_count(text: &str) -> usize {
    let newlines = text.bytes().filter(|&b| b == b'\n').count();
    newlines + usize::from(!text.ends_with('\n') && !text.is_empty())
}

/// The chain a plain rule line (`[p:b] -A CHAIN ...`) appends to, read
/// as [`parse_rule`] reads it; `None` for any other line.
fn appended_chain(line: &str) -> Option<Cow<'_, str>> {
    let mut tokens = Tokens::new(line);
    let mut tok = tokens.next()?.ok()?;
    if tok.text.starts_with('[') && !tok.quoted {
        tok = tokens.next()?.ok()?;
    }
    matches!(&*tok.text, "-A" | "--append").then_some(())?;
    Some(tokens.next()?.ok()?.text)
}

fn first_word(s: &str) -> String {
    s.split_whitespace().next().unwrap_or("").to_string()
}

fn table_name(s: &str) -> PResult<TableName> {
    Ok(match s {
        "raw" => TableName::Raw,
        "mangle" => TableName::Mangle,
        "nat" => TableName::Nat,
        "filter" => TableName::Filter,
        "security" => TableName::Security,
        other => return Err(K::UnknownTable(other.into())),
    })
}

/// The built-in chains of each table (`iptable_*` modules' hooks).
pub fn is_builtin(table: TableName, chain: &str) -> bool {
    builtin_chains(table).contains(&chain)
}

/// Built-in chains of a table, in the order `iptables-save` prints them.
pub fn builtin_chains(table: TableName) -> &'static [&'static str] {
    match table {
        TableName::Raw => &["PREROUTING", "OUTPUT"],
        TableName::Mangle => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        TableName::Nat => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        TableName::Filter | TableName::Security => &["INPUT", "FORWARD", "OUTPUT"],
    }
}

/// What is wrong with chain `name`'s policy in `table`: a built-in chain
/// needs one, a user chain may not have one.
fn policy_error(table: TableName, declared: &Declared) -> Option<K> {
    let name = || declared.name.to_string();
    match (is_builtin(table, declared.name), declared.policy.is_some()) {
        (true, false) => Some(K::MissingPolicy(name())),
        (false, true) => Some(K::UserChainPolicy(name())),
        _ => None,
    }
}

/// What a `:NAME POLICY [p:b]` line declares.
struct Declared<'a> {
    /// As written.
    name: &'a str,
    policy: Option<Policy>,
    counters: Counters,
}

impl Declared<'_> {
    /// The chain declared on line `line`, with `rules`.
    fn chain(&self, line: usize, rules: Rules) -> Chain {
        Chain {
            name: self.name.to_string(),
            policy: self.policy,
            counters: self.counters,
            rules,
            line,
            rule_line_offset: 0,
        }
    }
}

/// Read a `:NAME POLICY [p:b]` declaration (without its colon).
fn chain_decl(decl: &str) -> PResult<Declared<'_>> {
    let mut parts = decl.split_whitespace();
    let name = parts.next().ok_or_else(|| K::Unexpected(":".into()))?;
    let policy = match parts.next() {
        Some("-") | None => None,
        Some("ACCEPT") => Some(Policy::Accept),
        Some("DROP") => Some(Policy::Drop),
        Some(other) => {
            return Err(K::BadValue {
                option: format!("policy of {name}"),
                value: other.into(),
            })
        }
    };
    let counters = match parts.next() {
        Some(c) => parse_counters(c)?,
        None => Counters::default(),
    };
    if let Some(extra) = parts.next() {
        return Err(K::Unexpected(extra.into()));
    }
    Ok(Declared {
        name,
        policy,
        counters,
    })
}

fn parse_counters(s: &str) -> PResult<Counters> {
    let inner = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .ok_or_else(|| K::BadValue {
            option: "counters".into(),
            value: s.into(),
        })?;
    let (p, b) = inner.split_once(':').ok_or_else(|| K::BadValue {
        option: "counters".into(),
        value: s.into(),
    })?;
    Ok(Counters {
        packets: p.parse().map_err(|_| K::BadNumber(p.into()))?,
        bytes: b.parse().map_err(|_| K::BadNumber(b.into()))?,
    })
}

/// A token, and whether it was quoted (a quoted `!` or `-x` is a value).
/// Borrowed from the line unless it held an escape.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Tok<'a> {
    text: Cow<'a, str>,
    quoted: bool,
}

/// Split a rule line like `iptables-restore` does into `out`: whitespace
/// separates, double quotes group (with `\"` and `\\` escapes inside).
fn tokenize<'a>(s: &'a str, out: &mut Vec<Tok<'a>>) -> PResult<()> {
    out.clear();
    for tok in Tokens::new(s) {
        out.push(tok?);
    }
    Ok(())
}

/// A line's tokens, one at a time.
struct Tokens<'a> {
    rest: &'a str,
}

impl<'a> Tokens<'a> {
    fn new(line: &'a str) -> Self {
        Tokens { rest: line }
    }
}

/// Whether a byte ends a plain token: a space, a quote, or what the fast
/// path leaves to [`token`]: a control character or anything past ASCII
/// (whitespace other than a space is among them).
fn stops(b: u8) -> bool {
    b == b' ' || b == b'"' || !(b' '..=b'~').contains(&b)
}

/// The length of the plain run at the start of `bytes` (up to the first
/// byte that [`stops`] it), eight bytes at a time.
fn plain_len(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // In each test the lowest flagged byte is exact (borrows and carries
    // only run upwards), which is the one that counts.
    let below = |w: u64, n: u64| w.wrapping_sub(n * ONES) & !w & HIGH;
    let zero = |w: u64| below(w, 1);
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let stop = zero(w ^ (b' ' as u64 * ONES))
            | zero(w ^ (b'"' as u64 * ONES))
            | below(w, b' ' as u64)
            | ((w.wrapping_add(ONES) | w) & HIGH);
        if stop != 0 {
            return at + (stop.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at + bytes[at..]
        .iter()
        .position(|&b| stops(b))
        .unwrap_or(bytes.len() - at)
}

impl<'a> Iterator for Tokens<'a> {
    type Item = PResult<Tok<'a>>;

    /// Printable ASCII separated by spaces, as rule text almost always is,
    /// byte by byte; anything else (quotes, tabs, Unicode) by [`token`].
    fn next(&mut self) -> Option<Self::Item> {
        let bytes = self.rest.as_bytes();
        let start = bytes.iter().position(|&b| b != b' ')?;
        let end = start + plain_len(&bytes[start..]);
        if end > start && (end == bytes.len() || bytes[end] == b' ') {
            let text = Cow::Borrowed(&self.rest[start..end]);
            self.rest = &self.rest[end..];
            return Some(Ok(Tok {
                text,
                quoted: false,
            }));
        }
        self.rest = skip_space(&self.rest[start..]);
        if self.rest.is_empty() {
            return None;
        }
        match token(self.rest) {
            Ok((tok, len)) => {
                self.rest = &self.rest[len..];
                Some(Ok(tok))
            }
            Err(e) => {
                self.rest = "";
                Some(Err(e))
            }
        }
    }
}

/// Whether an ASCII byte is whitespace as `char::is_whitespace` has it.
fn ascii_space(b: u8) -> bool {
    b == b' ' || (b'\t'..=b'\r').contains(&b)
}

/// `s` without leading whitespace (byte by byte while it is ASCII, as rule
/// text almost always is).
fn skip_space(s: &str) -> &str {
    match s.bytes().position(|b| !ascii_space(b)) {
        Some(i) if s.as_bytes()[i] < 0x80 => &s[i..],
        Some(i) => s[i..].trim_start(),
        None => "",
    }
}

/// Where the plain part of a token at the start of `s` ends: at the
/// first whitespace or quote.
fn plain_end(s: &str) -> usize {
    let stop = |c: char| c.is_whitespace() || c == '"';
    match s
        .bytes()
        .position(|b| b >= 0x80 || b == b'"' || ascii_space(b))
    {
        Some(i) if s.as_bytes()[i] >= 0x80 => i + s[i..].find(stop).unwrap_or(s.len() - i),
        Some(i) => i,
        None => s.len(),
    }
}

/// The token at the start of `s` (which does not start with whitespace),
/// and its length in bytes.
fn token(s: &str) -> PResult<(Tok<'_>, usize)> {
    let end = plain_end(s);
    if !s[end..].starts_with('"') {
        let text = Cow::Borrowed(&s[..end]);
        return Ok((
            Tok {
                text,
                quoted: false,
            },
            end,
        ));
    }
    // `"text"` alone, without escapes (how comments are written): the
    // text between the quotes, borrowed.
    if end == 0 {
        if let Some(close) = s[1..].find(['"', '\\']).map(|i| i + 1) {
            let after = close + 1;
            if s.as_bytes()[close] == b'"'
                && s[after..].chars().next().is_none_or(char::is_whitespace)
            {
                let text = Cow::Borrowed(&s[1..close]);
                return Ok((Tok { text, quoted: true }, after));
            }
        }
    }
    // Anything else, copied as it is read.
    let mut text = String::new();
    let mut chars = s.char_indices();
    let mut len = s.len();
    while let Some((i, c)) = chars.next() {
        if c.is_whitespace() {
            len = i;
            break;
        }
        if c != '"' {
            text.push(c);
            continue;
        }
        loop {
            match chars.next().map(|(_, c)| c) {
                None => return Err(K::UnterminatedQuote),
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some((_, e)) => text.push(e),
                    None => return Err(K::UnterminatedQuote),
                },
                Some(x) => text.push(x),
            }
        }
    }
    let quoted = true;
    Ok((
        Tok {
            text: Cow::Owned(text),
            quoted,
        },
        len,
    ))
}

/// Options that take no value.
fn is_flag(opt: &str) -> bool {
    matches!(
        opt,
        "--syn"
            | "--rsource"
            | "--rdest"
            | "--set"
            | "--rcheck"
            | "--update"
            | "--remove"
            | "--reap"
            | "--rttl"
            | "--limit-iface-in"
            | "--limit-iface-out"
            | "--random"
            | "--random-fully"
            | "--persistent"
            | "--notrack"
            | "--physdev-is-bridged"
            | "--physdev-is-in"
            | "--physdev-is-out"
            | "--save-mark"
            | "--restore-mark"
            | "--log-tcp-sequence"
            | "--log-tcp-options"
            | "--log-ip-options"
            | "--log-uid"
            | "--return-nomatch"
            | "--update-counters"
            | "--update-subcounters"
    )
}

/// Number of values an option takes.
fn arity(opt: &str) -> usize {
    if is_flag(opt) {
        0
    } else if matches!(opt, "--tcp-flags" | "--match-set") {
        2
    } else {
        1
    }
}

/// One `--option value...` with its negation, borrowed from the rule's
/// tokens.
#[derive(Clone, Copy, Debug)]
struct Opt<'t> {
    negated: bool,
    name: &'t str,
    values: &'t [Tok<'t>],
}

/// The part of a rule being collected.
enum Owner<'t> {
    /// A match module (its name as `-m` gives it) and whether it was
    /// loaded implicitly by a protocol option.
    Match(&'t str, bool),
    Target(&'t str),
}

/// A rule line's chain (as written) and rule.
fn parse_rule<'t, 'a: 't>(tokens: &'t [Tok<'a>], line: usize) -> PResult<(Cow<'a, str>, Rule)> {
    let mut i = 0;
    let mut counters = None;
    if let Some(t) = tokens.first() {
        if t.text.starts_with('[') && !t.quoted {
            counters = Some(Box::new(parse_counters(&t.text)?));
            i = 1;
        }
    }
    match tokens.get(i).map(|t| &*t.text) {
        Some("-A") | Some("--append") => {}
        Some(cmd @ ("-I" | "-D" | "-X" | "-F" | "-N" | "-R" | "-P" | "-Z" | "-E")) => {
            return Err(K::UnsupportedCommand(cmd.into()))
        }
        Some(other) => return Err(K::Unexpected(other.into())),
        None => return Err(K::Unexpected(String::new())),
    }
    let chain = tokens
        .get(i + 1)
        .ok_or_else(|| K::MissingValue("-A".into()))?
        .text
        .clone();
    i += 2;
    // One match per `-m` (implicit protocol matches are rare): a rule's
    // list sized to it rather than to a growing vector's first capacity.
    let modules = tokens[i..]
        .iter()
        .filter(|t| !t.quoted && matches!(&*t.text, "-m" | "--match"))
        .count();
    let mut rule = Rule {
        source: None,
        destination: None,
        in_iface: None,
        out_iface: None,
        protocol: None,
        fragment: None,
        matches: Vec::with_capacity(modules),
        target: None,
        counters,
        line,
    };
    // Collected extension options, flushed into matches/targets.
    let mut owner: Option<Owner> = None;
    let mut opts: Vec<Opt> = Vec::new();
    let mut negate = false;
    let mut target_seen = false;
    while i < tokens.len() {
        let tok = &tokens[i];
        i += 1;
        if tok.text == "!" && !tok.quoted {
            if negate {
                return Err(K::DanglingNegation);
            }
            negate = true;
            continue;
        }
        let name = &*tok.text;
        let take_value = |i: &mut usize| -> PResult<&'t str> {
            let v = tokens.get(*i).ok_or_else(|| K::MissingValue(name.into()))?;
            *i += 1;
            Ok(&v.text)
        };
        match name {
            "-s" | "--source" | "-d" | "--destination" => {
                let v = take_value(&mut i)?;
                let net = Neg {
                    negated: std::mem::take(&mut negate),
                    value: parse_prefix(v)?,
                };
                let slot = if name.starts_with("-s") || name == "--source" {
                    &mut rule.source
                } else {
                    &mut rule.destination
                };
                if slot.replace(net).is_some() {
                    return Err(K::DuplicateOption(name.into()));
                }
            }
            "-i" | "--in-interface" | "-o" | "--out-interface" => {
                let v = take_value(&mut i)?;
                let m = Box::new(Neg {
                    negated: std::mem::take(&mut negate),
                    value: parse_iface(v),
                });
                let slot = if name == "-i" || name == "--in-interface" {
                    &mut rule.in_iface
                } else {
                    &mut rule.out_iface
                };
                if slot.replace(m).is_some() {
                    return Err(K::DuplicateOption(name.into()));
                }
            }
            "-p" | "--protocol" => {
                let v = take_value(&mut i)?;
                let p = Neg {
                    negated: std::mem::take(&mut negate),
                    value: parse_protocol(v)?,
                };
                if rule.protocol.replace(p).is_some() {
                    return Err(K::DuplicateOption(name.into()));
                }
            }
            "-f" | "--fragment" => {
                rule.fragment = Some(Neg {
                    negated: std::mem::take(&mut negate),
                    value: (),
                });
            }
            "-m" | "--match" => {
                if negate {
                    return Err(K::DanglingNegation);
                }
                let v = take_value(&mut i)?;
                flush(&mut rule, owner.take(), &mut opts)?;
                owner = Some(Owner::Match(v, false));
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                if negate {
                    return Err(K::DanglingNegation);
                }
                if target_seen {
                    return Err(K::DuplicateOption("-j".into()));
                }
                target_seen = true;
                let v = take_value(&mut i)?;
                flush(&mut rule, owner.take(), &mut opts)?;
                if name == "-g" || name == "--goto" {
                    rule.target = Some(Target::Goto(v.into()));
                } else {
                    owner = Some(Owner::Target(v));
                }
            }
            opt if opt.starts_with("--") && !tok.quoted => {
                // An extension option. `--dport` after `-p tcp` with no
                // `-m tcp` loads the protocol's match implicitly.
                if owner.is_none() || implicit_needed(&owner, opt) {
                    let proto = rule
                        .protocol
                        .as_ref()
                        .filter(|p| !p.negated)
                        .and_then(|p| proto_module(p.value));
                    match proto {
                        Some(m) if is_proto_option(opt) => {
                            flush(&mut rule, owner.take(), &mut opts)?;
                            owner = Some(Owner::Match(m, true));
                        }
                        _ => {
                            return Err(K::UnknownOption {
                                owner: "the rule".into(),
                                option: opt.into(),
                            })
                        }
                    }
                }
                let n = arity(opt);
                if tokens.len() < i + n {
                    return Err(K::MissingValue(opt.into()));
                }
                opts.push(Opt {
                    negated: std::mem::take(&mut negate),
                    name: opt,
                    values: &tokens[i..i + n],
                });
                i += n;
            }
            other => return Err(K::Unexpected(other.into())),
        }
    }
    if negate {
        return Err(K::DanglingNegation);
    }
    flush(&mut rule, owner, &mut opts)?;
    rule.matches.shrink_to_fit();
    Ok((chain, rule))
}

fn implicit_needed(owner: &Option<Owner>, opt: &str) -> bool {
    // Only when the current owner is a match that does not know the option
    // and the option is a protocol option (e.g. `-m comment --comment x
    // --dport 80` after `-p tcp`).
    match owner {
        Some(Owner::Match(m, _)) => {
            !matches!(*m, "tcp" | "udp" | "sctp" | "icmp" | "multiport")
                && is_proto_option(opt)
                && !module_knows(m, opt)
        }
        _ => false,
    }
}

fn module_knows(module: &str, opt: &str) -> bool {
    match module {
        "conntrack" => opt.starts_with("--ct"),
        _ => false,
    }
}

fn is_proto_option(opt: &str) -> bool {
    matches!(
        opt,
        "--dport"
            | "--sport"
            | "--destination-port"
            | "--source-port"
            | "--tcp-flags"
            | "--syn"
            | "--icmp-type"
    )
}

fn proto_module(p: Protocol) -> Option<&'static str> {
    match p {
        Protocol::Tcp => Some("tcp"),
        Protocol::Udp => Some("udp"),
        Protocol::Sctp => Some("sctp"),
        Protocol::Icmp => Some("icmp"),
        Protocol::Other(_) => None,
    }
}

/// Close the match or target being collected, with its options (`opts`
/// is left empty for the next one).
fn flush(rule: &mut Rule, owner: Option<Owner>, opts: &mut Vec<Opt>) -> PResult<()> {
    let result = match owner {
        None => match opts.first() {
            Some(o) => Err(K::UnknownOption {
                owner: "the rule".into(),
                option: o.name.into(),
            }),
            None => Ok(()),
        },
        Some(Owner::Match(module, implicit)) => {
            let (module, kind) = build_match(module, opts)?;
            rule.matches.push(Match {
                module,
                implicit,
                kind,
            });
            Ok(())
        }
        Some(Owner::Target(name)) => {
            rule.target = Some(build_target(name, opts)?);
            Ok(())
        }
    };
    opts.clear();
    result
}

/// Whom options belong to (`-m NAME`, `-j NAME`), named in errors only.
#[derive(Clone, Copy)]
struct Who<'x>(&'static str, &'x str);

impl std::fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

fn unknown(owner: Who, o: &Opt) -> K {
    K::UnknownOption {
        owner: owner.to_string(),
        option: o.name.into(),
    }
}

fn no_negation(owner: Who, o: &Opt) -> PResult<()> {
    if o.negated {
        Err(K::BadValue {
            option: format!("{owner} {}", o.name),
            value: "! (cannot be negated)".into(),
        })
    } else {
        Ok(())
    }
}

fn value<'t>(o: &Opt<'t>) -> &'t str {
    o.values.first().map_or("", |t| &t.text)
}

/// The match modules modelled, by the name `-m` gives them: a rule keeps
/// the name without a copy of it.
const MODULES: &[&str] = &[
    "tcp",
    "udp",
    "sctp",
    "icmp",
    "multiport",
    "comment",
    "addrtype",
    "mark",
    "connmark",
    "conntrack",
    "state",
    "statistic",
    "recent",
    "set",
    "physdev",
];

/// A match from its module name and options: the module's name as kept
/// in the rule, and what it matches.
fn build_match(module: &str, opts: &[Opt]) -> PResult<(&'static str, MatchKind)> {
    let Some(&name) = MODULES.iter().find(|m| **m == module) else {
        return Err(K::UnknownMatch(module.into()));
    };
    let owner = Who("-m", module);
    let kind = match name {
        "tcp" | "udp" | "sctp" => {
            let (mut sport, mut dport, mut flags) = (None, None, None);
            for o in opts {
                match o.name {
                    "--sport" | "--source-port" => {
                        sport = Some(neg(o, parse_port_range(value(o))?))
                    }
                    "--dport" | "--destination-port" => {
                        dport = Some(neg(o, parse_port_range(value(o))?))
                    }
                    "--tcp-flags" if module == "tcp" => {
                        flags = Some(neg(
                            o,
                            TcpFlags {
                                mask: parse_tcp_flags(&o.values[0].text)?,
                                comp: parse_tcp_flags(&o.values[1].text)?,
                            },
                        ))
                    }
                    "--syn" if module == "tcp" => {
                        flags = Some(neg(
                            o,
                            TcpFlags {
                                mask: 0x17,
                                comp: 0x02,
                            },
                        ))
                    }
                    _ => return Err(unknown(owner, o)),
                }
            }
            MatchKind::Ports {
                sport,
                dport,
                tcp_flags: flags,
            }
        }
        "icmp" => {
            let mut icmp_type = None;
            for o in opts {
                match o.name {
                    "--icmp-type" => icmp_type = Some(neg(o, parse_icmp_type(value(o))?)),
                    _ => return Err(unknown(owner, o)),
                }
            }
            MatchKind::Icmp { icmp_type }
        }
        "multiport" => {
            let o = opts
                .first()
                .ok_or_else(|| K::MissingValue("--dports".into()))?;
            if opts.len() > 1 {
                return Err(K::DuplicateOption(opts[1].name.into()));
            }
            let direction = match o.name {
                "--dports" | "--destination-ports" => PortDirection::Destination,
                "--sports" | "--source-ports" => PortDirection::Source,
                "--ports" => PortDirection::Either,
                _ => return Err(unknown(owner, o)),
            };
            let ports = value(o)
                .split(',')
                .map(parse_port_range)
                .collect::<PResult<Vec<_>>>()?;
            MatchKind::Multiport {
                direction,
                negated: o.negated,
                ports,
            }
        }
        "comment" => {
            let o = opts
                .first()
                .ok_or_else(|| K::MissingValue("--comment".into()))?;
            if o.name != "--comment" {
                return Err(unknown(owner, o));
            }
            no_negation(owner, o)?;
            MatchKind::Comment(value(o).to_string())
        }
        "addrtype" => {
            let (mut src, mut dst, mut lin, mut lout) = (None, None, false, false);
            for o in opts {
                match o.name {
                    "--src-type" => src = Some(Box::new(neg(o, parse_addr_types(value(o))?))),
                    "--dst-type" => dst = Some(Box::new(neg(o, parse_addr_types(value(o))?))),
                    "--limit-iface-in" => lin = true,
                    "--limit-iface-out" => lout = true,
                    _ => return Err(unknown(owner, o)),
                }
            }
            MatchKind::AddrType {
                src_type: src,
                dst_type: dst,
                limit_iface_in: lin,
                limit_iface_out: lout,
            }
        }
        "mark" | "connmark" => {
            let o = opts
                .first()
                .ok_or_else(|| K::MissingValue("--mark".into()))?;
            if o.name != "--mark" {
                return Err(unknown(owner, o));
            }
            let (value, mask) = parse_value_mask(value(o))?;
            if module == "mark" {
                MatchKind::Mark {
                    negated: o.negated,
                    value,
                    mask,
                }
            } else {
                MatchKind::ConnMark {
                    negated: o.negated,
                    value,
                    mask,
                }
            }
        }
        "conntrack" => MatchKind::Conntrack(Box::new(build_conntrack(owner, opts)?)),
        "state" => {
            let o = opts
                .first()
                .ok_or_else(|| K::MissingValue("--state".into()))?;
            if o.name != "--state" {
                return Err(unknown(owner, o));
            }
            MatchKind::State(neg(o, parse_states(value(o))?))
        }
        "statistic" => build_statistic(owner, opts)?,
        "recent" => MatchKind::Recent(Box::new(build_recent(owner, opts)?)),
        "set" => {
            let mut set: Option<(bool, String, Vec<SetFlag>)> = None;
            let mut options = SetMatchOptions::default();
            for o in opts {
                let seen = match o.name {
                    "--match-set" => {
                        if set.is_some() {
                            return Err(K::DuplicateOption(o.name.into()));
                        }
                        let flags = o.values[1]
                            .text
                            .split(',')
                            .map(|f| match f {
                                "src" => Ok(SetFlag::Src),
                                "dst" => Ok(SetFlag::Dst),
                                other => Err(K::BadValue {
                                    option: "--match-set".into(),
                                    value: other.into(),
                                }),
                            })
                            .collect::<PResult<Vec<_>>>()?;
                        // xt_set's checkentry refuses more flags than
                        // IPSET_DIM_MAX.
                        if flags.len() > super::ipset::IPSET_DIM_MAX {
                            return Err(K::BadValue {
                                option: "--match-set".into(),
                                value: format!(
                                    "{} (more than {} src/dst flags)",
                                    o.values[1].text,
                                    super::ipset::IPSET_DIM_MAX
                                ),
                            });
                        }
                        set = Some((o.negated, o.values[0].text.to_string(), flags));
                        false
                    }
                    "--return-nomatch" => {
                        no_negation(owner, o)?;
                        std::mem::replace(&mut options.return_nomatch, true)
                    }
                    // Only the negated forms exist: counting is the default.
                    "--update-counters" if o.negated => {
                        std::mem::replace(&mut options.skip_counter_update, true)
                    }
                    "--update-subcounters" if o.negated => {
                        std::mem::replace(&mut options.skip_subcounter_update, true)
                    }
                    _ => return Err(unknown(owner, o)),
                };
                if seen {
                    return Err(K::DuplicateOption(o.name.into()));
                }
            }
            let (negated, name, flags) =
                set.ok_or_else(|| K::MissingValue("--match-set".into()))?;
            MatchKind::Set {
                negated,
                name,
                flags,
                options,
            }
        }
        "physdev" => MatchKind::Physdev(
            opts.iter()
                .map(|o| {
                    (
                        o.negated,
                        o.name.into(),
                        o.values.first().map(|t| t.text.to_string()),
                    )
                })
                .collect(),
        ),
        _ => unreachable!("every name in MODULES is built"),
    };
    Ok((name, kind))
}

fn neg<T>(o: &Opt, value: T) -> Neg<T> {
    Neg {
        negated: o.negated,
        value,
    }
}

fn build_conntrack(owner: Who, opts: &[Opt]) -> PResult<ConntrackMatch> {
    let mut c = ConntrackMatch::default();
    for o in opts {
        let v = value(o);
        match o.name {
            "--ctstate" => c.ctstate = Some(neg(o, parse_states(v)?)),
            "--ctproto" => c.ctproto = Some(neg(o, parse_protocol(v)?)),
            "--ctorigsrc" => c.ctorigsrc = Some(neg(o, parse_prefix(v)?)),
            "--ctorigdst" => c.ctorigdst = Some(neg(o, parse_prefix(v)?)),
            "--ctreplsrc" => c.ctreplsrc = Some(neg(o, parse_prefix(v)?)),
            "--ctrepldst" => c.ctrepldst = Some(neg(o, parse_prefix(v)?)),
            "--ctorigsrcport" => c.ctorigsrcport = Some(neg(o, parse_port_range(v)?)),
            "--ctorigdstport" => c.ctorigdstport = Some(neg(o, parse_port_range(v)?)),
            "--ctreplsrcport" => c.ctreplsrcport = Some(neg(o, parse_port_range(v)?)),
            "--ctrepldstport" => c.ctrepldstport = Some(neg(o, parse_port_range(v)?)),
            "--ctdir" => {
                c.ctdir = Some(match v {
                    "ORIGINAL" => CtDir::Original,
                    "REPLY" => CtDir::Reply,
                    other => {
                        return Err(K::BadValue {
                            option: "--ctdir".into(),
                            value: other.into(),
                        })
                    }
                })
            }
            _ => return Err(unknown(owner, o)),
        }
    }
    Ok(c)
}

fn build_statistic(owner: Who, opts: &[Opt]) -> PResult<MatchKind> {
    let mut mode = None;
    let mut negated = false;
    let (mut prob, mut every, mut packet) = (None, None, None);
    for o in opts {
        negated |= o.negated;
        match o.name {
            "--mode" => mode = Some(value(o)),
            "--probability" => prob = Some(value(o)),
            "--every" => every = Some(parse_u32(value(o))?),
            "--packet" => packet = Some(parse_u32(value(o))?),
            _ => return Err(unknown(owner, o)),
        }
    }
    match mode {
        Some("random") => {
            let text = prob.ok_or_else(|| K::MissingValue("--probability".into()))?;
            let p: f64 = text.parse().map_err(|_| K::BadNumber(text.into()))?;
            if !(0.0..=1.0).contains(&p) || p.is_nan() {
                return Err(K::BadProbability(text.into()));
            }
            // libxt_statistic: lround(p * 0x80000000).
            let threshold = (p * 2147483648.0).round() as u32;
            Ok(MatchKind::Statistic(Statistic::Random {
                negated,
                threshold,
            }))
        }
        Some("nth") => {
            let every = every.ok_or_else(|| K::MissingValue("--every".into()))?;
            if every == 0 {
                return Err(K::BadValue {
                    option: "--every".into(),
                    value: "0".into(),
                });
            }
            Ok(MatchKind::Statistic(Statistic::Nth {
                negated,
                every,
                packet: packet.unwrap_or(0),
            }))
        }
        Some(other) => Err(K::BadValue {
            option: "--mode".into(),
            value: other.into(),
        }),
        None => Err(K::MissingValue("--mode".into())),
    }
}

fn build_recent(owner: Who, opts: &[Opt]) -> PResult<RecentMatch> {
    let mut r = RecentMatch {
        negated: false,
        mode: RecentMode::Rcheck,
        name: "DEFAULT".into(),
        seconds: None,
        reap: false,
        hitcount: None,
        rttl: false,
        side: RecentSide::Source,
        mask: Ipv4Addr::BROADCAST,
    };
    let mut mode_seen = false;
    for o in opts {
        let mode = match o.name {
            "--set" => Some(RecentMode::Set),
            "--rcheck" => Some(RecentMode::Rcheck),
            "--update" => Some(RecentMode::Update),
            "--remove" => Some(RecentMode::Remove),
            _ => None,
        };
        if let Some(m) = mode {
            if mode_seen {
                return Err(K::DuplicateOption(o.name.into()));
            }
            mode_seen = true;
            r.mode = m;
            r.negated = o.negated;
            continue;
        }
        match o.name {
            "--name" => r.name = value(o).to_string(),
            "--seconds" => r.seconds = Some(parse_u32(value(o))?),
            "--hitcount" => r.hitcount = Some(parse_u32(value(o))?),
            "--reap" => r.reap = true,
            "--rttl" => r.rttl = true,
            "--rsource" => r.side = RecentSide::Source,
            "--rdest" => r.side = RecentSide::Dest,
            "--mask" => {
                r.mask = value(o)
                    .parse()
                    .map_err(|_| K::BadAddress(value(o).into()))?
            }
            _ => return Err(unknown(owner, o)),
        }
    }
    if !mode_seen {
        return Err(K::MissingValue("--set/--rcheck/--update/--remove".into()));
    }
    Ok(r)
}

fn build_target(name: &str, opts: &[Opt]) -> PResult<Target> {
    let owner = Who("-j", name);
    let only_flags = |allowed: &[&str]| -> PResult<()> {
        for o in opts {
            if !allowed.contains(&o.name) {
                return Err(unknown(owner, o));
            }
            no_negation(owner, o)?;
        }
        Ok(())
    };
    let has = |n: &str| opts.iter().any(|o| o.name == n);
    let get = |n: &str| opts.iter().find(|o| o.name == n).map(value);
    Ok(match name {
        "ACCEPT" | "DROP" | "RETURN" => {
            only_flags(&[])?;
            match name {
                "ACCEPT" => Target::Accept,
                "DROP" => Target::Drop,
                _ => Target::Return,
            }
        }
        "REJECT" => {
            only_flags(&["--reject-with"])?;
            let with = match get("--reject-with") {
                None | Some("icmp-port-unreachable") | Some("port-unreach") => {
                    RejectWith::IcmpPortUnreachable
                }
                Some("icmp-net-unreachable") | Some("net-unreach") => {
                    RejectWith::IcmpNetUnreachable
                }
                Some("icmp-host-unreachable") | Some("host-unreach") => {
                    RejectWith::IcmpHostUnreachable
                }
                Some("icmp-proto-unreachable") | Some("proto-unreach") => {
                    RejectWith::IcmpProtoUnreachable
                }
                Some("icmp-net-prohibited") | Some("net-prohib") => RejectWith::IcmpNetProhibited,
                Some("icmp-host-prohibited") | Some("host-prohib") => {
                    RejectWith::IcmpHostProhibited
                }
                Some("icmp-admin-prohibited") | Some("admin-prohib") => {
                    RejectWith::IcmpAdminProhibited
                }
                Some("tcp-reset") | Some("tcp-rst") => RejectWith::TcpReset,
                Some(other) => {
                    return Err(K::BadValue {
                        option: "--reject-with".into(),
                        value: other.into(),
                    })
                }
            };
            Target::Reject { with }
        }
        "MARK" => {
            let o = opts
                .first()
                .ok_or_else(|| K::MissingValue("--set-xmark".into()))?;
            if opts.len() > 1 {
                return Err(K::DuplicateOption(opts[1].name.into()));
            }
            no_negation(owner, o)?;
            let (v, m) = parse_value_mask(value(o))?;
            let explicit_mask = value(o).contains('/');
            let (value, mask, form) = match o.name {
                "--set-xmark" => (v, m, MarkForm::SetXmark),
                "--set-mark" => (
                    v,
                    if explicit_mask { m | v } else { u32::MAX },
                    MarkForm::SetMark,
                ),
                "--or-mark" => (v, v, MarkForm::OrMark),
                "--and-mark" => (0, !v, MarkForm::AndMark),
                "--xor-mark" => (v, 0, MarkForm::XorMark),
                _ => return Err(unknown(owner, o)),
            };
            Target::Mark { value, mask, form }
        }
        "CONNMARK" => {
            let nfmask = get("--nfmask")
                .map(parse_u32)
                .transpose()?
                .unwrap_or(u32::MAX);
            let ctmask = get("--ctmask")
                .map(parse_u32)
                .transpose()?
                .unwrap_or(u32::MAX);
            only_flags(&[
                "--set-xmark",
                "--set-mark",
                "--save-mark",
                "--restore-mark",
                "--nfmask",
                "--ctmask",
                "--mask",
            ])?;
            if let Some(v) = get("--set-xmark") {
                let (value, mask) = parse_value_mask(v)?;
                Target::Connmark(ConnmarkOp::Set { value, mask })
            } else if let Some(v) = get("--set-mark") {
                let (value, mask) = parse_value_mask(v)?;
                Target::Connmark(ConnmarkOp::Set {
                    value,
                    mask: if v.contains('/') {
                        mask | value
                    } else {
                        u32::MAX
                    },
                })
            } else if has("--save-mark") {
                Target::Connmark(ConnmarkOp::Save { nfmask, ctmask })
            } else if has("--restore-mark") {
                Target::Connmark(ConnmarkOp::Restore { nfmask, ctmask })
            } else {
                return Err(K::MissingValue(
                    "--set-xmark/--save-mark/--restore-mark".into(),
                ));
            }
        }
        "DNAT" | "SNAT" => {
            let opt = if name == "DNAT" {
                "--to-destination"
            } else {
                "--to-source"
            };
            only_flags(&[opt, "--random", "--random-fully", "--persistent"])?;
            let ranges = opts
                .iter()
                .filter(|o| o.name == opt)
                .map(|o| parse_nat_range(value(o)))
                .collect::<PResult<Vec<_>>>()?;
            if ranges.is_empty() {
                return Err(K::MissingValue(opt.into()));
            }
            let spec = NatSpec {
                ranges,
                random: has("--random"),
                random_fully: has("--random-fully"),
                persistent: has("--persistent"),
            };
            if name == "DNAT" {
                Target::Dnat(spec)
            } else {
                Target::Snat(spec)
            }
        }
        "MASQUERADE" => {
            only_flags(&["--to-ports", "--random", "--random-fully"])?;
            Target::Masquerade {
                to_ports: get("--to-ports")
                    .map(|p| parse_port_range(&p.replace('-', ":")))
                    .transpose()?,
                random: has("--random"),
                random_fully: has("--random-fully"),
            }
        }
        "LOG" => {
            only_flags(&[
                "--log-prefix",
                "--log-level",
                "--log-tcp-sequence",
                "--log-tcp-options",
                "--log-ip-options",
                "--log-uid",
            ])?;
            Target::Log {
                prefix: get("--log-prefix").map(str::to_string),
                level: get("--log-level").map(str::to_string),
            }
        }
        "NFLOG" => {
            let mut group = None;
            let mut prefix = None;
            let mut options = Vec::new();
            for o in opts {
                no_negation(owner, o)?;
                match o.name {
                    "--nflog-group" => group = Some(parse_u32(value(o))? as u16),
                    "--nflog-prefix" => prefix = Some(value(o).to_string()),
                    "--nflog-range" | "--nflog-size" | "--nflog-threshold" => {
                        options.push((o.name.into(), value(o).to_string()))
                    }
                    _ => return Err(unknown(owner, o)),
                }
            }
            Target::Nflog {
                group,
                prefix,
                options,
            }
        }
        "NOTRACK" => {
            only_flags(&[])?;
            Target::Notrack
        }
        "CT" => {
            let mut notrack = false;
            let mut options = Vec::new();
            for o in opts {
                no_negation(owner, o)?;
                match o.name {
                    "--notrack" => notrack = true,
                    "--zone" | "--helper" | "--ctevents" | "--expevents" | "--timeout"
                    | "--zone-orig" | "--zone-reply" => {
                        options.push((o.name.into(), o.values.first().map(|t| t.text.to_string())))
                    }
                    _ => return Err(unknown(owner, o)),
                }
            }
            Target::Ct { notrack, options }
        }
        chain => {
            if let Some(o) = opts.first() {
                return Err(unknown(owner, o));
            }
            if chain.is_empty() || chain.len() > CHAIN_NAME_MAX {
                return Err(K::UnknownTarget(chain.into()));
            }
            // An upper-case name that is not a chain we know is most likely
            // an extension target we do not model; the validator reports a
            // missing chain with the line either way.
            Target::Jump(chain.into())
        }
    })
}

/// `a.b.c.d[/n]` or `a.b.c.d/m.m.m.m`; no prefix means /32.
pub fn parse_prefix(s: &str) -> PResult<Ipv4Net> {
    let bad = || K::BadAddress(s.into());
    let (addr, len) = match s.split_once('/') {
        None => (s, None),
        Some((a, l)) => (a, Some(l)),
    };
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let len = match len {
        None => 32,
        Some(l) if l.contains('.') => {
            let m: Ipv4Addr = l.parse().map_err(|_| bad())?;
            let bits = u32::from(m);
            if bits.leading_ones() + bits.trailing_zeros() != 32 {
                return Err(bad());
            }
            bits.leading_ones() as u8
        }
        Some(l) => l.parse::<u8>().map_err(|_| bad())?,
    };
    let net = Ipv4Net::new(addr, len).map_err(|_| bad())?;
    // iptables masks the address: 10.0.0.1/8 is saved as 10.0.0.0/8.
    Ok(net.trunc())
}

fn parse_iface(s: &str) -> IfaceMatch {
    match s.strip_suffix('+') {
        Some(p) => IfaceMatch {
            name: p.into(),
            wildcard: true,
        },
        None => IfaceMatch {
            name: s.into(),
            wildcard: false,
        },
    }
}

fn parse_protocol(s: &str) -> PResult<Protocol> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "tcp" | "6" => Protocol::Tcp,
        "udp" | "17" => Protocol::Udp,
        "sctp" | "132" => Protocol::Sctp,
        "icmp" | "1" => Protocol::Icmp,
        other => Protocol::Other(other.parse().map_err(|_| K::UnknownProtocol(s.into()))?),
    })
}

fn parse_port(s: &str) -> PResult<u16> {
    s.parse().map_err(|_| K::BadPort(s.into()))
}

/// `p` or `a:b` (also `a:` / `:b` as iptables allows).
pub fn parse_port_range(s: &str) -> PResult<PortRange> {
    match s.split_once(':') {
        None => {
            let p = parse_port(s)?;
            Ok(PortRange { first: p, last: p })
        }
        Some((a, b)) => {
            let first = if a.is_empty() { 0 } else { parse_port(a)? };
            let last = if b.is_empty() { 65535 } else { parse_port(b)? };
            if first > last {
                return Err(K::BadPort(s.into()));
            }
            Ok(PortRange { first, last })
        }
    }
}

fn parse_u32(s: &str) -> PResult<u32> {
    let r = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u32::from_str_radix(h, 16)
    } else {
        s.parse()
    };
    r.map_err(|_| K::BadNumber(s.into()))
}

fn parse_value_mask(s: &str) -> PResult<(u32, u32)> {
    match s.split_once('/') {
        None => Ok((parse_u32(s)?, u32::MAX)),
        Some((v, m)) => Ok((parse_u32(v)?, parse_u32(m)?)),
    }
}

fn parse_tcp_flags(s: &str) -> PResult<u8> {
    let mut bits = 0u8;
    for f in s.split(',') {
        bits |= match f {
            "FIN" => 0x01,
            "SYN" => 0x02,
            "RST" => 0x04,
            "PSH" => 0x08,
            "ACK" => 0x10,
            "URG" => 0x20,
            "ECE" => 0x40,
            "CWR" => 0x80,
            "ALL" => 0xff,
            "NONE" => 0,
            other => {
                return Err(K::BadValue {
                    option: "--tcp-flags".into(),
                    value: other.into(),
                })
            }
        };
    }
    Ok(bits)
}

fn parse_icmp_type(s: &str) -> PResult<IcmpType> {
    let named: &[(&'static str, u8, Option<u8>)] = &[
        ("any", 255, None),
        ("echo-reply", 0, None),
        ("destination-unreachable", 3, None),
        ("port-unreachable", 3, Some(3)),
        ("echo-request", 8, None),
        ("time-exceeded", 11, None),
    ];
    if let Some(&(name, t, c)) = named.iter().find(|(n, _, _)| *n == s) {
        return Ok(IcmpType {
            icmp_type: t,
            code: c,
            name: Some(name),
        });
    }
    let (t, c) = match s.split_once('/') {
        None => (s, None),
        Some((t, c)) => (t, Some(c)),
    };
    Ok(IcmpType {
        icmp_type: t.parse().map_err(|_| K::BadValue {
            option: "--icmp-type".into(),
            value: s.into(),
        })?,
        code: c
            .map(|c| {
                c.parse().map_err(|_| K::BadValue {
                    option: "--icmp-type".into(),
                    value: s.into(),
                })
            })
            .transpose()?,
        name: None,
    })
}

fn parse_addr_types(s: &str) -> PResult<Vec<AddrType>> {
    s.split(',')
        .map(|t| {
            Ok(match t {
                "UNSPEC" => AddrType::Unspec,
                "UNICAST" => AddrType::Unicast,
                "LOCAL" => AddrType::Local,
                "BROADCAST" => AddrType::Broadcast,
                "ANYCAST" => AddrType::Anycast,
                "MULTICAST" => AddrType::Multicast,
                "BLACKHOLE" => AddrType::Blackhole,
                "UNREACHABLE" => AddrType::Unreachable,
                "PROHIBIT" => AddrType::Prohibit,
                other => {
                    return Err(K::BadValue {
                        option: "addrtype".into(),
                        value: other.into(),
                    })
                }
            })
        })
        .collect()
}

fn parse_states(s: &str) -> PResult<Vec<CtState>> {
    s.split(',')
        .map(|t| {
            Ok(match t {
                "NEW" => CtState::New,
                "ESTABLISHED" => CtState::Established,
                "RELATED" => CtState::Related,
                "INVALID" => CtState::Invalid,
                "UNTRACKED" => CtState::Untracked,
                "SNAT" => CtState::Snat,
                "DNAT" => CtState::Dnat,
                other => {
                    return Err(K::BadValue {
                        option: "--ctstate".into(),
                        value: other.into(),
                    })
                }
            })
        })
        .collect()
}

/// `ip[-ip][:port[-port]]`.
fn parse_nat_range(s: &str) -> PResult<NatRange> {
    let (addrs, ports) = match s.split_once(':') {
        None => (s, None),
        Some((a, p)) => (a, Some(p)),
    };
    let (first, last) = match addrs.split_once('-') {
        None => (addrs, addrs),
        Some((a, b)) => (a, b),
    };
    let first_addr: Ipv4Addr = first.parse().map_err(|_| K::BadAddress(s.into()))?;
    let last_addr: Ipv4Addr = last.parse().map_err(|_| K::BadAddress(s.into()))?;
    if last_addr < first_addr {
        return Err(K::BadAddress(s.into()));
    }
    let ports = ports
        .map(|p| parse_port_range(&p.replace('-', ":")))
        .transpose()?;
    Ok(NatRange {
        first_addr,
        last_addr,
        ports,
    })
}

/// The parser as one pass, each rule parsed and placed as its line is read
/// (how it read before rule lines were parsed in parallel): what
/// [`Ruleset::parse`] must agree with, rules and first error alike.
#[cfg(test)]
pub(super) fn parse_one_pass(text: &str) -> Result<Ruleset, ParseError> {
    let mut p = Parser::default();
    let mut last = 0;
    // Per table, per chain declared, its rules.
    let mut lists: Vec<Vec<Vec<Rule>>> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        last = line;
        let at = |kind| ParseError { line, kind };
        let trimmed = match scan_line(raw) {
            None => continue,
            Some(Scanned::Structure(s)) => {
                p.apply(s, line).map_err(at)?;
                continue;
            }
            Some(Scanned::Rule(text, _)) => text,
        };
        if p.current.is_none() {
            return Err(at(K::OutsideTable(first_word(trimmed))));
        }
        let mut tokens = Vec::new();
        tokenize(trimmed, &mut tokens).map_err(at)?;
        let (name, rule) = parse_rule(&tokens, line).map_err(at)?;
        let pos = p.names[p.names.len() - 1]
            .get(&*name)
            .ok_or_else(|| at(K::UndeclaredChain(name.to_string())))?
            .pos;
        let table = p.declared.len() - 1;
        lists.resize_with(p.declared.len(), Vec::new);
        lists[table].resize_with(p.declared[table].len(), Vec::new);
        lists[table][pos].push(rule);
    }
    if let Some(t) = &p.current {
        return Err(ParseError {
            line: last.max(1),
            kind: K::MissingCommit(t.name.to_string()),
        });
    }
    if let Some(table) = p.rs.tables.last_mut() {
        table.trailer_comments.append(&mut p.pending_comments);
    }
    lists.resize_with(p.declared.len(), Vec::new);
    for ((table, declared), mut lists) in p.rs.tables.iter_mut().zip(p.declared).zip(lists) {
        lists.resize_with(declared.len(), Vec::new);
        table.chains = declared
            .iter()
            .zip(lists)
            .map(|((d, line), rules)| d.chain(*line, rules.into()))
            .collect();
    }
    Ok(p.rs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// How `iptables-restore` splits a line, character by character (the
    /// tokenizer before it borrowed from the line): the reference for
    /// [`tokenize`].
    fn reference_tokens(s: &str) -> PResult<Vec<(String, bool)>> {
        let mut out = Vec::new();
        let mut chars = s.chars().peekable();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                chars.next();
                continue;
            }
            let mut text = String::new();
            let mut quoted = false;
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '"' {
                    quoted = true;
                    loop {
                        match chars.next() {
                            None => return Err(K::UnterminatedQuote),
                            Some('"') => break,
                            Some('\\') => match chars.next() {
                                Some(e) => text.push(e),
                                None => return Err(K::UnterminatedQuote),
                            },
                            Some(x) => text.push(x),
                        }
                    }
                } else {
                    text.push(c);
                }
            }
            out.push((text, quoted));
        }
        Ok(out)
    }

    fn tokens(s: &str) -> PResult<Vec<(String, bool)>> {
        let mut out = Vec::new();
        tokenize(s, &mut out)?;
        Ok(out
            .into_iter()
            .map(|t| (t.text.into_owned(), t.quoted))
            .collect())
    }

    #[test]
    fn tokens_borrow_from_the_line_unless_escaped() {
        let mut out = Vec::new();
        tokenize(r#"-A X -m comment --comment "a b" -j "C\"D""#, &mut out).unwrap();
        let texts: Vec<&str> = out.iter().map(|t| &*t.text).collect();
        assert_eq!(
            texts,
            ["-A", "X", "-m", "comment", "--comment", "a b", "-j", "C\"D"]
        );
        assert!(matches!(out[5].text, Cow::Borrowed(_)) && out[5].quoted);
        assert!(matches!(out[7].text, Cow::Owned(_)) && out[7].quoted);
        assert!(out[..5]
            .iter()
            .all(|t| matches!(t.text, Cow::Borrowed(_)) && !t.quoted));
    }

    /// A dump large enough to be parsed by several threads reads as one
    /// pass reads it: the same rules, and the same first error wherever
    /// the errors are.
    #[test]
    fn large_dumps_parse_as_one_pass() {
        let mut lines = vec!["*nat".to_string(), ":PREROUTING ACCEPT [0:0]".into()];
        // More than one stretch of text, errors in several.
        lines.extend((0..3000).map(|i| format!(":C{i} - [0:0]")));
        for i in 0..3000 {
            let (a, b) = (i / 250, i % 250);
            lines.push(format!(
                "-A PREROUTING -d 10.0.{a}.{b}/32 -p tcp -m tcp --dport 80 -j C{i}"
            ));
            lines.push(format!(
                "-A C{i} -m comment --comment \"c {i}\" -j DNAT --to-destination 10.1.{a}.{b}:8080"
            ));
        }
        lines.push("COMMIT".into());
        let text = lines.join("\n") + "\n";
        assert!(stretches(&text, STRETCH_BYTES).len() > 1);
        let rs = Ruleset::parse(&text).unwrap();
        assert_eq!(rs.tables[0].chains[0].rules.len(), 3000);
        assert_eq!(rs.tables[0].chains[1].rules.len(), 1);
        assert_eq!(Ruleset::parse(&text), parse_one_pass(&text));
        let bad = [
            (7000, "-A NOPE -j ACCEPT"),
            (5000, "-A C7 --bogus 1"),
            (4000, ":C1 - [0:0]"),
            (8500, "-A C9 -s 300.0.0.1 -j ACCEPT"),
            (3100, "-A C3000 -j ACCEPT"),
            (9000, "COMMIT"),
        ];
        for n in 1..=bad.len() {
            let mut broken = lines.clone();
            for (at, line) in bad.iter().take(n) {
                broken.insert(*at, line.to_string());
            }
            let text = broken.join("\n");
            let err = Ruleset::parse(&text).unwrap_err();
            assert_eq!(Err(err), parse_one_pass(&text), "{n} errors");
        }
    }

    /// A dump of two tables whose chains jump about, each line on its own.
    fn skeleton() -> Vec<&'static str> {
        vec![
            "# Generated by iptables-save",
            "*nat",
            ":PREROUTING ACCEPT [0:0]",
            ":A - [0:0]",
            ":B - [0:0]",
            "-A PREROUTING -j A",
            "-A A -s 10.0.0.1/32 -j B",
            "-A A -j RETURN",
            "[3:180] -A B -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.1.0.1:8080",
            "-A PREROUTING -j B",
            "COMMIT",
            "# between",
            "*filter",
            ":INPUT ACCEPT [0:0]",
            ":A - [0:0]",
            "-A A -j ACCEPT",
            "-A INPUT -j A",
            "-A \"A\" -j DROP",
            "COMMIT",
            "# Completed",
        ]
    }

    /// Lines that break a dump, or move its structure about.
    const STRAY: &[&str] = &[
        "",
        "  ",
        "*nat",
        "*bogus",
        "COMMIT",
        ":A - [0:0]",
        ":C - [0:0]",
        ":C ACCEPT [0:0]",
        ":INPUT - [0:0]",
        ":D - [x:0]",
        ":E - [0:0] extra",
        "-A C -j ACCEPT",
        "-A A -j C",
        "-A B --bogus 1",
        "-A A -s 300.0.0.1 -j ACCEPT",
        "-I A -j ACCEPT",
        "[0:0] -A A -j RETURN",
        "-A \"A\\\"\" -j ACCEPT",
        "-A \"unterminated",
        "  -A B -j RETURN  ",
        "# comment",
        "-j ACCEPT",
    ];

    /// A dump with stray lines put in and lines taken out.
    fn mangled_dump() -> impl Strategy<Value = String> {
        let edits = proptest::collection::vec(
            (any::<bool>(), 0usize..24, proptest::sample::select(STRAY)),
            0..4,
        );
        edits.prop_map(|edits| {
            let mut lines = skeleton();
            for (insert, at, line) in edits {
                let at = at % (lines.len() + 1);
                if insert || at == lines.len() {
                    lines.insert(at, line);
                } else {
                    lines.remove(at);
                }
            }
            lines.join("\n")
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        /// However finely the text is cut into stretches, and wherever the
        /// structure breaks, the text reads as one pass reads it: the same
        /// ruleset or the same first error.
        #[test]
        fn any_stretches_read_as_one_pass(text in mangled_dump(), bytes in 1usize..120) {
            prop_assert_eq!(Parser::parse(&text, bytes), parse_one_pass(&text));
        }
    }

    /// The mangled dumps above reach every kind of structure error and a
    /// clean read, so that the property above is not vacuous.
    #[test]
    fn mangled_dumps_reach_every_outcome() {
        let text = skeleton().join("\n");
        assert!(Parser::parse(&text, 1).is_ok());
        let broken = |at: usize, line: &str| {
            let mut lines = skeleton();
            lines.insert(at, line);
            let text = lines.join("\n");
            let one = parse_one_pass(&text);
            assert_eq!(Parser::parse(&text, 1), one, "{line} at {at}");
            one.unwrap_err()
        };
        // A rule to a chain declared only below it, outside any table, in
        // a table that has no such chain, before an error in an earlier
        // line's rule.
        assert!(matches!(
            broken(3, "-A C -j ACCEPT").kind,
            K::UndeclaredChain(_)
        ));
        assert!(matches!(
            broken(11, "-A A -j ACCEPT").kind,
            K::OutsideTable(_)
        ));
        assert!(matches!(
            broken(16, "-A B -j ACCEPT").kind,
            K::UndeclaredChain(_)
        ));
        assert!(matches!(broken(4, ":A - [0:0]").kind, K::DuplicateChain(_)));
        assert!(matches!(broken(12, "COMMIT").kind, K::OutsideTable(_)));
        assert!(matches!(
            broken(12, ":INPUT - [0:0]").kind,
            K::OutsideTable(_)
        ));
        assert!(matches!(broken(17, "*nat").kind, K::MissingCommit(_)));
        let e = broken(6, "-A A -s 300.0.0.1 -j ACCEPT");
        assert_eq!(e.line, 7);
        // A last rule line of a table never committed: the rule's own
        // error, on the line the missing COMMIT is reported on.
        let mut lines = skeleton()[..10].to_vec();
        lines.push("-A B --bogus 1");
        let text = lines.join("\n");
        let e = Parser::parse(&text, 1).unwrap_err();
        assert_eq!((e.line, matches!(e.kind, K::MissingCommit(_))), (11, false));
        assert_eq!(Err(e), parse_one_pass(&text));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Eight bytes at a time, the plain run ends where a byte-by-byte
        /// look ends it.
        #[test]
        fn plain_runs_end_at_the_first_stop(bytes in proptest::collection::vec(
            prop_oneof![4 => 0x21u8..0x7f, 1 => any::<u8>()], 0..40)) {
            let slow = bytes.iter().position(|&b| stops(b)).unwrap_or(bytes.len());
            prop_assert_eq!(plain_len(&bytes), slow);
        }

        /// Quotes, escapes and Unicode whitespace anywhere split as they did.
        #[test]
        fn tokenizer_splits_as_iptables_restore(s in "([a-c\"\\\\ !\t\u{b}\r\u{1c}\u{a0}\u{2003}é-]|--x){0,24}") {
            prop_assert_eq!(tokens(&s), reference_tokens(&s));
        }
    }
}
