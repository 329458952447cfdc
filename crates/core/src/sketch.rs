//! A latency histogram with bounded relative error and bounded memory, whatever the volume.
//!
//! Values are counted in logarithmic bins: bin `i` holds the values in (γ^(i-1), γ^i], with
//! γ = (1 + α) / (1 − α), and reads back as 2γ^i / (γ + 1), which is within α
//! ([`RELATIVE_ERROR`]) of every value of the bin. So every figure read from a sketch (a
//! quantile, the min, the max, and each term of the mean) is within α of a value that was
//! really recorded. α is 1.95 % so that figures rounded to `f32` for reporting stay within 2 %.
//! Values from 1 ns (a `Duration`'s resolution) to a day are binned, 0 has a bin of its own
//! (next to the lowest) and values above a day count as a day: at most 825 bins, whatever the
//! count.
//!
//! A sketch has two forms. [`Sketch`] is dense counters from the lowest bin used to the
//! highest, the form to record into, merge and read. Its encoding ([`Sketch::encode`], read
//! back by [`Sketch::merge_encoded`]) is what time slots keep: a tag, the lowest bin, then the
//! smallest of
//!
//! - Rice codes: one per bin up to the highest, `count >> k` in unary then the `k` low bits,
//!   with the `k` that gives the fewest bits (100 runtimes spread over a decade, ~60 bins:
//!   k = 0, ~160 bits, ~25 bytes);
//! - fixed-width counters: 4, 8, 16 or 32 bits per bin, the narrowest that holds the largest
//!   count (for many values in few bins);
//! - sparse: (gap to the previous bin, count) varint pairs, for a few values spread wide
//!   (3 runtimes over a decade: ~9 bytes).
//!
//! Merging is exact (bin counts add), so a distribution merged from many slots is the one a
//! single sketch of all the values would have given.
use std::{sync::LazyLock, time::Duration};

/// Relative accuracy of everything read from a sketch.
pub const RELATIVE_ERROR: f64 = 0.0195;
const GAMMA: f64 = (1.0 + RELATIVE_ERROR) / (1.0 - RELATIVE_ERROR);
/// ln(GAMMA) (checked by a test: `f64::ln` is not `const`).
const LN_GAMMA: f64 = 0.039_004_944_378_108_88;
/// Values below this count as 0.
const MIN_SECONDS: f64 = 1e-9;
/// Values above this count as this.
const MAX_SECONDS: f64 = 86_400.0;
/// The bin of MIN_SECONDS.
const MIN_BIN: i16 = -531;
/// The bin of 0 (and of anything below MIN_SECONDS), read back as 0.
const ZERO_BIN: i16 = MIN_BIN - 1;
/// The bin of MAX_SECONDS.
const MAX_BIN: i16 = 292;

/// Encoding tags.
const EMPTY: u8 = 0;
const DENSE_4: u8 = 1;
const DENSE_8: u8 = 2;
const DENSE_16: u8 = 3;
const DENSE_32: u8 = 4;
const SPARSE: u8 = 5;
/// RICE + k: Rice codes with parameter k (0..=31).
const RICE: u8 = 16;

fn bin_of(seconds: f64) -> i16 {
    if seconds.is_nan() || seconds < MIN_SECONDS {
        return ZERO_BIN;
    }
    ((seconds.min(MAX_SECONDS).ln() / LN_GAMMA).ceil() as i16).clamp(MIN_BIN, MAX_BIN)
}

/// The value a bin stands for: the point of least relative error within it.
fn value_of(bin: i16) -> f64 {
    static VALUES: LazyLock<Vec<f64>> = LazyLock::new(|| {
        (ZERO_BIN..=MAX_BIN)
            .map(|bin| {
                if bin == ZERO_BIN {
                    0.0
                } else {
                    2.0 * GAMMA.powi(i32::from(bin)) / (GAMMA + 1.0)
                }
            })
            .collect()
    });
    VALUES[usize::from(bin.clamp(ZERO_BIN, MAX_BIN).abs_diff(ZERO_BIN))]
}

/// What a distribution is reported as, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary<const N: usize> {
    pub count: u64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// The quantiles asked for, in the same order.
    pub quantiles: [f64; N],
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sketch {
    /// The bin of `bins[0]`.
    base: i16,
    /// Counts of bins `base..`; the first and the last are not 0.
    bins: Vec<u32>,
    count: u64,
}

