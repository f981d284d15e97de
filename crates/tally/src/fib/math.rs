//! Fibonacci numbers, exact: fast doubling on big integers, O(log n) multiplications.
//! (The original worker's naive recursion is why it refused indexes above 40.)

use num_bigint::BigUint;

/// F(n) with F(0) = 0, F(1) = 1.
pub fn fib(n: u32) -> BigUint {
    pair(n).0
}

/// (F(k), F(k+1)) by F(2k) = F(k)·(2F(k+1) − F(k)) and F(2k+1) = F(k)² + F(k+1)².
fn pair(k: u32) -> (BigUint, BigUint) {
    if k == 0 {
        return (BigUint::from(0u32), BigUint::from(1u32));
    }
    let (a, b) = pair(k / 2);
    let c = &a * (&b * 2u32 - &a);
    let d = &a * &a + &b * &b;
    if k % 2 == 0 {
        (c, d)
    } else {
        let e = &c + &d;
        (d, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An independent computation: plain iteration.
    fn by_iteration(n: u32) -> BigUint {
        let (mut a, mut b) = (BigUint::from(0u32), BigUint::from(1u32));
        for _ in 0..n {
            let next = &a + &b;
            a = std::mem::replace(&mut b, next);
        }
        a
    }

    #[test]
    fn small_values() {
        let first: Vec<String> = (0..12).map(|n| fib(n).to_string()).collect();
        assert_eq!(
            first,
            ["0", "1", "1", "2", "3", "5", "8", "13", "21", "34", "55", "89"]
        );
        assert_eq!(fib(40).to_string(), "102334155");
        assert_eq!(fib(100).to_string(), "354224848179261915075");
    }

    #[test]
    fn agrees_with_iteration_up_to_large_indexes() {
        for n in (0..2000).step_by(37).chain([9_999, 10_000]) {
            assert_eq!(fib(n), by_iteration(n), "F({n})");
        }
        assert_eq!(fib(10_000).to_string().len(), 2090);
    }
}
