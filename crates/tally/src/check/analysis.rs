//! Turning recorded outcomes into verdicts. Pure functions, so every rule is unit-tested.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

/// What was observed for one id during the run.
#[derive(Debug, Clone, Default)]
pub struct IdHistory {
    /// Requests sent for this id, whatever their outcome.
    pub attempts: u64,
    /// Counts returned by successful (200) responses.
    pub acknowledged: Vec<i64>,
}

/// The counter checks for one id, given its value before and after the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IdVerdict {
    /// Acknowledged increments missing from the final value.
    pub lost: u64,
    /// Successful responses that repeated a count already returned for this id.
    pub duplicated: u64,
    /// Increments in the final value beyond the number of requests sent.
    pub over_count: u64,
}

/// Checks one id. `initial` is the value read before the run, `last` the value after it.
///
/// - lost: each acknowledged count must be ≤ the final value (counters only go up), and the final
///   value must have grown by at least the number of successful responses (each one is an
///   increment that was applied);
/// - duplicated: two acknowledgements with the same count are two requests told the same thing;
/// - over-count: the value cannot grow by more than the requests sent (nothing is retried blindly).
pub fn judge(initial: i64, last: i64, history: &IdHistory) -> IdVerdict {
    let mut counts = history.acknowledged.clone();
    counts.sort_unstable();
    let before = counts.len();
    counts.dedup();
    let duplicated = (before - counts.len()) as u64;
    let grown = last.saturating_sub(initial).max(0) as u64;
    let above_final = counts.iter().filter(|c| **c > last).count() as u64;
    let missing = (before as u64).saturating_sub(grown);
    IdVerdict {
        lost: above_final.max(missing),
        duplicated,
        over_count: grown.saturating_sub(history.attempts),
    }
}

/// The longest stretch without a successful response, from the start of the run to its end.
/// `successes` are offsets from the start, in any order.
pub fn longest_gap(successes: &mut [Duration], run: Duration) -> (Duration, Duration) {
    successes.sort_unstable();
    let mut best = (Duration::ZERO, Duration::ZERO); // (length, starts at)
    let mut previous = Duration::ZERO;
    for &at in successes.iter().chain(std::iter::once(&run)) {
        let gap = at.saturating_sub(previous);
        if gap > best.0 {
            best = (gap, previous);
        }
        previous = previous.max(at);
    }
    best
}

/// Error outcomes by kind, in a stable order for reports.
pub fn error_kinds(errors: &HashMap<String, u64>) -> Vec<(String, u64)> {
    let mut kinds: Vec<_> = errors.iter().map(|(k, v)| (k.clone(), *v)).collect();
    kinds.sort();
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(attempts: u64, acknowledged: &[i64]) -> IdHistory {
        IdHistory {
            attempts,
            acknowledged: acknowledged.to_vec(),
        }
    }

    #[test]
    fn a_clean_run_has_no_findings() {
        assert_eq!(judge(0, 3, &history(3, &[1, 2, 3])), IdVerdict::default());
        // Failed requests that did increment (ambiguous 503s) are not over-counts.
        assert_eq!(judge(0, 5, &history(5, &[1, 4])), IdVerdict::default());
        // Starting from an existing value.
        assert_eq!(judge(10, 12, &history(2, &[11, 12])), IdVerdict::default());
    }

    #[test]
    fn an_acknowledged_count_above_the_final_value_is_lost() {
        // Three acknowledged, but the final value is 2: count 3 was discarded (e.g. a failover).
        let v = judge(0, 2, &history(3, &[1, 2, 3]));
        assert_eq!(v.lost, 1);
        assert_eq!(v.duplicated, 0);
    }

    #[test]
    fn more_acknowledgements_than_growth_is_loss_even_with_low_counts() {
        // After losing counts 2 and 3 the counter went on from 1: acks 1,2,3 then 2,3 again.
        // Five increments were acknowledged, the value grew by three: two lost, two repeated.
        let v = judge(0, 3, &history(5, &[1, 2, 3, 2, 3]));
        assert_eq!(v.duplicated, 2);
        assert_eq!(v.lost, 2);
        let v = judge(0, 2, &history(4, &[1, 2, 5, 6]));
        assert_eq!(v.lost, 2);
    }

    #[test]
    fn growth_beyond_attempts_is_over_count() {
        let v = judge(0, 7, &history(5, &[1, 2, 3]));
        assert_eq!(v.over_count, 2);
        assert_eq!(v.lost, 0);
    }

    #[test]
    fn longest_gap_counts_the_edges_of_the_run() {
        let ms = Duration::from_millis;
        let mut s = vec![ms(300), ms(100), ms(200), ms(900)];
        assert_eq!(longest_gap(&mut s, ms(1000)), (ms(600), ms(300)));
        let mut late_start = vec![ms(700), ms(800)];
        assert_eq!(longest_gap(&mut late_start, ms(1000)), (ms(700), ms(0)));
        let mut none: Vec<Duration> = vec![];
        assert_eq!(longest_gap(&mut none, ms(1000)), (ms(1000), ms(0)));
        let mut tail = vec![ms(10), ms(20)];
        assert_eq!(longest_gap(&mut tail, ms(1000)), (ms(980), ms(20)));
    }
}