impl Sketch {
    pub fn record(&mut self, value: Duration) {
        self.add(bin_of(value.as_secs_f64()), 1);
    }

    /// Records `value` `n` times (observations known only by their bucket of a histogram).
    pub fn record_n(&mut self, value: Duration, n: u32) {
        self.add(bin_of(value.as_secs_f64()), n);
    }

    /// Makes `bins` cover `lo..=hi`.
    fn cover(&mut self, lo: i16, hi: i16) {
        if self.bins.is_empty() {
            self.base = lo;
            self.bins.resize(usize::from(hi.abs_diff(lo)) + 1, 0);
            return;
        }
        if lo < self.base {
            let extra = usize::from(self.base.abs_diff(lo));
            self.bins.splice(0..0, std::iter::repeat_n(0, extra));
            self.base = lo;
        }
        let len = usize::from(hi.abs_diff(self.base)) + 1;
        if hi >= self.base && len > self.bins.len() {
            self.bins.resize(len, 0);
        }
    }

    fn add(&mut self, bin: i16, n: u32) {
        if n == 0 {
            return;
        }
        self.cover(bin, bin);
        let slot = &mut self.bins[usize::from(bin.abs_diff(self.base))];
        *slot = slot.saturating_add(n);
        self.count += u64::from(n);
    }

    pub fn merge(&mut self, other: &Sketch) {
        if other.count == 0 {
            return;
        }
        self.cover(other.base, other.last_bin());
        let offset = usize::from(other.base.abs_diff(self.base));
        for (mine, theirs) in self.bins[offset..].iter_mut().zip(&other.bins) {
            *mine = mine.saturating_add(*theirs);
        }
        self.count += other.count;
    }

    fn last_bin(&self) -> i16 {
        self.base + self.bins.len().saturating_sub(1) as i16
    }

    /// Non-zero bins, lowest first.
    fn nonzero(&self) -> impl Iterator<Item = (i16, u32)> + '_ {
        let base = self.base;
        self.bins
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(move |(i, n)| (base + i as i16, *n))
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn mean(&self) -> Option<Duration> {
        Some(Duration::from_secs_f64(self.summary([])?.mean))
    }

