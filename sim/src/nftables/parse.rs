//! Reading nft's ruleset syntax (what `nft list ruleset` prints, which
//! `nft -f` loads) into [`Ruleset`]. Input is normalised the way the
//! kernel round trip normalises it: a one-element anonymous set becomes a
//! plain value, `mark` becomes `meta mark`, `or`/`and`/`xor` become
//! `|`/`&`/`^`, `==` disappears where nft prints none.

use super::error::NftError;
use super::lex::{lex, Tok, Token};
use super::model::*;
use crate::netfilter::{Hook, Policy};
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Parse a whole ruleset.
pub fn parse(text: &str) -> Result<Ruleset, NftError> {
    let toks = lex(text)?;
    let lines: Vec<&str> = text.lines().collect();
    let mut p = Parser {
        toks,
        pos: 0,
        lines,
    };
    let mut rs = Ruleset::default();
    loop {
        p.skip_breaks();
        if p.at_end() {
            break;
        }
        rs.tables.push(p.table()?);
    }
    Ok(rs)
}

struct Parser<'a> {
    toks: Vec<Token>,
    pos: usize,
    lines: Vec<&'a str>,
}

type R<T> = Result<T, NftError>;

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }

    fn peek_word(&self) -> Option<&str> {
        match self.peek() {
            Some(Tok::Word(w)) => Some(w),
            _ => None,
        }
    }

    fn here(&self) -> (usize, usize) {
        match self.toks.get(self.pos) {
            Some(t) => (t.line, t.col),
            None => self.toks.last().map_or((1, 1), |t| (t.line, t.col)),
        }
    }

    fn err<T>(&self, msg: impl Into<String>) -> R<T> {
        let (l, c) = self.here();
        Err(NftError::at(l, c, msg))
    }

    /// An error about the word just read: step back so that the line and
    /// column point at it, not at the word after.
    fn back_err<T>(&mut self, msg: impl Into<String>) -> R<T> {
        self.pos -= 1;
        self.err(msg)
    }

    fn next(&mut self) -> R<Tok> {
        match self.toks.get(self.pos) {
            Some(t) => {
                self.pos += 1;
                Ok(t.tok.clone())
            }
            None => self.err("unexpected end of input"),
        }
    }

    /// The next token's text if `pick` takes it, else an error saying
    /// what was expected.
    fn take(&mut self, what: &str, pick: fn(&Tok) -> Option<&String>) -> R<String> {
        match self.peek() {
            Some(t) => match pick(t) {
                Some(v) => {
                    let v = v.clone();
                    self.pos += 1;
                    Ok(v)
                }
                None => {
                    let d = t.describe();
                    self.err(format!("expected {what}, found {d}"))
                }
            },
            None => self.err(format!("expected {what}, found end of input")),
        }
    }

    fn word(&mut self, what: &str) -> R<String> {
        self.take(what, |t| match t {
            Tok::Word(w) => Some(w),
            _ => None,
        })
    }

    fn string(&mut self, what: &str) -> R<String> {
        self.take(&format!("{what} (a quoted string)"), |t| match t {
            Tok::Str(s) => Some(s),
            _ => None,
        })
    }

    fn expect(&mut self, t: Tok) -> R<()> {
        match self.peek() {
            Some(x) if *x == t => {
                self.pos += 1;
                Ok(())
            }
            Some(x) => {
                let d = x.describe();
                self.err(format!("expected {}, found {d}", t.describe()))
            }
            None => self.err(format!("expected {}, found end of input", t.describe())),
        }
    }

    fn expect_word(&mut self, w: &str) -> R<()> {
        match self.peek_word() {
            Some(x) if x == w => {
                self.pos += 1;
                Ok(())
            }
            _ => {
                let d = self.peek().map_or("end of input".into(), Tok::describe);
                self.err(format!("expected {w:?}, found {d}"))
            }
        }
    }

    fn eat_word(&mut self, w: &str) -> bool {
        if self.peek_word() == Some(w) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat(&mut self, t: &Tok) -> bool {
        if self.peek() == Some(t) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Skip newlines and semicolons.
    fn skip_breaks(&mut self) {
        while matches!(self.peek(), Some(Tok::Newline | Tok::Semi)) {
            self.pos += 1;
        }
    }

    fn skip_newlines(&mut self) {
        while matches!(self.peek(), Some(Tok::Newline)) {
            self.pos += 1;
        }
    }

    fn table(&mut self) -> R<Table> {
        let (line, _) = self.here();
        self.expect_word("table")?;
        let fam = self.word("a family (ip, inet, ip6, ...)")?;
        let family = match Family::parse(&fam) {
            Some(f) => f,
            None => {
                return self.back_err(format!(
                    "unknown family {fam:?}: expected ip, inet, ip6, arp, bridge or netdev"
                ));
            }
        };
        let name = self.word("a table name")?;
        let mut t = Table {
            family,
            name,
            comment: None,
            sets: Vec::new(),
            chains: Vec::new(),
            opaque: None,
            line,
        };
        self.expect(Tok::LBrace)?;
        if !family.sees_ipv4() {
            // Kept as written: these never see an IPv4 packet.
            let mut depth = 1;
            let mut end_line = line;
            while depth > 0 {
                let tok = self.toks.get(self.pos).cloned();
                match tok {
                    None => return self.err("unterminated table"),
                    Some(tk) => {
                        self.pos += 1;
                        end_line = tk.line;
                        match tk.tok {
                            Tok::LBrace => depth += 1,
                            Tok::RBrace => depth -= 1,
                            _ => {}
                        }
                    }
                }
            }
            t.opaque = Some(self.lines[line - 1..end_line].join("\n"));
            return Ok(t);
        }
        let mut names = std::collections::HashSet::new();
        loop {
            self.skip_breaks();
            match self.peek() {
                Some(Tok::RBrace) => {
                    self.pos += 1;
                    return Ok(t);
                }
                None => return self.err("unterminated table: expected }"),
                _ => {}
            }
            let w = self.word("set, map, chain or comment")?;
            match w.as_str() {
                "comment" => t.comment = Some(self.string("a comment")?),
                "set" | "map" => {
                    let s = self.set(w == "map")?;
                    if !names.insert(("set", s.name.clone())) {
                        return Err(NftError::at(
                            s.line,
                            1,
                            format!("set {} defined twice", s.name),
                        ));
                    }
                    t.sets.push(s);
                }
                "chain" => {
                    let c = self.chain(&t)?;
                    if !names.insert(("chain", c.name.clone())) {
                        return Err(NftError::at(
                            c.line,
                            1,
                            format!("chain {} defined twice", c.name),
                        ));
                    }
                    t.chains.push(c);
                }
                other => {
                    return self.back_err(format!(
                        "unexpected {other:?} in a table: expected set, map, chain or comment"
                    ));
                }
            }
        }
    }

    fn set(&mut self, map: bool) -> R<Set> {
        let (line, _) = self.here();
        let name = self.word("a set name")?;
        let mut s = Set {
            name,
            map,
            key: Vec::new(),
            data: None,
            flags: Vec::new(),
            timeout: None,
            size: None,
            comment: None,
            elements: Vec::new(),
            line,
        };
        self.expect(Tok::LBrace)?;
        loop {
            self.skip_breaks();
            if self.eat(&Tok::RBrace) {
                break;
            }
            let w = self.word("type, flags, timeout, size, comment or elements")?;
            match w.as_str() {
                "type" => {
                    loop {
                        let t = self.word("a data type")?;
                        s.key.push(self.data_type(&t)?);
                        if !self.eat_word(".") {
                            break;
                        }
                    }
                    if self.eat(&Tok::Colon) {
                        let t = self.word("a data type")?;
                        s.data = Some(self.data_type(&t)?);
                    }
                    if map != s.data.is_some() {
                        return self.err(if map {
                            "a map's type needs \": TYPE\""
                        } else {
                            "a set has no \": TYPE\" (use map)"
                        });
                    }
                }
                "typeof" => return self.err("typeof sets are not modelled; use type"),
                "flags" => loop {
                    s.flags.push(self.word("a set flag")?);
                    if !self.eat(&Tok::Comma) {
                        break;
                    }
                },
                "timeout" => s.timeout = Some(self.time()?),
                "gc-interval" => {
                    self.time()?;
                }
                "size" => s.size = Some(self.number("a size")? as u32),
                "policy" => {
                    self.word("a set policy")?;
                }
                "comment" => s.comment = Some(self.string("a comment")?),
                "elements" => {
                    self.expect_word("=")?;
                    self.expect(Tok::LBrace)?;
                    // Key → position, to find a key given twice.
                    let mut seen: BTreeMap<Vec<Value>, usize> = BTreeMap::new();
                    loop {
                        self.skip_newlines();
                        if self.eat(&Tok::RBrace) {
                            break;
                        }
                        let e = self.element(&s)?;
                        // Adding an element the set holds is a no-op for
                        // the kernel; the same key with other data is not.
                        match seen.get(&e.key) {
                            None => {
                                seen.insert(e.key.clone(), s.elements.len());
                                s.elements.push(e);
                            }
                            Some(&i) if s.elements[i].data == e.data => {}
                            Some(_) => {
                                return self.err(format!(
                                    "element {} given twice with different data",
                                    Concat(&e.key)
                                ))
                            }
                        }
                        self.skip_newlines();
                        if !self.eat(&Tok::Comma) {
                            self.skip_newlines();
                            self.expect(Tok::RBrace)?;
                            break;
                        }
                    }
                }
                other => {
                    return self.back_err(format!("unexpected {other:?} in set {}", s.name));
                }
            }
        }
        if s.key.is_empty() {
            return Err(NftError::at(line, 1, format!("set {} has no type", s.name)));
        }
        Ok(s)
    }

    fn data_type(&mut self, t: &str) -> R<DataType> {
        match DataType::parse(t) {
            Some(d) => Ok(d),
            None => {
                self.back_err(format!(
                    "data type {t:?} is not modelled (ipv4_addr, inet_proto, inet_service, mark, ifname, verdict are)"
                ))
            }
        }
    }

    fn element(&mut self, s: &Set) -> R<Element> {
        let mut key = Vec::new();
        for (i, t) in s.key.iter().enumerate() {
            if i > 0 {
                self.expect_word(".")?;
            }
            key.push(self.typed_value(*t)?);
        }
        let mut e = Element {
            key,
            comment: None,
            data: None,
        };
        loop {
            if self.eat_word("comment") {
                e.comment = Some(self.string("a comment")?);
            } else if self.eat_word("timeout") || self.eat_word("expires") {
                self.time()?;
            } else {
                break;
            }
        }
        if let Some(d) = s.data {
            self.expect(Tok::Colon)?;
            e.data = Some(if d == DataType::Verdict {
                Data::Verdict(self.verdict()?)
            } else {
                Data::Value(self.typed_value(d)?)
            });
        }
        Ok(e)
    }

    fn verdict(&mut self) -> R<Verdict> {
        let w = self.word("a verdict")?;
        Ok(match w.as_str() {
            "accept" => Verdict::Accept,
            "drop" => Verdict::Drop,
            "continue" => Verdict::Continue,
            "return" => Verdict::Return,
            "jump" => Verdict::Jump(self.word("a chain name")?),
            "goto" => Verdict::Goto(self.word("a chain name")?),
            other => {
                return self.back_err(format!(
                    "expected a verdict (accept, drop, return, jump C, goto C), found {other:?}"
                ));
            }
        })
    }

    fn number(&mut self, what: &str) -> R<u64> {
        let w = self.word(what)?;
        match parse_int(&w) {
            Some(n) => Ok(n),
            None => self.back_err(format!("expected {what} (a number), found {w:?}")),
        }
    }

    /// `3h`, `10800s`, `1d2h3m4s`, `500ms` (rounded down to seconds).
    fn time(&mut self) -> R<u64> {
        let w = self.word("a time")?;
        match parse_time(&w) {
            Some(t) => Ok(t),
            None => self.back_err(format!("expected a time like 3h or 10800s, found {w:?}")),
        }
    }

    /// A value of type `t` (one part of a key).
    fn typed_value(&mut self, t: DataType) -> R<Value> {
        match t {
            DataType::Ipv4Addr => self.addr_value(),
            DataType::InetProto => self.int_value(IntKind::Proto),
            DataType::InetService => self.int_value(IntKind::Decimal),
            DataType::Mark => self.int_value(IntKind::Mark),
            DataType::IfName => Ok(Value::Str(self.string("an interface name")?)),
            DataType::Verdict => self.err("a verdict is not a key"),
        }
    }

    fn addr_value(&mut self) -> R<Value> {
        let w = self.word("an IPv4 address")?;
        let v = if let Some((a, b)) = w.split_once('-') {
            match (a.parse::<Ipv4Addr>(), b.parse::<Ipv4Addr>()) {
                (Ok(a), Ok(b)) if a <= b => Some(Value::AddrRange(a, b)),
                _ => None,
            }
        } else if w.contains('/') {
            w.parse::<Ipv4Net>().ok().map(|n| {
                if n.prefix_len() == 32 {
                    Value::Addr(n.addr())
                } else {
                    Value::Net(n.trunc())
                }
            })
        } else {
            w.parse::<Ipv4Addr>().ok().map(Value::Addr)
        };
        match v {
            Some(v) => Ok(v),
            None => self.back_err(format!(
                "expected an IPv4 address, prefix or range, found {w:?}"
            )),
        }
    }

    fn int_value(&mut self, kind: IntKind) -> R<Value> {
        let w = self.word("a value")?;
        let one = |s: &str| -> Option<u64> {
            parse_int(s).or_else(|| symbols(kind).iter().find(|(_, n)| *n == s).map(|(v, _)| *v))
        };
        let v = if let Some(n) = one(&w) {
            Some(Value::Int(n, kind))
        } else if let Some((a, b)) = w.split_once('-') {
            match (one(a), one(b)) {
                (Some(a), Some(b)) if a <= b => Some(Value::IntRange(a, b, kind)),
                _ => None,
            }
        } else {
            None
        };
        match v {
            Some(v) => Ok(v),
            None => {
                self.pos -= 1;
                let names: Vec<&str> = symbols(kind).iter().map(|(_, n)| *n).collect();
                if names.is_empty() {
                    self.err(format!("expected a number or range, found {w:?}"))
                } else {
                    self.err(format!(
                        "expected a number or one of {}, found {w:?}",
                        names.join(", ")
                    ))
                }
            }
        }
    }

    fn chain(&mut self, t: &Table) -> R<Chain> {
        let (line, _) = self.here();
        let name = self.word("a chain name")?;
        let mut c = Chain {
            name,
            base: None,
            comment: None,
            rules: Vec::new(),
            line,
        };
        self.expect(Tok::LBrace)?;
        loop {
            self.skip_breaks();
            match self.peek() {
                Some(Tok::RBrace) => {
                    self.pos += 1;
                    return Ok(c);
                }
                None => return self.err("unterminated chain: expected }"),
                _ => {}
            }
            match self.peek_word() {
                Some("type") if c.rules.is_empty() && c.base.is_none() => {
                    self.pos += 1;
                    c.base = Some(self.base_spec(t)?);
                }
                Some("comment") if c.rules.is_empty() => {
                    self.pos += 1;
                    c.comment = Some(self.string("a comment")?);
                }
                _ => c.rules.push(self.rule()?),
            }
        }
    }

    fn base_spec(&mut self, t: &Table) -> R<BaseSpec> {
        let ty = self.word("a chain type")?;
        let kind = match ty.as_str() {
            "filter" => ChainType::Filter,
            "nat" => ChainType::Nat,
            "route" => ChainType::Route,
            other => {
                return self.back_err(format!(
                    "unknown chain type {other:?}: expected filter, nat or route"
                ));
            }
        };
        self.expect_word("hook")?;
        let h = self.word("a hook")?;
        let hook = match h.as_str() {
            "prerouting" => Hook::Prerouting,
            "input" => Hook::Input,
            "forward" => Hook::Forward,
            "output" => Hook::Output,
            "postrouting" => Hook::Postrouting,
            other => {
                return self.back_err(format!(
                    "hook {other:?} is not modelled: expected prerouting, input, forward, output or postrouting"
                ));
            }
        };
        if self.eat_word("device") {
            self.next()?;
        }
        self.expect_word("priority")?;
        let priority = self.priority()?;
        if kind == ChainType::Nat && hook == Hook::Forward {
            return self.err("a nat chain cannot hook forward");
        }
        let _ = t;
        self.skip_breaks_on_line();
        let mut policy = Policy::Accept;
        if self.eat_word("policy") {
            let p = self.word("a policy")?;
            policy = match p.as_str() {
                "accept" => Policy::Accept,
                "drop" => Policy::Drop,
                other => {
                    return self
                        .back_err(format!("expected policy accept or drop, found {other:?}"));
                }
            };
        }
        Ok(BaseSpec {
            kind,
            hook,
            priority,
            policy,
        })
    }

    fn skip_breaks_on_line(&mut self) {
        while matches!(self.peek(), Some(Tok::Semi)) {
            self.pos += 1;
        }
    }

    fn priority(&mut self) -> R<i32> {
        let w = self.word("a priority")?;
        let base = match w.as_str() {
            "raw" => -300,
            "mangle" => -150,
            "dstnat" => -100,
            "filter" => 0,
            "security" => 50,
            "srcnat" => 100,
            other => match other.parse::<i32>() {
                Ok(n) => return Ok(n),
                Err(_) => {
                    return self.back_err(format!(
                        "expected a priority (a number, or raw, mangle, dstnat, filter, security, srcnat), found {other:?}"
                    ));
                }
            },
        };
        let sign = match self.peek_word() {
            Some("+") => 1,
            Some("-") => -1,
            _ => return Ok(base),
        };
        self.pos += 1;
        let n = self.number("a priority offset")? as i32;
        Ok(base + sign * n)
    }

    fn at_rule_end(&self) -> bool {
        matches!(
            self.peek(),
            None | Some(Tok::Newline | Tok::Semi | Tok::RBrace)
        )
    }

    fn rule(&mut self) -> R<Rule> {
        let (line, _) = self.here();
        let mut stmts = Vec::new();
        let mut comment = None;
        while !self.at_rule_end() {
            if comment.is_some() {
                return self.err("a rule's comment comes last");
            }
            if self.eat_word("comment") {
                comment = Some(self.string("a comment")?);
                continue;
            }
            stmts.push(self.stmt()?);
        }
        if stmts.is_empty() {
            return self.err("empty rule");
        }
        let mut r = Rule::new(stmts, comment);
        r.line = line;
        Ok(r)
    }

    fn stmt(&mut self) -> R<Stmt> {
        let w = match self.peek_word() {
            Some(w) => w.to_string(),
            None => {
                let d = self.peek().map_or("end of input".into(), Tok::describe);
                return self.err(format!("expected a statement, found {d}"));
            }
        };
        Ok(match w.as_str() {
            "accept" | "drop" | "continue" | "return" | "jump" | "goto" => {
                Stmt::Verdict(self.verdict()?)
            }
            "counter" => {
                self.pos += 1;
                let (mut packets, mut bytes) = (0, 0);
                if self.eat_word("packets") {
                    packets = self.number("a packet count")?;
                    self.expect_word("bytes")?;
                    bytes = self.number("a byte count")?;
                }
                Stmt::Counter { packets, bytes }
            }
            "reject" => {
                self.pos += 1;
                if !self.eat_word("with") {
                    return Ok(Stmt::Reject(None));
                }
                let proto = self.word("tcp, icmp or icmpx")?;
                match proto.as_str() {
                    "tcp" => {
                        self.expect_word("reset")?;
                        Stmt::Reject(Some("tcp reset".into()))
                    }
                    "icmp" | "icmpx" => {
                        self.eat_word("type");
                        let code = self.word("an ICMP code")?;
                        if reject_code(&code).is_none() {
                            return self.back_err(format!("unknown reject code {code:?}"));
                        }
                        Stmt::Reject(Some(format!("{proto} {code}")))
                    }
                    other => {
                        return self
                            .back_err(format!("expected tcp or icmp after with, found {other:?}"));
                    }
                }
            }
            "dnat" | "snat" | "masquerade" => self.nat()?,
            "log" => {
                self.pos += 1;
                let mut prefix = None;
                loop {
                    if self.eat_word("prefix") {
                        prefix = Some(self.string("a log prefix")?);
                    } else if self.eat_word("level") || self.eat_word("flags") {
                        self.word("a log option")?;
                    } else {
                        break;
                    }
                }
                Stmt::Log { prefix }
            }
            "notrack" => {
                self.pos += 1;
                Stmt::Notrack
            }
            "update" | "add" => {
                self.pos += 1;
                let set = self.word("@SET")?;
                let Some(set) = set.strip_prefix('@').map(str::to_string) else {
                    return self.back_err("expected @SET");
                };
                self.expect(Tok::LBrace)?;
                let key = self.expr()?;
                self.expect(Tok::RBrace)?;
                Stmt::Update {
                    add: w == "add",
                    set,
                    key,
                }
            }
            _ => self.expr_stmt()?,
        })
    }

    fn nat(&mut self) -> R<Stmt> {
        let w = self.word("a nat statement")?;
        let kind = match w.as_str() {
            "dnat" => NatKind::Dnat,
            "snat" => NatKind::Snat,
            _ => NatKind::Masquerade,
        };
        self.eat_word("ip");
        let mut addr = None;
        let mut ports = None;
        if self.eat_word("to") {
            if kind != NatKind::Masquerade && !matches!(self.peek(), Some(Tok::Colon)) {
                addr = Some(self.range("an address or range")?);
            }
            if self.eat(&Tok::Colon) {
                ports = Some(self.range("a port or range")?);
            }
            if addr.is_none() && ports.is_none() {
                return self.err("expected an address or :port after to");
            }
        }
        let mut flags = Vec::new();
        while let Some(f) = self.peek_word() {
            if matches!(f, "random" | "fully-random" | "persistent") {
                flags.push(f.to_string());
                self.pos += 1;
                self.eat(&Tok::Comma);
            } else {
                break;
            }
        }
        Ok(Stmt::Nat {
            kind,
            addr,
            ports,
            flags,
        })
    }

    /// `a` or `a-b`, as an inclusive pair.
    fn range<T: std::str::FromStr + Copy>(&mut self, what: &str) -> R<(T, T)> {
        let w = self.word(what)?;
        let parsed = match w.split_once('-') {
            Some((x, y)) => x.parse().ok().zip(y.parse().ok()),
            None => w.parse().ok().map(|x: T| (x, x)),
        };
        match parsed {
            Some(p) => Ok(p),
            None => self.back_err(format!("expected {what}, found {w:?}")),
        }
    }

    /// One primary expression (no concatenation).
    fn primary(&mut self) -> R<Expr> {
        let w = self.word("an expression")?;
        let port = |p: &mut Self, proto: Option<u8>| -> R<Expr> {
            let f = p.word("dport or sport")?;
            match f.as_str() {
                "dport" => Ok(Expr::Port { proto, dport: true }),
                "sport" => Ok(Expr::Port {
                    proto,
                    dport: false,
                }),
                "flags" if proto == Some(6) => Ok(Expr::TcpFlags),
                other => {
                    p.pos -= 1;
                    p.err(format!("expected dport or sport, found {other:?}"))
                }
            }
        };
        Ok(match w.as_str() {
            "ip" => {
                let f = self.word("saddr, daddr or protocol")?;
                match f.as_str() {
                    "saddr" => Expr::IpSaddr,
                    "daddr" => Expr::IpDaddr,
                    "protocol" => Expr::IpProtocol,
                    other => {
                        return self.back_err(format!(
                            "ip {other} is not modelled (saddr, daddr, protocol are)"
                        ));
                    }
                }
            }
            "tcp" => port(self, Some(6))?,
            "udp" => port(self, Some(17))?,
            "sctp" => port(self, Some(132))?,
            "th" => port(self, None)?,
            "icmp" => {
                self.expect_word("type")?;
                Expr::IcmpType
            }
            "meta" => {
                let f = self.word("a meta key")?;
                match f.as_str() {
                    "l4proto" => Expr::MetaL4proto,
                    "mark" => Expr::MetaMark,
                    "iifname" => Expr::Iifname,
                    "oifname" => Expr::Oifname,
                    other => {
                        return self.back_err(format!(
                            "meta {other} is not modelled (l4proto, mark, iifname, oifname are)"
                        ));
                    }
                }
            }
            "mark" => Expr::MetaMark,
            "iifname" => Expr::Iifname,
            "oifname" => Expr::Oifname,
            "ct" => {
                let f = self.word("a ct key")?;
                match f.as_str() {
                    "state" => Expr::CtState,
                    "status" => Expr::CtStatus,
                    "mark" => Expr::CtMark,
                    "direction" => Expr::CtDirection,
                    other => {
                        return self.back_err(format!(
                            "ct {other} is not modelled (state, status, mark, direction are)"
                        ));
                    }
                }
            }
            "fib" => {
                let f = self.word("saddr or daddr")?;
                let daddr = match f.as_str() {
                    "saddr" => false,
                    "daddr" => true,
                    other => {
                        return self
                            .back_err(format!("expected fib saddr or daddr, found {other:?}"));
                    }
                };
                let mut dev = None;
                if self.eat_word(".") {
                    let d = self.word("iif or oif")?;
                    dev = Some(d == "iif");
                }
                self.expect_word("type")?;
                Expr::FibType { daddr, dev }
            }
            "numgen" => {
                let m = self.word("random or inc")?;
                let random = match m.as_str() {
                    "random" => true,
                    "inc" => false,
                    other => {
                        return self
                            .back_err(format!("expected numgen random or inc, found {other:?}"));
                    }
                };
                self.expect_word("mod")?;
                let modulus = self.number("a modulus")? as u32;
                if modulus == 0 {
                    return self.back_err("numgen modulus must be at least 1");
                }
                let offset = if self.eat_word("offset") {
                    self.number("an offset")? as u32
                } else {
                    0
                };
                Expr::Numgen {
                    random,
                    modulus,
                    offset,
                }
            }
            other => {
                return self.back_err(format!("unknown or unmodelled expression {other:?}"));
            }
        })
    }

    /// A concatenation of primaries, with an optional bitwise operation.
    fn expr(&mut self) -> R<Expr> {
        let first = self.primary()?;
        let mut e = if self.peek_word() == Some(".") {
            let mut parts = vec![first];
            while self.eat_word(".") {
                parts.push(self.primary()?);
            }
            Expr::Concat(parts)
        } else {
            first
        };
        let op = match self.peek_word() {
            Some("&" | "and") => Some(BitOp::And),
            Some("|" | "or") => Some(BitOp::Or),
            Some("^" | "xor") => Some(BitOp::Xor),
            _ => None,
        };
        if let Some(op) = op {
            self.pos += 1;
            let v = self.number("a mask")?;
            e = Expr::Bitwise(Box::new(e), op, v as u32);
        }
        Ok(e)
    }

    fn expr_stmt(&mut self) -> R<Stmt> {
        let left = self.expr()?;
        if self.eat_word("set") {
            let ct = match left {
                Expr::MetaMark => false,
                Expr::CtMark => true,
                _ => return self.err(format!("{left} cannot be set (meta mark and ct mark can)")),
            };
            let value = match self.peek_word().and_then(parse_int) {
                Some(n) => {
                    self.pos += 1;
                    MarkValue::Const(n as u32)
                }
                None => MarkValue::Expr(self.expr()?),
            };
            return Ok(Stmt::SetMark { ct, value });
        }
        if self.eat_word("vmap") {
            let map = if self.peek() == Some(&Tok::LBrace) {
                self.pos += 1;
                let mut elems = Vec::new();
                loop {
                    self.skip_newlines();
                    if self.eat(&Tok::RBrace) {
                        break;
                    }
                    let k = self.key_for(&left)?;
                    self.expect(Tok::Colon)?;
                    elems.push((k, self.verdict()?));
                    self.skip_newlines();
                    if !self.eat(&Tok::Comma) {
                        self.skip_newlines();
                        self.expect(Tok::RBrace)?;
                        break;
                    }
                }
                VmapRef::Anon(elems)
            } else {
                VmapRef::Named(self.set_ref()?)
            };
            return Ok(Stmt::Vmap { key: left, map });
        }
        let mut op = if self.eat_word("==") {
            Op::Eq
        } else if self.eat_word("!=") {
            Op::Ne
        } else {
            Op::Implicit
        };
        let right = match self.peek() {
            Some(Tok::LBrace) => {
                self.pos += 1;
                let mut elems = Vec::new();
                loop {
                    self.skip_newlines();
                    if self.eat(&Tok::RBrace) {
                        break;
                    }
                    elems.push(self.key_for(&left)?);
                    self.skip_newlines();
                    if !self.eat(&Tok::Comma) {
                        self.skip_newlines();
                        self.expect(Tok::RBrace)?;
                        break;
                    }
                }
                if elems.len() == 1 {
                    Rhs::Value(elems.pop().expect("one"))
                } else {
                    // The kernel keeps an anonymous set's elements in key
                    // order and `nft list` prints them so, whatever order
                    // they were written in.
                    super::print::sort_keys(&mut elems);
                    Rhs::Set(elems)
                }
            }
            Some(Tok::Word(w)) if w.starts_with('@') => Rhs::Named(self.set_ref()?),
            _ => Rhs::Value(self.key_for(&left)?),
        };
        // nft prints `==` only after a bitwise operation.
        let bitwise = matches!(left, Expr::Bitwise(..));
        if op == Op::Eq && !bitwise && !left.is_bitmask() {
            op = Op::Implicit;
        }
        if op == Op::Implicit && bitwise {
            op = Op::Eq;
        }
        Ok(Stmt::Match { left, op, right })
    }

    fn set_ref(&mut self) -> R<String> {
        let w = self.word("@SET")?;
        match w.strip_prefix('@') {
            Some(n) if !n.is_empty() => Ok(n.to_string()),
            _ => self.back_err(format!("expected @SET, found {w:?}")),
        }
    }

    /// A key for `left`: one value per concatenated part; bitmask values
    /// may list several names (`established,related`).
    fn key_for(&mut self, left: &Expr) -> R<Vec<Value>> {
        let parts: Vec<&Expr> = match left {
            Expr::Concat(p) => p.iter().collect(),
            e => vec![e],
        };
        let mut out = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                self.expect_word(".")?;
            }
            out.push(self.value_for(part)?);
        }
        Ok(out)
    }

    fn value_for(&mut self, e: &Expr) -> R<Value> {
        match e {
            Expr::IpSaddr | Expr::IpDaddr => self.addr_value(),
            Expr::Iifname | Expr::Oifname => Ok(Value::Str(self.string("an interface name")?)),
            Expr::Numgen { .. } | Expr::Port { .. } => self.int_value(IntKind::Decimal),
            e if e.is_bitmask() => {
                let kind = e.int_kind();
                let first = self.int_value(kind)?;
                if self.peek() != Some(&Tok::Comma) || !matches!(first, Value::Int(..)) {
                    return Ok(first);
                }
                let Value::Int(mut bits, _) = first else {
                    unreachable!()
                };
                while self.eat(&Tok::Comma) {
                    match self.int_value(kind)? {
                        Value::Int(b, _) => bits |= b,
                        _ => return self.err("expected a flag name"),
                    }
                }
                Ok(Value::Flags(bits, kind))
            }
            e => self.int_value(e.int_kind()),
        }
    }
}

