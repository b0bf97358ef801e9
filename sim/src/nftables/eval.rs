//! Running nftables base chains for a packet, the way `nft_do_chain`
//! does, as a rule language on the hooks ([`BaseChains`]).
//!
//! Semantics (net/netfilter/nf_tables_core.c and the expressions):
//! * statements of a rule run in order; a match that fails ends the rule
//!   (`NFT_BREAK`), effects before it stay;
//! * a verdict map without an element for the key is such a failure;
//! * `accept` ends this base chain (the hook goes on with the next one),
//!   `drop` and `reject` end the packet, a NAT statement sets up the
//!   binding and accepts (`nft_nat_eval`);
//! * `jump` pushes a return point, `goto` does not; `return` or the end of
//!   a regular chain pops; at the base chain the policy decides;
//! * `numgen random mod N` asks the [`Chooser`] for one of N values, each
//!   with probability exactly 1/N (the kernel scales a 32-bit random
//!   number: `reciprocal_scale`, uniform to 2^-32; kpsim takes it as
//!   exact).
//!
//! Load-time checks are the kernel's: referenced chains and sets exist,
//! no jump loops, at most 16 nested jumps, NAT statements only in chains
//! reached from NAT base chains of the right hooks, `reject` not at
//! postrouting.

use super::error::NftError;
use super::model::*;
use crate::conntrack::{Direction, State};
use crate::netfilter::{
    AddrType, BaseChain, BaseChains, ChainOutcome, ChainRun, ChainSite, ChainStep, CtInfo,
    EvalError, EvalOptions, Event, Hook, HostFacts, MatchState, NatAction, NatRange, NatSpec,
    PacketCtx, Policy, PortRange, RejectWith, TableVerdict,
};
use crate::prob::{ChoicePoint, Chooser, Probability};
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

/// `NFT_JUMP_STACK_SIZE`.
pub const JUMP_STACK: usize = 16;

/// A loaded ruleset with names resolved and set indexes built.
#[derive(Debug, Clone)]
pub struct Engine {
    ruleset: Ruleset,
    tables: Vec<TableIndex>,
    /// Base chains: (table index in `tables`, chain position, spec).
    base: Vec<(usize, usize, BaseSpec)>,
}

#[derive(Debug, Clone)]
struct TableIndex {
    /// Position in `ruleset.tables`.
    pos: usize,
    title: String,
    chains: HashMap<String, usize>,
    sets: HashMap<String, usize>,
    /// Per set: exact keys → element position (non-interval sets with
    /// single-value keys).
    exact: Vec<HashMap<Vec<u64>, usize>>,
}

impl Engine {
    /// Resolve and check a ruleset (the kernel's load-time checks).
    pub fn new(ruleset: Ruleset) -> Result<Engine, NftError> {
        let mut tables = Vec::new();
        let mut base = Vec::new();
        for (pos, t) in ruleset.tables.iter().enumerate() {
            if t.opaque.is_some() {
                continue;
            }
            let chains: HashMap<String, usize> = t
                .chains
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.clone(), i))
                .collect();
            let sets: HashMap<String, usize> = t
                .sets
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.clone(), i))
                .collect();
            let exact = t.sets.iter().map(exact_index).collect();
            let ti = TableIndex {
                pos,
                title: t.title(),
                chains,
                sets,
                exact,
            };
            validate(t, &ti)?;
            for (ci, c) in t.chains.iter().enumerate() {
                if let Some(b) = c.base {
                    base.push((tables.len(), ci, b));
                }
            }
            tables.push(ti);
        }
        Ok(Engine {
            ruleset,
            tables,
            base,
        })
    }

    pub fn ruleset(&self) -> &Ruleset {
        &self.ruleset
    }

    fn table(&self, ti: usize) -> &Table {
        &self.ruleset.tables[self.tables[ti].pos]
    }
}

