//! Symbolic dimensions and value facts.
//!
//! A [`Dim`] is a polynomial with integer coefficients over named symbols (`batch`, `seq`,
//! `past`, ...): enough for `past + seq`, `batch * seq` and the reshape arithmetic of exported
//! graphs, while staying exact and canonical (two equal dims compare equal).
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::dtype::DType;

/// A monomial: a sorted list of symbol names (empty = the constant term).
type Monomial = Vec<Arc<str>>;

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dim {
    terms: BTreeMap<Monomial, i64>,
}

impl Dim {
    pub fn known(v: i64) -> Dim {
        let mut terms = BTreeMap::new();
        if v != 0 {
            terms.insert(Vec::new(), v);
        }
        Dim { terms }
    }

    pub fn sym(name: &str) -> Dim {
        let mut terms = BTreeMap::new();
        terms.insert(vec![Arc::from(name)], 1);
        Dim { terms }
    }

    /// The value when the dim has no symbol.
    pub fn as_known(&self) -> Option<i64> {
        match self.terms.len() {
            0 => Some(0),
            1 => self.terms.get(&Vec::new()).copied(),
            _ => None,
        }
    }

    pub fn is_known(&self) -> bool {
        self.as_known().is_some()
    }

    /// Symbols that appear in this dim.
    pub fn symbols(&self) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = self.terms.keys().flatten().cloned().collect();
        out.sort();
        out.dedup();
        out
    }

    /// A dim whose coefficients do not fit in i64 (only broken models get there): an opaque
    /// symbol naming the expression, so that it is never mistaken for a wrapped number.
    fn overflowed(&self, op: &str, other: &Dim) -> Dim {
        Dim::sym(&format!("({self}){op}({other})"))
    }

    pub fn add(&self, other: &Dim) -> Dim {
        let mut terms = self.terms.clone();
        for (m, c) in &other.terms {
            let t = terms.entry(m.clone()).or_insert(0);
            match t.checked_add(*c) {
                Some(v) => *t = v,
                None => return self.overflowed("+", other),
            }
        }
        terms.retain(|_, c| *c != 0);
        Dim { terms }
    }

    pub fn neg(&self) -> Dim {
        let mut terms = BTreeMap::new();
        for (m, c) in &self.terms {
            match c.checked_neg() {
                Some(v) => terms.insert(m.clone(), v),
                None => return Dim::known(-1).overflowed("*", self),
            };
        }
        Dim { terms }
    }

    pub fn sub(&self, other: &Dim) -> Dim {
        self.add(&other.neg())
    }

    pub fn mul(&self, other: &Dim) -> Dim {
        let mut terms: BTreeMap<Monomial, i64> = BTreeMap::new();
        for (ma, ca) in &self.terms {
            for (mb, cb) in &other.terms {
                let mut m: Monomial = ma.iter().chain(mb.iter()).cloned().collect();
                m.sort();
                let t = terms.entry(m).or_insert(0);
                match ca.checked_mul(*cb).and_then(|p| t.checked_add(p)) {
                    Some(v) => *t = v,
                    None => return self.overflowed("*", other),
                }
            }
        }
        terms.retain(|_, c| *c != 0);
        Dim { terms }
    }

    /// Exact division: `Some(q)` with `q * other == self`, when every term divides.
    pub fn div_exact(&self, other: &Dim) -> Option<Dim> {
        if other.terms.len() != 1 {
            return if self == other { Some(Dim::known(1)) } else { None };
        }
        let (dm, dc) = other.terms.iter().next()?;
        let mut terms = BTreeMap::new();
        for (m, c) in &self.terms {
            if c.checked_rem(*dc) != Some(0) {
                return None;
            }
            let mut rest = m.clone();
            for s in dm {
                let pos = rest.iter().position(|x| x == s)?;
                rest.remove(pos);
            }
            terms.insert(rest, c.checked_div(*dc)?);
        }
        Some(Dim { terms })
    }

    /// min(self, k): known when self is, `k` when self >= k is evident (self - k has only
    /// non-negative terms: symbols are sizes), else the symbol `min(self,k)`.
    pub fn min_with(&self, k: i64) -> Dim {
        if let Some(n) = self.as_known() {
            return Dim::known(n.min(k));
        }
        if self.sub(&Dim::known(k)).terms.values().all(|&c| c >= 0) {
            return Dim::known(k);
        }
        Dim::sym(&format!("min({self},{k})"))
    }

    /// The terms: (sorted symbol names of a monomial, coefficient); the constant has none.
    pub fn terms(&self) -> Vec<(Vec<Arc<str>>, i64)> {
        self.terms.iter().map(|(m, c)| (m.clone(), *c)).collect()
    }

    /// Rename symbols (used by the printer and by shape unification).
    pub fn substitute(&self, f: &dyn Fn(&str) -> Option<Dim>) -> Dim {
        let mut out = Dim::known(0);
        for (m, c) in &self.terms {
            let mut term = Dim::known(*c);
            for s in m {
                term = term.mul(&f(s).unwrap_or_else(|| Dim::sym(s)));
            }
            out = out.add(&term);
        }
        out
    }

    /// Evaluates with concrete symbol values; `None` if a symbol is unbound.
    pub fn eval(&self, bind: &dyn Fn(&str) -> Option<i64>) -> Option<i64> {
        let mut total = 0i64;
        for (m, c) in &self.terms {
            let mut v = *c;
            for s in m {
                v = v.checked_mul(bind(s)?)?;
            }
            total = total.checked_add(v)?;
        }
        Some(total)
    }
}

