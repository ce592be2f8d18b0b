//! Free blocks in least-recently-freed order, with O(1) removal from the
//! middle: a prefix-cache hit revives a free block without a search.

use super::block_id::BlockId;

/// The end of a link: no block.
const NONE: u32 = u32::MAX;

pub(super) struct FreeQueue {
    prev: Vec<u32>,
    next: Vec<u32>,
    in_queue: Vec<bool>,
    head: u32,
    tail: u32,
    len: usize,
}

impl FreeQueue {
    /// A queue holding every block `0..n`, lowest id first.
    pub fn full(n: usize) -> Self {
        let mut q = FreeQueue {
            prev: vec![NONE; n],
            next: vec![NONE; n],
            in_queue: vec![false; n],
            head: NONE,
            tail: NONE,
            len: 0,
        };
        for b in 0..n as u32 {
            q.push_back(BlockId(b));
        }
        q
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn contains(&self, block: BlockId) -> bool {
        self.in_queue[block.index()]
    }

    /// Appends `block` as the most recently freed.
    pub fn push_back(&mut self, block: BlockId) {
        debug_assert!(!self.contains(block));
        let b = block.index();
        self.prev[b] = self.tail;
        self.next[b] = NONE;
        if self.tail == NONE {
            self.head = block.0;
        } else {
            self.next[self.tail as usize] = block.0;
        }
        self.tail = block.0;
        self.in_queue[b] = true;
        self.len += 1;
    }

    /// Takes the least recently freed block.
    pub fn pop_front(&mut self) -> Option<BlockId> {
        if self.head == NONE {
            return None;
        }
        let b = BlockId(self.head);
        self.remove(b);
        Some(b)
    }

    /// Unlinks `block` wherever it is.
    pub fn remove(&mut self, block: BlockId) {
        debug_assert!(self.contains(block));
        let b = block.index();
        let (p, n) = (self.prev[b], self.next[b]);
        if p == NONE {
            self.head = n;
        } else {
            self.next[p as usize] = n;
        }
        if n == NONE {
            self.tail = p;
        } else {
            self.prev[n as usize] = p;
        }
        self.prev[b] = NONE;
        self.next[b] = NONE;
        self.in_queue[b] = false;
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_order_with_middle_removal() {
        let mut q = FreeQueue::full(4);
        assert_eq!(q.pop_front(), Some(BlockId(0)));
        q.remove(BlockId(2));
        q.push_back(BlockId(0));
        q.push_back(BlockId(2));
        let order: Vec<u32> = std::iter::from_fn(|| q.pop_front()).map(|b| b.0).collect();
        assert_eq!(order, vec![1, 3, 0, 2]);
        assert_eq!(q.len(), 0);
    }
}
