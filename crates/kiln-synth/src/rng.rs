//! splitmix64 streams: tiny, fast, and good enough for random weights.

/// A splitmix64 generator.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Fills `out` with N(mean, std²) values (Box–Muller, both outputs used).
    pub fn fill_normal(&mut self, out: &mut [f32], mean: f32, std: f32) {
        for pair in out.chunks_mut(2) {
            let r = (-2.0 * self.unit().ln()).sqrt();
            let t = std::f64::consts::TAU * self.unit();
            pair[0] = mean + std * (r * t.cos()) as f32;
            if let Some(x) = pair.get_mut(1) {
                *x = mean + std * (r * t.sin()) as f32;
            }
        }
    }

    /// Fills `out` with uniform random bytes.
    pub fn fill_bytes(&mut self, out: &mut [u8]) {
        let mut chunks = out.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

/// The seed of one chunk of one tensor: FNV-1a of the name mixed with the file seed and the chunk
/// index, so that every chunk is independent of the order (and the thread) it is made in.
pub fn chunk_seed(seed: u64, name: &str, chunk: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut r = Rng::new(seed ^ h);
    let base = r.next_u64();
    Rng::new(base ^ chunk.wrapping_mul(0xD6E8_FEB8_6659_FD93)).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_moments() {
        let mut v = vec![0f32; 200_001];
        Rng::new(3).fill_normal(&mut v, 0.5, 2.0);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        assert!((var.sqrt() - 2.0).abs() < 0.02, "{}", var.sqrt());
    }

    #[test]
    fn bytes_are_the_u64_stream_and_chunks_differ() {
        let mut b = [0u8; 11];
        Rng::new(1).fill_bytes(&mut b);
        let mut r = Rng::new(1);
        let (x, y) = (r.next_u64().to_le_bytes(), r.next_u64().to_le_bytes());
        assert_eq!(&b[..8], &x);
        assert_eq!(&b[8..], &y[..3]);
        assert_ne!(chunk_seed(1, "a", 0), chunk_seed(1, "a", 1));
        assert_ne!(chunk_seed(1, "a", 0), chunk_seed(1, "b", 0));
        assert_ne!(chunk_seed(1, "a", 0), chunk_seed(2, "a", 0));
    }
}
