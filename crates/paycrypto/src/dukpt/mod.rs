//! Derived Unique Key Per Transaction: AES DUKPT (ANSI X9.24-3-2017) in
//! [`aes`] and TDES DUKPT (ANSI X9.24-1-2009) in [`tdes`], each with the host
//! side (BDK + KSN → keys) and the terminal side (initial key, register of
//! intermediate derivation keys, counter).
//!
//! Both generations derive the key of a counter by walking its set bits from
//! the most significant down, one one-way derivation per bit. The host does
//! the walk for any KSN; the terminal keeps one pre-derived key per bit
//! position ([`Ladder`]) so that each transaction costs at most one
//! derivation per bit below the counter's lowest set bit.

pub mod aes;
pub mod tdes;

use crate::keys::KeyBytes;

/// A DUKPT operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DukptError {
    /// A KSN had the wrong length.
    #[error("a {generation} KSN is {expected} bytes, got {got}")]
    KsnLength {
        /// "AES DUKPT" or "TDES DUKPT".
        generation: &'static str,
        /// Required length.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// The KSN's transaction counter is not one a terminal can produce.
    #[error("KSN counter {counter:#x} is invalid: {reason}")]
    InvalidCounter {
        /// The counter.
        counter: u32,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// The terminal has used every counter its initial key allows; it needs
    /// a new initial key.
    #[error("DUKPT transaction counter exhausted: load a new initial key")]
    Exhausted,
    /// A key of the wrong algorithm was given (e.g. a TDES key to AES DUKPT).
    #[error("{0}")]
    Key(#[from] crate::keys::KeyError),
}

/// Derives the key of `counter` from the initial key by walking the set bits
/// of `counter` from bit `bits - 1` down to bit 0 (the host-side algorithm of
/// both generations). `derive(parent, partial_counter)` is one step.
pub(crate) fn walk_counter(
    initial: &KeyBytes,
    counter: u32,
    bits: u32,
    derive: impl Fn(&KeyBytes, u32) -> KeyBytes,
) -> KeyBytes {
    let mut key = initial.clone();
    let mut partial = 0u32;
    // Bounded: at most `bits` (≤ 32) iterations.
    for bit in (0..bits).rev() {
        let mask = 1u32 << bit;
        if counter & mask != 0 {
            partial |= mask;
            key = derive(&key, partial);
        }
    }
    key
}

/// Terminal-side register of intermediate derivation keys: slot `i` holds the
/// derivation key for the current counter's bits above `i` plus bit `i`.
/// Zeroized on drop through [`KeyBytes`].
pub(crate) struct Ladder {
    slots: Vec<Option<KeyBytes>>,
    /// The counter the next transaction uses.
    next: u64,
    /// Counter width: 32 (AES) or 21 (TDES).
    bits: u32,
    /// Largest number of one bits a counter may have: 16 (AES) or 10 (TDES).
    max_ones: u32,
}

impl Ladder {
    /// The register as it stands when `next` is the counter of the next
    /// transaction: slot `i` is filled for the lowest set bit of `next` and
    /// for every zero bit above it (the keys still to be used); the others
    /// are empty. `load_at(.., 1, ..)` is the state right after key loading.
    pub(crate) fn load_at(
        initial: &KeyBytes,
        bits: u32,
        max_ones: u32,
        next: u32,
        derive: impl Fn(&KeyBytes, u32) -> KeyBytes,
    ) -> Result<Self, DukptError> {
        assert!(bits <= 32 && max_ones >= 1);
        if next == 0 || next.count_ones() > max_ones || u64::from(next) >= 1u64 << bits {
            return Err(DukptError::InvalidCounter {
                counter: next,
                reason: "not a counter this DUKPT generation uses",
            });
        }
        let low = next.trailing_zeros();
        let slots = (0..bits)
            .map(|i| {
                let above = if i + 1 >= 32 {
                    0
                } else {
                    next & !((1u32 << (i + 1)) - 1)
                };
                let counter = above | (1 << i);
                let live = i == low || (i > low && next & (1 << i) == 0);
                (live && counter.count_ones() <= max_ones)
                    .then(|| walk_counter(initial, counter, bits, &derive))
            })
            .collect();
        Ok(Self {
            slots,
            next: u64::from(next),
            bits,
            max_ones,
        })
    }

    /// The counter the next transaction will use, if any remains.
    pub(crate) fn next_counter(&self) -> Option<u32> {
        u32::try_from(self.next)
            .ok()
            .filter(|c| u64::from(*c) < (1u64 << self.bits))
    }

    /// Takes the derivation key of the next counter, prepares the slots below
    /// it and advances the counter past counters with too many one bits.
    pub(crate) fn advance(
        &mut self,
        derive: impl Fn(&KeyBytes, u32) -> KeyBytes,
    ) -> Result<(u32, KeyBytes), DukptError> {
        let counter = self.next_counter().ok_or(DukptError::Exhausted)?;
        let low = counter.trailing_zeros() as usize;
        // Invariant (see module doc): the slot of the lowest set bit of every
        // reachable counter was filled by the parent of that counter.
        let key = self.slots[low]
            .take()
            .expect("DUKPT register slot filled by parent");
        for j in 0..low {
            let child = counter | (1 << j);
            // A counter with too many ones is never used, nor are any of its
            // descendants, so its key is not derived.
            self.slots[j] = (child.count_ones() <= self.max_ones).then(|| derive(&key, child));
        }
        let mut next = u64::from(counter) + 1;
        // Bounded: each step moves the lowest set bit up by at least one.
        while next.count_ones() > self.max_ones {
            next += next & next.wrapping_neg();
        }
        self.next = next;
        Ok((counter, key))
    }
}