fn parse_int(s: &str) -> Option<u64> {
    if let Some(h) = s.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()
    } else {
        s.parse().ok()
    }
}

/// Seconds in an nft time (`1d2h3m4s`, `500ms` counts as 0).
pub fn parse_time(s: &str) -> Option<u64> {
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    let mut total = 0u64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        let mult = match c {
            'd' => 86400,
            'h' => 3600,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                0
            }
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        total += n * mult;
        any = true;
    }
    (any && num.is_empty()).then_some(total)
}

/// nft's time format: `3h`, `1d2h3m4s`.
pub fn time_text(mut secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, n) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= n {
            out.push_str(&format!("{}{unit}", secs / n));
            secs %= n;
        }
    }
    out
}

/// The ICMP code `reject with icmp CODE` sends.
pub fn reject_code(name: &str) -> Option<crate::netfilter::RejectWith> {
    use crate::netfilter::RejectWith::*;
    Some(match name {
        "net-unreachable" => IcmpNetUnreachable,
        "host-unreachable" => IcmpHostUnreachable,
        "prot-unreachable" => IcmpProtoUnreachable,
        "port-unreachable" => IcmpPortUnreachable,
        "net-prohibited" => IcmpNetProhibited,
        "host-prohibited" => IcmpHostProhibited,
        "admin-prohibited" => IcmpAdminProhibited,
        _ => return None,
    })
}
