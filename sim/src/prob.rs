//! Exact probabilities and the choice oracle.
//!
//! Every random decision in the simulation (an iptables `statistic --mode
//! random` match, the node a load balancer hands a packet to) goes through a
//! [`Chooser`]. The simulation itself is deterministic code that asks the
//! chooser "which of these alternatives?"; it never owns a random generator.
//!
//! * [`enumerate`] runs a computation once per distinct sequence of choices
//!   (depth first, alternative 0 first) and returns each result with its exact
//!   probability. Nothing is forked: a run is simply replayed with a forced
//!   prefix of choices, so engine state never needs to be cloned.
//! * [`SeededChooser`] follows one path drawn from a seeded, platform
//!   independent generator the user controls.
//!
//! Probabilities are exact rationals ([`Probability`]). The kernel's
//! `statistic` match compares a 31-bit random number with
//! `lround(p * 2^31)`, so a rule written `--probability 0.3333333333` really
//! fires with probability 715827883/2^31; see
//! [`Probability::from_kernel_statistic`]. nftables' `numgen random mod n`
//! scales a 32-bit random number into `n` buckets that differ by one value
//! when `n` does not divide 2^32; see [`Probability::from_kernel_numgen`].

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{One, ToPrimitive, Zero};
use std::fmt;

/// An exact probability in `[0, 1]`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Probability(BigRational);

impl Probability {
    /// Certainty.
    pub fn one() -> Self {
        Probability(BigRational::one())
    }

    /// Impossibility.
    pub fn zero() -> Self {
        Probability(BigRational::zero())
    }

    /// `num / den`. Panics only on a zero denominator, which is a programming
    /// error, not an input error.
    pub fn ratio(num: u64, den: u64) -> Self {
        assert!(den != 0, "probability with zero denominator");
        assert!(num <= den, "probability above one");
        Probability(BigRational::new(BigInt::from(num), BigInt::from(den)))
    }

    /// The probability with which the kernel's `xt_statistic` random mode
    /// matches, given the 31-bit threshold iptables stored
    /// (`lround(p * 0x80000000)`): the match fires when
    /// `(random & 0x7FFFFFFF) < threshold`.
    pub fn from_kernel_statistic(threshold: u32) -> Self {
        let t = u64::from(threshold).min(1 << 31);
        Probability::ratio(t, 1 << 31)
    }

    /// The probability with which the kernel's `numgen random mod n`
    /// yields `value` (before its offset): `nft_ng_random_gen` computes
    /// `reciprocal_scale(get_random_u32(), n)`, that is `(r * n) >> 32`, so
    /// `value` is drawn by the `r` in
    /// `[ceil(value * 2^32 / n), ceil((value + 1) * 2^32 / n))`. For `n = 3`
    /// that is 1431655766 values for 0 and 1431655765 for 1 and 2.
    pub fn from_kernel_numgen(value: u32, n: u32) -> Self {
        assert!(n != 0 && value < n, "numgen value {value} outside mod {n}");
        let first_r = |k: u64| (k << 32).div_ceil(u64::from(n));
        let v = u64::from(value);
        Probability::ratio(first_r(v + 1) - first_r(v), 1 << 32)
    }

    /// `1 - self`.
    pub fn complement(&self) -> Self {
        Probability(BigRational::one() - &self.0)
    }

    /// True for zero.
    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }

    /// True for one.
    pub fn is_one(&self) -> bool {
        self.0.is_one()
    }

    /// Nearest `f64` (for display and JSON; never for decisions).
    pub fn to_f64(&self) -> f64 {
        self.0.to_f64().unwrap_or(f64::NAN)
    }

    /// The exact rational.
    pub fn as_rational(&self) -> &BigRational {
        &self.0
    }

    /// Exact numerator/denominator text such as `715827883/2147483648`.
    pub fn exact_string(&self) -> String {
        if self.0.is_integer() {
            self.0.numer().to_string()
        } else {
            format!("{}/{}", self.0.numer(), self.0.denom())
        }
    }
}

impl Probability {
    /// How far [`Probability::readable`] may round: kube-proxy writes
    /// `1/n` to ten decimals and the kernel keeps it in steps of 2^-31
    /// (about 4.7e-10); a few such choices in a row stay well inside this.
    pub const READABLE_TOLERANCE: f64 = 1e-8;

    /// For people: the simplest fraction (denominator up to 1000) within
    /// [`Probability::READABLE_TOLERANCE`], so the kernel's
    /// `715827883/2147483648` reads `1/3`; the exact value when none is
    /// that close. `1` and `0` stay words of one digit.
    pub fn readable(&self) -> String {
        if self.is_one() || self.is_zero() {
            return self.exact_string();
        }
        let x = self.to_f64();
        for den in 1..=1000u64 {
            let num = (x * den as f64).round();
            if (x - num / den as f64).abs() <= Self::READABLE_TOLERANCE {
                return format!("{}/{den}", num as u64);
            }
        }
        self.exact_string()
    }
}