    pub fn min(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_secs_f64(value_of(self.base)))
    }

    pub fn max(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_secs_f64(value_of(self.last_bin())))
    }

    /// The q-quantile (0 ≤ q ≤ 1): the value of rank round(q·(count − 1)) among those
    /// recorded, within [`RELATIVE_ERROR`].
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let [value] = self.summary([q])?.quantiles;
        Some(Duration::from_secs_f64(value))
    }

    /// Count, mean, min, max and the `qs`-quantiles (in increasing order; see
    /// [`Sketch::quantile`]), in seconds and in one pass; None when empty.
    pub fn summary<const N: usize>(&self, qs: [f64; N]) -> Option<Summary<N>> {
        if self.count == 0 {
            return None;
        }
        debug_assert!(qs.is_sorted(), "quantiles in increasing order");
        let ranks = qs.map(|q| (q.clamp(0.0, 1.0) * (self.count - 1) as f64).round() as u64);
        let max = value_of(self.last_bin());
        // Only short of a rank when a bin saturated.
        let mut quantiles = [max; N];
        let (mut next, mut seen, mut sum) = (0, 0u64, 0.0);
        for (bin, n) in self.nonzero() {
            let value = value_of(bin);
            seen += u64::from(n);
            sum += value * f64::from(n);
            while next < N && seen > ranks[next] {
                quantiles[next] = value;
                next += 1;
            }
        }
        Some(Summary {
            count: self.count,
            mean: sum / seen.max(1) as f64,
            min: value_of(self.base),
            max,
            quantiles,
        })
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.bins.capacity() * std::mem::size_of::<u32>()
    }

    /// Appends the compact encoding (the smallest form; see the module).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (Some(first), Some(last)) = (
            self.bins.iter().position(|n| *n > 0),
            self.bins.iter().rposition(|n| *n > 0),
        ) else {
            out.push(EMPTY);
            return;
        };
        let bins = &self.bins[first..=last];
        let base = self.base + first as i16;
        // One pass for the size of every form: the largest count, the sparse pairs, and the
        // Rice codes' quotients for the small parameters.
        let (mut max, mut nonzero, mut sparse_len, mut previous) = (0, 0u64, 3, 0);
        let mut quotients = [0usize; SMALL_K];
        for (i, &n) in bins.iter().enumerate() {
            for (k, q) in quotients.iter_mut().enumerate() {
                *q += (n >> k) as usize;
            }
            if n > 0 {
                max = max.max(n);
                sparse_len += varint_len(u64::from(n));
                if nonzero > 0 {
                    sparse_len += varint_len((i - previous) as u64);
                }
                nonzero += 1;
                previous = i;
            }
        }
        sparse_len += varint_len(nonzero);
        let (tag, width) = match max {
            0..=0xf => (DENSE_4, 4),
            0x10..=0xff => (DENSE_8, 8),
            0x100..=0xffff => (DENSE_16, 16),
            _ => (DENSE_32, 32),
        };
        let header = 3 + varint_len(bins.len() as u64);
        let dense_len = header + (bins.len() * width).div_ceil(8);
        let (k, rice_bits) = best_rice(bins, &quotients);
        let rice_len = header + rice_bits.div_ceil(8);
        if sparse_len < dense_len.min(rice_len) {
            out.push(SPARSE);
            out.extend_from_slice(&base.to_le_bytes());
            put_varint(out, nonzero);
            let mut previous = None;
            for (i, n) in bins.iter().enumerate().filter(|(_, n)| **n > 0) {
                if let Some(p) = previous {
                    put_varint(out, (i - p) as u64);
                }
                put_varint(out, u64::from(*n));
                previous = Some(i);
            }
            return;
        }
        if rice_len < dense_len {
            out.push(RICE + k as u8);
            out.extend_from_slice(&base.to_le_bytes());
            put_varint(out, bins.len() as u64);
            let mut w = BitWriter::new(out);
            for n in bins {
                w.unary(u64::from(n >> k));
                w.bits(u64::from(*n) & ((1 << k) - 1), k);
            }
            w.finish();
            return;
        }
        out.push(tag);
        out.extend_from_slice(&base.to_le_bytes());
        put_varint(out, bins.len() as u64);
        match width {
            4 => out.extend(
                bins.chunks(2)
                    .map(|pair| (pair[0] | pair.get(1).map_or(0, |n| n << 4)) as u8),
            ),
            8 => out.extend(bins.iter().map(|n| *n as u8)),
            16 => out.extend(bins.iter().flat_map(|n| (*n as u16).to_le_bytes())),
            _ => out.extend(bins.iter().flat_map(|n| n.to_le_bytes())),
        }
    }

    /// Adds the sketch encoded at the start of `r` (by [`Sketch::encode`]); None when the
    /// bytes are not such an encoding.
    pub(crate) fn merge_encoded(&mut self, r: &mut Reader<'_>) -> Option<()> {
        let tag = r.u8()?;
        if tag == EMPTY {
            return Some(());
        }
        let base = r.i16().filter(|b| (ZERO_BIN..=MAX_BIN).contains(b))?;
        let n = usize::try_from(r.varint()?).ok()?;
        if n == 0 || n > usize::from(MAX_BIN.abs_diff(ZERO_BIN)) + 1 {
            return None;
        }
        if tag == SPARSE {
            let mut bin = base;
            for i in 0..n {
                if i > 0 {
                    let gap = i16::try_from(r.varint()?).ok()?;
                    bin = bin.checked_add(gap).filter(|b| *b <= MAX_BIN)?;
                }
                self.add(bin, u32::try_from(r.varint()?).ok()?);
            }
            return Some(());
        }
        if (RICE..RICE + 32).contains(&tag) {
            let k = u32::from(tag - RICE);
            let last = base.checked_add(n as i16 - 1).filter(|b| *b <= MAX_BIN)?;
            self.cover(base, last);
            let offset = usize::from(base.abs_diff(self.base));
            let mut bits = BitReader::new(r.rest());
            let mut total = 0u64;
            for slot in &mut self.bins[offset..offset + n] {
                let q = bits.unary()?;
                let v = u32::try_from(q.checked_shl(k)? | bits.bits(k)?).ok()?;
                *slot = slot.saturating_add(v);
                total += u64::from(v);
            }
            self.count += total;
            r.take(bits.consumed_bytes())?;
            return Some(());
        }
        let width = match tag {
            DENSE_4 => 4,
            DENSE_8 => 8,
            DENSE_16 => 16,
            DENSE_32 => 32,
            _ => return None,
        };
        let bytes = r.take((n * width).div_ceil(8))?;
        let last = base.checked_add(n as i16 - 1).filter(|b| *b <= MAX_BIN)?;
        self.cover(base, last);
        let offset = usize::from(base.abs_diff(self.base));
        let counters = &mut self.bins[offset..offset + n];
        let mut total = 0u64;
        let mut add = |slot: &mut u32, v: u32| {
            *slot = slot.saturating_add(v);
            total += u64::from(v);
        };
        match width {
            4 => {
                for (i, slot) in counters.iter_mut().enumerate() {
                    add(slot, u32::from(bytes[i / 2] >> (4 * (i % 2)) & 0xf));
                }
            }
            8 => counters
                .iter_mut()
                .zip(bytes)
                .for_each(|(slot, b)| add(slot, u32::from(*b))),
            16 => counters
                .iter_mut()
                .zip(bytes.chunks_exact(2))
                .for_each(|(slot, b)| add(slot, u32::from(u16::from_le_bytes([b[0], b[1]])))),
            _ => counters
                .iter_mut()
                .zip(bytes.chunks_exact(4))
                .for_each(|(slot, b)| add(slot, u32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        }
        self.count += total;
        Some(())
    }

    /// A sketch from its encoding alone.
    pub fn decode(bytes: &[u8]) -> Option<Sketch> {
        let mut sketch = Sketch::default();
        let mut r = Reader::new(bytes);
        sketch.merge_encoded(&mut r)?;
        r.is_done().then_some(sketch)
    }
}

/// Rice parameters whose sizes [`Sketch::encode`] measures in its one pass.
const SMALL_K: usize = 4;

/// The Rice parameter that codes `bins` in the fewest bits, and those bits, given the sums of
/// `n >> k` for k < SMALL_K.
fn best_rice(bins: &[u32], quotients: &[usize; SMALL_K]) -> (u32, usize) {
    let size = |k: u32| {
        let q = quotients
            .get(k as usize)
            .copied()
            .unwrap_or_else(|| bins.iter().map(|n| (n >> k) as usize).sum::<usize>());
        q + bins.len() * (1 + k as usize)
    };
    // The size falls then rises with k: stop at the first rise.
    let (mut k, mut best) = (0, size(0));
    while k < 31 {
        let next = size(k + 1);
        if next >= best {
            break;
        }
        (k, best) = (k + 1, next);
    }
    (k, best)
}

/// Writes bits, least significant first.
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    len: u32,
}