impl From<i64> for Dim {
    fn from(v: i64) -> Dim {
        Dim::known(v)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return f.write_str("0");
        }
        // Symbolic terms first (higher degree first), constant last: "past+seq", "2*seq-1".
        let mut ordered: Vec<(&Monomial, &i64)> = self.terms.iter().collect();
        ordered.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(b.0)));
        for (i, (m, c)) in ordered.iter().enumerate() {
            let c = **c;
            if i > 0 {
                f.write_str(if c < 0 { "-" } else { "+" })?;
            } else if c < 0 {
                f.write_str("-")?;
            }
            let a = c.unsigned_abs();
            if m.is_empty() {
                write!(f, "{a}")?;
            } else {
                if a != 1 {
                    write!(f, "{a}*")?;
                }
                let names: Vec<&str> = m.iter().map(|s| &**s).collect();
                f.write_str(&names.join("*"))?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What is known about a value: its dtype, its shape when the rank is known, and, for small
/// integer tensors computed from shapes (`Shape -> Gather -> Concat`), its symbolic content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fact {
    pub dtype: DType,
    pub shape: Option<Vec<Dim>>,
    pub value: Option<Vec<Dim>>,
}

impl Fact {
    pub fn new(dtype: DType, shape: Vec<Dim>) -> Fact {
        Fact { dtype, shape: Some(shape), value: None }
    }

    pub fn unknown_rank(dtype: DType) -> Fact {
        Fact { dtype, shape: None, value: None }
    }

    pub fn known(dtype: DType, shape: &[usize]) -> Fact {
        Fact::new(dtype, shape.iter().map(|&d| Dim::known(d as i64)).collect())
    }

    pub fn with_value(mut self, value: Vec<Dim>) -> Fact {
        self.value = Some(value);
        self
    }

    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(|s| s.len())
    }

    /// Concrete shape, when every dim is known.
    pub fn concrete_shape(&self) -> Option<Vec<usize>> {
        self.shape.as_ref()?.iter().map(|d| d.as_known().and_then(|v| usize::try_from(v).ok())).collect()
    }
}

impl fmt::Display for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dtype)?;
        match &self.shape {
            None => f.write_str("[..]"),
            Some(s) => {
                let dims: Vec<String> = s.iter().map(|d| d.to_string()).collect();
                write!(f, "[{}]", dims.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prints_canonically() {
        let d = Dim::sym("seq").add(&Dim::sym("past"));
        assert_eq!(d.to_string(), "past+seq");
        assert_eq!(Dim::sym("seq").mul(&Dim::known(2)).sub(&Dim::known(1)).to_string(), "2*seq-1");
        assert_eq!(Dim::sym("b").mul(&Dim::sym("a")).to_string(), "a*b");
    }

    #[test]
    fn divides_exactly() {
        let bs = Dim::sym("batch").mul(&Dim::sym("seq")).mul(&Dim::known(64));
        assert_eq!(bs.div_exact(&Dim::known(16)).map(|d| d.to_string()), Some("4*batch*seq".into()));
        assert_eq!(bs.div_exact(&Dim::sym("seq")).map(|d| d.to_string()), Some("64*batch".into()));
        assert_eq!(Dim::known(7).div_exact(&Dim::known(2)), None);
    }

    /// Fuzzing regression: dims read from a broken model (a Reshape to
    /// `[0x7f00_0000_0000, 0xa_0000_0000, 4, -1]`) overflowed i64 in `mul` and panicked.
    #[test]
    fn overflow_becomes_an_opaque_symbol() {
        let big = Dim::known(0x7f00_0000_0000);
        let p = big.mul(&Dim::known(0xa_0000_0000));
        assert!(!p.is_known(), "{p}");
        assert_eq!(p.to_string(), "(139637976727552)*(42949672960)");
        assert!(!Dim::known(i64::MAX).add(&Dim::known(1)).is_known());
        assert!(!Dim::known(i64::MIN).neg().is_known());
        assert!(!Dim::known(i64::MIN).sub(&Dim::known(1)).is_known());
        assert!(!Dim::sym("s").mul(&Dim::known(i64::MAX)).add(&Dim::sym("s")).is_known());
        assert_eq!(Dim::known(i64::MIN).div_exact(&Dim::known(-1)), None);
        assert_eq!(Dim::known(5).div_exact(&Dim::known(0)), None);
        assert_eq!(Dim::known(i64::MIN).to_string(), "-9223372036854775808");
        // In range, nothing changes.
        assert_eq!(Dim::known(1 << 31).mul(&Dim::known(1 << 31)).as_known(), Some(1 << 62));
    }

    proptest! {
        #[test]
        fn arithmetic_matches_evaluation(a in -50i64..50, b in -50i64..50, x in 1i64..20, y in 1i64..20) {
            let e = Dim::sym("x").mul(&Dim::known(a)).add(&Dim::sym("y").mul(&Dim::sym("x"))).sub(&Dim::known(b));
            let bind = |s: &str| match s { "x" => Some(x), "y" => Some(y), _ => None };
            prop_assert_eq!(e.eval(&bind), Some(a * x + y * x - b));
            let sq = e.mul(&e);
            prop_assert_eq!(sq.eval(&bind), Some((a * x + y * x - b) * (a * x + y * x - b)));
            if let Some(q) = sq.div_exact(&e) { prop_assert_eq!(q.eval(&bind), e.eval(&bind)); }
        }
    }
}
