//! Load-time checks the kernel (or `iptables-restore`) would make.
//!
//! * Every `-j`/`-g` names a chain of the same table (or a known target).
//! * No jump loops. The kernel's `mark_source_chains` walks every chain
//!   reachable from each hook, marking the path as it goes, and refuses the
//!   table (`ELOOP`) when a walk comes back to a chain already on its path.
//!   There is no separate nesting limit: the jump stack is sized from the
//!   table itself, so any loop-free ruleset fits. ([`ValidateErrorKind::TooDeep`]
//!   is kept for rulesets built in code that exceed [`super::eval::MAX_CALL_DEPTH`].)
//! * Targets only where their extension allows: DNAT in nat PREROUTING and
//!   OUTPUT, SNAT in nat POSTROUTING and INPUT, MASQUERADE in nat
//!   POSTROUTING, REJECT in INPUT/FORWARD/OUTPUT (any table but nat); a
//!   user chain may use a target only if every hook that reaches it allows
//!   it (`xt_check_target` with the chain's hook mask).

use super::error::{LoadError, ValidateError, ValidateErrorKind as V};
use super::eval::{name_hashes, resolve_jumps, ChainsByName};
use super::parse::builtin_chains;
use super::rule::*;
use rayon::prelude::*;

impl Ruleset {
    /// Parse and validate.
    pub fn load(text: &str) -> Result<Ruleset, LoadError> {
        let rs = Ruleset::parse(text)?;
        rs.validate()?;
        Ok(rs)
    }

