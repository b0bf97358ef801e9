//! Tokens of nft's ruleset syntax, each with its line and column.
//!
//! Words run until white space or one of `{ } ; , : "` (so chain names
//! such as `endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80`, addresses,
//! prefixes and ranges are single words); a lone `.` is the concatenation
//! operator. Newlines are tokens (they end rules); `#` starts a comment.

use super::error::NftError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tok {
    Word(String),
    Str(String),
    LBrace,
    RBrace,
    Semi,
    Comma,
    Colon,
    Newline,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub tok: Tok,
    pub line: usize,
    pub col: usize,
}

impl Tok {
    pub fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("{w:?}"),
            Tok::Str(s) => format!("\"{s}\""),
            Tok::LBrace => "{".into(),
            Tok::RBrace => "}".into(),
            Tok::Semi => ";".into(),
            Tok::Comma => ",".into(),
            Tok::Colon => ":".into(),
            Tok::Newline => "end of line".into(),
        }
    }
}

pub fn lex(text: &str) -> Result<Vec<Token>, NftError> {
    let mut out = Vec::new();
    for (li, line) in text.lines().enumerate() {
        let ln = li + 1;
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let col = i + 1;
            let single = match c {
                '{' => Some(Tok::LBrace),
                '}' => Some(Tok::RBrace),
                ';' => Some(Tok::Semi),
                ',' => Some(Tok::Comma),
                ':' => Some(Tok::Colon),
                _ => None,
            };
            if let Some(t) = single {
                out.push(Token {
                    tok: t,
                    line: ln,
                    col,
                });
                i += 1;
                continue;
            }
            if c.is_whitespace() {
                i += 1;
                continue;
            }
            if c == '#' {
                break;
            }
            if c == '"' {
                let start = i + 1;
                let mut j = start;
                while j < chars.len() && chars[j] != '"' {
                    j += 1;
                }
                if j >= chars.len() {
                    return Err(NftError::at(ln, col, "unterminated string"));
                }
                out.push(Token {
                    tok: Tok::Str(chars[start..j].iter().collect()),
                    line: ln,
                    col,
                });
                i = j + 1;
                continue;
            }
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && !"{};,:\"".contains(chars[i]) {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Word(chars[start..i].iter().collect()),
                line: ln,
                col,
            });
        }
        out.push(Token {
            tok: Tok::Newline,
            line: ln,
            col: chars.len() + 1,
        });
    }
    Ok(out)
}
