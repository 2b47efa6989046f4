//! How unevenly work was spread over the workers: one number, one formula.
//!
//! Lesson 04's exit table, the scenarios' `load.NAME.spread_pct` fact and
//! the `bench-lb` harness all print a spread; they must mean the same thing,
//! or the book would compare numbers that are not comparable. So the formula
//! lives here, once.
//!
//! The spread is `(max - min) / mean` in percent. 0 % is perfectly even;
//! 100 % means the busiest worker did a whole average worker's share more
//! than the idlest. A worker that did nothing counts as a zero, which is why
//! callers pass every worker they know of, not only the ones that answered.

/// `(max - min) / mean` of `counts`, in percent; 0 for no counts or all zeros.
pub fn spread_pct(counts: impl IntoIterator<Item = u64>) -> f64 {
    let counts: Vec<u64> = counts.into_iter().collect();
    let (Some(&max), Some(&min)) = (counts.iter().max(), counts.iter().min()) else {
        return 0.0;
    };
    let mean = counts.iter().sum::<u64>() as f64 / counts.len() as f64;
    if mean == 0.0 {
        0.0
    } else {
        100.0 * (max - min) as f64 / mean
    }
}

#[cfg(test)]
mod tests {
    use super::spread_pct;

    #[test]
    fn even_is_zero() {
        assert_eq!(spread_pct([25, 25, 25, 25]), 0.0);
    }

    #[test]
    fn max_minus_min_over_mean() {
        // mean 20, max - min 54: 270 %.
        assert_eq!(spread_pct([56, 2, 2]), 270.0);
    }

    #[test]
    fn an_idle_worker_counts() {
        // mean 10, max - min 20: 200 %.
        assert_eq!(spread_pct([20, 0]), 200.0);
    }

    #[test]
    fn nothing_is_zero() {
        assert_eq!(spread_pct([]), 0.0);
        assert_eq!(spread_pct([0, 0]), 0.0);
    }
}
