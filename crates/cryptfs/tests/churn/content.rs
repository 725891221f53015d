//! What a churn file holds, byte by byte, and the two checks on it.
//!
//! Every aligned 8-byte word of a file encodes where it is and whose it is:
//! bytes 0-3 the word's index in the file, byte 4 the version of the write that put it
//! there, bytes 5-7 the file's id (unique per creation in a run). So the owner, which
//! knows every write it made, can check a file exactly; and any other process can check
//! that every byte it reads belongs to this file at this offset (or is zero) without
//! knowing the file's history — even when its read races a write or a truncation (a
//! torn word still has this file's id and index bytes, or zeros).

/// A file's id: 24 bits, never 0.
pub type FileId = u32;

const WORD: u64 = 8;

/// The byte of file `id` at `offset` written by a write of `version`.
pub fn byte_at(id: FileId, version: u8, offset: u64) -> u8 {
    let word = offset / WORD;
    match offset % WORD {
        j @ 0..=3 => (word >> (8 * j)) as u8,
        4 => version,
        j => (id >> (8 * (j - 5))) as u8,
    }
}

/// The bytes a write of `version` puts at `offset..offset + len`.
pub fn fill(id: FileId, version: u8, offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64)
        .map(|at| byte_at(id, version, at))
        .collect()
}

/// The file id that the bytes of `data` (read at `offset`) carry, if one of its words
/// carries all three id bytes.
pub fn id_in(offset: u64, data: &[u8]) -> Option<FileId> {
    let first = offset.next_multiple_of(WORD);
    (first..offset + data.len() as u64)
        .step_by(WORD as usize)
        .filter(|at| at + WORD <= offset + data.len() as u64)
        .map(|at| {
            let w = &data[(at - offset) as usize..(at - offset + WORD) as usize];
            u32::from(w[5]) | u32::from(w[6]) << 8 | u32::from(w[7]) << 16
        })
        .find(|id| id & 0xff != 0 && id & 0xff00 != 0 && id & 0xff_0000 != 0)
}

/// The first byte of `data` (read at `offset` from file `id`) that is neither zero nor
/// this file's byte for that offset (any version): `(offset, byte)`.
pub fn foreign_byte(id: FileId, offset: u64, data: &[u8]) -> Option<(u64, u8)> {
    (offset..)
        .zip(data)
        .find(|&(at, &byte)| byte != 0 && at % WORD != 4 && byte != byte_at(id, 0, at))
        .map(|(at, &byte)| (at, byte))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_bytes_pass_and_another_files_bytes_fail() {
        let id = 0x0a_0b_0c;
        let data = fill(id, 7, 8190, 40);
        assert_eq!(foreign_byte(id, 8190, &data), None);
        assert_eq!(id_in(8190, &data), Some(id));
        let other = fill(0x0a_0b_0d, 7, 8190, 40);
        assert!(foreign_byte(id, 8190, &other).is_some());
        // Bytes of this file, but from another offset, are foreign too.
        assert!(foreign_byte(id, 8198, &data).is_some());
    }
}
