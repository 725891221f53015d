//! One encrypted file over a [`Storage`]: plaintext reads, writes and truncation at
//! any offset, mapped onto whole authenticated blocks.
//!
//! Callers serialise mutation (`&mut self`); reads may run concurrently (`&self`).

use std::io;
use std::sync::Arc;

use pgcmk_crypto::aead::NONCE_LEN;
use pgcmk_crypto::random;

use crate::content::{FileCipher, VolumeKey};
use crate::format::{
    cipher_offset, cipher_size, reported_plain_size, FileHeader, BLOCK_OVERHEAD, BLOCK_SIZE,
    HEADER_LEN, MAX_PLAIN_SIZE,
};
use crate::storage::Storage;
use crate::Error;

/// Blocks sealed and written with one backing write (128 KiB of plaintext).
const WINDOW_BLOCKS: u64 = 32;
const WINDOW_BYTES: u64 = WINDOW_BLOCKS * BLOCK_SIZE;

/// A plaintext view of one encrypted backing file.
pub struct EncryptedFile<S: Storage> {
    storage: S,
    volume: Arc<VolumeKey>,
    /// `None` while the backing file is empty: the header is written on first growth.
    cipher: Option<FileCipher>,
    len: u64,
}

impl<S: Storage> EncryptedFile<S> {
    /// Opens `storage`, reading its header if it has one.
    ///
    /// A damaged tail (a size no valid file has) does not fail the open: reads of the
    /// damaged block fail instead, so the intact part stays readable.
    pub fn open(storage: S, volume: Arc<VolumeKey>) -> Result<Self, Error> {
        let cipher_len = storage.size()?;
        let cipher = if cipher_len == 0 {
            None
        } else if cipher_len < HEADER_LEN {
            return Err(Error::BadHeader("file shorter than its header"));
        } else {
            let mut header = [0u8; HEADER_LEN as usize];
            storage.read_exact_at(&mut header, 0)?;
            Some(volume.file_cipher(FileHeader::parse(&header)?.file_id)?)
        };
        Ok(Self {
            storage,
            volume,
            cipher,
            len: reported_plain_size(cipher_len),
        })
    }

    /// Plaintext length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the file holds no plaintext.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The backing store.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Reads up to `size` bytes at `offset` (fewer at end of file).
    pub fn read(&self, offset: u64, size: usize) -> Result<Vec<u8>, Error> {
        if offset >= self.len || size == 0 {
            return Ok(Vec::new());
        }
        let end = self.len.min(offset.saturating_add(size as u64));
        let first = offset / BLOCK_SIZE;
        let last = (end - 1) / BLOCK_SIZE;
        let mut out = vec![0u8; ((last - first + 1) * BLOCK_SIZE) as usize];
        self.decrypt_blocks(first, last, &mut out)?;
        out.truncate((end - first * BLOCK_SIZE) as usize);
        out.drain(..(offset - first * BLOCK_SIZE) as usize);
        Ok(out)
    }

    /// Decrypts blocks `first..=last` into `out` (block-aligned, whole blocks).
    fn decrypt_blocks(&self, first: u64, last: u64, out: &mut [u8]) -> Result<(), Error> {
        let cipher = self.cipher()?;
        let start = cipher_offset(first);
        let end = cipher_offset(last) + self.block_len(last) + BLOCK_OVERHEAD;
        let mut sealed = vec![0u8; (end - start) as usize];
        self.storage
            .read_exact_at(&mut sealed, start)
            .map_err(|e| eof_is_tamper(e, last))?;
        for block in first..=last {
            let at = (cipher_offset(block) - start) as usize;
            let plain_len = self.block_len(block) as usize;
            let out_at = ((block - first) * BLOCK_SIZE) as usize;
            cipher.open(
                block,
                &sealed[at..at + plain_len + BLOCK_OVERHEAD as usize],
                &mut out[out_at..out_at + plain_len],
            )?;
        }
        Ok(())
    }

