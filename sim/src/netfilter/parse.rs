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
//! expressions; chain lookup is by hash map, so a 100,000-rule dump loads
//! in well under a second.

use super::error::{ParseError, ParseErrorKind as K};
use super::rule::*;
use ipnet::Ipv4Net;
use std::collections::HashMap;
use std::net::Ipv4Addr;

type PResult<T> = Result<T, K>;

impl Ruleset {
    /// Parse `iptables-save` output. Does not validate jumps (see
    /// [`Ruleset::load`]).
    pub fn parse(text: &str) -> Result<Ruleset, ParseError> {
        Parser::default().run(text)
    }
}

#[derive(Default)]
struct Parser {
    rs: Ruleset,
    current: Option<(Table, HashMap<String, usize>)>,
    /// Comment lines seen since the last COMMIT.
    pending_comments: Vec<String>,
}

impl Parser {
    fn run(mut self, text: &str) -> Result<Ruleset, ParseError> {
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            self.line(raw.trim_end_matches('\r'), line)
                .map_err(|kind| ParseError { line, kind })?;
        }
        if let Some((t, _)) = &self.current {
            return Err(ParseError {
                line: text.lines().count().max(1),
                kind: K::MissingCommit(t.name.to_string()),
            });
        }
        if let Some(last) = self.rs.tables.last_mut() {
            last.trailer_comments
                .extend(std::mem::take(&mut self.pending_comments));
        }
        Ok(self.rs)
    }

    fn line(&mut self, text: &str, line: usize) -> PResult<()> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(());
        }
        if trimmed.starts_with('#') {
            match (&self.current, self.rs.tables.is_empty()) {
                (None, true) => self.rs.header_comments.push(trimmed.to_string()),
                (None, false) => self.pending_comments.push(trimmed.to_string()),
                (Some(_), _) => {}
            }
            return Ok(());
        }
        if let Some(name) = trimmed.strip_prefix('*') {
            if let Some((t, _)) = &self.current {
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
            self.current = Some((
                Table {
                    name,
                    chains: Vec::new(),
                    trailer_comments: Vec::new(),
                    line,
                },
                HashMap::new(),
            ));
            return Ok(());
        }
        if trimmed == "COMMIT" {
            let (t, _) = self
                .current
                .take()
                .ok_or_else(|| K::OutsideTable("COMMIT".into()))?;
            self.rs.tables.push(t);
            return Ok(());
        }
        let Some((table, chains)) = &mut self.current else {
            return Err(K::OutsideTable(first_word(trimmed)));
        };
        if let Some(decl) = trimmed.strip_prefix(':') {
            let chain = chain_decl(decl, line)?;
            if chains.contains_key(&chain.name) {
                return Err(K::DuplicateChain(chain.name));
            }
            let builtin = is_builtin(table.name, &chain.name);
            match (builtin, chain.policy.is_some()) {
                (true, false) => return Err(K::MissingPolicy(chain.name)),
                (false, true) => return Err(K::UserChainPolicy(chain.name)),
                _ => {}
            }
            chains.insert(chain.name.clone(), table.chains.len());
            table.chains.push(chain);
            return Ok(());
        }
        let tokens = tokenize(trimmed)?;
        let (chain_name, rule) = parse_rule(&tokens, line)?;
        let &pos = chains
            .get(chain_name.as_str())
            .ok_or_else(|| K::UndeclaredChain(chain_name.clone()))?;
        table.chains[pos].rules.push(rule);
        Ok(())
    }
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

