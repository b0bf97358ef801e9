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
use super::parse::{builtin_chains, is_builtin};
use super::rule::*;
use foldhash::fast::FixedState;
use rayon::prelude::*;

/// Chains by name: a fast hash (the user's own rules, not an adversary's).
type HashMap<K, V> = std::collections::HashMap<K, V, FixedState>;

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
    let by_name: HashMap<&str, usize> = t
        .chains
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let position = |name: &str| by_name.get(name).copied();
    check_table(t, |_, _, to| position(to), position)
}

impl Table {
    /// [`Table::validate`] for a table compiled as `compiled` (its jumps
    /// resolved already, as by name).
    pub(super) fn validate_compiled(
        &self,
        compiled: &super::eval::CompiledTable,
    ) -> Result<(), ValidateError> {
        check_table(
            self,
            |chain, rule, _| compiled.jump_of(chain, rule),
            |name| compiled.position(self, name),
        )
    }
}

/// The checks, with `resolve(chain, rule, name)` the position of the
/// chain rule `rule` of chain `chain` jumps or goes to (named `name`),
/// and `position(name)` that of the chain named `name` (`None` when the
/// table has no such chain; the last of the name when several have it).
fn check_table(
    t: &Table,
    resolve: impl Fn(usize, usize, &str) -> Option<usize> + Sync,
    position: impl Fn(&str) -> Option<usize>,
) -> Result<(), ValidateError> {
    // Resolve jumps: each chain's edges (target chain, rule line) are
    // `edges[starts[c]..starts[c + 1]]`. Chains apart, in parallel; the
    // first error in table order is the error.
    let per_chain: Vec<Result<Vec<(usize, usize)>, ValidateError>> = t
        .chains
        .par_iter()
        .enumerate()
        .map(|(ci, c)| chain_edges(t.name, ci, c, &resolve))
        .collect();
    let rules = t.chains.iter().map(|c| c.rules.len()).sum();
    let mut edges: Vec<(usize, usize)> = Vec::with_capacity(rules);
    let mut starts: Vec<usize> = Vec::with_capacity(t.chains.len() + 1);
    for chain_edges in per_chain {
        starts.push(edges.len());
        edges.extend(chain_edges?);
    }
    starts.push(edges.len());
    let edges_of = |c: usize| &edges[starts[c]..starts[c + 1]];
    // Loops: iterative DFS with colours (0 new, 1 on path, 2 done).
    let mut colour = vec![0u8; t.chains.len()];
    for start in 0..t.chains.len() {
        if colour[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        colour[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&(to, line)) = edges_of(node).get(*next) {
                *next += 1;
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
                        return Err(ValidateError {
                            line,
                            kind: V::Loop {
                                table: t.name.to_string(),
                                cycle: cycle.join(" -> "),
                            },
                        });
                    }
                    _ => {}
                }
            } else {
                colour[node] = 2;
                stack.pop();
            }
        }
    }
    // Hook masks: which built-in chains reach each chain.
    let builtins = builtin_chains(t.name);
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
            todo.extend(edges_of(c).iter().map(|(to, _)| *to));
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

/// The jumps of chain `c` (at `ci` in table `table`) as (target chain,
/// rule line) edges, resolved by `resolve`.
fn chain_edges(
    table: TableName,
    ci: usize,
    c: &Chain,
    resolve: &(impl Fn(usize, usize, &str) -> Option<usize> + Sync),
) -> Result<Vec<(usize, usize)>, ValidateError> {
    let mut edges = Vec::new();
    for (ri, r) in c.rules.iter().enumerate() {
        if let Some(Target::Jump(to) | Target::Goto(to)) = &r.target {
            let line = c.line_of(r);
            match resolve(ci, ri, to) {
                Some(ti) if !is_builtin(table, to) => edges.push((ti, line)),
                Some(_) => {
                    return Err(ValidateError {
                        line,
                        kind: V::TargetNotAllowed {
                            table: table.to_string(),
                            chain: c.name.clone(),
                            target: to.to_string(),
                            why: "a built-in chain cannot be a jump target".into(),
                        },
                    })
                }
                None => {
                    return Err(ValidateError {
                        line,
                        kind: V::MissingChain {
                            table: table.to_string(),
                            chain: to.to_string(),
                        },
                    })
                }
            }
        }
    }
    Ok(edges)
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