fn exact_index(s: &Set) -> HashMap<Vec<u64>, usize> {
    let mut m = HashMap::new();
    for (i, e) in s.elements.iter().enumerate() {
        if let Some(k) = e.key.iter().map(exact_number).collect::<Option<Vec<u64>>>() {
            m.entry(k).or_insert(i);
        }
    }
    m
}

/// A value that stands for exactly one number.
fn exact_number(v: &Value) -> Option<u64> {
    match v {
        Value::Addr(a) => Some(u32::from(*a) as u64),
        Value::Int(n, _) => Some(*n),
        _ => None,
    }
}

// ---- load-time checks -----------------------------------------------------

fn at(line: usize, msg: String) -> NftError {
    NftError::at(line, 1, msg)
}

/// Chains a rule can continue in: jump/goto targets, in verdicts and maps.
fn targets<'a>(t: &'a Table, r: &'a Rule) -> Vec<(&'a str, bool)> {
    let mut out = Vec::new();
    let mut verdict = |v: &'a Verdict| match v {
        Verdict::Jump(c) => out.push((c.as_str(), true)),
        Verdict::Goto(c) => out.push((c.as_str(), false)),
        _ => {}
    };
    for s in &r.stmts {
        match s {
            Stmt::Verdict(v) => verdict(v),
            Stmt::Vmap {
                map: VmapRef::Anon(elems),
                ..
            } => elems.iter().for_each(|(_, v)| verdict(v)),
            Stmt::Vmap {
                map: VmapRef::Named(n),
                ..
            } => {
                if let Some(set) = t.set(n) {
                    for e in &set.elements {
                        if let Some(Data::Verdict(v)) = &e.data {
                            verdict(v);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn validate(t: &Table, ti: &TableIndex) -> Result<(), NftError> {
    // References.
    for c in &t.chains {
        for r in &c.rules {
            for (target, _) in targets(t, r) {
                if !ti.chains.contains_key(target) {
                    return Err(at(
                        r.line,
                        format!("chain {target} does not exist in table {}", t.title()),
                    ));
                }
                if ti
                    .chains
                    .get(target)
                    .is_some_and(|&i| t.chains[i].base.is_some())
                {
                    return Err(at(r.line, format!("cannot jump to base chain {target}")));
                }
            }
            for s in &r.stmts {
                check_sets(t, r, s)?;
            }
        }
    }
    for s in &t.sets {
        for e in &s.elements {
            if let Some(Data::Verdict(Verdict::Jump(c) | Verdict::Goto(c))) = &e.data {
                if !ti.chains.contains_key(c) {
                    return Err(at(
                        s.line,
                        format!("set {}: chain {c} does not exist", s.name),
                    ));
                }
            }
        }
    }
    // Loops and depth, from every chain.
    for (ci, c) in t.chains.iter().enumerate() {
        let mut path = vec![ci];
        depth(t, ti, ci, 0, &mut path).map_err(|m| at(c.line, m))?;
    }
    // Where NAT and reject may run: the hooks and types of the base
    // chains reaching each chain.
    let mut reach: Vec<BTreeSet<(Hook, bool)>> = vec![BTreeSet::new(); t.chains.len()];
    for (ci, c) in t.chains.iter().enumerate() {
        if let Some(b) = c.base {
            let mut seen = BTreeSet::new();
            mark(
                t,
                ti,
                ci,
                (b.hook, b.kind == ChainType::Nat),
                &mut reach,
                &mut seen,
            );
        }
    }
    for (ci, c) in t.chains.iter().enumerate() {
        for r in &c.rules {
            for s in &r.stmts {
                for &(hook, nat) in &reach[ci] {
                    check_place(s, hook, nat)
                        .map_err(|m| at(r.line, format!("chain {}: {m}", c.name)))?;
                }
            }
        }
    }
    Ok(())
}

fn check_sets(t: &Table, r: &Rule, s: &Stmt) -> Result<(), NftError> {
    let (name, key, want_map) = match s {
        Stmt::Match {
            left,
            right: Rhs::Named(n),
            ..
        } => (n, left, false),
        Stmt::Vmap {
            key,
            map: VmapRef::Named(n),
        } => (n, key, true),
        Stmt::Update { set, key, .. } => (set, key, false),
        _ => return Ok(()),
    };
    let Some(set) = t.set(name) else {
        return Err(at(
            r.line,
            format!("set @{name} does not exist in table {}", t.title()),
        ));
    };
    if want_map && set.data != Some(DataType::Verdict) {
        return Err(at(r.line, format!("@{name} is not a verdict map")));
    }
    if !want_map && set.map {
        return Err(at(r.line, format!("@{name} is a map, not a set")));
    }
    if key.types().len() != set.key.len() {
        return Err(at(
            r.line,
            format!(
                "{key} has {} part(s), @{name}'s key has {}",
                key.types().len(),
                set.key.len()
            ),
        ));
    }
    Ok(())
}

fn depth(
    t: &Table,
    ti: &TableIndex,
    ci: usize,
    level: usize,
    path: &mut Vec<usize>,
) -> Result<(), String> {
    if level > JUMP_STACK {
        return Err(format!(
            "more than {JUMP_STACK} nested jumps from chain {}",
            t.chains[path[0]].name
        ));
    }
    for r in &t.chains[ci].rules {
        for (target, _) in targets(t, r) {
            let Some(&next) = ti.chains.get(target) else {
                continue;
            };
            if path.contains(&next) {
                return Err(format!("jump loop: chain {} reaches itself", target));
            }
            path.push(next);
            depth(t, ti, next, level + 1, path)?;
            path.pop();
        }
    }
    Ok(())
}

fn mark(
    t: &Table,
    ti: &TableIndex,
    ci: usize,
    place: (Hook, bool),
    reach: &mut [BTreeSet<(Hook, bool)>],
    seen: &mut BTreeSet<usize>,
) {
    if !seen.insert(ci) {
        return;
    }
    reach[ci].insert(place);
    for r in &t.chains[ci].rules {
        for (target, _) in targets(t, r) {
            if let Some(&next) = ti.chains.get(target) {
                mark(t, ti, next, place, reach, seen);
            }
        }
    }
}

fn check_place(s: &Stmt, hook: Hook, nat_chain: bool) -> Result<(), String> {
    match s {
        Stmt::Nat { kind, .. } => {
            if !nat_chain {
                return Err(format!("{s}: NAT only in nat chains"));
            }
            let ok = match kind {
                NatKind::Dnat => matches!(hook, Hook::Prerouting | Hook::Output),
                NatKind::Snat | NatKind::Masquerade => {
                    matches!(hook, Hook::Postrouting | Hook::Input)
                }
            };
            if !ok {
                return Err(format!("{s}: not valid at hook {hook}"));
            }
            Ok(())
        }
        Stmt::Reject(_) if hook == Hook::Postrouting => {
            Err(format!("{s}: not valid at hook {hook}"))
        }
        _ => Ok(()),
    }
}

// ---- running ----------------------------------------------------------------

impl BaseChains for Engine {
    fn base_chains(&self, hook: Hook, out: &mut Vec<BaseChain>) {
        for (id, (_, _, spec)) in self.base.iter().enumerate() {
            if spec.hook == hook {
                out.push(BaseChain {
                    priority: spec.priority,
                    nat: spec.kind == ChainType::Nat,
                    id,
                });
            }
        }
    }

    fn run_chain(
        &self,
        hook: Hook,
        chain: BaseChain,
        pkt: &mut PacketCtx,
        host: &dyn HostFacts,
        state: &mut MatchState,
        chooser: &mut dyn Chooser,
        opts: EvalOptions,
    ) -> Result<ChainOutcome, EvalError> {
        let (ti, ci, spec) = self.base[chain.id];
        let mut w = Walker {
            engine: self,
            ti,
            table: self.table(ti),
            pkt,
            host,
            state,
            chooser,
            opts,
            steps: Vec::new(),
        };
        let (verdict, by_policy) = w.walk(ci, spec.policy)?;
        let steps = w.steps;
        let title = self.tables[ti].title.clone();
        let name = self.table(ti).chains[ci].name.clone();
        Ok(ChainOutcome {
            verdict: verdict.clone(),
            by_policy,
            site: ChainSite::Chain {
                table: title.clone(),
                chain: name.clone(),
            },
            event: Event::Chain(ChainRun {
                hook,
                priority: spec.priority,
                table: title,
                chain: name,
                steps,
                verdict,
            }),
        })
    }
}

struct Walker<'a> {
    engine: &'a Engine,
    ti: usize,
    table: &'a Table,
    pkt: &'a mut PacketCtx,
    host: &'a dyn HostFacts,
    state: &'a mut MatchState,
    chooser: &'a mut dyn Chooser,
    opts: EvalOptions,
    steps: Vec<ChainStep>,
}

/// How a rule ended.
enum Flow {
    /// A match failed (why).
    Break(String),
    /// Every statement ran; go on with the next rule.
    Next,
    Verdict(Verdict),
    Final(TableVerdict),
}

impl Walker<'_> {
    fn walk(&mut self, base: usize, policy: Policy) -> Result<(TableVerdict, bool), EvalError> {
        let mut stack: Vec<(usize, usize)> = Vec::new();
        let (mut chain, mut pos) = (base, 0usize);
        self.enter(chain);
        loop {
            let rules = &self.table.chains[chain].rules;
            let Some(rule) = rules.get(pos) else {
                match self.pop(&mut stack, chain) {
                    Some((c, p)) => {
                        (chain, pos) = (c, p);
                        continue;
                    }
                    None => return Ok(self.policy(base, policy)),
                }
            };
            pos += 1;
            let mark = self.steps.len();
            self.steps.push(ChainStep::Rule {
                chain: self.table.chains[chain].name.clone(),
                index: pos - 1,
                line: rule.line,
                text: rule.text.clone(),
            });
            let flow = self.rule(chain, pos - 1, rule)?;
            let verdict = match flow {
                Flow::Break(why) => {
                    // Keep what the rule did before it failed, if it did
                    // anything (set a mark, drew a number); lookups that
                    // led nowhere go.
                    let acted = self.steps[mark + 1..]
                        .iter()
                        .any(|s| !matches!(s, ChainStep::Lookup { .. } | ChainStep::Rule { .. }));
                    if !acted {
                        self.steps.truncate(mark);
                        if self.opts.explain_misses {
                            self.steps.push(ChainStep::Missed {
                                chain: self.table.chains[chain].name.clone(),
                                index: pos - 1,
                                line: rule.line,
                                why,
                            });
                        }
                    }
                    continue;
                }
                Flow::Next => continue,
                Flow::Final(v) => return Ok((v, false)),
                Flow::Verdict(v) => v,
            };
            match verdict {
                Verdict::Accept => return Ok((TableVerdict::Accept, false)),
                Verdict::Drop => return Ok((TableVerdict::Drop, false)),
                Verdict::Continue => {}
                Verdict::Return => match self.pop(&mut stack, chain) {
                    Some((c, p)) => (chain, pos) = (c, p),
                    None => return Ok(self.policy(base, policy)),
                },
                Verdict::Jump(to) => {
                    if stack.len() >= JUMP_STACK {
                        return Err(EvalError::JumpStack {
                            table: self.engine.tables[self.ti].title.clone(),
                            chain: to,
                        });
                    }
                    stack.push((chain, pos));
                    chain = self.engine.tables[self.ti].chains[&to];
                    pos = 0;
                    self.enter(chain);
                }
                Verdict::Goto(to) => {
                    chain = self.engine.tables[self.ti].chains[&to];
                    pos = 0;
                    self.enter(chain);
                }
            }
        }
    }

    fn enter(&mut self, chain: usize) {
        self.steps.push(ChainStep::Enter {
            chain: self.table.chains[chain].name.clone(),
        });
    }

    fn pop(&mut self, stack: &mut Vec<(usize, usize)>, from: usize) -> Option<(usize, usize)> {
        let (c, p) = stack.pop()?;
        self.steps.push(ChainStep::Return {
            from: self.table.chains[from].name.clone(),
            to: self.table.chains[c].name.clone(),
        });
        Some((c, p))
    }

    fn policy(&mut self, base: usize, policy: Policy) -> (TableVerdict, bool) {
        self.steps.push(ChainStep::Policy {
            chain: self.table.chains[base].name.clone(),
            policy,
        });
        let v = match policy {
            Policy::Accept => TableVerdict::Accept,
            Policy::Drop => TableVerdict::Drop,
        };
        (v, true)
    }

    fn rule(&mut self, chain: usize, idx: usize, rule: &Rule) -> Result<Flow, EvalError> {
        for s in &rule.stmts {
            match s {
                Stmt::Match { left, op, right } => {
                    if !self.matches(chain, idx, left, *op, right)? {
                        return Ok(Flow::Break(format!("{s}")));
                    }
                }
                Stmt::Vmap { key, map } => {
                    let Some(k) = self.key(chain, idx, key) else {
                        return Ok(Flow::Break(format!("{key}: no such field")));
                    };
                    let hit = match map {
                        VmapRef::Anon(elems) => elems
                            .iter()
                            .find(|(ek, _)| key_matches(ek, &k, key, Op::Implicit))
                            .map(|(ek, v)| (format!("{} : {v}", Concat(ek)), v.clone())),
                        VmapRef::Named(n) => self.lookup(n, &k, key).and_then(|e| match &e.data {
                            Some(Data::Verdict(v)) => Some((e.to_string(), v.clone())),
                            _ => None,
                        }),
                    };
                    let set_name = match map {
                        VmapRef::Anon(_) => "vmap".to_string(),
                        VmapRef::Named(n) => format!("@{n}"),
                    };
                    let key_text = key_text(key, &k);
                    match hit {
                        Some((text, v)) => {
                            self.steps.push(ChainStep::Lookup {
                                set: set_name,
                                key: key_text,
                                element: Some(text),
                            });
                            return Ok(Flow::Verdict(v));
                        }
                        None => {
                            return Ok(Flow::Break(format!(
                                "no element of {set_name} for {key_text}"
                            )))
                        }
                    }
                }
                Stmt::Verdict(v) => return Ok(Flow::Verdict(v.clone())),
                Stmt::Counter { .. } => {}
                Stmt::SetMark { ct, value } => {
                    let v = match value {
                        MarkValue::Const(c) => *c,
                        MarkValue::Expr(e) => match self.key(chain, idx, e) {
                            Some(k) => k[0] as u32,
                            None => return Ok(Flow::Break(format!("{e}: no such field"))),
                        },
                    };
                    if *ct {
                        let from = self.pkt.ctmark;
                        self.pkt.ctmark = v;
                        self.steps.push(ChainStep::ConnMarkSet { from, to: v });
                    } else {
                        let from = self.pkt.mark;
                        self.pkt.mark = v;
                        self.steps.push(ChainStep::MarkSet { from, to: v });
                    }
                }
                Stmt::Nat {
                    kind,
                    addr,
                    ports,
                    flags,
                } => {
                    let has = |f: &str| flags.iter().any(|x| x == f);
                    let ports = ports.map(|(a, b)| PortRange { first: a, last: b });
                    let action = match kind {
                        NatKind::Masquerade => NatAction::Masquerade {
                            to_ports: ports,
                            random: has("random"),
                            random_fully: has("fully-random"),
                        },
                        NatKind::Dnat | NatKind::Snat => {
                            let spec = NatSpec {
                                ranges: addr
                                    .map(|(a, b)| NatRange {
                                        first_addr: a,
                                        last_addr: b,
                                        ports,
                                    })
                                    .into_iter()
                                    .collect(),
                                random: has("random"),
                                random_fully: has("fully-random"),
                                persistent: has("persistent"),
                            };
                            if *kind == NatKind::Dnat {
                                NatAction::Dnat(spec)
                            } else {
                                NatAction::Snat(spec)
                            }
                        }
                    };
                    return Ok(Flow::Final(TableVerdict::Nat(action)));
                }
                Stmt::Reject(with) => {
                    return Ok(Flow::Final(TableVerdict::Reject(reject_with(
                        with.as_deref(),
                        &self.pkt.headers,
                    ))))
                }
                Stmt::Update { set, key, .. } => {
                    let Some(k) = self.key(chain, idx, key) else {
                        return Ok(Flow::Break(format!("{key}: no such field")));
                    };
                    let timeout = self
                        .table
                        .set(set)
                        .and_then(|s| s.timeout)
                        .unwrap_or(u64::MAX / 4);
                    let expires = self.state.now.saturating_add(timeout);
                    self.state
                        .dynamic_sets
                        .entry(format!("{} {set}", self.engine.tables[self.ti].title))
                        .or_default()
                        .insert(k.clone(), expires);
                    self.steps.push(ChainStep::SetUpdate {
                        set: format!("@{set}"),
                        key: key_text(key, &k),
                    });
                }
                Stmt::Log { prefix } => self.steps.push(ChainStep::Log {
                    prefix: prefix.clone().unwrap_or_default(),
                }),
                Stmt::Notrack => {
                    self.pkt.notrack = true;
                    self.steps.push(ChainStep::Notrack);
                }
            }
        }
        Ok(Flow::Next)
    }

    fn matches(
        &mut self,
        chain: usize,
        idx: usize,
        left: &Expr,
        op: Op,
        right: &Rhs,
    ) -> Result<bool, EvalError> {
        if let Expr::Iifname | Expr::Oifname = left {
            // No device (iifname of a locally generated packet) reads as
            // the empty name (`nft_meta_store_ifname`), it does not fail.
            let name = if *left == Expr::Iifname {
                self.pkt.in_iface.as_deref()
            } else {
                self.pkt.out_iface.as_deref()
            }
            .unwrap_or("");
            let is = |v: &Value| match v {
                Value::Str(p) => match p.strip_suffix('*') {
                    Some(prefix) => name.starts_with(prefix),
                    None => name == p,
                },
                _ => false,
            };
            let hit = match right {
                Rhs::Value(v) => v.first().is_some_and(is),
                Rhs::Set(elems) => elems.iter().any(|e| e.first().is_some_and(is)),
                Rhs::Named(_) => false,
            };
            return Ok(hit != (op == Op::Ne));
        }
        let Some(k) = self.key(chain, idx, left) else {
            // The field is absent (a tcp port of a UDP packet): the
            // protocol dependency fails, whatever the operator.
            return Ok(false);
        };
        let hit = match right {
            Rhs::Value(v) => key_matches(v, &k, left, op),
            Rhs::Set(elems) => {
                let any = elems.iter().any(|e| key_matches(e, &k, left, Op::Implicit));
                any != (op == Op::Ne)
            }
            Rhs::Named(n) => {
                let found = self.lookup(n, &k, left).map(|e| e.to_string());
                let dynamic = found.is_none() && self.dynamic_hit(n, &k);
                let any = found.is_some() || dynamic;
                if any {
                    self.steps.push(ChainStep::Lookup {
                        set: format!("@{n}"),
                        key: key_text(left, &k),
                        element: Some(found.unwrap_or_else(|| key_text(left, &k))),
                    });
                }
                any != (op == Op::Ne)
            }
        };
        Ok(hit)
    }

    fn dynamic_hit(&self, set: &str, k: &[u64]) -> bool {
        let name = format!("{} {set}", self.engine.tables[self.ti].title);
        self.state
            .dynamic_sets
            .get(&name)
            .and_then(|m| m.get(k))
            .is_some_and(|exp| self.state.now < *exp)
    }

    /// The element of named set `n` matching key `k`.
    fn lookup(&self, n: &str, k: &[u64], left: &Expr) -> Option<&Element> {
        let tix = &self.engine.tables[self.ti];
        let si = *tix.sets.get(n)?;
        let set = &self.table.sets[si];
        if let Some(&i) = tix.exact[si].get(k) {
            return Some(&set.elements[i]);
        }
        set.elements.iter().find(|e| {
            e.key.iter().any(|v| exact_number(v).is_none())
                && key_matches(&e.key, k, left, Op::Implicit)
        })
    }

    /// The packet's value for each part of `e`; `None` if a field is
    /// absent.
    fn key(&mut self, chain: usize, idx: usize, e: &Expr) -> Option<Vec<u64>> {
        match e {
            Expr::Concat(parts) => {
                let mut out = Vec::with_capacity(parts.len());
                for p in parts {
                    out.push(self.field(chain, idx, p)?);
                }
                Some(out)
            }
            e => Some(vec![self.field(chain, idx, e)?]),
        }
    }

    fn field(&mut self, chain: usize, idx: usize, e: &Expr) -> Option<u64> {
        let h = self.pkt.headers;
        Some(match e {
            Expr::IpSaddr => u32::from(h.src) as u64,
            Expr::IpDaddr => u32::from(h.dst) as u64,
            Expr::IpProtocol | Expr::MetaL4proto => h.proto as u64,
            Expr::Port { proto, dport } => {
                if let Some(p) = proto {
                    if h.proto != *p {
                        return None;
                    }
                }
                transport_word(&h, *dport)? as u64
            }
            Expr::TcpFlags => {
                if h.proto != crate::wire::PROTO_TCP {
                    return None;
                }
                h.tcp_flags as u64
            }
            Expr::IcmpType => {
                if h.proto != crate::wire::PROTO_ICMP {
                    return None;
                }
                h.icmp_type as u64
            }
            Expr::MetaMark => self.pkt.mark as u64,
            Expr::CtMark => self.pkt.ctmark as u64,
            Expr::Iifname | Expr::Oifname => return None,
            Expr::CtState => ct_state_bits(&self.pkt.ct),
            Expr::CtStatus => {
                let ct = &self.pkt.ct;
                ct.original?;
                (if ct.is_snat { 16 } else { 0 }) | (if ct.is_dnat { 32 } else { 0 })
            }
            Expr::CtDirection => {
                self.pkt.ct.original?;
                u64::from(self.pkt.ct.dir == Direction::Reply)
            }
            Expr::FibType { daddr, dev } => {
                let addr = if *daddr { h.dst } else { h.src };
                let d = match dev {
                    Some(true) => self.pkt.in_iface.clone(),
                    Some(false) => self.pkt.out_iface.clone(),
                    None => None,
                };
                fib_type(self.host.addr_type(addr, d.as_deref()))
            }
            Expr::Numgen {
                random,
                modulus,
                offset,
            } => {
                let n = *modulus;
                let v = if *random {
                    let shares: Vec<Probability> = (0..n)
                        .map(|value| Probability::from_kernel_numgen(value, n))
                        .collect();
                    let pick = if n == 1 {
                        0
                    } else {
                        let point = ChoicePoint {
                            label: format!(
                                "{} {} rule {} numgen",
                                self.engine.tables[self.ti].title,
                                self.table.chains[chain].name,
                                idx + 1
                            ),
                        };
                        self.chooser.choose(&point, &shares)
                    };
                    self.steps.push(ChainStep::Random {
                        chain: self.table.chains[chain].name.clone(),
                        index: idx,
                        value: pick as u32 + offset,
                        modulus: n,
                        probability: shares[pick].clone(),
                    });
                    pick as u32
                } else {
                    let key = format!(
                        "{} {} {}",
                        self.engine.tables[self.ti].title, self.table.chains[chain].name, idx
                    );
                    let c = self.state.numgen.entry(key).or_insert(0);
                    let v = *c % n;
                    *c = c.wrapping_add(1);
                    v
                };
                (v + offset) as u64
            }
            Expr::Bitwise(inner, op, mask) => {
                let v = self.field(chain, idx, inner)? as u32;
                (match op {
                    BitOp::And => v & mask,
                    BitOp::Or => v | mask,
                    BitOp::Xor => v ^ mask,
                }) as u64
            }
            Expr::Concat(_) => return None,
        })
    }
}

/// Bytes 0-1 (`sport`) or 2-3 (`dport`) of the transport header, as
/// `th` reads them: the ports, or for ICMP its type/code and checksum.
fn transport_word(h: &crate::wire::Headers, dport: bool) -> Option<u16> {
    if h.has_ports() {
        return Some(if dport { h.dport } else { h.sport });
    }
    let bytes = h.to_bytes();
    let ihl = ((bytes.first()? & 0x0f) as usize) * 4;
    let off = ihl + if dport { 2 } else { 0 };
    Some(u16::from_be_bytes([*bytes.get(off)?, *bytes.get(off + 1)?]))
}

fn ct_state_bits(ct: &CtInfo) -> u64 {
    match ct.state {
        State::New => CT_NEW,
        State::Established => CT_ESTABLISHED,
        State::Related => CT_RELATED,
        State::Invalid => CT_INVALID,
        State::Untracked => CT_UNTRACKED,
    }
}

fn fib_type(t: AddrType) -> u64 {
    match t {
        AddrType::Unspec => 0,
        AddrType::Unicast => 1,
        AddrType::Local => 2,
        AddrType::Broadcast => 3,
        AddrType::Anycast => 4,
        AddrType::Multicast => 5,
        AddrType::Blackhole => 6,
        AddrType::Unreachable => 7,
        AddrType::Prohibit => 8,
    }
}

/// Whether the packet's key `k` matches the constant key `v`.
fn key_matches(v: &[Value], k: &[u64], left: &Expr, op: Op) -> bool {
    if v.len() != k.len() {
        return false;
    }
    let bitmask = left.is_bitmask() && op != Op::Eq;
    let all = v
        .iter()
        .zip(k)
        .all(|(val, &x)| value_matches(val, x, bitmask));
    all != (op == Op::Ne)
}

fn value_matches(v: &Value, x: u64, bitmask: bool) -> bool {
    match v {
        Value::Addr(a) => u32::from(*a) as u64 == x,
        Value::Net(n) => n.contains(&Ipv4Addr::from(x as u32)),
        Value::AddrRange(a, b) => (u32::from(*a) as u64..=u32::from(*b) as u64).contains(&x),
        Value::Int(n, _) | Value::Flags(n, _) if bitmask => x & n != 0,
        Value::Int(n, _) | Value::Flags(n, _) => x == *n,
        Value::IntRange(a, b, _) => (*a..=*b).contains(&x),
        Value::Str(_) => false,
    }
}

/// The packet's key as nft would print it for `e`.
fn key_text(e: &Expr, k: &[u64]) -> String {
    let parts: Vec<&Expr> = match e {
        Expr::Concat(p) => p.iter().collect(),
        e => vec![e],
    };
    let vals: Vec<Value> = parts
        .iter()
        .zip(k)
        .map(|(p, &x)| match p {
            Expr::IpSaddr | Expr::IpDaddr => Value::Addr(Ipv4Addr::from(x as u32)),
            p => Value::Int(x, p.int_kind()),
        })
        .collect();
    Concat(&vals).to_string()
}

/// What `reject [with ...]` sends: ICMP port unreachable by default
/// (`nft_reject_inet`/`ipv4` default), or as written.
fn reject_with(with: Option<&str>, _h: &crate::wire::Headers) -> RejectWith {
    match with {
        None => RejectWith::IcmpPortUnreachable,
        Some("tcp reset") => RejectWith::TcpReset,
        Some(w) => w
            .split_once(' ')
            .and_then(|(_, code)| super::parse::reject_code(code))
            .unwrap_or(RejectWith::IcmpPortUnreachable),
    }
}
