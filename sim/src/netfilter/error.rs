//! Errors of loading a ruleset: every one names the line it comes from.

use thiserror::Error;

/// A problem in `iptables-save` text, with the 1-based line it was found on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    pub line: usize,
    pub kind: ParseErrorKind,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseErrorKind {
    #[error("unknown match module \"{0}\"")]
    UnknownMatch(String),
    #[error("unknown target \"{0}\"")]
    UnknownTarget(String),
    #[error("unknown option \"{option}\" for {owner}")]
    UnknownOption { owner: String, option: String },
    #[error("option \"{0}\" needs a value")]
    MissingValue(String),
    #[error("bad address or prefix \"{0}\"")]
    BadAddress(String),
    #[error("bad port or port range \"{0}\"")]
    BadPort(String),
    #[error("bad number \"{0}\"")]
    BadNumber(String),
    #[error("probability {0} is outside [0, 1]")]
    BadProbability(String),
    #[error("bad value \"{value}\" for {option}")]
    BadValue { option: String, value: String },
    #[error("unknown protocol \"{0}\"")]
    UnknownProtocol(String),
    #[error("unknown table \"{0}\"")]
    UnknownTable(String),
    #[error("\"{0}\" outside a table (missing *table line)")]
    OutsideTable(String),
    #[error("rule for undeclared chain \"{0}\"")]
    UndeclaredChain(String),
    #[error("chain \"{0}\" declared twice")]
    DuplicateChain(String),
    #[error("table \"{0}\" is not closed by COMMIT")]
    MissingCommit(String),
    #[error("unterminated quoted string")]
    UnterminatedQuote,
    #[error("\"!\" is not followed by a negatable option")]
    DanglingNegation,
    #[error("option \"{0}\" given twice")]
    DuplicateOption(String),
    #[error("unsupported command \"{0}\" (iptables-save output only has -A rules)")]
    UnsupportedCommand(String),
    #[error("unexpected text \"{0}\"")]
    Unexpected(String),
    #[error("built-in chain \"{0}\" needs a policy (ACCEPT or DROP)")]
    MissingPolicy(String),
    #[error("user chain \"{0}\" cannot have a policy")]
    UserChainPolicy(String),
    #[error("{0}")]
    Invalid(String),
}

/// A ruleset that parsed but that the kernel would refuse to load.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {kind}")]
pub struct ValidateError {
    pub line: usize,
    pub kind: ValidateErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValidateErrorKind {
    #[error("{table}: jump to missing chain \"{chain}\"")]
    MissingChain { table: String, chain: String },
    #[error("{table}: jump loop through chains {cycle}")]
    Loop { table: String, cycle: String },
    #[error("{table}: target {target} is not valid in chain \"{chain}\" ({why})")]
    TargetNotAllowed {
        table: String,
        chain: String,
        target: String,
        why: String,
    },
    #[error("{table}: match set \"{set}\" does not exist")]
    UnknownSet { table: String, set: String },
    #[error("{table}: user chains nested {depth} deep, over the limit of {limit}")]
    TooDeep {
        table: String,
        depth: usize,
        limit: usize,
    },
}

/// Either kind of load error.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LoadError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Validate(#[from] ValidateError),
}

impl LoadError {
    /// The 1-based line the error points at.
    pub fn line(&self) -> usize {
        match self {
            LoadError::Parse(e) => e.line,
            LoadError::Validate(e) => e.line,
        }
    }
}
