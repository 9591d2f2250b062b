//! Means and standard errors as lm-evaluation-harness reports them: the sample standard
//! deviation (n - 1) over the square root of n.

/// The mean of `xs` (0 for none).
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// The standard error of the mean of `xs` (`None` below two values).
pub fn stderr(xs: &[f64]) -> Option<f64> {
    let n = xs.len();
    if n < 2 {
        return None;
    }
    let m = mean(xs);
    let var = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1) as f64;
    Some((var / n as f64).sqrt())
}

/// `ln(sum(exp(row)))`, accumulated in f64.
pub fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_stderr_and_log_sum_exp() {
        assert_eq!(mean(&[1.0, 2.0, 3.0]), 2.0);
        // Sample variance 1, n = 3.
        assert!((stderr(&[1.0, 2.0, 3.0]).unwrap() - (1.0f64 / 3.0).sqrt()).abs() < 1e-15);
        assert_eq!(stderr(&[1.0]), None);
        let l = log_sum_exp(&[0.0, 1.0, 2.0]);
        assert!((l - (1.0f64 + 1f64.exp() + 2f64.exp()).ln()).abs() < 1e-12);
        // Large logits do not overflow.
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + 2f64.ln())).abs() < 1e-9);
    }
}