fn chain_decl(decl: &str, line: usize) -> PResult<Chain> {
    let mut parts = decl.split_whitespace();
    let name = parts
        .next()
        .ok_or_else(|| K::Unexpected(":".into()))?
        .to_string();
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
    Ok(Chain {
        name,
        policy,
        counters,
        rules: Vec::new().into(),
        line,
        rule_line_offset: 0,
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
#[derive(Clone, Debug, PartialEq, Eq)]
struct Tok {
    text: String,
    quoted: bool,
}

/// Split a rule line like `iptables-restore` does: whitespace separates,
/// double quotes group (with `\"` and `\\` escapes inside).
fn tokenize(s: &str) -> PResult<Vec<Tok>> {
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
        out.push(Tok { text, quoted });
    }
    Ok(out)
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

/// One `--option value...` with its negation.
#[derive(Clone, Debug)]
struct Opt {
    negated: bool,
    name: String,
    values: Vec<String>,
}

/// The part of a rule being collected.
enum Owner {
    Match(String, bool),
    Target(String),
}

fn parse_rule(tokens: &[Tok], line: usize) -> PResult<(String, Rule)> {
    let mut i = 0;
    let mut counters = None;
    if let Some(t) = tokens.first() {
        if t.text.starts_with('[') && !t.quoted {
            counters = Some(parse_counters(&t.text)?);
            i = 1;
        }
    }
    match tokens.get(i).map(|t| t.text.as_str()) {
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
    let mut rule = Rule {
        source: None,
        destination: None,
        in_iface: None,
        out_iface: None,
        protocol: None,
        fragment: None,
        matches: Vec::new(),
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
        let name = tok.text.as_str();
        let take_value = |i: &mut usize| -> PResult<String> {
            let v = tokens.get(*i).ok_or_else(|| K::MissingValue(name.into()))?;
            *i += 1;
            Ok(v.text.clone())
        };
        match name {
            "-s" | "--source" | "-d" | "--destination" => {
                let v = take_value(&mut i)?;
                let net = Neg {
                    negated: std::mem::take(&mut negate),
                    value: parse_prefix(&v)?,
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
                let m = Neg {
                    negated: std::mem::take(&mut negate),
                    value: parse_iface(&v),
                };
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
                    value: parse_protocol(&v)?,
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
                flush(&mut rule, owner.take(), std::mem::take(&mut opts))?;
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
                flush(&mut rule, owner.take(), std::mem::take(&mut opts))?;
                if name == "-g" || name == "--goto" {
                    rule.target = Some(Target::Goto(v));
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
                            flush(&mut rule, owner.take(), std::mem::take(&mut opts))?;
                            owner = Some(Owner::Match(m.into(), true));
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
                let mut values = Vec::with_capacity(n);
                for _ in 0..n {
                    values.push(take_value(&mut i)?);
                }
                opts.push(Opt {
                    negated: std::mem::take(&mut negate),
                    name: opt.to_string(),
                    values,
                });
            }
            other => return Err(K::Unexpected(other.into())),
        }
    }
    if negate {
        return Err(K::DanglingNegation);
    }
    flush(&mut rule, owner, opts)?;
    Ok((chain, rule))
}

fn implicit_needed(owner: &Option<Owner>, opt: &str) -> bool {
    // Only when the current owner is a match that does not know the option
    // and the option is a protocol option (e.g. `-m comment --comment x
    // --dport 80` after `-p tcp`).
    match owner {
        Some(Owner::Match(m, _)) => {
            !matches!(m.as_str(), "tcp" | "udp" | "sctp" | "icmp" | "multiport")
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

fn flush(rule: &mut Rule, owner: Option<Owner>, opts: Vec<Opt>) -> PResult<()> {
    match owner {
        None => {
            if let Some(o) = opts.first() {
                return Err(K::UnknownOption {
                    owner: "the rule".into(),
                    option: o.name.clone(),
                });
            }
            Ok(())
        }
        Some(Owner::Match(module, implicit)) => {
            let kind = build_match(&module, opts)?;
            rule.matches.push(Match {
                module,
                implicit,
                kind,
            });
            Ok(())
        }
        Some(Owner::Target(name)) => {
            rule.target = Some(build_target(&name, opts)?);
            Ok(())
        }
    }
}

fn unknown(owner: &str, o: &Opt) -> K {
    K::UnknownOption {
        owner: owner.into(),
        option: o.name.clone(),
    }
}

fn no_negation(owner: &str, o: &Opt) -> PResult<()> {
    if o.negated {
        Err(K::BadValue {
            option: format!("{owner} {}", o.name),
            value: "! (cannot be negated)".into(),
        })
    } else {
        Ok(())
    }
}

fn value(o: &Opt) -> &str {
    o.values.first().map(String::as_str).unwrap_or("")
}

fn build_match(module: &str, opts: Vec<Opt>) -> PResult<MatchKind> {
    let owner = format!("-m {module}");
    Ok(match module {
        "tcp" | "udp" | "sctp" => {
            let (mut sport, mut dport, mut flags) = (None, None, None);
            for o in &opts {
                match o.name.as_str() {
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
                                mask: parse_tcp_flags(&o.values[0])?,
                                comp: parse_tcp_flags(&o.values[1])?,
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
                    _ => return Err(unknown(&owner, o)),
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
            for o in &opts {
                match o.name.as_str() {
                    "--icmp-type" => icmp_type = Some(neg(o, parse_icmp_type(value(o))?)),
                    _ => return Err(unknown(&owner, o)),
                }
            }
            MatchKind::Icmp { icmp_type }
        }
        "multiport" => {
            let o = opts
                .first()
                .ok_or_else(|| K::MissingValue("--dports".into()))?;
            if opts.len() > 1 {
                return Err(K::DuplicateOption(opts[1].name.clone()));
            }
            let direction = match o.name.as_str() {
                "--dports" | "--destination-ports" => PortDirection::Destination,
                "--sports" | "--source-ports" => PortDirection::Source,
                "--ports" => PortDirection::Either,
                _ => return Err(unknown(&owner, o)),
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
                return Err(unknown(&owner, o));
            }
            no_negation(&owner, o)?;
            MatchKind::Comment(value(o).to_string())
        }
        "addrtype" => {
            let (mut src, mut dst, mut lin, mut lout) = (None, None, false, false);
            for o in &opts {
                match o.name.as_str() {
                    "--src-type" => src = Some(neg(o, parse_addr_types(value(o))?)),
                    "--dst-type" => dst = Some(neg(o, parse_addr_types(value(o))?)),
                    "--limit-iface-in" => lin = true,
                    "--limit-iface-out" => lout = true,
                    _ => return Err(unknown(&owner, o)),
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
                return Err(unknown(&owner, o));
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
        "conntrack" => MatchKind::Conntrack(build_conntrack(&owner, &opts)?),
        "state" => {
            let o = opts
                .first()
                .ok_or_else(|| K::MissingValue("--state".into()))?;
            if o.name != "--state" {
                return Err(unknown(&owner, o));
            }
            MatchKind::State(neg(o, parse_states(value(o))?))
        }
        "statistic" => build_statistic(&owner, &opts)?,
        "recent" => MatchKind::Recent(build_recent(&owner, &opts)?),
        "set" => {
            let mut set: Option<(bool, String, Vec<SetFlag>)> = None;
            let mut options = SetMatchOptions::default();
            for o in &opts {
                let seen = match o.name.as_str() {
                    "--match-set" => {
                        if set.is_some() {
                            return Err(K::DuplicateOption(o.name.clone()));
                        }
                        let flags = o.values[1]
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
                                    o.values[1],
                                    super::ipset::IPSET_DIM_MAX
                                ),
                            });
                        }
                        set = Some((o.negated, o.values[0].clone(), flags));
                        false
                    }
                    "--return-nomatch" => {
                        no_negation(&owner, o)?;
                        std::mem::replace(&mut options.return_nomatch, true)
                    }
                    // Only the negated forms exist: counting is the default.
                    "--update-counters" if o.negated => {
                        std::mem::replace(&mut options.skip_counter_update, true)
                    }
                    "--update-subcounters" if o.negated => {
                        std::mem::replace(&mut options.skip_subcounter_update, true)
                    }
                    _ => return Err(unknown(&owner, o)),
                };
                if seen {
                    return Err(K::DuplicateOption(o.name.clone()));
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
                .map(|o| (o.negated, o.name.clone(), o.values.first().cloned()))
                .collect(),
        ),
        other => return Err(K::UnknownMatch(other.into())),
    })
}

fn neg<T>(o: &Opt, value: T) -> Neg<T> {
    Neg {
        negated: o.negated,
        value,
    }
}

fn build_conntrack(owner: &str, opts: &[Opt]) -> PResult<ConntrackMatch> {
    let mut c = ConntrackMatch::default();
    for o in opts {
        let v = value(o);
        match o.name.as_str() {
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

fn build_statistic(owner: &str, opts: &[Opt]) -> PResult<MatchKind> {
    let mut mode = None;
    let mut negated = false;
    let (mut prob, mut every, mut packet) = (None, None, None);
    for o in opts {
        negated |= o.negated;
        match o.name.as_str() {
            "--mode" => mode = Some(value(o).to_string()),
            "--probability" => prob = Some(value(o).to_string()),
            "--every" => every = Some(parse_u32(value(o))?),
            "--packet" => packet = Some(parse_u32(value(o))?),
            _ => return Err(unknown(owner, o)),
        }
    }
    match mode.as_deref() {
        Some("random") => {
            let text = prob.ok_or_else(|| K::MissingValue("--probability".into()))?;
            let p: f64 = text.parse().map_err(|_| K::BadNumber(text.clone()))?;
            if !(0.0..=1.0).contains(&p) || p.is_nan() {
                return Err(K::BadProbability(text));
            }
            // libxt_statistic: lround(p * 0x80000000).
            let threshold = (p * 2147483648.0).round() as u32;
            Ok(MatchKind::Statistic(Statistic::Random {
                negated,
                threshold,
                text,
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

fn build_recent(owner: &str, opts: &[Opt]) -> PResult<RecentMatch> {
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
        let mode = match o.name.as_str() {
            "--set" => Some(RecentMode::Set),
            "--rcheck" => Some(RecentMode::Rcheck),
            "--update" => Some(RecentMode::Update),
            "--remove" => Some(RecentMode::Remove),
            _ => None,
        };
        if let Some(m) = mode {
            if mode_seen {
                return Err(K::DuplicateOption(o.name.clone()));
            }
            mode_seen = true;
            r.mode = m;
            r.negated = o.negated;
            continue;
        }
        match o.name.as_str() {
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

fn build_target(name: &str, opts: Vec<Opt>) -> PResult<Target> {
    let owner = format!("-j {name}");
    let only_flags = |allowed: &[&str]| -> PResult<()> {
        for o in &opts {
            if !allowed.contains(&o.name.as_str()) {
                return Err(unknown(&owner, o));
            }
            no_negation(&owner, o)?;
        }
        Ok(())
    };
    let has = |n: &str| opts.iter().any(|o| o.name == n);
    let get = |n: &str| {
        opts.iter()
            .find(|o| o.name == n)
            .map(|o| value(o).to_string())
    };
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
            let with = match get("--reject-with").as_deref() {
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
                return Err(K::DuplicateOption(opts[1].name.clone()));
            }
            no_negation(&owner, o)?;
            let (v, m) = parse_value_mask(value(o))?;
            let explicit_mask = value(o).contains('/');
            let (value, mask, form) = match o.name.as_str() {
                "--set-xmark" => (v, m, MarkForm::SetXmark),
                "--set-mark" => (
                    v,
                    if explicit_mask { m | v } else { u32::MAX },
                    MarkForm::SetMark,
                ),
                "--or-mark" => (v, v, MarkForm::OrMark),
                "--and-mark" => (0, !v, MarkForm::AndMark),
                "--xor-mark" => (v, 0, MarkForm::XorMark),
                _ => return Err(unknown(&owner, o)),
            };
            Target::Mark { value, mask, form }
        }
        "CONNMARK" => {
            let nfmask = get("--nfmask")
                .map(|v| parse_u32(&v))
                .transpose()?
                .unwrap_or(u32::MAX);
            let ctmask = get("--ctmask")
                .map(|v| parse_u32(&v))
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
                let (value, mask) = parse_value_mask(&v)?;
                Target::Connmark(ConnmarkOp::Set { value, mask })
            } else if let Some(v) = get("--set-mark") {
                let (value, mask) = parse_value_mask(&v)?;
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
                prefix: get("--log-prefix"),
                level: get("--log-level"),
            }
        }
        "NFLOG" => {
            let mut group = None;
            let mut prefix = None;
            let mut options = Vec::new();
            for o in &opts {
                no_negation(&owner, o)?;
                match o.name.as_str() {
                    "--nflog-group" => group = Some(parse_u32(value(o))? as u16),
                    "--nflog-prefix" => prefix = Some(value(o).to_string()),
                    "--nflog-range" | "--nflog-size" | "--nflog-threshold" => {
                        options.push((o.name.clone(), value(o).to_string()))
                    }
                    _ => return Err(unknown(&owner, o)),
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
            for o in &opts {
                no_negation(&owner, o)?;
                match o.name.as_str() {
                    "--notrack" => notrack = true,
                    "--zone" | "--helper" | "--ctevents" | "--expevents" | "--timeout"
                    | "--zone-orig" | "--zone-reply" => {
                        options.push((o.name.clone(), o.values.first().cloned()))
                    }
                    _ => return Err(unknown(&owner, o)),
                }
            }
            Target::Ct { notrack, options }
        }
        chain => {
            if let Some(o) = opts.first() {
                return Err(unknown(&owner, o));
            }
            if chain.is_empty() || chain.len() > 28 {
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
