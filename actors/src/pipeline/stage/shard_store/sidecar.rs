//! The sidecar checksum of a cached shard: `<hash>.sum` next to `<hash>.gguf`.
//!
//! A shard's name is its SHA-256, checked once when it arrives; re-hashing it with SHA-256
//! before every stage start would cost about as much as loading it. The sidecar holds a
//! cheap XXH3-128 of the file (several times faster than SHA-256, computed in the same pass as
//! the SHA-256 at arrival) and its length, so a flipped bit on an SD card or a truncated file
//! is caught before a stage maps the shard. It guards against decay, not against an attacker
//! who can write the cache folder (such a one could rewrite the sidecar too).
//!
//! The file is one line: `xxh3-128 <32 hex digits> <length in bytes>`.

use std::io::Read;
use xxhash_rust::xxh3::Xxh3Default;

/// File extension of the sidecar.
pub const EXT: &str = "sum";

/// A shard's length and checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checksum {
    /// Length in bytes.
    pub len: u64,
    /// XXH3-128 of the content.
    pub xxh3: u128,
}

impl Checksum {
    /// The sidecar file's text.
    pub fn to_line(self) -> String {
        format!("xxh3-128 {:032x} {}\n", self.xxh3, self.len)
    }

    /// Parses a sidecar's text; `None` when it is not exactly what [`Checksum::to_line`]
    /// writes (a damaged sidecar counts as a damaged shard).
    pub fn parse(text: &str) -> Option<Checksum> {
        let line = text.strip_suffix('\n')?;
        let mut parts = line.split(' ');
        if parts.next()? != "xxh3-128" {
            return None;
        }
        let digest = parts.next()?;
        let len = parts.next()?;
        if parts.next().is_some()
            || digest.len() != 32
            || !digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            || len.is_empty()
            || !len.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Some(Checksum {
            len: len.parse().ok()?,
            xxh3: u128::from_str_radix(digest, 16).ok()?,
        })
    }
}

/// Computes a [`Checksum`] over bytes fed in pieces.
pub struct Summer {
    hasher: Xxh3Default,
    len: u64,
}

impl Default for Summer {
    fn default() -> Self {
        Summer {
            hasher: Xxh3Default::new(),
            len: 0,
        }
    }
}

impl Summer {
    /// Adds the next piece.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// The checksum of everything fed so far.
    pub fn finish(&self) -> Checksum {
        Checksum {
            len: self.len,
            xxh3: self.hasher.digest128(),
        }
    }
}

/// The checksum of everything `r` yields.
pub fn checksum_of(mut r: impl Read) -> std::io::Result<Checksum> {
    let mut s = Summer::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(s.finish());
        }
        s.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_round_trips_and_anything_else_is_refused() {
        let c = checksum_of(&b"hello shard"[..]).unwrap();
        assert_eq!(c.len, 11);
        assert_eq!(Checksum::parse(&c.to_line()), Some(c));
        let line = c.to_line();
        for bad in [
            "",
            line.trim_end(),
            &line.replace("xxh3-128", "xxh3-64"),
            &line.replace(" 11\n", " 11 \n"),
            &line.replace(" 11\n", " -11\n"),
            &line.replace(" 11\n", " \n"),
            &line[..20],
            &format!("{line}x"),
            &line.to_uppercase(),
        ] {
            assert_eq!(Checksum::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn one_flipped_bit_or_a_lost_byte_changes_the_checksum() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let good = checksum_of(&data[..]).unwrap();
        let mut flipped = data.clone();
        flipped[123_456] ^= 0x10;
        assert_ne!(checksum_of(&flipped[..]).unwrap(), good);
        assert_ne!(checksum_of(&data[..data.len() - 1]).unwrap(), good);
        // Fed in pieces or at once: the same.
        let mut s = Summer::default();
        for piece in data.chunks(4097) {
            s.update(piece);
        }
        assert_eq!(s.finish(), good);
    }
}
