//! Index bundles: a segment's full-text index directory as one immutable object, so it
//! travels to object storage in one create-only put and back into the disk cache in one GET.
//!
//! Layout: the files' bytes one after the other, then a footer listing them, then
//! `footer_len: u32`, `crc32(footer): u32` and the magic `TLB1` (all little-endian):
//!
//! ```text
//! [file 0][file 1]…[footer: count u32, then per file: name_len u16, name, offset u64, len u64]
//! [footer_len u32][footer crc32 u32]["TLB1"]
//! ```
//!
//! Reading checks the magic, the checksum and that every file lies inside the data area, so a
//! truncated or damaged bundle is an error, never a wrong answer.

use std::io::Write;
use std::path::Path;

use crate::error::StorageError;

const MAGIC: &[u8; 4] = b"TLB1";
const TRAILER: usize = 12;
/// Most files one bundle lists (a tantivy index has a dozen).
const MAX_FILES: usize = 4096;

/// One file of a bundle: its name and its bytes' place in the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleEntry {
    pub name: String,
    pub offset: u64,
    pub len: u64,
}

/// Writes every regular file of `dir` (not recursive; sorted by name) into `out` as a
/// bundle; returns the bytes written.
pub fn pack(dir: &Path, out: &mut impl Write) -> Result<u64, StorageError> {
    let io =
        |what: &str, e: std::io::Error| StorageError::SegmentWrite(format!("bundle {}: {what}: {e}", dir.display()));
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io("list", e))? {
        let entry = entry.map_err(|e| io("list", e))?;
        if entry.file_type().map_err(|e| io("stat", e))?.is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    if names.len() > MAX_FILES {
        return Err(StorageError::SegmentWrite(format!("bundle {}: {} files", dir.display(), names.len())));
    }
    let mut entries = Vec::with_capacity(names.len());
    let mut offset = 0u64;
    for name in names {
        let mut f = std::fs::File::open(dir.join(&name)).map_err(|e| io("open", e))?;
        let len = std::io::copy(&mut f, out).map_err(|e| io("copy", e))?;
        entries.push(BundleEntry { name, offset, len });
        offset += len;
    }
    let mut footer = Vec::new();
    footer.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in &entries {
        footer.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        footer.extend_from_slice(e.name.as_bytes());
        footer.extend_from_slice(&e.offset.to_le_bytes());
        footer.extend_from_slice(&e.len.to_le_bytes());
    }
    out.write_all(&footer).map_err(|e| io("write footer", e))?;
    out.write_all(&(footer.len() as u32).to_le_bytes()).map_err(|e| io("write footer", e))?;
    out.write_all(&crc32fast::hash(&footer).to_le_bytes()).map_err(|e| io("write footer", e))?;
    out.write_all(MAGIC).map_err(|e| io("write footer", e))?;
    Ok(offset + footer.len() as u64 + TRAILER as u64)
}

/// The files listed by the bundle `bytes`, checked to lie inside it.
pub fn entries(bytes: &[u8]) -> Result<Vec<BundleEntry>, StorageError> {
    let bad = |why: &str| StorageError::SegmentRead(format!("damaged index bundle: {why}"));
    if bytes.len() < TRAILER || &bytes[bytes.len() - 4..] != MAGIC {
        return Err(bad("no TLB1 trailer"));
    }
    let t = bytes.len() - TRAILER;
    let footer_len = u32::from_le_bytes(bytes[t..t + 4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[t + 4..t + 8].try_into().expect("4 bytes"));
    let data_end = t.checked_sub(footer_len).ok_or_else(|| bad("footer longer than the bundle"))?;
    let mut footer = &bytes[data_end..t];
    if crc32fast::hash(footer) != crc {
        return Err(bad("footer checksum mismatch"));
    }
    let mut take = |n: usize| -> Result<&[u8], StorageError> {
        if footer.len() < n {
            return Err(bad("footer cut short"));
        }
        let (head, rest) = footer.split_at(n);
        footer = rest;
        Ok(head)
    };
    let count = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
    if count > MAX_FILES {
        return Err(bad("too many files"));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let name_len = u16::from_le_bytes(take(2)?.try_into().expect("2 bytes")) as usize;
        let name = std::str::from_utf8(take(name_len)?).map_err(|_| bad("file name is not UTF-8"))?.to_string();
        let offset = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
        let len = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
        if offset.checked_add(len).is_none_or(|end| end > data_end as u64) {
            return Err(bad("a file lies outside the bundle"));
        }
        if name.is_empty() || name.contains('/') || name.contains('\0') {
            return Err(bad("invalid file name"));
        }
        out.push(BundleEntry { name, offset, len });
    }
    if !footer.is_empty() {
        return Err(bad("bytes after the last footer entry"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_lists_its_files_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("meta.json"), b"{\"a\":1}").unwrap();
        std::fs::write(dir.path().join("x.idx"), vec![7u8; 1000]).unwrap();
        std::fs::write(dir.path().join("empty"), b"").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let mut bytes = Vec::new();
        let n = pack(dir.path(), &mut bytes).unwrap();
        assert_eq!(n, bytes.len() as u64);
        let e = entries(&bytes).unwrap();
        let names: Vec<&str> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["empty", "meta.json", "x.idx"], "sorted, directories left out");
        let meta = &e[1];
        assert_eq!(&bytes[meta.offset as usize..(meta.offset + meta.len) as usize], b"{\"a\":1}");
        assert_eq!(e[2].len, 1000);

        // Every truncation and every flipped byte of the footer area is refused.
        for cut in 0..bytes.len() {
            assert!(entries(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let footer_start = bytes.len() - 12 - (4 + 3 * 18 + "empty".len() + "meta.json".len() + "x.idx".len());
        for i in footer_start..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(entries(&b).is_err(), "flip at {i}");
        }
        // An empty directory is an empty bundle.
        let empty = tempfile::tempdir().unwrap();
        let mut b = Vec::new();
        pack(empty.path(), &mut b).unwrap();
        assert!(entries(&b).unwrap().is_empty());
    }
}
