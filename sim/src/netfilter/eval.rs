//! Evaluating one table's chains for one packet, the way `ipt_do_table`
//! walks them.
//!
//! Semantics (from the kernel's `net/ipv4/netfilter/ip_tables.c`):
//! * rules of a chain are tried in order; the first whose every match holds
//!   applies its target;
//! * ACCEPT, DROP and REJECT end the table's traversal; so do the NAT targets
//!   (DNAT, SNAT, MASQUERADE return `NF_ACCEPT` after setting the binding);
//! * MARK, CONNMARK, LOG, NFLOG, NOTRACK and CT continue with the next rule;
//! * `-j CHAIN` pushes a return point; `-g CHAIN` does not, so a RETURN in a
//!   goto'd chain returns to whoever called the chain that did the goto;
//! * RETURN, or falling off the end of a user chain, pops the stack; in a
//!   built-in chain it applies the chain's policy.
//!
//! Every random decision (`-m statistic --mode random`) asks the
//! [`Chooser`]; the evaluator itself has no randomness.
//!
//! Large chains are dispatched through an index ([`super::index`]) that
//! only skips rules which provably cannot match; the result and the
//! explanation of matched rules are identical to a linear walk
//! (property-tested against [`EvalOptions::linear`]).

use super::error::LoadError;
use super::index::ChainIndex;
use super::ipset::IpSets;
use super::rule::*;
use super::validate::{MISSING, NO_JUMP};
use crate::conntrack::{Direction, State};
use crate::prob::{ChoicePoint, Chooser, Probability};
use crate::wire::Headers;
use foldhash::fast::FixedState;
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// The kernel's limit on nested jumps at run time is the stack of
/// `private->stacksize` return points; iptables refuses loops at load time,
/// so this bound only protects against a ruleset that bypassed validation.
pub const MAX_CALL_DEPTH: usize = 1024;

/// A loaded ruleset, with jumps resolved to chain positions and indexes
/// built for large chains.
#[derive(Debug, Clone)]
pub struct Engine {
    /// Shared by the engines of nodes whose rules are the same.
    ruleset: Arc<Ruleset>,
    /// Shared with other engines whose tables hold the same chains.
    tables: Vec<(TableName, Arc<CompiledTable>)>,
}

#[derive(Debug)]
pub(super) struct CompiledTable {
    /// Position of the table in `ruleset.tables`.
    table_pos: usize,
    /// Chain positions by the hash of the chain's name (the last chain
    /// of a name), for looking chains up by name in the table itself: a
    /// map by name would copy every name of every node's table.
    by_hash: HashMap<u64, u32, FixedState>,
    /// Two names of the table hash alike: chains are then looked up by
    /// walking the table (exact, and in practice never).
    collision: bool,
    /// Per rule of every chain in order, the resolved jump/goto chain
    /// position ([`NO_JUMP`]: none); chain `c`'s rules start at
    /// `first_rule[c]`. Flat, so a table of 60,000 chains is two
    /// allocations rather than 60,000.
    jumps: Vec<u32>,
    first_rule: Vec<u32>,
    /// Indexes of the chains large enough to have one, by chain position
    /// (a table has few such chains among tens of thousands).
    indexes: Vec<(u32, ChainIndex)>,
}

/// How a table's traversal ended.
#[derive(Clone, Debug, PartialEq)]
pub enum TableVerdict {
    Accept,
    Drop,
    Reject(RejectWith),
    /// A NAT target fired: the caller sets up the binding, then accepts.
    Nat(NatAction),
}

/// A NAT target with what it needs; the hook layer turns it into a binding.
#[derive(Clone, Debug, PartialEq)]
pub enum NatAction {
    Dnat(NatSpec),
    Snat(NatSpec),
    Masquerade {
        to_ports: Option<PortRange>,
        random: bool,
        random_fully: bool,
    },
}

/// The conntrack facts a packet carries while it is evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtInfo {
    pub state: State,
    pub dir: Direction,
    /// The connection's original and reply tuples (`--ctorigdst` etc.);
    /// `None` for INVALID/UNTRACKED packets.
    pub original: Option<crate::conntrack::Tuple>,
    pub reply: Option<crate::conntrack::Tuple>,
    pub is_dnat: bool,
    pub is_snat: bool,
}

impl CtInfo {
    pub fn untracked() -> Self {
        CtInfo {
            state: State::Untracked,
            dir: Direction::Original,
            original: None,
            reply: None,
            is_dnat: false,
            is_snat: false,
        }
    }
}

/// A packet as the evaluator sees it.
#[derive(Clone, Debug)]
pub struct PacketCtx {
    pub headers: Headers,
    pub in_iface: Option<String>,
    pub out_iface: Option<String>,
    /// `skb->mark`.
    pub mark: u32,
    /// The connection's mark (`ctmark`), written back by the caller.
    pub ctmark: u32,
    pub ct: CtInfo,
    /// Set by NOTRACK / CT --notrack in the raw table.
    pub notrack: bool,
}

/// Facts about the host the evaluator needs from its caller.
pub trait HostFacts {
    /// The address type (`addrtype` match): LOCAL for the host's own
    /// addresses, BROADCAST, MULTICAST, UNICAST otherwise. With `dev`, only
    /// addresses of that interface count as LOCAL (`--limit-iface-*`).
    fn addr_type(&self, addr: Ipv4Addr, dev: Option<&str>) -> AddrType;
}