    /// `xt_set`'s checkentry: every `-m set` names a set that exists on the
    /// host (the kernel resolves the name to an index when the rule is
    /// loaded, so a missing set fails the whole restore). Separate from
    /// [`Ruleset::validate`] because rules and sets are loaded separately.
    pub fn validate_sets(&self, sets: &super::ipset::IpSets) -> Result<(), ValidateError> {
        for t in &self.tables {
            for c in &t.chains {
                for r in &c.rules {
                    for m in &r.matches {
                        if let MatchKind::Set { name, .. } = &m.kind {
                            if sets.get(name).is_none() {
                                return Err(ValidateError {
                                    line: r.line,
                                    kind: V::UnknownSet {
                                        table: t.name.to_string(),
                                        set: name.clone(),
                                    },
                                });
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The checks above, reporting the first problem with its line.
    pub fn validate(&self) -> Result<(), ValidateError> {
        for t in &self.tables {
            t.validate()?;
        }
        Ok(())
    }
}

impl Table {
    /// The checks above for one table (they never look across tables).
    pub fn validate(&self) -> Result<(), ValidateError> {
        validate_table(self)
    }
}

fn validate_table(t: &Table) -> Result<(), ValidateError> {
    let names = ChainsByName::new(t, &name_hashes(t));
    let (first, to) = resolve_jumps(t, &names);
    let jumps = Jumps {
        first: &first,
        to: &to,
    };
    check_table(t, jumps, |name| names.position(name))
}

impl Table {
    /// [`Table::validate`] for a table compiled as `compiled` (its jumps
    /// resolved already, as by name).
    pub(super) fn validate_compiled(
        &self,
        compiled: &super::eval::CompiledTable,
    ) -> Result<(), ValidateError> {
        check_table(self, compiled.jumps(), |name| compiled.position(self, name))
    }
}

/// A table's jumps, resolved and flat (as the compiled table keeps them):
/// rule `r` of chain `c` jumps or goes to the chain at `to[first[c] + r]`,
/// or to none ([`NO_JUMP`]), or to a chain the table lacks ([`MISSING`]).
#[derive(Clone, Copy)]
pub(super) struct Jumps<'a> {
    pub first: &'a [u32],
    pub to: &'a [u32],
}

/// A rule that does not jump or go to a chain.
pub(super) const NO_JUMP: u32 = u32::MAX;
/// A jump to a chain the table does not have.
pub(super) const MISSING: u32 = u32::MAX - 1;

impl<'a> Jumps<'a> {
    /// Where each rule of chain `c` jumps, in rule order.
    fn of(&self, c: usize) -> &'a [u32] {
        let end = self.first.get(c + 1).map_or(self.to.len(), |&e| e as usize);
        &self.to[self.first[c] as usize..end]
    }
}

/// The checks, with `jumps` the table's jumps resolved as by name, and
/// `position(name)` the position of the chain named `name` (`None` when
/// the table has no such chain; the last of the name when several have
/// it).
fn check_table(
    t: &Table,
    jumps: Jumps,
    position: impl Fn(&str) -> Option<usize>,
) -> Result<(), ValidateError> {
    // A jump to a missing or a built-in chain: chains apart, in parallel;
    // the first in table order is the error. Jumps resolve by name, so a
    // jump names a built-in chain exactly when it lands on the (last)
    // chain of a built-in's name.
    let builtins = builtin_chains(t.name);
    let builtin_at: Vec<u32> = builtins
        .iter()
        .filter_map(|n| position(n))
        .map(|p| p as u32)
        .collect();
    let wrong = t
        .chains
        .par_iter()
        .enumerate()
        .find_map_first(|(ci, c)| jump_error(t, c, jumps.of(ci), &builtin_at));
    if let Some(e) = wrong {
        return Err(e);
    }
    // The jumps of chain `c`, as (rule, chain) edges.
    let edges_of = |c: usize| {
        jumps
            .of(c)
            .iter()
            .enumerate()
            .filter(|(_, &to)| to != NO_JUMP)
            .map(|(r, &to)| (r, to as usize))
    };
    // Loops: iterative DFS with colours (0 new, 1 on path, 2 done); each
    // stack entry a chain and the rule its walk has reached.
    let mut colour = vec![0u8; t.chains.len()];
    for start in 0..t.chains.len() {
        if colour[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        colour[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let targets = jumps.of(node);
            let Some(r) = (*next..targets.len()).find(|&r| targets[r] != NO_JUMP) else {
                colour[node] = 2;
                stack.pop();
                continue;
            };
            *next = r + 1;
            let to = targets[r] as usize;
            match colour[to] {
                0 => {
                    colour[to] = 1;
                    stack.push((to, 0));
                }
                1 => {
                    let pos = stack.iter().position(|(n, _)| *n == to).unwrap_or(0);
                    let mut cycle: Vec<&str> = stack[pos..]
                        .iter()
                        .map(|(n, _)| t.chains[*n].name.as_str())
                        .collect();
                    cycle.push(&t.chains[to].name);
                    let chain = &t.chains[node];
                    return Err(ValidateError {
                        line: chain.line_of(&chain.rules[r]),
                        kind: V::Loop {
                            table: t.name.to_string(),
                            cycle: cycle.join(" -> "),
                        },
                    });
                }
                _ => {}
            }
        }
    }
    // Hook masks: which built-in chains reach each chain.
    let mut hooks: Vec<u8> = vec![0; t.chains.len()];
    for (bit, name) in builtins.iter().enumerate() {
        let Some(start) = position(name) else {
            continue;
        };
        let mut todo = vec![start];
        while let Some(c) = todo.pop() {
            if hooks[c] & (1 << bit) != 0 {
                continue;
            }
            hooks[c] |= 1 << bit;
            todo.extend(edges_of(c).map(|(_, to)| to));
        }
    }
    let targets: Vec<Result<(), ValidateError>> = t
        .chains
        .par_iter()
        .enumerate()
        .map(|(ci, c)| {
            let reached = || {
                builtins
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| hooks[ci] & (1 << bit) != 0)
                    .map(|(_, n)| *n)
            };
            for r in &c.rules {
                if let Some(target) = &r.target {
                    check_target(t.name, &c.name, reached, target, c.line_of(r))?;
                }
            }
            Ok(())
        })
        .collect();
    targets.into_iter().collect()
}

/// The first jump of chain `c` (whose rules jump to `targets`) to a
/// chain its table lacks or to a built-in chain (one at `builtin_at`).
fn jump_error(t: &Table, c: &Chain, targets: &[u32], builtin_at: &[u32]) -> Option<ValidateError> {
    let (r, &to) = targets
        .iter()
        .enumerate()
        .find(|(_, &to)| to == MISSING || (to != NO_JUMP && builtin_at.contains(&to)))?;
    let rule = &c.rules[r];
    let name = rule.target.as_ref().map_or("", Target::name).to_string();
    let kind = if to == MISSING {
        V::MissingChain {
            table: t.name.to_string(),
            chain: name,
        }
    } else {
        V::TargetNotAllowed {
            table: t.name.to_string(),
            chain: c.name.clone(),
            target: name,
            why: "a built-in chain cannot be a jump target".into(),
        }
    };
    Some(ValidateError {
        line: c.line_of(rule),
        kind,
    })
}

/// Whether `target` may be used in `chain` of `table`, reached from the
/// built-in chains `reached` gives.
fn check_target<'a, I: Iterator<Item = &'a str>>(
    table: TableName,
    chain: &str,
    reached: impl Fn() -> I,
    target: &Target,
    line: usize,
) -> Result<(), ValidateError> {
    let (name, tables, hooks): (&str, &[TableName], &[&str]) = match target {
        Target::Dnat(_) => ("DNAT", &[TableName::Nat], &["PREROUTING", "OUTPUT"]),
        Target::Snat(_) => ("SNAT", &[TableName::Nat], &["POSTROUTING", "INPUT"]),
        Target::Masquerade { .. } => ("MASQUERADE", &[TableName::Nat], &["POSTROUTING"]),
        Target::Reject { .. } => (
            "REJECT",
            &[
                TableName::Filter,
                TableName::Mangle,
                TableName::Raw,
                TableName::Security,
            ],
            &["INPUT", "FORWARD", "OUTPUT"],
        ),
        Target::Notrack | Target::Ct { .. } => ("CT", &[TableName::Raw], &["PREROUTING", "OUTPUT"]),
        _ => return Ok(()),
    };
    let err = |why: String| ValidateError {
        line,
        kind: V::TargetNotAllowed {
            table: table.to_string(),
            chain: chain.to_string(),
            target: name.to_string(),
            why,
        },
    };
    if !tables.contains(&table) {
        return Err(err(format!(
            "only valid in the {} table",
            tables
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join("/")
        )));
    }
    if let Some(bad) = reached().find(|h| !hooks.contains(h)) {
        return Err(err(format!(
            "reached from {bad}, but only valid from {}",
            hooks.join("/")
        )));
    }
    Ok(())
}
