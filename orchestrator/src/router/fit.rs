//! Calibration of the router: the similarity weight and per-specialist
//! biases that make its probabilities match how often it is right, fit by
//! maximum likelihood (multinomial logistic regression with one shared
//! slope on the similarities and an intercept per specialist).

use std::collections::BTreeMap;

use serde::Serialize;

/// Fitted parameters and how well they fit.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    pub similarity_weight: f64,
    pub bias: BTreeMap<String, f64>,
    /// Mean negative log-likelihood of the true specialist.
    pub nll: f64,
    /// Expected calibration error (10 equal-width bins of the top
    /// probability).
    pub ece: f64,
}

/// Fits the calibration to `similarities[i][k]` (item i, specialist
/// `agents[k]`) with true specialists `truth[i]` (indices into `agents`).
pub fn fit_calibration(agents: &[String], similarities: &[Vec<f64>], truth: &[usize]) -> Calibration {
    let k = agents.len();
    // Parameters: [w, b_0 .. b_{k-1}]; b_0 is pinned at 0 (only differences
    // of biases matter), with a tiny ridge keeping the rest finite when a
    // specialist never wins.
    let mut theta = vec![10.0; 1];
    theta.extend(std::iter::repeat_n(0.0, k));
    let loss = |theta: &[f64]| -> (f64, Vec<f64>) {
        let mut grad = vec![0.0; k + 1];
        let mut nll = 0.0;
        for (s, &y) in similarities.iter().zip(truth) {
            let p = softmax(s, theta);
            nll -= p[y].max(1e-300).ln();
            for j in 0..k {
                let d = p[j] - f64::from(u8::from(j == y));
                grad[0] += d * s[j];
                grad[j + 1] += d;
            }
        }
        let n = similarities.len().max(1) as f64;
        let ridge = 1e-3;
        let mut l = nll / n;
        for (j, g) in grad.iter_mut().enumerate() {
            *g /= n;
            if j > 0 {
                l += ridge * theta[j] * theta[j];
                *g += 2.0 * ridge * theta[j];
            }
        }
        grad[1] = 0.0;
        (l, grad)
    };
    // Gradient descent with a backtracking line search: a handful of
    // parameters, a few thousand cheap steps.
    let (mut current, mut grad) = loss(&theta);
    let mut step = 1.0;
    for _ in 0..5000 {
        let norm: f64 = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
        if norm < 1e-7 {
            break;
        }
        loop {
            let candidate: Vec<f64> = theta.iter().zip(&grad).map(|(t, g)| t - step * g).collect();
            let (l, g) = loss(&candidate);
            if l <= current - 0.5 * step * norm * norm {
                theta = candidate;
                current = l;
                grad = g;
                step *= 2.0;
                break;
            }
            step /= 2.0;
            if step < 1e-12 {
                break;
            }
        }
        if step < 1e-12 {
            break;
        }
    }
    let probabilities: Vec<Vec<f64>> = similarities.iter().map(|s| softmax(s, &theta)).collect();
    let nll = probabilities
        .iter()
        .zip(truth)
        .map(|(p, &y)| -p[y].max(1e-300).ln())
        .sum::<f64>()
        / similarities.len().max(1) as f64;
    let top: Vec<(f64, bool)> = probabilities
        .iter()
        .zip(truth)
        .map(|(p, &y)| {
            let best = argmax(p);
            (p[best], best == y)
        })
        .collect();
    Calibration {
        similarity_weight: round4(theta[0]),
        bias: agents
            .iter()
            .zip(&theta[1..])
            .map(|(a, b)| (a.clone(), round4(*b)))
            .collect(),
        nll,
        ece: expected_calibration_error(&top),
    }
}

fn softmax(s: &[f64], theta: &[f64]) -> Vec<f64> {
    let logits: Vec<f64> = s
        .iter()
        .enumerate()
        .map(|(j, x)| theta[0] * x + theta[j + 1])
        .collect();
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let total: f64 = exp.iter().sum();
    exp.iter().map(|e| e / total).collect()
}

fn argmax(p: &[f64]) -> usize {
    p.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// Expected calibration error over 10 equal-width confidence bins: the
/// mean gap between confidence and accuracy, weighted by bin size.
pub fn expected_calibration_error(items: &[(f64, bool)]) -> f64 {
    let mut bins = [(0usize, 0.0f64, 0usize); 10];
    for &(confidence, right) in items {
        let b = ((confidence * 10.0) as usize).min(9);
        bins[b].0 += 1;
        bins[b].1 += confidence;
        bins[b].2 += usize::from(right);
    }
    let n = items.len().max(1) as f64;
    bins.iter()
        .filter(|b| b.0 > 0)
        .map(|&(count, conf, right)| {
            let c = count as f64;
            (conf / c - right as f64 / c).abs() * c / n
        })
        .sum()
}

fn round4(x: f64) -> f64 {
    (x * 10000.0).round() / 10000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_recovers_a_known_slope_and_bias() {
        // Items drawn from a known model: logit = 8·s + b, b = (0, 1).
        let agents = vec!["a".to_string(), "b".to_string()];
        let mut sims = Vec::new();
        let mut truth = Vec::new();
        let mut seed = 7u64;
        let mut uniform = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        for _ in 0..20000 {
            let s = vec![uniform(), uniform()];
            let pb = 1.0 / (1.0 + (-(8.0 * (s[1] - s[0]) + 1.0)).exp());
            truth.push(usize::from(uniform() < pb));
            sims.push(s);
        }
        let c = fit_calibration(&agents, &sims, &truth);
        assert!((c.similarity_weight - 8.0).abs() < 0.5, "{c:?}");
        assert!((c.bias["b"] - 1.0).abs() < 0.15, "{c:?}");
        assert!(c.ece < 0.02, "{c:?}");
    }

    #[test]
    fn calibration_error_is_the_gap_between_confidence_and_accuracy() {
        let items = [(0.9, true), (0.9, false)];
        assert!((expected_calibration_error(&items) - 0.4).abs() < 1e-9);
        assert_eq!(expected_calibration_error(&[]), 0.0);
    }
}
