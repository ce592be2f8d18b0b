//! Reference-counted KV blocks. A block is free when its count is zero; a
//! sequence that shares a block (a prefix-cache hit, later) holds one count.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlockPoolError {
    #[error("block {0} is outside the pool")]
    OutOfRange(u32),
    #[error("block {0} was freed more often than it was allocated")]
    DoubleFree(u32),
}

pub struct BlockPool {
    ref_counts: Vec<u32>,
    /// Free block ids; popped from the back so recently freed blocks (still
    /// warm in cache) are reused first.
    free: Vec<u32>,
}

impl BlockPool {
    pub fn new(num_blocks: usize) -> Self {
        BlockPool {
            ref_counts: vec![0; num_blocks],
            free: (0..num_blocks as u32).rev().collect(),
        }
    }

    pub fn num_blocks(&self) -> usize {
        self.ref_counts.len()
    }

    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    /// Takes `n` free blocks, or none at all when fewer than `n` are free.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<u32>> {
        if n > self.free.len() {
            return None;
        }
        let blocks = self.free.split_off(self.free.len() - n);
        for &b in &blocks {
            self.ref_counts[b as usize] = 1;
        }
        Some(blocks)
    }

    /// Adds a holder to an allocated block.
    pub fn share(&mut self, block: u32) -> Result<(), BlockPoolError> {
        let rc = self
            .ref_counts
            .get_mut(block as usize)
            .ok_or(BlockPoolError::OutOfRange(block))?;
        *rc += 1;
        Ok(())
    }

    pub fn ref_count(&self, block: u32) -> u32 {
        self.ref_counts.get(block as usize).copied().unwrap_or(0)
    }

    /// Drops one holder of each block; blocks nobody holds become free.
    pub fn release(&mut self, blocks: &[u32]) -> Result<(), BlockPoolError> {
        for &b in blocks {
            let rc = self
                .ref_counts
                .get_mut(b as usize)
                .ok_or(BlockPoolError::OutOfRange(b))?;
            if *rc == 0 {
                return Err(BlockPoolError::DoubleFree(b));
            }
            *rc -= 1;
            if *rc == 0 {
                self.free.push(b);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_share_release_round_trip() {
        let mut pool = BlockPool::new(4);
        let a = pool.allocate(3).unwrap();
        assert_eq!(pool.num_free(), 1);
        assert!(pool.allocate(2).is_none(), "all-or-nothing");
        pool.share(a[0]).unwrap();
        pool.release(&a).unwrap();
        assert_eq!(pool.num_free(), 3, "shared block stays held");
        assert_eq!(pool.ref_count(a[0]), 1);
        pool.release(&a[..1]).unwrap();
        assert_eq!(pool.num_free(), 4);
        assert_eq!(pool.release(&a[..1]), Err(BlockPoolError::DoubleFree(a[0])));
        assert_eq!(pool.release(&[9]), Err(BlockPoolError::OutOfRange(9)));
    }
}