impl<'a> BitWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        Self {
            out,
            acc: 0,
            len: 0,
        }
    }

    /// The `n` (≤ 32) low bits of `v`.
    fn bits(&mut self, v: u64, n: u32) {
        self.acc |= v << self.len;
        self.len += n;
        while self.len >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.len -= 8;
        }
    }

    /// `q` ones, then a zero.
    fn unary(&mut self, mut q: u64) {
        while q >= 32 {
            self.bits(u64::from(u32::MAX), 32);
            q -= 32;
        }
        self.bits((1 << q) - 1, q as u32 + 1);
    }

    fn finish(self) {
        if self.len > 0 {
            self.out.push(self.acc as u8);
        }
    }
}

/// Reads what [`BitWriter`] wrote.
struct BitReader<'a> {
    bytes: &'a [u8],
    /// Bytes moved into `acc`.
    next: usize,
    /// Bits to read, least significant first; above `len`, 0 or the bits that follow.
    acc: u64,
    len: u32,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            next: 0,
            acc: 0,
            len: 0,
        }
    }

    /// Tops `acc` up to at least 56 bits, or to the end of the bytes.
    #[inline]
    fn refill(&mut self) {
        if self.len > 56 {
            return;
        }
        if let Some(word) = self.bytes.get(self.next..self.next + 8) {
            // The whole bytes that fit; the rest of the word lands above `len`, where the
            // next refill puts the same bits again.
            let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
            self.acc |= word << self.len;
            let taken = (63 - self.len) / 8;
            self.next += taken as usize;
            self.len += taken * 8;
            return;
        }
        while self.len <= 56
            && let Some(b) = self.bytes.get(self.next)
        {
            self.acc |= u64::from(*b) << self.len;
            self.len += 8;
            self.next += 1;
        }
    }

    fn consume(&mut self, n: u32) {
        self.acc = self.acc.checked_shr(n).unwrap_or(0);
        self.len -= n;
    }

    /// `n` (≤ 32) bits.
    #[inline]
    fn bits(&mut self, n: u32) -> Option<u64> {
        if n == 0 {
            return Some(0);
        }
        self.refill();
        if self.len < n {
            return None;
        }
        let v = self.acc & ((1 << n) - 1);
        self.consume(n);
        Some(v)
    }

    /// Ones up to a zero (consumed), as many as fit a u32.
    #[inline]
    fn unary(&mut self) -> Option<u64> {
        let mut q = 0u64;
        loop {
            self.refill();
            let ones = self.acc.trailing_ones();
            if ones < self.len {
                self.consume(ones + 1);
                return Some(q + u64::from(ones));
            }
            if self.len == 0 || q > u64::from(u32::MAX) {
                return None;
            }
            q += u64::from(self.len);
            self.consume(self.len);
        }
    }

    /// Whole bytes read so far (the last one possibly in part).
    fn consumed_bytes(&self) -> usize {
        (self.next * 8 - self.len as usize).div_ceil(8)
    }
}