impl std::ops::Mul for &Probability {
    type Output = Probability;
    fn mul(self, rhs: &Probability) -> Probability {
        Probability(&self.0 * &rhs.0)
    }
}

impl std::ops::Add for &Probability {
    type Output = Probability;
    fn add(self, rhs: &Probability) -> Probability {
        Probability(&self.0 + &rhs.0)
    }
}

impl fmt::Debug for Probability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Probability({})", self.exact_string())
    }
}

impl fmt::Display for Probability {
    /// Decimal with up to six places, trailing zeros trimmed (`1`, `0.5`,
    /// `0.333333`). Use [`Probability::exact_string`] for the exact value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = format!("{:.6}", self.to_f64());
        let s = s.trim_end_matches('0').trim_end_matches('.');
        f.write_str(s)
    }
}

/// Where a choice is made, for explanations and seeded draws.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChoicePoint {
    /// Human-readable origin, e.g. `node-a filter KUBE-SVC-X rule 3 statistic`.
    pub label: String,
}

/// The oracle every random decision asks.
pub trait Chooser {
    /// Pick one of the alternatives, whose probabilities are `weights` (they
    /// sum to one). Returns the index taken.
    fn choose(&mut self, point: &ChoicePoint, weights: &[Probability]) -> usize;
}

/// Always takes alternative `0`; for callers that know there is no
/// randomness, or tests.
#[derive(Debug, Default)]
pub struct FirstChooser;

impl Chooser for FirstChooser {
    fn choose(&mut self, _point: &ChoicePoint, weights: &[Probability]) -> usize {
        weights.iter().position(|w| !w.is_zero()).unwrap_or(0)
    }
}

/// Replays a forced prefix of choices, then takes the first non-zero
/// alternative, recording every choice point it meets.
struct ReplayChooser {
    forced: Vec<usize>,
    taken: Vec<usize>,
    /// For each choice point met (in order): its weights.
    met: Vec<Vec<Probability>>,
    probability: Probability,
}

impl Chooser for ReplayChooser {
    fn choose(&mut self, _point: &ChoicePoint, weights: &[Probability]) -> usize {
        let depth = self.taken.len();
        let pick = match self.forced.get(depth) {
            Some(&forced) => forced,
            None => weights.iter().position(|w| !w.is_zero()).unwrap_or(0),
        };
        self.probability = &self.probability * &weights[pick];
        self.taken.push(pick);
        self.met.push(weights.to_vec());
        pick
    }
}

/// Runs `run` once for every distinct sequence of choices with non-zero
/// probability and returns each result with its exact probability, in depth
/// first order (alternative 0 before alternative 1 at every point).
///
/// `run` must be deterministic given the chooser's answers: it is replayed
/// from scratch for each path.
pub fn enumerate<R>(mut run: impl FnMut(&mut dyn Chooser) -> R) -> Vec<(Probability, R)> {
    let mut results = Vec::new();
    // Stack of forced prefixes still to explore; popped last-in first-out, so
    // alternatives are pushed in reverse to keep depth-first, 0-first order.
    let mut pending: Vec<Vec<usize>> = vec![Vec::new()];
    while let Some(forced) = pending.pop() {
        let mut chooser = ReplayChooser {
            forced: forced.clone(),
            taken: Vec::new(),
            met: Vec::new(),
            probability: Probability::one(),
        };
        let result = run(&mut chooser);
        // Choice points beyond the forced prefix were answered with their first
        // non-zero alternative; queue every other non-zero alternative.
        let mut branches = Vec::new();
        for depth in forced.len()..chooser.taken.len() {
            let weights = &chooser.met[depth];
            let first = chooser.taken[depth];
            for (alt, weight) in weights.iter().enumerate().skip(first + 1) {
                if weight.is_zero() {
                    continue;
                }
                let mut prefix = chooser.taken[..depth].to_vec();
                prefix.push(alt);
                branches.push(prefix);
            }
        }
        // Deeper branches first in the result order means pushing shallow ones
        // first onto the LIFO stack... but we want: the current path, then its
        // siblings at the deepest level, and so on. Push shallow to deep so the
        // deepest is popped first; within one depth, push the higher
        // alternatives first so alternative 1 pops before 2.
        branches.sort_by(|a, b| a.len().cmp(&b.len()).then(b.cmp(a)));
        pending.extend(branches);
        results.push((chooser.probability, result));
    }
    results
}

/// Follows one path drawn from a seeded generator (ChaCha8, so the same seed
/// gives the same path on every platform).
pub struct SeededChooser {
    rng: rand_chacha::ChaCha8Rng,
}

impl SeededChooser {
    /// A chooser whose draws are fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        use rand_core::SeedableRng;
        SeededChooser {
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
        }
    }
}