/// Mutable per-host state some matches keep: `recent` lists, `nth`
/// counters, the simulated clock they read, and the host's ipsets (see
/// [`super::ipset`] for why they live here rather than in [`HostFacts`]).
#[derive(Clone, Debug, Default)]
pub struct MatchState {
    /// The host's ipsets (`-m set`).
    pub ipsets: IpSets,
    /// Simulated time in seconds.
    pub now: u64,
    /// `recent` list name → address → hit times (oldest first).
    pub recent: BTreeMap<String, BTreeMap<Ipv4Addr, Vec<u64>>>,
    /// `statistic --mode nth` counters per (table, chain, rule).
    pub nth: BTreeMap<(TableName, usize, usize), u32>,
    /// Elements rules added to nftables sets at run time (`update @set`):
    /// set (`ip kube-proxy affinity-…`) → key (one number per
    /// concatenated part) → the second it expires.
    pub dynamic_sets: BTreeMap<String, BTreeMap<Vec<u64>, u64>>,
    /// `numgen inc` counters per (table, chain, rule) text.
    pub numgen: BTreeMap<String, u32>,
}

/// Options for one evaluation.
#[derive(Clone, Copy, Debug, Default)]
pub struct EvalOptions {
    /// Walk every rule in order, ignoring chain indexes.
    pub linear: bool,
    /// Record rules that did not match, and the match that failed.
    pub explain_misses: bool,
}

/// One step of an evaluation, for the trace.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Traversal of `chain` starts (a built-in chain, or by jump/goto).
    EnterChain {
        table: TableName,
        chain: String,
    },
    /// A rule whose matches all held.
    Matched {
        table: TableName,
        chain: String,
        index: usize,
        line: usize,
    },
    /// A rule that did not match (only with `explain_misses`), and why.
    Missed {
        table: TableName,
        chain: String,
        index: usize,
        line: usize,
        why: String,
    },
    /// A `statistic --mode random` decision.
    Random {
        chain: String,
        index: usize,
        probability: Probability,
        matched: bool,
    },
    /// Back to the calling chain (explicit RETURN or end of chain).
    Return {
        table: TableName,
        from: String,
        to: String,
    },
    /// The built-in chain's policy decided.
    Policy {
        table: TableName,
        chain: String,
        policy: Policy,
    },
    MarkSet {
        from: u32,
        to: u32,
    },
    ConnMarkSet {
        from: u32,
        to: u32,
    },
    Log {
        target: &'static str,
        prefix: String,
    },
    Notrack,
    /// `-m recent --set/--update` recorded an address.
    RecentSet {
        name: String,
        addr: Ipv4Addr,
    },
}

impl Step {
    /// The step that gave a walk its verdict: the last rule that matched
    /// (a walk ends right after the rule whose target decides) or the
    /// built-in chain's policy. `None` for a walk that took no step (the
    /// hook's chain is absent).
    pub fn deciding(steps: &[Step]) -> Option<&Step> {
        steps
            .iter()
            .rev()
            .find(|s| matches!(s, Step::Matched { .. } | Step::Policy { .. }))
    }

    /// The chains a walk was inside when it ended, outermost first: the
    /// built-in chain, then each chain jumped or gone to that had not
    /// returned. A RETURN pops back to the chain it names, which also
    /// undoes a `-g` (the goto'd chain returns to its caller's caller).
    pub fn chain_path(steps: &[Step]) -> Vec<&str> {
        let mut path: Vec<&str> = Vec::new();
        for s in steps {
            match s {
                Step::EnterChain { chain, .. } => path.push(chain),
                Step::Return { to, .. } => {
                    while path.last().is_some_and(|c| c != to) {
                        path.pop();
                    }
                }
                // A policy decides in the built-in chain, wherever the
                // walk fell off (a goto'd chain's end returns no step).
                Step::Policy { chain, .. } => {
                    path.clear();
                    path.push(chain);
                }
                _ => {}
            }
        }
        path
    }
}

/// Why an evaluation could not complete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("table {0} is not loaded")]
    NoTable(TableName),
    #[error("{table}: no chain {chain}")]
    NoChain { table: TableName, chain: String },
    #[error("{table}: call stack deeper than {MAX_CALL_DEPTH} (jump loop?)")]
    TooDeep { table: TableName },
    #[error("line {line}: match set \"{set}\" is not defined on this host")]
    UnknownSet { line: usize, set: String },
    #[error("{table}: chain {chain}: more than 16 nested jumps")]
    JumpStack { table: String, chain: String },
}

/// Every table of `ruleset`, compiled.
fn compile_tables(ruleset: &Ruleset) -> Result<Vec<(TableName, Arc<CompiledTable>)>, EvalError> {
    ruleset
        .tables
        .iter()
        .enumerate()
        .map(|(pos, t)| Ok((t.name, Arc::new(CompiledTable::build(pos, t)?))))
        .collect()
}

impl CompiledTable {
    /// Table `table_pos` of a ruleset, compiled. It depends only on the
    /// table's chain names, their order and their rules, not on lines, so
    /// rulesets with such tables in common can share it.
    pub(super) fn build(table_pos: usize, table: &Table) -> Result<CompiledTable, EvalError> {
        let hashes = name_hashes(table);
        let by_hash = || {
            let mut by_hash: HashMap<u64, u32, FixedState> =
                HashMap::with_capacity_and_hasher(table.chains.len(), FixedState::default());
            let mut collision = false;
            for (i, &hash) in hashes.iter().enumerate() {
                if let Some(j) = by_hash.insert(hash, i as u32) {
                    collision |= table.chains[j as usize].name != table.chains[i].name;
                }
            }
            (by_hash, collision)
        };
        let ((by_hash, collision), names) =
            rayon::join(by_hash, || ChainsByName::new(table, &hashes));
        let (first_rule, jumps) = resolve_jumps(table, &names);
        // The first jump, in table order, to a chain the table lacks.
        if let Some(at) = jumps.iter().position(|&to| to == MISSING) {
            let chain = first_rule.partition_point(|&f| f as usize <= at) - 1;
            let rule = &table.chains[chain].rules[at - first_rule[chain] as usize];
            return Err(EvalError::NoChain {
                table: table.name,
                chain: rule.target.as_ref().map_or("", Target::name).to_string(),
            });
        }
        let mut ct = CompiledTable {
            table_pos,
            by_hash,
            collision,
            jumps,
            first_rule,
            indexes: Vec::new(),
        };
        ct.indexes = table
            .chains
            .par_iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i as u32, ChainIndex::build(c)?)))
            .collect();
        Ok(ct)
    }
}