/// LEB128.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Reads encoded bytes front to back; every read is None past the end.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or_default()
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(bytes)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn i16(&mut self) -> Option<i16> {
        let b = self.take(2)?;
        Some(i16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// splitmix64: deterministic test data without a dependency.
    pub(crate) struct Rng(pub u64);

    impl Rng {
        pub(crate) fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// Uniform in (0, 1).
        pub(crate) fn unit(&mut self) -> f64 {
            ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        pub(crate) fn normal(&mut self) -> f64 {
            (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
        }
    }

    /// The value of rank round(q·(n − 1)), as the sketch defines quantiles.
    pub(crate) fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).round() as usize]
    }

    fn relative_error(got: Duration, exact: f64) -> f64 {
        (got.as_secs_f64() - exact).abs() / exact
    }

    #[test]
    fn constants_match_their_definitions() {
        assert!((LN_GAMMA - GAMMA.ln()).abs() < 1e-15);
        assert_eq!(MIN_BIN, (MIN_SECONDS.ln() / GAMMA.ln()).ceil() as i16);
        assert_eq!(MAX_BIN, (MAX_SECONDS.ln() / GAMMA.ln()).ceil() as i16);
        // Every bin's value is within α of both its edges.
        for bin in [MIN_BIN, -100, 0, 100, MAX_BIN] {
            let (lo, hi) = (GAMMA.powi(i32::from(bin) - 1), GAMMA.powi(i32::from(bin)));
            let v = value_of(bin);
            assert!((v - lo) / lo <= RELATIVE_ERROR + 1e-12);
            assert!((hi - v) / hi <= RELATIVE_ERROR + 1e-12);
        }
    }

    #[test]
    fn quantiles_min_max_mean_are_within_the_relative_error() {
        let mut s = Sketch::default();
        for ms in 1..=1000u64 {
            s.record(Duration::from_millis(ms));
        }
        for (q, exact) in [(0.5, 0.500), (0.9, 0.900), (0.99, 0.990)] {
            let e = relative_error(s.quantile(q).unwrap(), exact);
            assert!(e <= RELATIVE_ERROR, "q{q}: {e}");
        }
        assert!(relative_error(s.min().unwrap(), 0.001) <= RELATIVE_ERROR);
        assert!(relative_error(s.max().unwrap(), 1.0) <= RELATIVE_ERROR);
        assert!(relative_error(s.mean().unwrap(), 0.5005) <= RELATIVE_ERROR);
        assert_eq!(s.count(), 1000);
    }

    #[test]
    fn zero_is_exact_and_nanoseconds_are_within_the_relative_error() {
        let mut s = Sketch::default();
        s.record(Duration::ZERO);
        s.record(Duration::ZERO);
        s.record(Duration::from_nanos(1));
        s.record(Duration::from_nanos(300));
        s.record(Duration::from_millis(5));
        assert_eq!(s.min(), Some(Duration::ZERO));
        assert_eq!(s.quantile(0.25), Some(Duration::ZERO));
        assert!(relative_error(s.quantile(0.5).unwrap(), 1e-9) <= RELATIVE_ERROR);
        assert!(relative_error(s.quantile(0.75).unwrap(), 300e-9) <= RELATIVE_ERROR);
        assert!(relative_error(s.max().unwrap(), 0.005) <= RELATIVE_ERROR);
        s.record(Duration::from_secs(10 * 86_400));
        assert!(relative_error(s.max().unwrap(), 86_400.0) <= RELATIVE_ERROR);
    }

    #[test]
    fn memory_does_not_grow_with_volume() {
        let mut s = Sketch::default();
        for i in 0..200_000u64 {
            s.record(Duration::from_micros(100_000 + (i % 100_000)));
        }
        assert!(s.bins.len() <= 20, "{} bins", s.bins.len());
        let mut bytes = Vec::new();
        s.encode(&mut bytes);
        assert!(bytes.len() <= 4 + 20 * 4, "{} bytes", bytes.len());
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (Sketch::default(), Sketch::default(), Sketch::default());
        for ms in 300..900u64 {
            b.record(Duration::from_millis(ms));
            all.record(Duration::from_millis(ms));
        }
        for ms in 1..500u64 {
            a.record(Duration::from_millis(ms));
            all.record(Duration::from_millis(ms));
        }
        let mut into_empty = Sketch::default();
        into_empty.merge(&b);
        assert_eq!(into_empty, b);
        a.merge(&b);
        assert_eq!(a, all);
        assert_eq!(a.quantile(0.95), all.quantile(0.95));
        assert_eq!(a.count(), all.count());
    }

    #[test]
    fn encodings_round_trip_and_pick_the_smaller_form() {
        type Case = (&'static str, Vec<(i16, u32)>, u8);
        let cases: Vec<Case> = vec![
            ("empty", vec![], EMPTY),
            ("one value", vec![(0, 1)], DENSE_4),
            ("three spread", vec![(-100, 1), (-70, 1), (-40, 1)], SPARSE),
            (
                "nibbles",
                (-100..-40)
                    .map(|b: i16| (b, 1 + u32::from(b.unsigned_abs()) % 15))
                    .collect(),
                DENSE_4,
            ),
            ("bytes", (-100..-40).map(|b| (b, 200)).collect(), DENSE_8),
            ("u16", (-100..-90).map(|b| (b, 60_000)).collect(), DENSE_16),
            (
                "u32",
                (-100..-90).map(|b| (b, 4_000_000_000)).collect(),
                DENSE_32,
            ),
            (
                "rice k=0",
                (-100i16..60)
                    .map(|b| (b, u32::from(b.unsigned_abs() % 3)))
                    .collect(),
                RICE,
            ),
            (
                "rice k=4",
                (-100i16..-40)
                    .map(|b| (b, 16 + u32::from(b.unsigned_abs() % 16)))
                    .collect(),
                RICE + 4,
            ),
            (
                "rice with long unary runs",
                (-100i16..100)
                    .map(|b| {
                        (
                            b,
                            if b == 0 {
                                100
                            } else {
                                u32::from(b.unsigned_abs() % 2)
                            },
                        )
                    })
                    .collect(),
                RICE,
            ),
            (
                "large sparse counts",
                vec![(-300, 1_000_000), (200, 1)],
                SPARSE,
            ),
            ("zero bin", vec![(ZERO_BIN, 2), (MIN_BIN, 1)], DENSE_4),
            ("whole range", vec![(ZERO_BIN, 1), (MAX_BIN, 1)], SPARSE),
        ];
        for (what, bins, tag) in cases {
            let mut s = Sketch::default();
            for (bin, n) in bins {
                s.add(bin, n);
            }
            let mut bytes = Vec::new();
            s.encode(&mut bytes);
            assert_eq!(bytes[0], tag, "{what}");
            assert_eq!(Sketch::decode(&bytes).as_ref(), Some(&s), "{what}");
            // Merged into a sketch that covers other bins.
            let mut other = Sketch::default();
            other.record(Duration::from_secs(3));
            let mut expected = other.clone();
            expected.merge(&s);
            other.merge_encoded(&mut Reader::new(&bytes)).unwrap();
            assert_eq!(other, expected, "{what}");
        }
        assert_eq!(Sketch::decode(&[SPARSE, 0]), None, "truncated");
        assert_eq!(Sketch::decode(&[9]), None, "unknown tag");
    }

    /// Random shapes, encoded back to back (as in a slot) and read back one after the other.
    #[test]
    fn random_sketches_round_trip_back_to_back() {
        let mut rng = Rng(5);
        for _ in 0..2000 {
            let sketches: Vec<Sketch> = (0..3)
                .map(|_| {
                    let mut s = Sketch::default();
                    let lo = ZERO_BIN + (rng.next_u64() % 800) as i16;
                    let span = 1 + rng.next_u64() % 200;
                    let scale = [1, 3, 20, 300, 70_000, 5_000_000][(rng.next_u64() % 6) as usize];
                    let density = rng.unit();
                    for i in 0..span {
                        let bin = lo.saturating_add(i as i16).min(MAX_BIN);
                        if rng.unit() < density {
                            s.add(bin, (rng.next_u64() % (scale + 1)) as u32);
                        }
                    }
                    s
                })
                .collect();
            let mut bytes = Vec::new();
            for s in &sketches {
                s.encode(&mut bytes);
            }
            let mut r = Reader::new(&bytes);
            for s in &sketches {
                let mut back = Sketch::default();
                back.merge_encoded(&mut r).unwrap();
                assert_eq!(back.count, s.count);
                assert_eq!(
                    back.nonzero().collect::<Vec<_>>(),
                    s.nonzero().collect::<Vec<_>>()
                );
            }
            assert!(r.is_done());
        }
    }

    #[test]
    fn varints() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            let mut r = Reader::new(&out);
            assert_eq!(r.varint(), Some(v));
            assert!(r.is_done());
        }
    }

    /// Distributions of the kind task runtimes and queue waits have, in seconds.
    pub(crate) type Draw = Box<dyn Fn(&mut Rng) -> f64>;

    pub(crate) fn distributions() -> Vec<(&'static str, Draw)> {
        vec![
            (
                "uniform 10..100 ms",
                Box::new(|r: &mut Rng| 0.010 + 0.090 * r.unit()),
            ),
            (
                "log-uniform 1 ms..1 s",
                Box::new(|r: &mut Rng| 0.001 * 1000f64.powf(r.unit())),
            ),
            (
                "log-normal median 80 ms sigma 0.8",
                Box::new(|r: &mut Rng| 0.080 * (0.8 * r.normal()).exp()),
            ),
            (
                "exponential mean 20 ms",
                Box::new(|r: &mut Rng| -0.020 * r.unit().ln()),
            ),
            (
                "bimodal 5 ms / 2 s",
                Box::new(|r: &mut Rng| {
                    if r.unit() < 0.9 {
                        0.005 * (0.1 * r.normal()).exp()
                    } else {
                        2.0 * (0.2 * r.normal()).exp()
                    }
                }),
            ),
        ]
    }

    #[test]
    fn merged_encoded_slots_are_within_the_relative_error_on_several_distributions() {
        let mut rng = Rng(7);
        for (what, draw) in distributions() {
            // 120 slots of 30 values each, encoded, then merged: as a 1 h window reads them.
            let mut merged = Sketch::default();
            let mut values = Vec::new();
            let mut encoded_bytes = 0;
            for _ in 0..120 {
                let mut slot = Sketch::default();
                for _ in 0..30 {
                    let v = draw(&mut rng);
                    // What the sketch sees: a Duration.
                    let d = Duration::from_secs_f64(v);
                    values.push(d.as_secs_f64());
                    slot.record(d);
                }
                let mut bytes = Vec::new();
                slot.encode(&mut bytes);
                encoded_bytes += bytes.len();
                merged.merge_encoded(&mut Reader::new(&bytes)).unwrap();
            }
            values.sort_by(f64::total_cmp);
            assert_eq!(merged.count(), values.len() as u64);
            for q in [0.5, 0.9, 0.95, 0.99] {
                let e = relative_error(merged.quantile(q).unwrap(), exact_quantile(&values, q));
                assert!(e <= RELATIVE_ERROR, "{what} q{q}: {e}");
            }
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            assert!(relative_error(merged.mean().unwrap(), mean) <= RELATIVE_ERROR);
            assert!(relative_error(merged.min().unwrap(), values[0]) <= RELATIVE_ERROR);
            let max = values[values.len() - 1];
            assert!(relative_error(merged.max().unwrap(), max) <= RELATIVE_ERROR);
            assert!(encoded_bytes / 120 <= 80, "{what}: {encoded_bytes} bytes");
        }
    }
}
