//! The nftables ruleset as data: tables, sets and maps, chains, rules as
//! statements over expressions, as `nft list ruleset` shows them.
//!
//! Every type prints itself the way `nft` (1.0) prints it ([`fmt::Display`]),
//! so a rule's text is its statements joined by spaces. Values are typed by
//! the expression they are compared with ([`DataType`]).

use ipnet::Ipv4Net;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// A whole `nft list ruleset`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ruleset {
    pub tables: Vec<Table>,
}

/// Address families. Only `ip` and `inet` tables see IPv4 packets; others
/// are kept as text and printed back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Ip,
    Inet,
    Ip6,
    Arp,
    Bridge,
    Netdev,
}

impl Family {
    pub fn parse(s: &str) -> Option<Family> {
        Some(match s {
            "ip" => Family::Ip,
            "inet" => Family::Inet,
            "ip6" => Family::Ip6,
            "arp" => Family::Arp,
            "bridge" => Family::Bridge,
            "netdev" => Family::Netdev,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Inet => "inet",
            Family::Ip6 => "ip6",
            Family::Arp => "arp",
            Family::Bridge => "bridge",
            Family::Netdev => "netdev",
        }
    }

    /// Whether the family's hooks see IPv4 packets.
    pub fn sees_ipv4(self) -> bool {
        matches!(self, Family::Ip | Family::Inet)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub family: Family,
    pub name: String,
    pub comment: Option<String>,
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
    /// The table's text as read, for families kpsim does not evaluate.
    pub opaque: Option<String>,
    /// 1-based line of `table`.
    pub line: usize,
}

impl Table {
    /// `ip kube-proxy`.
    pub fn title(&self) -> String {
        format!("{} {}", self.family.as_str(), self.name)
    }

    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }

    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }
}

/// The element types kpsim models (`type a . b [: c]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataType {
    Ipv4Addr,
    InetProto,
    InetService,
    Mark,
    IfName,
    Verdict,
}

impl DataType {
    pub fn parse(s: &str) -> Option<DataType> {
        Some(match s {
            "ipv4_addr" => DataType::Ipv4Addr,
            "inet_proto" => DataType::InetProto,
            "inet_service" => DataType::InetService,
            "mark" => DataType::Mark,
            "ifname" => DataType::IfName,
            "verdict" => DataType::Verdict,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Ipv4Addr => "ipv4_addr",
            DataType::InetProto => "inet_proto",
            DataType::InetService => "inet_service",
            DataType::Mark => "mark",
            DataType::IfName => "ifname",
            DataType::Verdict => "verdict",
        }
    }
}

/// A named set or map.
#[derive(Clone, Debug, PartialEq)]
pub struct Set {
    pub name: String,
    /// A map (`map NAME { type k : v }`) rather than a set.
    pub map: bool,
    /// The key, one type per part of a concatenation.
    pub key: Vec<DataType>,
    /// A map's value type.
    pub data: Option<DataType>,
    pub flags: Vec<String>,
    /// Default element timeout in seconds.
    pub timeout: Option<u64>,
    pub size: Option<u32>,
    pub comment: Option<String>,
    pub elements: Vec<Element>,
    pub line: usize,
}

impl Set {
    pub fn is_interval(&self) -> bool {
        self.flags.iter().any(|f| f == "interval")
    }
}

/// One element: a key (one part per concatenated type) and, in a map, a
/// value.
#[derive(Clone, Debug, PartialEq)]
pub struct Element {
    pub key: Vec<Value>,
    pub comment: Option<String>,
    pub data: Option<Data>,
}

/// A map element's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    Verdict(Verdict),
    Value(Value),
}

/// A constant of some [`DataType`]: a single value, a prefix or a range.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    Addr(Ipv4Addr),
    Net(Ipv4Net),
    AddrRange(Ipv4Addr, Ipv4Addr),
    /// Protocol numbers, ports, marks, ct states/status bits, fib types,
    /// icmp types, tcp flags: the number, printed by `kind`.
    Int(u64, IntKind),
    IntRange(u64, u64, IntKind),
    /// Several symbolic bits at once: `established,related`.
    Flags(u64, IntKind),
    Str(String),
}

