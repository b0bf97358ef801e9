//! nftables: the second rule language of the netfilter engine, the one
//! kube-proxy's `nftables` mode writes.
//!
//! * [`model`]: the ruleset as data (tables, sets and maps, chains, rules
//!   as statements over expressions), printing itself as `nft` does.
//! * [`parse`] ([`lex`]): `nft list ruleset` text in, errors with line and
//!   column ([`error`]).
//! * [`print`]: the ruleset out, as `nft list ruleset` prints it
//!   (loadable by `nft -f`).
//! * [`eval`]: base chains run for a packet ([`Engine`], a
//!   [`crate::netfilter::BaseChains`]), with the kernel's load-time checks.
//!
//! Only `ip` and `inet` tables are evaluated (they see IPv4 packets);
//! tables of other families are kept as text. Like the rest of the engine,
//! this module knows nothing of Kubernetes.

pub mod error;
pub mod eval;
pub mod lex;
pub mod model;
pub mod parse;
pub mod print;

pub use error::NftError;
pub use eval::Engine;
pub use model::*;

impl Ruleset {
    /// Parse `nft list ruleset` text.
    pub fn parse(text: &str) -> Result<Ruleset, NftError> {
        parse::parse(text)
    }
}

#[cfg(test)]
mod tests;
