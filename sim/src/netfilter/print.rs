//! Printing a [`Ruleset`] exactly as `iptables-save` (1.8) does.
//!
//! Field order follows `iptables/iptables.c`'s save: `-A CHAIN`, then `-s`,
//! `-d`, `-i`, `-o`, `-p`, `-f` (each negated as `! -s`), then every match in
//! rule order with its extension's own save format, then `-j`/`-g` and the
//! target's options. Addresses always carry a prefix length; MARK always
//! saves as `--set-xmark value/mask`; statistic as `--probability %.11f` of
//! the kernel threshold; conntrack states in the kernel's bit order.
//! Comments are quoted the way `xtables_save_string` does: bare when made
//! only of `[A-Za-z0-9_-]`, otherwise in double quotes with `"`, `'` and
//! `\` escaped.

use super::parse::builtin_chains;
use super::rule::*;
use rayon::prelude::*;
use std::fmt::{self, Write};

impl Ruleset {
    /// The whole dump in `iptables-save` form.
    pub fn to_iptables_save(&self) -> String {
        let mut out = String::new();
        for c in &self.header_comments {
            out.push_str(c);
            out.push('\n');
        }
        for t in &self.tables {
            let _ = writeln!(out, "*{}", t.name);
            for c in &t.chains {
                let policy = match c.policy {
                    Some(Policy::Accept) => "ACCEPT",
                    Some(Policy::Drop) => "DROP",
                    None => "-",
                };
                let _ = writeln!(
                    out,
                    ":{} {} [{}:{}]",
                    c.name, policy, c.counters.packets, c.counters.bytes
                );
            }
            for c in &t.chains {
                for r in &c.rules {
                    out.push_str(&r.to_iptables_save(&c.name));
                    out.push('\n');
                }
            }
            out.push_str("COMMIT\n");
            for c in &t.trailer_comments {
                out.push_str(c);
                out.push('\n');
            }
        }
        out
    }
}

impl Ruleset {
    /// Put each table's chains in the order `iptables-save` prints them:
    /// built-in chains in the kernel's order, then user chains by name.
    pub fn sort_as_saved(&mut self) {
        // Tables apart, in parallel.
        self.tables.par_iter_mut().for_each(|t| {
            let builtins = builtin_chains(t.name);
            // Ranked once per chain and sorted by position, not moving
            // chains around: tables of 60,000 chains are sorted per node.
            let rank: Vec<usize> = t
                .chains
                .iter()
                .map(|c| {
                    builtins
                        .iter()
                        .position(|b| *b == c.name)
                        .unwrap_or(usize::MAX)
                })
                .collect();
            let key = |i: usize| (rank[i], t.chains[i].name.as_str());
            let mut order: Vec<usize> = (0..t.chains.len()).collect();
            if order.is_sorted_by_key(|&i| key(i)) {
                return;
            }
            // Compared by rank and the names' first 16 bytes (as they order
            // the names) first, the names' rest only on a tie: most names
            // differ early, and a table of 60,000 chains is sorted per node.
            let head: Vec<u128> = t.chains.iter().map(|c| name_head(&c.name)).collect();
            order.par_sort_by(|&a, &b| {
                (rank[a], head[a])
                    .cmp(&(rank[b], head[b]))
                    .then_with(|| key(a).cmp(&key(b)))
            });
            let mut chains: Vec<Option<Chain>> = t.chains.drain(..).map(Some).collect();
            t.chains
                .extend(order.into_iter().map(|i| chains[i].take().expect("once")));
        });
    }

    /// Every line number the ruleset holds (tables, chain declarations,
    /// rules as `Chain::line_of` gives them): what a check that numbering
    /// and printing agree compares.
    pub fn line_numbers(&self) -> Vec<usize> {
        let mut v = Vec::new();
        for t in &self.tables {
            v.push(t.line);
            v.extend(t.chains.iter().map(|c| c.line));
            v.extend(
                t.chains
                    .iter()
                    .flat_map(|c| c.rules.iter().map(|r| c.line_of(r))),
            );
        }
        v
    }

