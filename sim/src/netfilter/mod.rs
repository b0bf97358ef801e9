//! The netfilter engine: iptables rulesets and the kernel's hook traversal.
//!
//! * [`rule`]: the ruleset as data (the contract between parser, printer and
//!   evaluator).
//! * [`parse`], [`print`], [`validate`]: `iptables-save` text in and out,
//!   and the load-time checks the kernel makes.
//! * [`error`]: load errors, each naming its line.
//! * [`intern`]: loading many similar rulesets with their equal chains
//!   parsed once and shared.
//! * [`eval`]: one table's chain walk for one packet ([`Engine`]).
//! * [`ipset`]: the host's ipsets (`ipset save` in and out) and `xt_set`
//!   membership.
//! * [`index`]: dispatch indexes that let large chains skip rules that
//!   cannot match, with results identical to a linear walk.
//! * [`hooks`]: the five hooks in kernel order, with conntrack and NAT
//!   ([`Stack`]); every rule language plugs in as base chains at
//!   priorities ([`BaseChains`]).
//! * [`tables`]: the iptables tables as such base chains.
//!
//! This module knows nothing of Kubernetes.

pub mod error;
pub mod eval;
pub mod hooks;
pub mod index;
pub mod intern;
pub mod ipset;
pub mod parse;
pub mod print;
pub mod rule;
pub mod tables;
pub mod validate;

pub use error::*;
pub use eval::*;
pub use hooks::*;
pub use rule::*;

#[cfg(test)]
mod tests;
