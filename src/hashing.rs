//! File digests: BLAKE3 (memory-mapped and multi-threaded, for multi-GB model files) and
//! SHA-256, and checksum lines in the formats of `b3sum` and `sha256sum`.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::checks::model_file::FileDigests;

/// BLAKE3 of a file. Large files are memory-mapped and hashed on all cores; the blake3
/// crate falls back to plain reads where mapping does not pay or is impossible.
pub fn blake3_file(path: &Path) -> io::Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap_rayon(path)?;
    Ok(hasher.finalize())
}

pub fn blake3_reader(mut reader: impl Read) -> io::Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    io::copy(&mut reader, &mut hasher)?;
    Ok(hasher.finalize())
}

pub fn sha256_reader(mut reader: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

pub fn sha256_file(path: &Path) -> io::Result<String> {
    sha256_reader(File::open(path)?)
}

pub fn digest_file(path: &Path) -> io::Result<FileDigests> {
    Ok(FileDigests {
        size_bytes: std::fs::metadata(path)?.len(),
        sha256: sha256_file(path)?,
        blake3: blake3_file(path)?.to_hex().to_string(),
    })
}

/// `HEX  NAME`, as `b3sum` and `sha256sum` print it: a name holding a backslash or a
/// newline is escaped and the line starts with a backslash.
pub fn checksum_line(hex: &str, name: &str) -> String {
    if name.contains('\\') || name.contains('\n') {
        let escaped = name.replace('\\', "\\\\").replace('\n', "\\n");
        format!("\\{hex}  {escaped}")
    } else {
        format!("{hex}  {name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(
            blake3_reader(&b""[..]).unwrap().to_hex().as_str(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(
            sha256_reader(&b"abc"[..]).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn mmap_and_streaming_blake3_agree_on_a_multi_chunk_file() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(f.path(), &data).unwrap();
        assert_eq!(blake3_file(f.path()).unwrap(), blake3::hash(&data));
        let d = digest_file(f.path()).unwrap();
        assert_eq!(d.size_bytes, 3_000_000);
        assert_eq!(d.sha256, sha256_reader(&data[..]).unwrap());
    }

    #[test]
    fn names_with_backslashes_or_newlines_are_escaped() {
        assert_eq!(checksum_line("ab", "x y"), "ab  x y");
        assert_eq!(checksum_line("ab", "a\\b\nc"), "\\ab  a\\\\b\\nc");
    }
}