    /// Writes `data` at `offset`; a gap past the end of file reads as zeros.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|end| *end <= MAX_PLAIN_SIZE)
            .ok_or(Error::FileTooLarge {
                max: MAX_PLAIN_SIZE,
            })?;
        let result = self.ensure_header().and_then(|()| {
            if offset > self.len {
                // Whole gap blocks first; the gap's last partial block is sealed together
                // with the data, so no intermediate zero-filled version of it exists.
                let block_start = offset / BLOCK_SIZE * BLOCK_SIZE;
                if block_start > self.len {
                    self.write_zeros(self.len, block_start)?;
                }
                let from = self.len.max(block_start);
                let mut padded = vec![0u8; (offset - from) as usize];
                padded.extend_from_slice(data);
                self.write_range(from, &padded)?;
            } else {
                self.write_range(offset, data)?;
            }
            self.fix_tail_after_write(end)
        });
        self.reload_len_after(result.as_ref().err());
        debug_assert!(result.is_err() || self.len >= end);
        result
    }

    /// Truncates or extends (with zeros) to `new_len` plaintext bytes.
    pub fn set_len(&mut self, new_len: u64) -> Result<(), Error> {
        if new_len > MAX_PLAIN_SIZE {
            return Err(Error::FileTooLarge {
                max: MAX_PLAIN_SIZE,
            });
        }
        let result = self.set_len_inner(new_len);
        self.reload_len_after(result.as_ref().err());
        result
    }

    /// Makes every completed write durable (data and size).
    pub fn sync(&self) -> Result<(), Error> {
        Ok(self.storage.sync_data()?)
    }

    /// Block numbers that fail authentication, in order.
    pub fn bad_blocks(&self) -> Result<Vec<u64>, Error> {
        let mut bad = Vec::new();
        if self.len == 0 {
            return Ok(bad);
        }
        let blocks = self.len.div_ceil(BLOCK_SIZE);
        let mut out = vec![0u8; WINDOW_BYTES as usize];
        let mut first = 0;
        while first < blocks {
            let last = (first + WINDOW_BLOCKS - 1).min(blocks - 1);
            if self.decrypt_blocks(first, last, &mut out).is_err() {
                // Narrow the window down to the blocks that fail.
                for block in first..=last {
                    if self.decrypt_blocks(block, block, &mut out).is_err() {
                        bad.push(block);
                    }
                }
            }
            first = last + 1;
        }
        Ok(bad)
    }

    fn set_len_inner(&mut self, new_len: u64) -> Result<(), Error> {
        if new_len == self.len {
            return Ok(());
        }
        if new_len > self.len {
            self.ensure_header()?;
            self.write_zeros(self.len, new_len)?;
            return self.fix_tail_after_write(new_len);
        }
        if new_len == 0 {
            // A fresh file id (and key) is chosen on the next write.
            self.storage.set_len(0)?;
            self.cipher = None;
            self.len = 0;
            return Ok(());
        }
        let block = (new_len - 1) / BLOCK_SIZE;
        let keep = new_len - block * BLOCK_SIZE;
        if keep < self.block_len(block) {
            // Re-seal the new last block at its shorter length before cutting the tail.
            let kept = self.read(block * BLOCK_SIZE, keep as usize)?;
            let mut sealed = vec![0u8; kept.len() + BLOCK_OVERHEAD as usize];
            self.cipher()?.seal(block, &kept, &mut sealed)?;
            self.storage.write_all_at(&sealed, cipher_offset(block))?;
        }
        self.storage.set_len(cipher_size(new_len))?;
        self.len = new_len;
        Ok(())
    }

    fn write_zeros(&mut self, from: u64, to: u64) -> Result<(), Error> {
        let zeros = vec![0u8; (to - from).min(WINDOW_BYTES) as usize];
        let mut pos = from;
        while pos < to {
            let n = (to - pos).min(zeros.len() as u64) as usize;
            self.write_range(pos, &zeros[..n])?;
            pos += n as u64;
        }
        Ok(())
    }

    /// Writes `data` at `offset` (≤ end of file), one window of blocks at a time.
    fn write_range(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let window_end = (pos / WINDOW_BYTES + 1) * WINDOW_BYTES;
            let n = (rest.len() as u64).min(window_end - pos) as usize;
            self.write_window(pos, &rest[..n])?;
            pos += n as u64;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Seals every block `data` touches (merging old content of partial blocks) and
    /// writes them with one backing write. Plaintext is assembled directly in the
    /// output buffer and encrypted in place.
    fn write_window(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let end = offset + data.len() as u64;
        let new_len = self.len.max(end);
        let first = offset / BLOCK_SIZE;
        let last = (end - 1) / BLOCK_SIZE;
        let last_len = (new_len - last * BLOCK_SIZE).min(BLOCK_SIZE);
        let base = cipher_offset(first);
        let mut sealed =
            vec![0u8; (cipher_offset(last) + last_len + BLOCK_OVERHEAD - base) as usize];
        let mut nonces = vec![0u8; (last - first + 1) as usize * NONCE_LEN];
        random::fill(&mut nonces)?;
        for (block, nonce) in (first..=last).zip(nonces.chunks_exact(NONCE_LEN)) {
            let block_start = block * BLOCK_SIZE;
            let plain_len = (new_len - block_start).min(BLOCK_SIZE) as usize;
            let old_len = self.len.saturating_sub(block_start).min(BLOCK_SIZE) as usize;
            let from = (offset.max(block_start) - block_start) as usize;
            let to = (end.min(block_start + BLOCK_SIZE) - block_start) as usize;
            let at = (cipher_offset(block) - base) as usize;
            let sealed_block = &mut sealed[at..at + plain_len + BLOCK_OVERHEAD as usize];
            let plain = &mut sealed_block[NONCE_LEN..NONCE_LEN + plain_len];
            if old_len > 0 && (from > 0 || to < old_len) {
                let old = self.read(block_start, old_len)?;
                plain[..old_len].copy_from_slice(&old);
            }
            let data_at = (block_start + from as u64 - offset) as usize;
            plain[from..to].copy_from_slice(&data[data_at..data_at + (to - from)]);
            let nonce: &[u8; NONCE_LEN] = nonce.try_into().expect("chunks_exact");
            self.cipher()?.seal_in_place(block, nonce, sealed_block)?;
        }
        self.storage.write_all_at(&sealed, base)?;
        self.len = new_len;
        Ok(())
    }

    /// A write reaching the last block must leave the backing size exactly right:
    /// after a crash the file may carry a torn tail longer than the rewritten block.
    fn fix_tail_after_write(&mut self, end: u64) -> Result<(), Error> {
        if end.div_ceil(BLOCK_SIZE) < self.len.div_ceil(BLOCK_SIZE) {
            return Ok(());
        }
        let expected = cipher_size(self.len);
        if self.storage.size()? != expected {
            self.storage.set_len(expected)?;
        }
        Ok(())
    }

    fn ensure_header(&mut self) -> Result<(), Error> {
        if self.cipher.is_none() {
            let header = FileHeader {
                file_id: random::array()?,
            };
            self.storage.write_all_at(&header.to_bytes(), 0)?;
            // The header must be durable before any block written under it, or a
            // crash could keep blocks whose key can no longer be derived.
            self.storage.sync_data()?;
            self.cipher = Some(self.volume.file_cipher(header.file_id)?);
        }
        Ok(())
    }

    fn cipher(&self) -> Result<&FileCipher, Error> {
        self.cipher
            .as_ref()
            .ok_or(Error::BadHeader("file has data but no header"))
    }

    /// Plaintext bytes in block `block` at the current length.
    fn block_len(&self, block: u64) -> u64 {
        (self.len - block * BLOCK_SIZE).min(BLOCK_SIZE)
    }

    /// After a failed mutation the cached length may be stale: re-derive it.
    fn reload_len_after(&mut self, error: Option<&Error>) {
        if error.is_some() {
            if let Ok(cipher_len) = self.storage.size() {
                self.len = reported_plain_size(cipher_len);
            }
        }
    }
}

/// A backing file shorter than its size implies means a truncated block.
fn eof_is_tamper(error: io::Error, block: u64) -> Error {
    if error.kind() == io::ErrorKind::UnexpectedEof {
        Error::Tampered { block }
    } else {
        Error::Io(error)
    }
}