    /// Number every `*table`, `:chain` and rule line as
    /// [`Ruleset::to_iptables_save`] prints it, so traces point into
    /// `kpsim rules` output without printing and re-parsing the ruleset.
    /// Must follow the printer's layout line for line.
    ///
    /// Rules get their position in their chain and each chain the offset
    /// of its first rule, so chains shared with other rulesets are numbered
    /// without being copied.
    pub fn number_as_saved(&mut self) {
        let mut line = self.header_comments.len();
        for t in &mut self.tables {
            line += 1;
            t.line = line;
            for c in &mut t.chains {
                line += 1;
                c.line = line;
            }
            for c in &mut t.chains {
                c.rules.number_within_chain();
                c.rule_line_offset = line;
                line += c.rules.len();
            }
            line += 1 + t.trailer_comments.len(); // COMMIT, comments
        }
    }
}

/// The first 16 bytes of `name`, zero-padded, as a number that orders
/// as they do.
fn name_head(name: &str) -> u128 {
    let mut head = [0u8; 16];
    let n = name.len().min(16);
    head[..n].copy_from_slice(&name.as_bytes()[..n]);
    u128::from_be_bytes(head)
}

impl fmt::Display for Ruleset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_iptables_save())
    }
}

impl Rule {
    /// This rule's `-A CHAIN ...` line.
    pub fn to_iptables_save(&self, chain: &str) -> String {
        let mut s = String::with_capacity(128);
        if let Some(c) = &self.counters {
            let _ = write!(s, "[{}:{}] ", c.packets, c.bytes);
        }
        s.push_str("-A ");
        s.push_str(chain);
        if let Some(n) = &self.source {
            let _ = write!(s, " {}-s {}", bang(n.negated), n.value);
        }
        if let Some(n) = &self.destination {
            let _ = write!(s, " {}-d {}", bang(n.negated), n.value);
        }
        if let Some(n) = &self.in_iface {
            let _ = write!(s, " {}-i {}", bang(n.negated), iface(&n.value));
        }
        if let Some(n) = &self.out_iface {
            let _ = write!(s, " {}-o {}", bang(n.negated), iface(&n.value));
        }
        if let Some(n) = &self.protocol {
            let _ = write!(s, " {}-p {}", bang(n.negated), proto(n.value));
        }
        if let Some(n) = &self.fragment {
            let _ = write!(s, " {}-f", bang(n.negated));
        }
        for m in &self.matches {
            let _ = write!(s, " -m {}", m.module);
            write_match(&mut s, &m.kind);
        }
        match &self.target {
            None => {}
            Some(Target::Goto(c)) => {
                let _ = write!(s, " -g {c}");
            }
            Some(t) => {
                s.push_str(" -j ");
                write_target(&mut s, t);
            }
        }
        s
    }
}

impl Target {
    /// The target as a rule line writes it after `-j`
    /// (`DNAT --to-destination 10.244.2.5:8080`), or the chain of a jump
    /// or goto.
    pub fn to_iptables_save(&self) -> String {
        let mut s = String::new();
        write_target(&mut s, self);
        s
    }
}

impl Match {
    /// This match as a rule line writes it: `-m mark --mark 0x4000/0x4000`.
    pub fn to_iptables_save(&self) -> String {
        let mut s = format!("-m {}", self.module);
        write_match(&mut s, &self.kind);
        s
    }
}

fn bang(negated: bool) -> &'static str {
    if negated {
        "! "
    } else {
        ""
    }
}

fn iface(i: &IfaceMatch) -> String {
    if i.wildcard {
        format!("{}+", i.name)
    } else {
        i.name.clone()
    }
}

fn proto(p: Protocol) -> String {
    match p {
        Protocol::Tcp => "tcp".into(),
        Protocol::Udp => "udp".into(),
        Protocol::Sctp => "sctp".into(),
        Protocol::Icmp => "icmp".into(),
        Protocol::Other(n) => n.to_string(),
    }
}

fn ports(p: &PortRange) -> String {
    if p.first == p.last {
        p.first.to_string()
    } else {
        format!("{}:{}", p.first, p.last)
    }
}

/// `xtables_save_string`.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return s.to_string();
    }
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' || c == '\'' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