/// The hashes of `table`'s chain names, in table order, as
/// [`ChainsByName`] and [`CompiledTable`]'s map take them.
pub(super) fn name_hashes(table: &Table) -> Vec<u64> {
    table
        .chains
        .par_iter()
        .map(|c| name_hash(&c.name))
        .collect()
}

/// Every rule's jump in `table`, resolved through `names` and flat (the
/// first rule of each chain, then per rule the chain it jumps or goes to:
/// [`NO_JUMP`] when none, [`MISSING`] when the table lacks it). Chains
/// apart, in parallel.
pub(super) fn resolve_jumps(table: &Table, names: &ChainsByName) -> (Vec<u32>, Vec<u32>) {
    let per_chain: Vec<Vec<u32>> = table
        .chains
        .par_iter()
        .map(|chain| {
            chain
                .rules
                .iter()
                .map(|rule| match &rule.target {
                    Some(Target::Jump(c) | Target::Goto(c)) => {
                        names.position(c).map_or(MISSING, |p| p as u32)
                    }
                    _ => NO_JUMP,
                })
                .collect()
        })
        .collect();
    let mut first = Vec::with_capacity(table.chains.len());
    let mut to = Vec::with_capacity(table.chains.iter().map(|c| c.rules.len()).sum());
    for jumps in per_chain {
        first.push(to.len() as u32);
        to.extend(jumps);
    }
    (first, to)
}

/// A table's chains by name while its jumps are resolved, each name kept
/// in its slot as a jump keeps it ([`ChainName`]: up to
/// [`CHAIN_NAME_MAX`] bytes in place): finding one reads the slot alone.
/// Through [`CompiledTable::position`] it reads the chain and then its
/// name, two more cache misses for each of a large dump's hundred
/// thousand jumps, most of the compilation's time. Names are spread over
/// shards by hash, filled in parallel.
pub(super) struct ChainsByName {
    shards: Vec<hashbrown::HashTable<NameSlot>>,
}

/// Shards of [`ChainsByName`]: a few per thread.
const NAME_SHARDS: usize = 16;

/// The shard of a name's hash: bits the tables' own probing (the low
/// bits) and tags (the top seven) leave alone.
fn name_shard(hash: u64) -> usize {
    (hash >> 40) as usize % NAME_SHARDS
}

/// A chain's name and position.
struct NameSlot {
    hash: u64,
    pos: u32,
    name: ChainName,
}

impl ChainsByName {
    /// The chains of `table`, whose names hash to `hashes`
    /// ([`name_hashes`]).
    pub(super) fn new(table: &Table, hashes: &[u64]) -> ChainsByName {
        let shards = (0..NAME_SHARDS)
            .into_par_iter()
            .map(|shard| {
                let mut slots =
                    hashbrown::HashTable::with_capacity(hashes.len() / NAME_SHARDS * 9 / 8);
                for (pos, &hash) in hashes.iter().enumerate() {
                    if name_shard(hash) == shard {
                        insert_name(&mut slots, &table.chains[pos].name, pos, hash);
                    }
                }
                slots
            })
            .collect();
        ChainsByName { shards }
    }

    /// The position of the (last) chain named `name`.
    pub(super) fn position(&self, name: &str) -> Option<usize> {
        let hash = name_hash(name);
        self.shards[name_shard(hash)]
            .find(hash, |s| {
                s.hash == hash && s.name.as_bytes() == name.as_bytes()
            })
            .map(|s| s.pos as usize)
    }
}

/// Put chain `pos`, named `name` (hashing to `hash`), in `slots`; chains
/// are put in table order, and the last of a name stays, as
/// [`CompiledTable::position`] finds it.
fn insert_name(slots: &mut hashbrown::HashTable<NameSlot>, name: &str, pos: usize, hash: u64) {
    let is = |s: &NameSlot| s.hash == hash && s.name.as_bytes() == name.as_bytes();
    match slots.entry(hash, is, |s: &NameSlot| s.hash) {
        hashbrown::hash_table::Entry::Occupied(mut slot) => slot.get_mut().pos = pos as u32,
        hashbrown::hash_table::Entry::Vacant(slot) => {
            slot.insert(NameSlot {
                hash,
                pos: pos as u32,
                name: ChainName::new(name),
            });
        }
    }
}

impl CompiledTable {
    /// The position of chain `name` in `table` (the table this was
    /// compiled from); of the last one when several have the name.
    pub(super) fn position(&self, table: &Table, name: &str) -> Option<usize> {
        if self.collision {
            return table.chains.iter().rposition(|c| c.name == name);
        }
        let at = *self.by_hash.get(&name_hash(name))? as usize;
        (table.chains[at].name == name).then_some(at)
    }

    /// Every rule's jump, resolved.
    pub(super) fn jumps(&self) -> super::validate::Jumps<'_> {
        super::validate::Jumps {
            first: &self.first_rule,
            to: &self.jumps,
        }
    }

    /// The chain rule `idx` of chain `chain` jumps or goes to, if it
    /// jumps or goes to one.
    pub(super) fn jump_of(&self, chain: usize, idx: usize) -> Option<usize> {
        let to = self.jumps[self.first_rule[chain] as usize + idx];
        (to != NO_JUMP).then_some(to as usize)
    }
}

