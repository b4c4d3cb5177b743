//! Block-cipher plumbing over the RustCrypto ciphers: one enum so that the
//! protocols above (DUKPT, TR-31, MACs) are written once for DES, TDES and AES.

use aes::{Aes128, Aes192, Aes256};
use cipher::{Block, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use cmac::block_api::CmacCipher;
use cmac::{Cmac, Mac};
use des::{Des, TdesEde2, TdesEde3};

use crate::keys::KeyAlgorithm;

/// An initialized block cipher of any algorithm posnet uses.
pub(crate) enum BlockCipher {
    Des(Des),
    Tdes2(TdesEde2),
    Tdes3(TdesEde3),
    Aes128(Aes128),
    Aes192(Aes192),
    Aes256(Aes256),
}

/// Expands to `$body` with `$c` bound to the inner cipher of every variant.
macro_rules! each_cipher {
    ($self:expr, $c:ident => $body:expr) => {
        match $self {
            BlockCipher::Des($c) => $body,
            BlockCipher::Tdes2($c) => $body,
            BlockCipher::Tdes3($c) => $body,
            BlockCipher::Aes128($c) => $body,
            BlockCipher::Aes192($c) => $body,
            BlockCipher::Aes256($c) => $body,
        }
    };
}

fn init<C: KeyInit>(key: &[u8]) -> C {
    // Key lengths are checked when a key type is built (`KeyBytes::new`), so a
    // mismatch here is a bug in this crate, not bad input.
    C::new_from_slice(key).expect("key length checked by KeyBytes")
}

impl BlockCipher {
    /// Key schedule for `key`, whose length must match `alg`.
    pub(crate) fn new(alg: KeyAlgorithm, key: &[u8]) -> Self {
        assert_eq!(key.len(), alg.key_len(), "key length must match algorithm");
        match alg {
            KeyAlgorithm::Des => Self::Des(init(key)),
            KeyAlgorithm::Tdes2 => Self::Tdes2(init(key)),
            KeyAlgorithm::Tdes3 => Self::Tdes3(init(key)),
            KeyAlgorithm::Aes128 => Self::Aes128(init(key)),
            KeyAlgorithm::Aes192 => Self::Aes192(init(key)),
            KeyAlgorithm::Aes256 => Self::Aes256(init(key)),
        }
    }

    /// Block size in bytes: 8 for DES/TDES, 16 for AES.
    pub(crate) fn block_size(&self) -> usize {
        match self {
            Self::Des(_) | Self::Tdes2(_) | Self::Tdes3(_) => 8,
            _ => 16,
        }
    }

    /// Encrypts one block in place; `block.len()` must be the block size.
    pub(crate) fn encrypt(&self, block: &mut [u8]) {
        each_cipher!(self, c => c.encrypt_block(block_of(c, block)))
    }

    /// Decrypts one block in place; `block.len()` must be the block size.
    pub(crate) fn decrypt(&self, block: &mut [u8]) {
        each_cipher!(self, c => c.decrypt_block(block_of(c, block)))
    }

    /// CBC encryption in place without padding; `data` is whole blocks.
    pub(crate) fn cbc_encrypt(&self, iv: &[u8], data: &mut [u8]) {
        let n = self.block_size();
        assert!(
            iv.len() == n && data.len().is_multiple_of(n),
            "CBC needs whole blocks"
        );
        let mut chain = iv;
        for block in data.chunks_exact_mut(n) {
            xor_into(block, chain);
            self.encrypt(block);
            chain = block;
        }
    }

    /// CBC decryption in place without padding; `data` is whole blocks.
    pub(crate) fn cbc_decrypt(&self, iv: &[u8], data: &mut [u8]) {
        let n = self.block_size();
        assert!(
            iv.len() == n && data.len().is_multiple_of(n),
            "CBC needs whole blocks"
        );
        let mut chain = [0u8; 16];
        chain[..n].copy_from_slice(iv);
        let mut saved = [0u8; 16];
        for block in data.chunks_exact_mut(n) {
            saved[..n].copy_from_slice(block);
            self.decrypt(block);
            xor_into(block, &chain[..n]);
            chain[..n].copy_from_slice(&saved[..n]);
        }
    }
}

fn block_of<'a, C: cipher::BlockSizeUser>(_: &C, bytes: &'a mut [u8]) -> &'a mut Block<C> {
    Block::<C>::slice_as_mut_array(bytes).expect("slice of one block")
}

/// CMAC (NIST SP 800-38B) of `data` under a TDES or AES key. Returns the full
/// tag in the first `block size` bytes of the array and that length.
pub(crate) fn cmac(alg: KeyAlgorithm, key: &[u8], data: &[u8]) -> ([u8; 16], usize) {
    fn run<C: CmacCipher + KeyInit>(key: &[u8], data: &[u8]) -> ([u8; 16], usize) {
        let mut mac: Cmac<C> = init(key);
        mac.update(data);
        let tag = mac.finalize().into_bytes();
        let mut out = [0u8; 16];
        out[..tag.len()].copy_from_slice(&tag);
        (out, tag.len())
    }
    match alg {
        KeyAlgorithm::Des => run::<Des>(key, data),
        KeyAlgorithm::Tdes2 => run::<TdesEde2>(key, data),
        KeyAlgorithm::Tdes3 => run::<TdesEde3>(key, data),
        KeyAlgorithm::Aes128 => run::<Aes128>(key, data),
        KeyAlgorithm::Aes192 => run::<Aes192>(key, data),
        KeyAlgorithm::Aes256 => run::<Aes256>(key, data),
    }
}

/// `dst ^= src` over the length of `dst`.
pub(crate) fn xor_into(dst: &mut [u8], src: &[u8]) {
    debug_assert_eq!(dst.len(), src.len());
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}
