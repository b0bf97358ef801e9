//! Expectations of scenario checks, evaluated against traced outcomes.

use crate::prob::Probability;

/// A probability as a check writes it: `1/3`, `0.5`, `1`. Decimals are
/// read exactly (`0.5` is 1/2).
pub fn parse_probability(s: &str) -> Option<Probability> {
    let s = s.trim();
    if let Some((n, d)) = s.split_once('/') {
        let n: u64 = n.trim().parse().ok()?;
        let d: u64 = d.trim().parse().ok()?;
        return (d != 0 && n <= d).then(|| Probability::ratio(n, d));
    }
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 18 || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let int: u64 = int.parse().ok()?;
    let den = 10u64.checked_pow(frac.len() as u32)?;
    let f: u64 = if frac.is_empty() { 0 } else { frac.parse().ok()? };
    let num = int.checked_mul(den)?.checked_add(f)?;
    (num <= den).then(|| Probability::ratio(num, den))
}