/// A chain name's hash for [`CompiledTable`]'s lookups.
fn name_hash(name: &str) -> u64 {
    FixedState::default().hash_one(name)
}

impl CompiledTable {
    /// The index of chain `chain`, if it is large enough to have one.
    fn index(&self, chain: usize) -> Option<&ChainIndex> {
        let at = self
            .indexes
            .binary_search_by_key(&(chain as u32), |(c, _)| *c)
            .ok()?;
        Some(&self.indexes[at].1)
    }

    /// The chain rule `idx` of chain `chain` jumps or goes to.
    fn jump(&self, chain: usize, idx: usize) -> usize {
        self.jump_of(chain, idx)
            .expect("a jump's chain is resolved when compiled")
    }
}

impl Engine {
    /// Resolve jumps and build indexes. Jumps to missing chains are an error
    /// (the parser's validation reports them with lines first).
    pub fn new(ruleset: Ruleset) -> Result<Engine, EvalError> {
        let tables = compile_tables(&ruleset)?;
        Ok(Engine {
            ruleset: Arc::new(ruleset),
            tables,
        })
    }

    /// Parse `iptables-save` text, validate it and compile it: what
    /// [`Ruleset::load`] and then [`Engine::new`] do, with the validation
    /// taking each jump's chain from the compiled table rather than
    /// looking its name up again (a large dump's jumps are a hundred
    /// thousand and more).
    pub fn load(text: &str) -> Result<Engine, LoadError> {
        let ruleset = Ruleset::parse(text)?;
        let Ok(tables) = compile_tables(&ruleset) else {
            // Compiling fails only on a jump to a missing chain, which
            // the validation refuses with its line (or an earlier
            // problem first).
            ruleset.validate()?;
            unreachable!("a validated ruleset compiles");
        };
        for (_, compiled) in &tables {
            ruleset.tables[compiled.table_pos].validate_compiled(compiled)?;
        }
        Ok(Engine {
            ruleset: Arc::new(ruleset),
            tables,
        })
    }

    /// An engine whose tables were compiled before, for a ruleset whose
    /// tables have the same chains in the same order (see
    /// [`super::intern`]).
    pub(super) fn with_tables(
        ruleset: Arc<Ruleset>,
        tables: Vec<(TableName, Arc<CompiledTable>)>,
    ) -> Engine {
        Engine { ruleset, tables }
    }

    pub fn ruleset(&self) -> &Ruleset {
        &self.ruleset
    }

    pub fn has_table(&self, table: TableName) -> bool {
        self.tables.iter().any(|(t, _)| *t == table)
    }

    fn compiled(&self, table: TableName) -> Option<&CompiledTable> {
        self.tables
            .iter()
            .find(|(t, _)| *t == table)
            .map(|(_, c)| &**c)
    }

    /// Table `table`, compiled and as loaded, and the position of its
    /// chain `chain`.
    fn find(&self, table: TableName, chain: &str) -> Option<(&CompiledTable, &Table, usize)> {
        let ct = self.compiled(table)?;
        let t = &self.ruleset.tables[ct.table_pos];
        Some((ct, t, ct.position(t, chain)?))
    }

    /// The rule a step refers to.
    pub fn rule(&self, table: TableName, chain: &str, index: usize) -> Option<&Rule> {
        let (_, t, pos) = self.find(table, chain)?;
        t.chains[pos].rules.get(index)
    }

    /// A chain of a loaded table.
    pub fn chain(&self, table: TableName, chain: &str) -> Option<&Chain> {
        let (_, t, pos) = self.find(table, chain)?;
        t.chains.get(pos)
    }

    /// How many rules `chain` of `table` holds (what a linear walk that
    /// falls off its end has tried).
    pub fn chain_len(&self, table: TableName, chain: &str) -> Option<usize> {
        let (_, t, pos) = self.find(table, chain)?;
        Some(t.chains[pos].rules.len())
    }

    /// Whether `chain` exists in `table` (and the table is loaded).
    pub fn has_chain(&self, table: TableName, chain: &str) -> bool {
        self.find(table, chain).is_some()
    }

    /// Traverse built-in `chain` of `table` for `pkt`. A missing table or
    /// chain means the hook has no rules there: ACCEPT with no steps.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        table: TableName,
        chain: &str,
        pkt: &mut PacketCtx,
        host: &dyn HostFacts,
        state: &mut MatchState,
        chooser: &mut dyn Chooser,
        opts: EvalOptions,
        steps: &mut Vec<Step>,
    ) -> Result<TableVerdict, EvalError> {
        let Some((ct, t, start)) = self.find(table, chain) else {
            return Ok(TableVerdict::Accept);
        };
        let chains = &t.chains;
        let mut walker = Walker {
            table,
            chains,
            ct,
            pkt,
            host,
            state,
            chooser,
            opts,
            steps,
        };
        walker.walk(start)
    }
}

struct Walker<'a> {
    table: TableName,
    chains: &'a [Chain],
    ct: &'a CompiledTable,
    pkt: &'a mut PacketCtx,
    host: &'a dyn HostFacts,
    state: &'a mut MatchState,
    chooser: &'a mut dyn Chooser,
    opts: EvalOptions,
    steps: &'a mut Vec<Step>,
}

/// What a rule's target asks of the walk.
enum Flow {
    Continue,
    Verdict(TableVerdict),
    Return,
    Jump(usize),
    Goto(usize),
}

