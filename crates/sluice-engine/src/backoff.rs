//! Capped exponential backoff, for everything that retries an external system
//! (connectors, the snapshot archiver).

use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    delay_max_ms: u64,
}

impl Backoff {
    const FIRST_MS: u64 = 100;

    pub fn new(delay_max_ms: u64) -> Self {
        Self {
            delay_max_ms: delay_max_ms.max(Self::FIRST_MS),
        }
    }

    /// The pause before attempt `failures + 1`: 100 ms, doubling, up to the maximum.
    pub fn delay(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(16);
        Duration::from_millis((Self::FIRST_MS << exponent).min(self.delay_max_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_its_maximum() {
        let backoff = Backoff::new(1_000);
        let ms: Vec<u128> = (1..=6)
            .map(|failures| backoff.delay(failures).as_millis())
            .collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(backoff.delay(u32::MAX).as_millis(), 1_000);
        assert_eq!(Backoff::new(0).delay(9).as_millis(), 100);
    }
}
