//! The statistics the decision engine and the calibration rest on, in one place:
//! binomial and Poisson-binomial tails (how likely an honest miner fails that often),
//! the Clopper-Pearson bound (what a measured rate may promise), and the normal
//! quantile (the floor of the likelihood threshold).

/// P(X ≥ k) for X ~ Binomial(n, p), summed in log space so tiny tails stay exact.
pub fn binomial_tail(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    let (nf, kf) = (n as f64, k as f64);
    let ln_choose: f64 = (1..=k)
        .map(|i| ((nf - kf + i as f64) / i as f64).ln())
        .sum();
    let mut term = (ln_choose + kf * p.ln() + (nf - kf) * (1.0 - p).ln()).exp();
    let mut sum = 0.0;
    let ratio = p / (1.0 - p);
    let mut j = k;
    loop {
        sum += term;
        if j == n || term < sum * 1e-17 {
            break;
        }
        term *= (n - j) as f64 / (j + 1) as f64 * ratio;
        j += 1;
    }
    sum.min(1.0)
}

/// P(X ≤ k) for X ~ Binomial(n, p): [`binomial_tail`]'s complement, summed from the
/// lower end so that a tiny result stays exact.
pub fn binomial_cdf(k: u64, n: u64, p: f64) -> f64 {
    if k >= n || p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return 0.0;
    }
    let (ln_p, ln_q) = (p.ln(), (1.0 - p).ln());
    let mut ln_term = n as f64 * ln_q;
    let mut total = ln_term.exp();
    for i in 0..k {
        ln_term += ((n - i) as f64 / (i + 1) as f64).ln() + ln_p - ln_q;
        total += ln_term.exp();
    }
    total.min(1.0)
}

/// P(X ≥ k) for X the number of successes of independent Bernoulli(q_i): exact dynamic
/// programming over the first 4096 positions (enough for any judgement, and bounded work).
pub fn poisson_binomial_tail(q: &[f64], k: usize) -> f64 {
    let q = &q[..q.len().min(4096)];
    if k == 0 {
        return 1.0;
    }
    if k > q.len() {
        return 0.0;
    }
    let mut dist = vec![0.0f64; q.len() + 1];
    dist[0] = 1.0;
    for (i, &p) in q.iter().enumerate() {
        for j in (1..=i + 1).rev() {
            dist[j] = dist[j] * (1.0 - p) + dist[j - 1] * p;
        }
        dist[0] *= 1.0 - p;
    }
    dist[k..].iter().sum::<f64>().min(1.0)
}

/// The one-sided 95 % Clopper-Pearson upper bound of a rate seen `k` times in `n`.
pub fn upper_bound_95(k: usize, n: usize) -> f64 {
    if n == 0 || k >= n {
        return 1.0;
    }
    // P(X <= k | n, p) falls as p grows: the p where it crosses 0.05.
    let cdf = |p: f64| binomial_cdf(k as u64, n as u64, p);
    let (mut lo, mut hi) = (k as f64 / n as f64, 1.0);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if cdf(mid) > 0.05 { lo = mid } else { hi = mid }
    }
    hi
}

/// The standard normal's upper-tail quantile: `z` with `P(Z > z) = p`.
pub fn normal_upper_quantile(p: f64) -> f64 {
    // erfc by Numerical Recipes' Chebyshev fit (relative error < 1.2e-7).
    fn erfc(x: f64) -> f64 {
        let z = x.abs();
        let t = 1.0 / (1.0 + 0.5 * z);
        let r = t
            * (-z * z - 1.265_512_23
                + t * (1.000_023_68
                    + t * (0.374_091_96
                        + t * (0.096_784_18
                            + t * (-0.186_288_06
                                + t * (0.278_868_07
                                    + t * (-1.135_203_98
                                        + t * (1.488_515_87
                                            + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
                .exp();
        if x >= 0.0 { r } else { 2.0 - r }
    }
    let tail = |z: f64| 0.5 * erfc(z / std::f64::consts::SQRT_2);
    let (mut lo, mut hi) = (-40.0, 40.0);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if tail(mid) > p { lo = mid } else { hi = mid }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_tails_are_exact() {
        assert!((binomial_tail(1, 1, 1e-3) - 1e-3).abs() < 1e-15);
        assert!((binomial_tail(2, 2, 1e-3) - 1e-6).abs() < 1e-18);
        // P(X >= 1) for n = 100, p = 1e-3 is 1 - 0.999^100.
        let want = 1.0 - 0.999f64.powi(100);
        assert!((binomial_tail(1, 100, 1e-3) - want).abs() < 1e-12);
        assert_eq!(binomial_tail(0, 5, 0.5), 1.0);
        assert_eq!(binomial_tail(6, 5, 0.5), 0.0);
    }

    #[test]
    fn the_binomial_cdf_is_the_tail_s_complement_and_exact_when_tiny() {
        for (k, n, p) in [(0, 10, 0.1), (3, 40, 0.05), (7, 20, 0.5), (2, 84, 0.3)] {
            let sum = binomial_cdf(k, n, p) + binomial_tail(k + 1, n, p);
            assert!((sum - 1.0).abs() < 1e-12, "{k} {n} {p}: {sum}");
        }
        // 0 of 336 at p = 0.089: 0.911^336, far below what 1 - tail could show.
        let want = 0.911f64.powi(336);
        assert!((binomial_cdf(0, 336, 0.089) / want - 1.0).abs() < 1e-9);
        assert_eq!(binomial_cdf(5, 5, 0.5), 1.0);
        assert_eq!(binomial_cdf(0, 5, 1.0), 0.0);
    }

    #[test]
    fn poisson_binomial_tail_matches_the_binomial() {
        // Binomial(4, 0.5): P(X >= 3) = 5/16.
        assert!((poisson_binomial_tail(&[0.5; 4], 3) - 5.0 / 16.0).abs() < 1e-12);
        assert_eq!(poisson_binomial_tail(&[0.5; 4], 0), 1.0);
        assert_eq!(poisson_binomial_tail(&[0.5; 4], 5), 0.0);
    }

    #[test]
    fn upper_bound_matches_the_rule_of_three_and_known_values() {
        // Zero in n: 1 - 0.05^(1/n), about 3/n.
        let b = upper_bound_95(0, 3000);
        assert!((b - (1.0 - 0.05f64.powf(1.0 / 3000.0))).abs() < 1e-9, "{b}");
        // 1 in 100: the exact one-sided bound is 0.0466.
        assert!((upper_bound_95(1, 100) - 0.0466).abs() < 5e-4);
        assert_eq!(upper_bound_95(5, 5), 1.0);
    }

    #[test]
    fn normal_quantiles_are_the_textbook_ones() {
        assert!((normal_upper_quantile(1e-3) - 3.0902).abs() < 1e-3);
        assert!((normal_upper_quantile(0.5)).abs() < 1e-6);
        assert!((normal_upper_quantile(0.025) - 1.95996).abs() < 1e-3);
    }
}
