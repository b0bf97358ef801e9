//! Errors reading or loading an nftables ruleset, each with its line and
//! column.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct NftError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl NftError {
    pub fn at(line: usize, col: usize, message: impl Into<String>) -> NftError {
        NftError {
            line,
            col,
            message: message.into(),
        }
    }
}

impl fmt::Display for NftError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}:{}: {}", self.line, self.col, self.message)
    }
}