fn tcp_flag_names(bits: u8) -> String {
    if bits == 0 {
        return "NONE".into();
    }
    const NAMES: [(u8, &str); 8] = [
        (0x01, "FIN"),
        (0x02, "SYN"),
        (0x04, "RST"),
        (0x08, "PSH"),
        (0x10, "ACK"),
        (0x20, "URG"),
        (0x40, "ECE"),
        (0x80, "CWR"),
    ];
    if bits == 0xff {
        return "FIN,SYN,RST,PSH,ACK,URG,ECE,CWR".into();
    }
    NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn states(v: &[CtState]) -> String {
    const ORDER: [(CtState, &str); 7] = [
        (CtState::Invalid, "INVALID"),
        (CtState::New, "NEW"),
        (CtState::Related, "RELATED"),
        (CtState::Established, "ESTABLISHED"),
        (CtState::Untracked, "UNTRACKED"),
        (CtState::Snat, "SNAT"),
        (CtState::Dnat, "DNAT"),
    ];
    ORDER
        .iter()
        .filter(|(s, _)| v.contains(s))
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn addr_types(v: &[AddrType]) -> String {
    v.iter()
        .map(|t| match t {
            AddrType::Unspec => "UNSPEC",
            AddrType::Unicast => "UNICAST",
            AddrType::Local => "LOCAL",
            AddrType::Broadcast => "BROADCAST",
            AddrType::Anycast => "ANYCAST",
            AddrType::Multicast => "MULTICAST",
            AddrType::Blackhole => "BLACKHOLE",
            AddrType::Unreachable => "UNREACHABLE",
            AddrType::Prohibit => "PROHIBIT",
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn mark(value: u32, mask: u32) -> String {
    if mask == u32::MAX {
        format!("0x{value:x}")
    } else {
        format!("0x{value:x}/0x{mask:x}")
    }
}

fn write_match(s: &mut String, k: &MatchKind) {
    match k {
        MatchKind::Ports {
            sport,
            dport,
            tcp_flags,
        } => {
            if let Some(p) = sport {
                let _ = write!(s, " {}--sport {}", bang(p.negated), ports(&p.value));
            }
            if let Some(p) = dport {
                let _ = write!(s, " {}--dport {}", bang(p.negated), ports(&p.value));
            }
            if let Some(f) = tcp_flags {
                let _ = write!(
                    s,
                    " {}--tcp-flags {} {}",
                    bang(f.negated),
                    tcp_flag_names(f.value.mask),
                    tcp_flag_names(f.value.comp)
                );
            }
        }
        MatchKind::Icmp { icmp_type } => {
            if let Some(t) = icmp_type {
                let v = &t.value;
                let text = if v.icmp_type == 255 {
                    "any".to_string()
                } else {
                    match v.code {
                        Some(c) => format!("{}/{}", v.icmp_type, c),
                        None => v.icmp_type.to_string(),
                    }
                };
                let _ = write!(s, " {}--icmp-type {}", bang(t.negated), text);
            }
        }
        MatchKind::Multiport {
            direction,
            negated,
            ports: ps,
        } => {
            let opt = match direction {
                PortDirection::Source => "--sports",
                PortDirection::Destination => "--dports",
                PortDirection::Either => "--ports",
            };
            let list = ps.iter().map(ports).collect::<Vec<_>>().join(",");
            let _ = write!(s, " {}{} {}", bang(*negated), opt, list);
        }
        MatchKind::Comment(c) => {
            let _ = write!(s, " --comment {}", quote(c));
        }
        MatchKind::AddrType {
            src_type,
            dst_type,
            limit_iface_in,
            limit_iface_out,
        } => {
            if let Some(t) = src_type {
                let _ = write!(s, " {}--src-type {}", bang(t.negated), addr_types(&t.value));
            }
            if let Some(t) = dst_type {
                let _ = write!(s, " {}--dst-type {}", bang(t.negated), addr_types(&t.value));
            }
            if *limit_iface_in {
                s.push_str(" --limit-iface-in");
            }
            if *limit_iface_out {
                s.push_str(" --limit-iface-out");
            }
        }
        MatchKind::Mark {
            negated,
            value,
            mask,
        }
        | MatchKind::ConnMark {
            negated,
            value,
            mask,
        } => {
            let _ = write!(s, " {}--mark {}", bang(*negated), mark(*value, *mask));
        }
        MatchKind::Conntrack(c) => write_conntrack(s, c),
        MatchKind::State(st) => {
            let _ = write!(s, " {}--state {}", bang(st.negated), states(&st.value));
        }
        MatchKind::Statistic(Statistic::Random {
            negated, threshold, ..
        }) => {
            let p = f64::from(*threshold) / 2147483648.0;
            let _ = write!(
                s,
                " --mode random {}--probability {:.11}",
                bang(*negated),
                p
            );
        }
        MatchKind::Statistic(Statistic::Nth {
            negated,
            every,
            packet,
        }) => {
            let _ = write!(
                s,
                " --mode nth {}--every {} --packet {}",
                bang(*negated),
                every,
                packet
            );
        }
        MatchKind::Recent(r) => {
            let mode = match r.mode {
                RecentMode::Set => "--set",
                RecentMode::Rcheck => "--rcheck",
                RecentMode::Update => "--update",
                RecentMode::Remove => "--remove",
            };
            let _ = write!(s, " {}{}", bang(r.negated), mode);
            if let Some(sec) = r.seconds {
                let _ = write!(s, " --seconds {sec}");
            }
            if r.reap {
                s.push_str(" --reap");
            }
            if let Some(h) = r.hitcount {
                let _ = write!(s, " --hitcount {h}");
            }
            if r.rttl {
                s.push_str(" --rttl");
            }
            let _ = write!(s, " --name {} --mask {}", r.name, r.mask);
            s.push_str(match r.side {
                RecentSide::Source => " --rsource",
                RecentSide::Dest => " --rdest",
            });
        }
        MatchKind::Set {
            negated,
            name,
            flags,
            options,
        } => {
            let f = flags
                .iter()
                .map(|f| match f {
                    SetFlag::Src => "src",
                    SetFlag::Dst => "dst",
                })
                .collect::<Vec<_>>()
                .join(",");
            let _ = write!(s, " {}--match-set {} {}", bang(*negated), name, f);
            if options.return_nomatch {
                s.push_str(" --return-nomatch");
            }
            if options.skip_counter_update {
                s.push_str(" ! --update-counters");
            }
            if options.skip_subcounter_update {
                s.push_str(" ! --update-subcounters");
            }
        }
        MatchKind::Physdev(opts) => {
            for (neg, name, val) in opts {
                let _ = write!(s, " {}{}", bang(*neg), name);
                if let Some(v) = val {
                    let _ = write!(s, " {v}");
                }
            }
        }
    }
}

fn write_conntrack(s: &mut String, c: &ConntrackMatch) {
    if let Some(st) = &c.ctstate {
        let _ = write!(s, " {}--ctstate {}", bang(st.negated), states(&st.value));
    }
    if let Some(p) = &c.ctproto {
        let _ = write!(s, " {}--ctproto {}", bang(p.negated), p.value.number());
    }
    for (opt, v) in [
        ("--ctorigsrc", &c.ctorigsrc),
        ("--ctorigdst", &c.ctorigdst),
        ("--ctreplsrc", &c.ctreplsrc),
        ("--ctrepldst", &c.ctrepldst),
    ] {
        if let Some(n) = v {
            let _ = write!(s, " {}{} {}", bang(n.negated), opt, n.value);
        }
    }
    for (opt, v) in [
        ("--ctorigsrcport", &c.ctorigsrcport),
        ("--ctorigdstport", &c.ctorigdstport),
        ("--ctreplsrcport", &c.ctreplsrcport),
        ("--ctrepldstport", &c.ctrepldstport),
    ] {
        if let Some(n) = v {
            let _ = write!(s, " {}{} {}", bang(n.negated), opt, ports(&n.value));
        }
    }
    if let Some(d) = c.ctdir {
        s.push_str(match d {
            CtDir::Original => " --ctdir ORIGINAL",
            CtDir::Reply => " --ctdir REPLY",
        });
    }
}

fn nat_range(r: &NatRange) -> String {
    let mut s = r.first_addr.to_string();
    if r.last_addr != r.first_addr {
        let _ = write!(s, "-{}", r.last_addr);
    }
    if let Some(p) = r.ports {
        if p.first == p.last {
            let _ = write!(s, ":{}", p.first);
        } else {
            let _ = write!(s, ":{}-{}", p.first, p.last);
        }
    }
    s
}

fn write_target(s: &mut String, t: &Target) {
    match t {
        Target::Accept => s.push_str("ACCEPT"),
        Target::Drop => s.push_str("DROP"),
        Target::Return => s.push_str("RETURN"),
        Target::Jump(c) => s.push_str(c),
        Target::Goto(c) => s.push_str(c),
        Target::Reject { with } => {
            s.push_str("REJECT --reject-with ");
            s.push_str(with.as_str());
        }
        Target::Mark { value, mask, .. } => {
            let _ = write!(s, "MARK --set-xmark 0x{value:x}/0x{mask:x}");
        }
        Target::Connmark(op) => match op {
            ConnmarkOp::Set { value, mask } => {
                let _ = write!(s, "CONNMARK --set-xmark 0x{value:x}/0x{mask:x}");
            }
            ConnmarkOp::Save { nfmask, ctmask } => {
                let _ = write!(
                    s,
                    "CONNMARK --save-mark --nfmask 0x{nfmask:x} --ctmask 0x{ctmask:x}"
                );
            }
            ConnmarkOp::Restore { nfmask, ctmask } => {
                let _ = write!(
                    s,
                    "CONNMARK --restore-mark --nfmask 0x{nfmask:x} --ctmask 0x{ctmask:x}"
                );
            }
        },
        Target::Dnat(spec) | Target::Snat(spec) => {
            let (name, opt) = if matches!(t, Target::Dnat(_)) {
                ("DNAT", "--to-destination")
            } else {
                ("SNAT", "--to-source")
            };
            s.push_str(name);
            for r in &spec.ranges {
                let _ = write!(s, " {opt} {}", nat_range(r));
            }
            if spec.random {
                s.push_str(" --random");
            }
            if spec.random_fully {
                s.push_str(" --random-fully");
            }
            if spec.persistent {
                s.push_str(" --persistent");
            }
        }
        Target::Masquerade {
            to_ports,
            random,
            random_fully,
        } => {
            s.push_str("MASQUERADE");
            if let Some(p) = to_ports {
                if p.first == p.last {
                    let _ = write!(s, " --to-ports {}", p.first);
                } else {
                    let _ = write!(s, " --to-ports {}-{}", p.first, p.last);
                }
            }
            if *random {
                s.push_str(" --random");
            }
            if *random_fully {
                s.push_str(" --random-fully");
            }
        }
        Target::Log { prefix, level } => {
            s.push_str("LOG");
            if let Some(p) = prefix {
                let _ = write!(s, " --log-prefix {}", quote(p));
            }
            if let Some(l) = level {
                let _ = write!(s, " --log-level {l}");
            }
        }
        Target::Nflog {
            group,
            prefix,
            options,
        } => {
            s.push_str("NFLOG");
            if let Some(p) = prefix {
                let _ = write!(s, " --nflog-prefix {}", quote(p));
            }
            if let Some(g) = group {
                let _ = write!(s, " --nflog-group {g}");
            }
            for (k, v) in options {
                let _ = write!(s, " {k} {v}");
            }
        }
        Target::Notrack => s.push_str("CT --notrack"),
        Target::Ct { notrack, options } => {
            s.push_str("CT");
            if *notrack {
                s.push_str(" --notrack");
            }
            for (k, v) in options {
                let _ = write!(s, " {k}");
                if let Some(v) = v {
                    let _ = write!(s, " {v}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbering without printing must give the lines a parse of the
    /// printed text gives, whatever order the input came in.
    #[test]
    fn numbering_matches_a_parse_of_the_printed_text() {
        let text = "# head\n*nat\n:KUBE-B - [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-A - [0:0]\n:PREROUTING ACCEPT [0:0]\n-A KUBE-B -j KUBE-A\n-A PREROUTING -j KUBE-B\n-A KUBE-A -j RETURN\n-A PREROUTING -p tcp -j KUBE-A\n-A KUBE-B -j RETURN\nCOMMIT\n# done\n*filter\n:INPUT ACCEPT [0:0]\n:X - [0:0]\n-A X -j ACCEPT\n-A INPUT -j X\nCOMMIT\n";
        let mut rs = Ruleset::load(text).unwrap();
        rs.sort_as_saved();
        rs.number_as_saved();
        let printed = rs.to_iptables_save();
        let reparsed = Ruleset::parse(&printed).unwrap();
        assert_eq!(rs.line_numbers(), reparsed.line_numbers());
        assert_eq!(reparsed.to_iptables_save(), printed);
        let names: Vec<&str> = rs.tables[0]
            .chains
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["PREROUTING", "POSTROUTING", "KUBE-A", "KUBE-B"]);
    }
}
