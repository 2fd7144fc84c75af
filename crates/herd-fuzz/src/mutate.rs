//! A small, seeded mutator for the bounded run in the test suite: the same seed always gives
//! the same inputs, so a failure there can be replayed. It does a fraction of what libFuzzer
//! does (no coverage feedback): bit flips, interesting bytes and lengths, inserted, deleted,
//! duplicated and spliced runs, cuts.

/// xorshift64*: enough randomness for mutations, and no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

const INTERESTING: &[u8] = &[0, 1, 0x7f, 0x80, 0xff, b'0', b'9', b'"', b'{', b'}', b'[', b':', b',', b'/', b'.', b'*'];

/// `input` changed by 1 to 4 random mutations (`other` is spliced from), at most `max_len`
/// bytes long. The first byte (the target's mode) is kept more often than not.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8], max_len: usize) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        if out.is_empty() {
            out.push(rng.next_u64() as u8);
            continue;
        }
        let at = if out.len() > 1 && rng.below(8) != 0 { 1 + rng.below(out.len() - 1) } else { rng.below(out.len()) };
        match rng.below(9) {
            0 => out[at] ^= 1 << rng.below(8),
            1 => out[at] = INTERESTING[rng.below(INTERESTING.len())],
            2 => out[at] = rng.next_u64() as u8,
            3 => {
                // A big-endian or little-endian length field made extreme.
                let value: u32 = [0, 1, 0x7fff_ffff, 0xffff_ffff, 0x1000_0000, 512][rng.below(6)];
                let bytes = if rng.below(2) == 0 { value.to_be_bytes() } else { value.to_le_bytes() };
                for (i, b) in bytes.iter().enumerate() {
                    if let Some(slot) = out.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            4 => {
                let len = 1 + rng.below(16.min(out.len() - at));
                out.drain(at..at + len);
            }
            5 => {
                let len = 1 + rng.below(64.min(out.len() - at));
                let run = out[at..at + len].to_vec();
                out.splice(at..at, run);
            }
            6 => out.truncate(at.max(1)),
            7 if !other.is_empty() => {
                let from = rng.below(other.len());
                let len = 1 + rng.below(256.min(other.len() - from));
                out.splice(at..at, other[from..from + len].iter().copied());
            }
            _ => {
                let byte = INTERESTING[rng.below(INTERESTING.len())];
                out.splice(at..at, std::iter::repeat_n(byte, 1 + rng.below(32)));
            }
        }
    }
    out.truncate(max_len);
    out
}
