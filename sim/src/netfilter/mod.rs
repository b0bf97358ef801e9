//! The netfilter engine: iptables rulesets and the kernel's hook traversal.
//!
//! * [`rule`]: the ruleset as data (the contract between parser, printer and
//!   evaluator).
//!
//! This module knows nothing of Kubernetes.

pub mod error;
pub mod rule;

pub use error::*;
pub use rule::*;
