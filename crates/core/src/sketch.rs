//! A latency histogram with bounded relative error and bounded memory, whatever the volume.
//!
//! Values are counted in logarithmic bins (each bin spans a factor of `GAMMA`), so any
//! quantile is reported within 1% of a value that was really recorded. Bins are stored
//! sparsely: a task whose runtimes stay within a factor of 2 uses about 35 bins. The number of
//! bins is capped by the value range (1 µs .. 1 day: about 1,270), never by the count.
use std::time::Duration;

/// Relative accuracy of quantiles.
pub const RELATIVE_ERROR: f64 = 0.01;
const GAMMA: f64 = (1.0 + RELATIVE_ERROR) / (1.0 - RELATIVE_ERROR);
const MIN_SECONDS: f64 = 1e-6;
const MAX_SECONDS: f64 = 86_400.0;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sketch {
    /// (bin, count), sorted by bin.
    bins: Vec<(i16, u32)>,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

fn bin_of(seconds: f64) -> i16 {
    (seconds.clamp(MIN_SECONDS, MAX_SECONDS).ln() / GAMMA.ln()).ceil() as i16
}

/// The value a bin stands for: the point of least relative error within it.
fn value_of(bin: i16) -> f64 {
    2.0 * GAMMA.powi(i32::from(bin)) / (GAMMA + 1.0)
}

impl Sketch {
    pub fn record(&mut self, value: Duration) {
        let seconds = value.as_secs_f64();
        if !seconds.is_finite() {
            return;
        }
        let bin = bin_of(seconds);
        match self.bins.binary_search_by_key(&bin, |(b, _)| *b) {
            Ok(i) => self.bins[i].1 = self.bins[i].1.saturating_add(1),
            Err(i) => self.bins.insert(i, (bin, 1)),
        }
        if self.count == 0 {
            self.min = seconds;
            self.max = seconds;
        } else {
            self.min = self.min.min(seconds);
            self.max = self.max.max(seconds);
        }
        self.count += 1;
        self.sum += seconds;
    }

    pub fn merge(&mut self, other: &Sketch) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        let mut merged = Vec::with_capacity(self.bins.len() + other.bins.len());
        let (a, b) = (&self.bins, &other.bins);
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            match a[i].0.cmp(&b[j].0) {
                std::cmp::Ordering::Equal => {
                    merged.push((a[i].0, a[i].1.saturating_add(b[j].1)));
                    i += 1;
                    j += 1;
                }
                std::cmp::Ordering::Less => {
                    merged.push(a[i]);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    merged.push(b[j]);
                    j += 1;
                }
            }
        }
        merged.extend_from_slice(&a[i..]);
        merged.extend_from_slice(&b[j..]);
        self.bins = merged;
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_secs_f64(self.sum / self.count as f64))
    }

    pub fn min(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_secs_f64(self.min))
    }

    pub fn max(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_secs_f64(self.max))
    }

    /// The q-quantile (0 ≤ q ≤ 1), within [`RELATIVE_ERROR`] of a recorded value.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (self.count - 1) as f64).round() as u64;
        let mut seen = 0u64;
        for (bin, n) in &self.bins {
            seen += u64::from(*n);
            if seen > rank {
                let value = value_of(*bin).clamp(self.min, self.max);
                return Some(Duration::from_secs_f64(value));
            }
        }
        Some(Duration::from_secs_f64(self.max))
    }

    /// Approximate heap bytes held (for the memory benchmark).
    pub fn heap_bytes(&self) -> usize {
        self.bins.capacity() * std::mem::size_of::<(i16, u32)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_one_percent() {
        let mut s = Sketch::default();
        for ms in 1..=1000u64 {
            s.record(Duration::from_millis(ms));
        }
        for (q, exact) in [(0.5, 500.0), (0.9, 900.0), (0.99, 990.0)] {
            let got = s.quantile(q).unwrap().as_secs_f64() * 1000.0;
            assert!(
                (got - exact).abs() / exact <= 0.012,
                "q{q}: {got} vs {exact}"
            );
        }
        assert_eq!(s.min().unwrap(), Duration::from_millis(1));
        assert_eq!(s.max().unwrap(), Duration::from_millis(1000));
        assert_eq!(s.count(), 1000);
        let mean = s.mean().unwrap().as_secs_f64();
        assert!((mean - 0.5005).abs() < 1e-9);
    }

    #[test]
    fn memory_does_not_grow_with_volume() {
        let mut s = Sketch::default();
        for i in 0..200_000u64 {
            s.record(Duration::from_micros(100_000 + (i % 100_000)));
        }
        assert!(s.bins.len() < 40, "{} bins", s.bins.len());
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (Sketch::default(), Sketch::default(), Sketch::default());
        for ms in 1..500u64 {
            a.record(Duration::from_millis(ms));
            all.record(Duration::from_millis(ms));
        }
        for ms in 300..900u64 {
            b.record(Duration::from_millis(ms));
            all.record(Duration::from_millis(ms));
        }
        a.merge(&b);
        assert_eq!(a.bins, all.bins);
        assert_eq!(a.quantile(0.95), all.quantile(0.95));
        assert_eq!(a.count(), all.count());
    }
}
