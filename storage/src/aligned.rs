//! A byte buffer whose start is 16-byte aligned, so that bodies at 16-aligned offsets are too.

/// Heap bytes, 16-byte aligned, zero-initialised.
pub(crate) struct AlignedBuf {
    words: Vec<u128>,
    len: usize,
}

impl AlignedBuf {
    /// `len` zero bytes.
    pub(crate) fn zeroed(len: usize) -> Self {
        AlignedBuf {
            words: vec![0u128; len.div_ceil(16)],
            len,
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `words` owns at least `len` initialised bytes (16 per u128, len.div_ceil(16)
        // of them); u8 has no alignment or validity requirement; the borrow ties the slice to
        // `self`.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and the unique borrow of `self` makes the slice unique.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }

    /// Shortens to `len` bytes (no-op if longer).
    pub(crate) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

#[cfg(test)]
mod tests {
    use super::AlignedBuf;

    #[test]
    fn aligned_and_sized() {
        for len in [0, 1, 15, 16, 17, 1000] {
            let mut b = AlignedBuf::zeroed(len);
            assert_eq!(b.as_slice().len(), len);
            assert_eq!(b.as_slice().as_ptr() as usize % 16, 0);
            b.as_mut_slice().fill(7);
            assert!(b.as_slice().iter().all(|&x| x == 7));
            b.truncate(len / 2);
            assert_eq!(b.as_slice().len(), len / 2);
        }
    }
}