/// How an integer value prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum IntKind {
    Decimal,
    /// `0x%08x`.
    Mark,
    Proto,
    CtState,
    CtStatus,
    CtDir,
    FibType,
    IcmpType,
    TcpFlags,
}

/// `accept`, `drop`, `jump c`, ...
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Continue,
    Return,
    Jump(String),
    Goto(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Chain {
    pub name: String,
    pub base: Option<BaseSpec>,
    pub comment: Option<String>,
    pub rules: Vec<Rule>,
    pub line: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    Nat,
    Route,
}

impl ChainType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
            ChainType::Route => "route",
        }
    }
}

/// A base chain's `type T hook H priority P; policy X;`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaseSpec {
    pub kind: ChainType,
    pub hook: crate::netfilter::Hook,
    pub priority: i32,
    pub policy: crate::netfilter::Policy,
}

/// One rule: statements in order, an optional comment, its line and its
/// printed text (kept so traces can quote it without the ruleset).
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub stmts: Vec<Stmt>,
    pub comment: Option<String>,
    /// 1-based line in the text it was read from (0 when built in code).
    pub line: usize,
    pub text: Arc<str>,
}

impl Rule {
    pub fn new(stmts: Vec<Stmt>, comment: Option<String>) -> Rule {
        let mut r = Rule {
            stmts,
            comment,
            line: 0,
            text: Arc::from(""),
        };
        r.text = Arc::from(r.to_string());
        r
    }
}

/// Packet fields (payload, meta, ct, fib, numgen) and what is computed
/// from them.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    IpSaddr,
    IpDaddr,
    IpProtocol,
    /// `tcp|udp|sctp|th sport|dport` (the protocol, `None` for `th`).
    Port {
        proto: Option<u8>,
        dport: bool,
    },
    TcpFlags,
    IcmpType,
    MetaL4proto,
    MetaMark,
    Iifname,
    Oifname,
    CtState,
    CtStatus,
    CtMark,
    CtDirection,
    /// `fib saddr|daddr [. iif|. oif] type`.
    FibType {
        daddr: bool,
        dev: Option<bool>,
    },
    /// `numgen random|inc mod N [offset O]`.
    Numgen {
        random: bool,
        modulus: u32,
        offset: u32,
    },
    /// `a . b . c`.
    Concat(Vec<Expr>),
    /// `e & v`, `e | v`, `e ^ v`.
    Bitwise(Box<Expr>, BitOp, u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitOp {
    And,
    Or,
    Xor,
}

impl Expr {
    /// The type of the values the expression yields (per concatenated
    /// part).
    pub fn types(&self) -> Vec<DataType> {
        match self {
            Expr::Concat(parts) => parts.iter().flat_map(|p| p.types()).collect(),
            other => vec![other.data_type()],
        }
    }

    fn data_type(&self) -> DataType {
        match self {
            Expr::IpSaddr | Expr::IpDaddr => DataType::Ipv4Addr,
            Expr::IpProtocol | Expr::MetaL4proto => DataType::InetProto,
            Expr::Port { .. } => DataType::InetService,
            Expr::MetaMark | Expr::CtMark | Expr::Bitwise(..) => DataType::Mark,
            Expr::Iifname | Expr::Oifname => DataType::IfName,
            _ => DataType::InetService,
        }
    }

    /// How integers compared with this expression print.
    pub fn int_kind(&self) -> IntKind {
        match self {
            Expr::IpProtocol | Expr::MetaL4proto => IntKind::Proto,
            Expr::MetaMark | Expr::CtMark | Expr::Bitwise(..) => IntKind::Mark,
            Expr::CtState => IntKind::CtState,
            Expr::CtStatus => IntKind::CtStatus,
            Expr::CtDirection => IntKind::CtDir,
            Expr::FibType { .. } => IntKind::FibType,
            Expr::IcmpType => IntKind::IcmpType,
            Expr::TcpFlags => IntKind::TcpFlags,
            _ => IntKind::Decimal,
        }
    }

    /// Bitmask types compare with "any of these bits" when no operator is
    /// written.
    pub fn is_bitmask(&self) -> bool {
        matches!(self, Expr::CtState | Expr::CtStatus | Expr::TcpFlags)
    }
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Written without an operator (equality, or "any bit" for bitmasks).
    Implicit,
    Eq,
    Ne,
}

/// The right-hand side of a match.
#[derive(Clone, Debug, PartialEq)]
pub enum Rhs {
    Value(Vec<Value>),
    /// An anonymous set `{ a, b . c }`.
    Set(Vec<Vec<Value>>),
    /// `@name`.
    Named(String),
}

/// A verdict map: anonymous or named.
#[derive(Clone, Debug, PartialEq)]
pub enum VmapRef {
    Anon(Vec<(Vec<Value>, Verdict)>),
    Named(String),
}

/// NAT statements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatKind {
    Dnat,
    Snat,
    Masquerade,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    Match {
        left: Expr,
        op: Op,
        right: Rhs,
    },
    Vmap {
        key: Expr,
        map: VmapRef,
    },
    Verdict(Verdict),
    Counter {
        packets: u64,
        bytes: u64,
    },
    /// `meta mark set EXPR` / `ct mark set EXPR`.
    SetMark {
        ct: bool,
        value: MarkValue,
    },
    Nat {
        kind: NatKind,
        addr: Option<(Ipv4Addr, Ipv4Addr)>,
        ports: Option<(u16, u16)>,
        flags: Vec<String>,
    },
    /// `reject [with ...]`, as written after `reject`.
    Reject(Option<String>),
    /// `update @set { EXPR }` (or `add`).
    Update {
        add: bool,
        set: String,
        key: Expr,
    },
    Log {
        prefix: Option<String>,
    },
    Notrack,
}

