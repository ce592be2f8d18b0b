//! A known byte pattern for test and benchmark arenas: every 8-byte word
//! encodes (seed, block id, word index), so a byte in the wrong place — a
//! block read from the wrong offset, a shifted run, a torn copy — is caught
//! by comparing against the pattern of the block that should be there.

/// The word at `word` of block `block`.
#[inline]
pub fn word(seed: u64, block: u32, word: u64) -> u64 {
    // splitmix64 of a unique input per (block, word): no two positions
    // share a value in practice, and it is cheap enough to regenerate.
    let mut z = seed ^ (u64::from(block) << 40) ^ word;
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills an arena of `block_words`-word blocks with the pattern.
pub fn fill(arena: &mut [u64], block_words: usize, seed: u64) {
    for (b, block) in arena.chunks_mut(block_words).enumerate() {
        for (i, w) in block.iter_mut().enumerate() {
            *w = word(seed, b as u32, i as u64);
        }
    }
}

/// Checks that `data` holds block `block` of the pattern; on a mismatch,
/// the index of the first wrong word.
pub fn check(data: &[u64], block: u32, seed: u64) -> Result<(), usize> {
    match data
        .iter()
        .enumerate()
        .position(|(i, &w)| w != word(seed, block, i as u64))
    {
        None => Ok(()),
        Some(i) => Err(i),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn blocks_differ_and_check_finds_errors() {
        let mut a = vec![0u64; 64];
        super::fill(&mut a, 16, 7);
        assert!(super::check(&a[16..32], 1, 7).is_ok());
        assert_eq!(super::check(&a[16..32], 2, 7), Err(0));
        a[20] ^= 1;
        assert_eq!(super::check(&a[16..32], 1, 7), Err(4));
    }
}