impl Walker<'_> {
    fn walk(&mut self, builtin: usize) -> Result<TableVerdict, EvalError> {
        // Return points: (chain, next rule position in the candidate order).
        let mut stack: Vec<(usize, usize)> = Vec::new();
        let mut chain = builtin;
        let mut pos = 0usize;
        let mut candidates = self.candidates(chain);
        self.enter(chain);
        loop {
            let Some(&rule_idx) = candidates.get(pos) else {
                // End of chain: implicit RETURN, or the policy.
                match self.pop(&mut stack, chain) {
                    Some((c, p)) => {
                        chain = c;
                        pos = p;
                        candidates = self.candidates(chain);
                        continue;
                    }
                    None => return Ok(self.policy(builtin)),
                }
            };
            pos += 1;
            let rule = &self.chains[chain].rules[rule_idx];
            if !self.rule_matches(chain, rule_idx, rule)? {
                continue;
            }
            self.steps.push(Step::Matched {
                table: self.table,
                chain: self.chains[chain].name.clone(),
                index: rule_idx,
                line: self.chains[chain].line_of(rule),
            });
            match self.apply(chain, rule_idx, rule) {
                Flow::Continue => {}
                Flow::Verdict(v) => return Ok(v),
                Flow::Return => match self.pop(&mut stack, chain) {
                    Some((c, p)) => {
                        chain = c;
                        pos = p;
                        candidates = self.candidates(chain);
                    }
                    None => return Ok(self.policy(builtin)),
                },
                Flow::Jump(to) => {
                    if stack.len() >= MAX_CALL_DEPTH {
                        return Err(EvalError::TooDeep { table: self.table });
                    }
                    stack.push((chain, pos));
                    chain = to;
                    pos = 0;
                    candidates = self.candidates(chain);
                    self.enter(chain);
                }
                Flow::Goto(to) => {
                    chain = to;
                    pos = 0;
                    candidates = self.candidates(chain);
                    self.enter(chain);
                }
            }
        }
    }

    fn enter(&mut self, chain: usize) {
        self.steps.push(Step::EnterChain {
            table: self.table,
            chain: self.chains[chain].name.clone(),
        });
    }

    fn pop(&mut self, stack: &mut Vec<(usize, usize)>, from: usize) -> Option<(usize, usize)> {
        let (c, p) = stack.pop()?;
        self.steps.push(Step::Return {
            table: self.table,
            from: self.chains[from].name.clone(),
            to: self.chains[c].name.clone(),
        });
        Some((c, p))
    }

    fn policy(&mut self, builtin: usize) -> TableVerdict {
        let chain = &self.chains[builtin];
        let policy = chain.policy.unwrap_or(Policy::Accept);
        self.steps.push(Step::Policy {
            table: self.table,
            chain: chain.name.clone(),
            policy,
        });
        match policy {
            Policy::Accept => TableVerdict::Accept,
            Policy::Drop => TableVerdict::Drop,
        }
    }

    /// The rules of `chain` that may match this packet, in order.
    fn candidates(&self, chain: usize) -> Vec<usize> {
        let n = self.chains[chain].rules.len();
        match (
            self.ct.index(chain),
            self.opts.linear || self.opts.explain_misses,
        ) {
            (Some(index), false) => index.candidates(&self.pkt.headers),
            _ => (0..n).collect(),
        }
    }

    fn rule_matches(&mut self, chain: usize, idx: usize, rule: &Rule) -> Result<bool, EvalError> {
        match self.first_failure(chain, idx, rule)? {
            None => Ok(true),
            Some(why) => {
                if self.opts.explain_misses {
                    self.steps.push(Step::Missed {
                        table: self.table,
                        chain: self.chains[chain].name.clone(),
                        index: idx,
                        line: self.chains[chain].line_of(rule),
                        why,
                    });
                }
                Ok(false)
            }
        }
    }

    /// `None` when every match holds, else a description of the first that
    /// failed. Matches are tried in the order the kernel does: the IP header
    /// part (`ip_packet_match`), then each extension in rule order.
    fn first_failure(
        &mut self,
        chain: usize,
        idx: usize,
        rule: &Rule,
    ) -> Result<Option<String>, EvalError> {
        let h = self.pkt.headers;
        if let Some(s) = &rule.source {
            if s.value.contains(&h.src) == s.negated {
                return Ok(Some(format!("source {} vs -s {}", h.src, neg_text(s))));
            }
        }
        if let Some(d) = &rule.destination {
            if d.value.contains(&h.dst) == d.negated {
                return Ok(Some(format!("destination {} vs -d {}", h.dst, neg_text(d))));
            }
        }
        if let Some(i) = &rule.in_iface {
            let name = self.pkt.in_iface.as_deref().unwrap_or("");
            if i.value.matches(name) == i.negated {
                return Ok(Some(format!("in interface {name:?}")));
            }
        }
        if let Some(o) = &rule.out_iface {
            let name = self.pkt.out_iface.as_deref().unwrap_or("");
            if o.value.matches(name) == o.negated {
                return Ok(Some(format!("out interface {name:?}")));
            }
        }
        if let Some(p) = &rule.protocol {
            if (p.value.number() == h.proto) == p.negated {
                return Ok(Some(format!(
                    "protocol {}",
                    crate::wire::proto_name(h.proto)
                )));
            }
        }
        if let Some(f) = &rule.fragment {
            // Simulated packets are never fragments.
            if !f.negated {
                return Ok(Some("not a fragment".into()));
            }
        }
        for m in &rule.matches {
            if !self.match_holds(chain, idx, rule, m)? {
                return Ok(Some(format!(
                    "{}: {}",
                    m.to_iptables_save(),
                    self.observed(&m.kind)
                )));
            }
        }
        Ok(None)
    }

    /// What the packet offered a match that failed: the values it was
    /// compared with, for `--explain-misses`.
    fn observed(&self, kind: &MatchKind) -> String {
        let h = &self.pkt.headers;
        let ports = || {
            if h.has_ports() {
                format!(
                    "{} sport {}, dport {}",
                    crate::wire::proto_name(h.proto),
                    h.sport,
                    h.dport
                )
            } else {
                format!("protocol {} (no ports)", crate::wire::proto_name(h.proto))
            }
        };
        match kind {
            MatchKind::Mark { .. } => format!("packet mark 0x{:x}", self.pkt.mark),
            MatchKind::ConnMark { .. } => format!("connection mark 0x{:x}", self.pkt.ctmark),
            MatchKind::Ports { tcp_flags, .. } => match tcp_flags {
                Some(_) if h.proto == crate::wire::PROTO_TCP => {
                    format!("{}, flags 0x{:02x}", ports(), h.tcp_flags)
                }
                _ => ports(),
            },
            MatchKind::Multiport { .. } => ports(),
            MatchKind::Icmp { .. } if h.proto == crate::wire::PROTO_ICMP => {
                format!("icmp type {}/{}", h.icmp_type, h.icmp_code)
            }
            MatchKind::Icmp { .. } => {
                format!("protocol {}", crate::wire::proto_name(h.proto))
            }
            MatchKind::AddrType {
                limit_iface_in,
                limit_iface_out,
                ..
            } => {
                let dev = self.addrtype_dev(*limit_iface_in, *limit_iface_out);
                let ty = |a: Ipv4Addr| super::print::addr_types(&[self.host.addr_type(a, dev)]);
                format!(
                    "source {} is {}, destination {} is {}",
                    h.src,
                    ty(h.src),
                    h.dst,
                    ty(h.dst)
                )
            }
            MatchKind::Conntrack(_) | MatchKind::State(_) => {
                let ct = &self.pkt.ct;
                let mut states = vec![to_ct_state(ct.state)];
                if ct.is_dnat {
                    states.push(CtState::Dnat);
                }
                if ct.is_snat {
                    states.push(CtState::Snat);
                }
                let dir = match ct.dir {
                    Direction::Original => "original",
                    Direction::Reply => "reply",
                };
                format!(
                    "ctstate {} ({dir} direction)",
                    super::print::states(&states)
                )
            }
            MatchKind::Statistic(_) => "the statistic did not fire".into(),
            MatchKind::Recent(r) => format!("not a recent hit in list {}", r.name),
            MatchKind::Set { name, .. } => format!("membership in set {name}"),
            MatchKind::Physdev(_) => {
                "bridged traffic is modelled as routed: no bridge port to match".into()
            }
            MatchKind::Comment(_) => "a comment always matches".into(),
        }
    }

    fn match_holds(
        &mut self,
        chain: usize,
        idx: usize,
        rule: &Rule,
        m: &Match,
    ) -> Result<bool, EvalError> {
        let h = self.pkt.headers;
        Ok(match &m.kind {
            MatchKind::Ports {
                sport,
                dport,
                tcp_flags,
            } => {
                // The tcp/udp/sctp match never matches another protocol.
                let proto_ok = match m.module {
                    "tcp" => h.proto == crate::wire::PROTO_TCP,
                    "udp" => h.proto == crate::wire::PROTO_UDP,
                    "sctp" => h.proto == crate::wire::PROTO_SCTP,
                    _ => h.has_ports(),
                };
                proto_ok
                    && neg_port(sport, h.sport)
                    && neg_port(dport, h.dport)
                    && tcp_flags
                        .as_ref()
                        .is_none_or(|f| ((h.tcp_flags & f.value.mask) == f.value.comp) != f.negated)
            }
            MatchKind::Icmp { icmp_type } => {
                h.proto == crate::wire::PROTO_ICMP
                    && icmp_type.as_ref().is_none_or(|t| {
                        let ok = t.value.icmp_type == 255
                            || (t.value.icmp_type == h.icmp_type
                                && t.value.code.is_none_or(|c| c == h.icmp_code));
                        ok != t.negated
                    })
            }
            MatchKind::Multiport {
                direction,
                negated,
                ports,
            } => {
                if !h.has_ports() {
                    return Ok(false);
                }
                let hit = ports.iter().any(|r| match direction {
                    PortDirection::Source => r.contains(h.sport),
                    PortDirection::Destination => r.contains(h.dport),
                    PortDirection::Either => r.contains(h.sport) || r.contains(h.dport),
                });
                hit != *negated
            }
            MatchKind::Comment(_) => true,
            MatchKind::AddrType {
                src_type,
                dst_type,
                limit_iface_in,
                limit_iface_out,
            } => {
                let dev = self.addrtype_dev(*limit_iface_in, *limit_iface_out);
                let check = |t: &Option<Box<Neg<Vec<AddrType>>>>, addr: Ipv4Addr| {
                    t.as_ref().is_none_or(|t| {
                        let at = self.host.addr_type(addr, dev);
                        t.value.contains(&at) != t.negated
                    })
                };
                check(src_type, h.src) && check(dst_type, h.dst)
            }
            MatchKind::Mark {
                negated,
                value,
                mask,
            } => ((self.pkt.mark & mask) == *value) != *negated,
            MatchKind::ConnMark {
                negated,
                value,
                mask,
            } => ((self.pkt.ctmark & mask) == *value) != *negated,
            MatchKind::Conntrack(c) => self.conntrack_holds(c),
            MatchKind::State(s) => {
                let st = to_ct_state(self.pkt.ct.state);
                s.value.contains(&st) != s.negated
            }
            MatchKind::Statistic(stat) => self.statistic(chain, idx, stat),
            MatchKind::Recent(r) => self.recent(r),
            MatchKind::Set {
                negated,
                name,
                flags,
                options,
            } => {
                let member = self
                    .state
                    .ipsets
                    .test(name, &h, flags, options.return_nomatch)
                    .ok_or_else(|| EvalError::UnknownSet {
                        line: self.chains[chain].line_of(rule),
                        set: name.clone(),
                    })?;
                member != *negated
            }
            // Bridged traffic is modelled as routed through the bridge
            // device, so physdev options have no packet to look at; they
            // hold only when negated.
            MatchKind::Physdev(opts) => opts.iter().all(|(neg, _, _)| *neg),
        })
    }

    /// The interface `--limit-iface-in/out` confines an addrtype match to.
    fn addrtype_dev(&self, limit_in: bool, limit_out: bool) -> Option<&str> {
        if limit_in {
            self.pkt.in_iface.as_deref()
        } else if limit_out {
            self.pkt.out_iface.as_deref()
        } else {
            None
        }
    }

    fn conntrack_holds(&self, c: &ConntrackMatch) -> bool {
        let ct = &self.pkt.ct;
        if let Some(s) = &c.ctstate {
            let mut hit = s.value.contains(&to_ct_state(ct.state));
            hit |= ct.is_snat && s.value.contains(&CtState::Snat);
            hit |= ct.is_dnat && s.value.contains(&CtState::Dnat);
            if hit == s.negated {
                return false;
            }
        }
        let tuple_check = |o: &Option<Neg<ipnet::Ipv4Net>>, addr: Option<Ipv4Addr>| {
            o.as_ref().is_none_or(|n| match addr {
                Some(a) => n.value.contains(&a) != n.negated,
                None => false,
            })
        };
        let port_check = |o: &Option<Neg<PortRange>>, port: Option<u16>| {
            o.as_ref().is_none_or(|n| match port {
                Some(p) => n.value.contains(p) != n.negated,
                None => false,
            })
        };
        let orig = ct.original;
        let repl = ct.reply;
        if let Some(p) = &c.ctproto {
            match orig {
                Some(t) if (t.proto == p.value.number()) != p.negated => {}
                _ => return false,
            }
        }
        if let Some(d) = c.ctdir {
            let want = match d {
                CtDir::Original => Direction::Original,
                CtDir::Reply => Direction::Reply,
            };
            if ct.dir != want {
                return false;
            }
        }
        tuple_check(&c.ctorigsrc, orig.map(|t| t.src))
            && tuple_check(&c.ctorigdst, orig.map(|t| t.dst))
            && tuple_check(&c.ctreplsrc, repl.map(|t| t.src))
            && tuple_check(&c.ctrepldst, repl.map(|t| t.dst))
            && port_check(&c.ctorigsrcport, orig.map(|t| t.sport))
            && port_check(&c.ctorigdstport, orig.map(|t| t.dport))
            && port_check(&c.ctreplsrcport, repl.map(|t| t.sport))
            && port_check(&c.ctrepldstport, repl.map(|t| t.dport))
    }

    /// `xt_statistic`: random mode asks the chooser (alternative 0 = the
    /// match fires, with probability threshold/2^31); nth mode keeps the
    /// kernel's counter (`every` stored as N-1, counter starting at
    /// `packet`, match when the counter wraps to 0).
    fn statistic(&mut self, chain: usize, idx: usize, stat: &Statistic) -> bool {
        match stat {
            Statistic::Random {
                negated, threshold, ..
            } => {
                let p = Probability::from_kernel_statistic(*threshold);
                let fired = if p.is_one() {
                    true
                } else if p.is_zero() {
                    false
                } else {
                    let q = p.complement();
                    let point = ChoicePoint {
                        label: format!(
                            "{} {} rule {} statistic",
                            self.table,
                            self.chains[chain].name,
                            idx + 1
                        ),
                    };
                    let pick = self.chooser.choose(&point, &[p.clone(), q]);
                    self.steps.push(Step::Random {
                        chain: self.chains[chain].name.clone(),
                        index: idx,
                        probability: p,
                        matched: pick == 0,
                    });
                    pick == 0
                };
                fired != *negated
            }
            Statistic::Nth {
                negated,
                every,
                packet,
            } => {
                let every_k = every.saturating_sub(1);
                let counter = self
                    .state
                    .nth
                    .entry((self.table, chain, idx))
                    .or_insert(*packet);
                let next = if *counter == every_k { 0 } else { *counter + 1 };
                *counter = next;
                (next == 0) != *negated
            }
        }
    }

    /// `xt_recent`: lists of addresses with hit times.
    fn recent(&mut self, r: &RecentMatch) -> bool {
        let h = self.pkt.headers;
        let raw = match r.side {
            RecentSide::Source => h.src,
            RecentSide::Dest => h.dst,
        };
        let addr = Ipv4Addr::from(u32::from(raw) & u32::from(r.mask));
        let now = self.state.now;
        let list = self.state.recent.entry(r.name.clone()).or_default();
        let hit = match r.mode {
            RecentMode::Set => {
                list.entry(addr).or_default().push(now);
                self.steps.push(Step::RecentSet {
                    name: r.name.clone(),
                    addr,
                });
                true
            }
            RecentMode::Remove => list.remove(&addr).is_some(),
            RecentMode::Rcheck | RecentMode::Update => {
                let matched = match list.get_mut(&addr) {
                    None => false,
                    Some(times) => {
                        if r.reap {
                            if let Some(s) = r.seconds {
                                times.retain(|&t| now.saturating_sub(t) <= u64::from(s));
                            }
                        }
                        let recent_hits = times
                            .iter()
                            .filter(|&&t| {
                                r.seconds
                                    .is_none_or(|s| now.saturating_sub(t) <= u64::from(s))
                            })
                            .count();
                        let needed = r.hitcount.unwrap_or(1).max(1) as usize;
                        !times.is_empty() && recent_hits >= needed
                    }
                };
                if r.mode == RecentMode::Update && matched {
                    list.entry(addr).or_default().push(now);
                }
                if list.get(&addr).is_some_and(|t| t.is_empty()) {
                    list.remove(&addr);
                }
                matched
            }
        };
        hit != r.negated
    }

    fn apply(&mut self, chain: usize, idx: usize, rule: &Rule) -> Flow {
        let Some(target) = &rule.target else {
            return Flow::Continue;
        };
        match target {
            Target::Accept => Flow::Verdict(TableVerdict::Accept),
            Target::Drop => Flow::Verdict(TableVerdict::Drop),
            Target::Reject { with } => Flow::Verdict(TableVerdict::Reject(with.clone())),
            Target::Return => Flow::Return,
            Target::Jump(_) => Flow::Jump(self.ct.jump(chain, idx)),
            Target::Goto(_) => Flow::Goto(self.ct.jump(chain, idx)),
            Target::Mark { value, mask, .. } => {
                let from = self.pkt.mark;
                self.pkt.mark = (from & !mask) ^ value;
                self.steps.push(Step::MarkSet {
                    from,
                    to: self.pkt.mark,
                });
                Flow::Continue
            }
            Target::Connmark(op) => {
                let from_ct = self.pkt.ctmark;
                match *op {
                    ConnmarkOp::Set { value, mask } => {
                        self.pkt.ctmark = (from_ct & !mask) ^ value;
                    }
                    ConnmarkOp::Save { nfmask, ctmask } => {
                        self.pkt.ctmark = (from_ct & !ctmask) ^ (self.pkt.mark & nfmask);
                    }
                    ConnmarkOp::Restore { nfmask, ctmask } => {
                        let from = self.pkt.mark;
                        self.pkt.mark = (from & !nfmask) ^ (from_ct & ctmask);
                        self.steps.push(Step::MarkSet {
                            from,
                            to: self.pkt.mark,
                        });
                    }
                }
                if self.pkt.ctmark != from_ct {
                    self.steps.push(Step::ConnMarkSet {
                        from: from_ct,
                        to: self.pkt.ctmark,
                    });
                }
                Flow::Continue
            }
            Target::Dnat(spec) => Flow::Verdict(TableVerdict::Nat(NatAction::Dnat(spec.clone()))),
            Target::Snat(spec) => Flow::Verdict(TableVerdict::Nat(NatAction::Snat(spec.clone()))),
            Target::Masquerade {
                to_ports,
                random,
                random_fully,
            } => Flow::Verdict(TableVerdict::Nat(NatAction::Masquerade {
                to_ports: *to_ports,
                random: *random,
                random_fully: *random_fully,
            })),
            Target::Log { prefix, .. } => {
                self.steps.push(Step::Log {
                    target: "LOG",
                    prefix: prefix.clone().unwrap_or_default(),
                });
                Flow::Continue
            }
            Target::Nflog { prefix, .. } => {
                self.steps.push(Step::Log {
                    target: "NFLOG",
                    prefix: prefix.clone().unwrap_or_default(),
                });
                Flow::Continue
            }
            Target::Notrack => {
                self.pkt.notrack = true;
                self.steps.push(Step::Notrack);
                Flow::Continue
            }
            Target::Ct { notrack, .. } => {
                if *notrack {
                    self.pkt.notrack = true;
                    self.steps.push(Step::Notrack);
                }
                Flow::Continue
            }
        }
    }
}