impl Chooser for SeededChooser {
    /// Draws a uniform 64-bit number `r` and takes the first alternative whose
    /// cumulative probability exceeds `r / 2^64` (computed exactly).
    fn choose(&mut self, _point: &ChoicePoint, weights: &[Probability]) -> usize {
        use rand_core::Rng;
        let r = self.rng.next_u64();
        let draw = BigRational::new(BigInt::from(r), BigInt::from(1u128 << 64));
        let mut cumulative = BigRational::zero();
        let mut last_nonzero = 0;
        for (i, w) in weights.iter().enumerate() {
            if w.is_zero() {
                continue;
            }
            last_nonzero = i;
            cumulative += &w.0;
            if draw < cumulative {
                return i;
            }
        }
        last_nonzero
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_probabilities_are_the_simplest_close_fraction() {
        let third = Probability::from_kernel_statistic(715827883);
        assert_eq!(third.readable(), "1/3");
        assert_eq!(third.complement().readable(), "2/3");
        let half = Probability::ratio(1, 2);
        assert_eq!((&third * &half).readable(), "1/6");
        assert_eq!(Probability::one().readable(), "1");
        // Nothing simple within 1e-8: the exact value.
        assert_eq!(Probability::ratio(1, 1009).readable(), "1/1009");
        assert_eq!(Probability::ratio(2, 1009).readable(), "2/1009");
    }

    #[test]
    fn numgen_buckets_are_the_kernels_reciprocal_scale_shares() {
        // (r * 3) >> 32 is 0 for r below ceil(2^32 / 3) = 1431655766.
        assert_eq!(
            Probability::from_kernel_numgen(0, 3).exact_string(),
            "715827883/2147483648"
        );
        assert_eq!(
            Probability::from_kernel_numgen(1, 3).exact_string(),
            "1431655765/4294967296"
        );
        let sum = (0..3).fold(Probability::zero(), |acc, v| {
            &acc + &Probability::from_kernel_numgen(v, 3)
        });
        assert!(sum.is_one());
        assert_eq!(Probability::from_kernel_numgen(1, 3).readable(), "1/3");
        // A power of two divides 2^32: exact shares.
        assert_eq!(
            Probability::from_kernel_numgen(3, 4),
            Probability::ratio(1, 4)
        );
        assert!(Probability::from_kernel_numgen(0, 1).is_one());
    }

    fn point() -> ChoicePoint {
        ChoicePoint {
            label: "test".into(),
        }
    }

    #[test]
    fn kernel_statistic_threshold_is_exact() {
        // iptables stores lround(0.3333333333 * 2^31) = 715827882.6 -> 715827883
        let p = Probability::from_kernel_statistic(715_827_883);
        assert_eq!(p.exact_string(), "715827883/2147483648");
        assert_eq!(
            Probability::from_kernel_statistic(1 << 30),
            Probability::ratio(1, 2)
        );
    }

    #[test]
    fn enumerate_nested_binary_choices_sums_to_one() {
        let third = Probability::ratio(1, 3);
        let half = Probability::ratio(1, 2);
        let out = enumerate(|c| {
            if c.choose(&point(), &[third.clone(), third.complement()]) == 0 {
                return "a";
            }
            if c.choose(&point(), &[half.clone(), half.complement()]) == 0 {
                "b"
            } else {
                "c"
            }
        });
        let names: Vec<_> = out.iter().map(|(_, r)| *r).collect();
        assert_eq!(names, ["a", "b", "c"]);
        for (p, _) in &out {
            assert_eq!(p, &Probability::ratio(1, 3));
        }
    }

    #[test]
    fn enumerate_skips_zero_weight_branches() {
        let out = enumerate(|c| c.choose(&point(), &[Probability::zero(), Probability::one()]));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, 1);
        assert!(out[0].0.is_one());
    }

    #[test]
    fn enumerate_order_is_depth_first() {
        let half = Probability::ratio(1, 2);
        let w = [half.clone(), half.clone()];
        let out = enumerate(|c| (c.choose(&point(), &w), c.choose(&point(), &w)));
        let paths: Vec<_> = out.iter().map(|(_, r)| *r).collect();
        assert_eq!(paths, [(0, 0), (0, 1), (1, 0), (1, 1)]);
    }

    #[test]
    fn seeded_chooser_is_reproducible() {
        let w = [Probability::ratio(1, 3), Probability::ratio(2, 3)];
        let draw = |seed| {
            let mut c = SeededChooser::new(seed);
            (0..32).map(|_| c.choose(&point(), &w)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn display_trims() {
        assert_eq!(Probability::one().to_string(), "1");
        assert_eq!(Probability::ratio(1, 2).to_string(), "0.5");
        assert_eq!(Probability::ratio(1, 3).to_string(), "0.333333");
    }
}