/// What a mark is set to.
#[derive(Clone, Debug, PartialEq)]
pub enum MarkValue {
    Const(u32),
    /// `meta mark | 0x4000`, `ct mark`, ...
    Expr(Expr),
}

// ---- printing -------------------------------------------------------------

fn proto_name(p: u64) -> Option<&'static str> {
    Some(match p {
        1 => "icmp",
        2 => "igmp",
        6 => "tcp",
        17 => "udp",
        47 => "gre",
        50 => "esp",
        51 => "ah",
        132 => "sctp",
        136 => "udplite",
        _ => return None,
    })
}

/// Names of symbolic integers, per kind: (value, name).
pub fn symbols(kind: IntKind) -> &'static [(u64, &'static str)] {
    match kind {
        IntKind::Proto => &[
            (1, "icmp"),
            (2, "igmp"),
            (6, "tcp"),
            (17, "udp"),
            (47, "gre"),
            (50, "esp"),
            (51, "ah"),
            (132, "sctp"),
            (136, "udplite"),
        ],
        // nft's own table order, which is also its printing order.
        IntKind::CtState => &[
            (CT_INVALID, "invalid"),
            (CT_NEW, "new"),
            (CT_ESTABLISHED, "established"),
            (CT_RELATED, "related"),
            (CT_UNTRACKED, "untracked"),
        ],
        IntKind::CtStatus => &[
            (1, "expected"),
            (2, "seen-reply"),
            (4, "assured"),
            (8, "confirmed"),
            (16, "snat"),
            (32, "dnat"),
            (512, "dying"),
        ],
        IntKind::CtDir => &[(0, "original"), (1, "reply")],
        IntKind::FibType => &[
            (0, "unspec"),
            (1, "unicast"),
            (2, "local"),
            (3, "broadcast"),
            (4, "anycast"),
            (5, "multicast"),
            (6, "blackhole"),
            (7, "unreachable"),
            (8, "prohibit"),
        ],
        IntKind::IcmpType => &[
            (0, "echo-reply"),
            (3, "destination-unreachable"),
            (5, "redirect"),
            (8, "echo-request"),
            (11, "time-exceeded"),
        ],
        IntKind::TcpFlags => &[
            (0x01, "fin"),
            (0x02, "syn"),
            (0x04, "rst"),
            (0x08, "psh"),
            (0x10, "ack"),
            (0x20, "urg"),
            (0x40, "ecn"),
            (0x80, "cwr"),
        ],
        IntKind::Decimal | IntKind::Mark => &[],
    }
}