fn neg_text(n: &Neg<ipnet::Ipv4Net>) -> String {
    if n.negated {
        format!("! {}", n.value)
    } else {
        n.value.to_string()
    }
}

fn neg_port(p: &Option<Neg<PortRange>>, port: u16) -> bool {
    p.as_ref()
        .is_none_or(|p| p.value.contains(port) != p.negated)
}

fn to_ct_state(s: State) -> CtState {
    match s {
        State::New => CtState::New,
        State::Established => CtState::Established,
        State::Related => CtState::Related,
        State::Invalid => CtState::Invalid,
        State::Untracked => CtState::Untracked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(name: &str) -> Chain {
        Chain {
            name: name.to_string(),
            policy: None,
            counters: Counters::default(),
            rules: Vec::new().into(),
            line: 0,
            rule_line_offset: 0,
        }
    }

    /// Jumps are resolved as [`CompiledTable::position`] finds chains by
    /// name: names of every length up to the longest kept in place and
    /// past it, and a name given to two chains (only a table built in
    /// code has that), the last of them.
    #[test]
    fn chains_by_name_find_what_position_finds() {
        let long = "A".repeat(CHAIN_NAME_MAX + 5);
        let mut names: Vec<String> = (0..=CHAIN_NAME_MAX + 1).map(|n| "B".repeat(n)).collect();
        names.extend([
            long.clone(),
            "KUBE-MARK-MASQ".into(),
            "X".into(),
            long.clone(),
        ]);
        names.push("X".into());
        let table = Table {
            name: TableName::Nat,
            chains: names.iter().map(|n| chain(n)).collect(),
            trailer_comments: Vec::new(),
            line: 0,
        };
        let compiled = CompiledTable::build(0, &table).unwrap();
        let by_name = ChainsByName::new(&table, &name_hashes(&table));
        let missing = ["Y", "KUBE-MARK-MAS", "KUBE-MARK-MASQQ", &long[1..], "B\0"];
        for name in names.iter().map(String::as_str).chain(missing) {
            assert_eq!(
                by_name.position(name),
                compiled.position(&table, name),
                "{name:?}"
            );
        }
        assert_eq!(by_name.position("X"), Some(names.len() - 1));
        assert_eq!(by_name.position(&long), Some(names.len() - 2));
        assert_eq!(by_name.position("Y"), None);
    }
}