/// The kernel's ct state bits (`NF_CT_STATE_BIT`).
pub const CT_INVALID: u64 = 1;
pub const CT_ESTABLISHED: u64 = 2;
pub const CT_RELATED: u64 = 4;
pub const CT_NEW: u64 = 8;
pub const CT_UNTRACKED: u64 = 64;

fn int_text(v: u64, kind: IntKind) -> String {
    match kind {
        IntKind::Mark => format!("0x{v:08x}"),
        IntKind::Decimal => v.to_string(),
        IntKind::Proto => proto_name(v).map_or_else(|| v.to_string(), str::to_string),
        other => symbols(other)
            .iter()
            .find(|(n, _)| *n == v)
            .map_or_else(|| v.to_string(), |(_, s)| s.to_string()),
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Addr(a) => write!(f, "{a}"),
            Value::Net(n) => write!(f, "{n}"),
            Value::AddrRange(a, b) => write!(f, "{a}-{b}"),
            Value::Int(v, k) => f.write_str(&int_text(*v, *k)),
            Value::IntRange(a, b, k) => write!(f, "{}-{}", int_text(*a, *k), int_text(*b, *k)),
            Value::Flags(bits, k) => {
                let names: Vec<&str> = symbols(*k)
                    .iter()
                    .filter(|(b, _)| bits & b != 0)
                    .map(|(_, s)| *s)
                    .collect();
                f.write_str(&names.join(","))
            }
            Value::Str(s) => write!(f, "\"{s}\""),
        }
    }
}

/// `a . b . c`.
pub struct Concat<'a>(pub &'a [Value]);

impl fmt::Display for Concat<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" . ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Continue => f.write_str("continue"),
            Verdict::Return => f.write_str("return"),
            Verdict::Jump(c) => write!(f, "jump {c}"),
            Verdict::Goto(c) => write!(f, "goto {c}"),
        }
    }
}

impl fmt::Display for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Data::Verdict(v) => write!(f, "{v}"),
            Data::Value(v) => write!(f, "{v}"),
        }
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Concat(&self.key))?;
        if let Some(c) = &self.comment {
            write!(f, " comment \"{c}\"")?;
        }
        if let Some(d) = &self.data {
            write!(f, " : {d}")?;
        }
        Ok(())
    }
}

fn port_proto(p: Option<u8>) -> &'static str {
    match p {
        Some(6) => "tcp",
        Some(17) => "udp",
        Some(132) => "sctp",
        _ => "th",
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::IpSaddr => f.write_str("ip saddr"),
            Expr::IpDaddr => f.write_str("ip daddr"),
            Expr::IpProtocol => f.write_str("ip protocol"),
            Expr::Port { proto, dport } => write!(
                f,
                "{} {}",
                port_proto(*proto),
                if *dport { "dport" } else { "sport" }
            ),
            Expr::TcpFlags => f.write_str("tcp flags"),
            Expr::IcmpType => f.write_str("icmp type"),
            Expr::MetaL4proto => f.write_str("meta l4proto"),
            Expr::MetaMark => f.write_str("meta mark"),
            Expr::Iifname => f.write_str("iifname"),
            Expr::Oifname => f.write_str("oifname"),
            Expr::CtState => f.write_str("ct state"),
            Expr::CtStatus => f.write_str("ct status"),
            Expr::CtMark => f.write_str("ct mark"),
            Expr::CtDirection => f.write_str("ct direction"),
            Expr::FibType { daddr, dev } => {
                write!(f, "fib {}", if *daddr { "daddr" } else { "saddr" })?;
                match dev {
                    Some(true) => f.write_str(" . iif")?,
                    Some(false) => f.write_str(" . oif")?,
                    None => {}
                }
                f.write_str(" type")
            }
            Expr::Numgen {
                random,
                modulus,
                offset,
            } => {
                write!(
                    f,
                    "numgen {} mod {modulus}",
                    if *random { "random" } else { "inc" }
                )?;
                if *offset != 0 {
                    write!(f, " offset {offset}")?;
                }
                Ok(())
            }
            Expr::Concat(parts) => {
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" . ")?;
                    }
                    write!(f, "{p}")?;
                }
                Ok(())
            }
            Expr::Bitwise(e, op, v) => {
                let o = match op {
                    BitOp::And => "&",
                    BitOp::Or => "|",
                    BitOp::Xor => "^",
                };
                write!(f, "{e} {o} 0x{v:08x}")
            }
        }
    }
}

impl fmt::Display for Rhs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rhs::Value(v) => write!(f, "{}", Concat(v)),
            Rhs::Named(n) => write!(f, "@{n}"),
            Rhs::Set(elems) => {
                f.write_str("{ ")?;
                for (i, e) in elems.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}", Concat(e))?;
                }
                f.write_str(" }")
            }
        }
    }
}

impl fmt::Display for Stmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stmt::Match { left, op, right } => {
                let o = match op {
                    Op::Implicit => "",
                    Op::Eq => "== ",
                    Op::Ne => "!= ",
                };
                write!(f, "{left} {o}{right}")
            }
            Stmt::Vmap { key, map } => {
                write!(f, "{key} vmap ")?;
                match map {
                    VmapRef::Named(n) => write!(f, "@{n}"),
                    VmapRef::Anon(elems) => {
                        f.write_str("{ ")?;
                        for (i, (k, v)) in elems.iter().enumerate() {
                            if i > 0 {
                                f.write_str(", ")?;
                            }
                            write!(f, "{} : {v}", Concat(k))?;
                        }
                        f.write_str(" }")
                    }
                }
            }
            Stmt::Verdict(v) => write!(f, "{v}"),
            Stmt::Counter { packets, bytes } => {
                write!(f, "counter packets {packets} bytes {bytes}")
            }
            Stmt::SetMark { ct, value } => {
                write!(f, "{} set ", if *ct { "ct mark" } else { "meta mark" })?;
                match value {
                    MarkValue::Const(v) => write!(f, "0x{v:08x}"),
                    MarkValue::Expr(e) => write!(f, "{e}"),
                }
            }
            Stmt::Nat {
                kind,
                addr,
                ports,
                flags,
            } => {
                f.write_str(match kind {
                    NatKind::Dnat => "dnat",
                    NatKind::Snat => "snat",
                    NatKind::Masquerade => "masquerade",
                })?;
                if addr.is_some() || ports.is_some() {
                    f.write_str(" to ")?;
                }
                if let Some((a, b)) = addr {
                    if a == b {
                        write!(f, "{a}")?;
                    } else {
                        write!(f, "{a}-{b}")?;
                    }
                }
                if let Some((p, q)) = ports {
                    if p == q {
                        write!(f, ":{p}")?;
                    } else {
                        write!(f, ":{p}-{q}")?;
                    }
                }
                for fl in flags {
                    write!(f, " {fl}")?;
                }
                Ok(())
            }
            Stmt::Reject(None) => f.write_str("reject"),
            Stmt::Reject(Some(w)) => write!(f, "reject with {w}"),
            Stmt::Update { add, set, key } => write!(
                f,
                "{} @{set} {{ {key} }}",
                if *add { "add" } else { "update" }
            ),
            Stmt::Log { prefix: None } => f.write_str("log"),
            Stmt::Log { prefix: Some(p) } => write!(f, "log prefix \"{p}\""),
            Stmt::Notrack => f.write_str("notrack"),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.stmts.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{s}")?;
        }
        if let Some(c) = &self.comment {
            write!(f, " comment \"{c}\"")?;
        }
        Ok(())
    }
}
