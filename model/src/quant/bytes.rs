//! [`SharedBytes`]: a cheaply clonable, immutable byte range over a shared owner (a memory map,
//! a `Vec<u8>`, ...), so quantized weights stay where they are (no copy of a mmapped model).

use std::fmt;
use std::ops::{Deref, Range};
use std::sync::Arc;

/// An immutable byte range kept alive by a shared owner.
#[derive(Clone)]
pub struct SharedBytes {
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    /// The owner is a read-only private mapping of a file (see [`SharedBytes::file_mapped`]).
    file_mapped: bool,
    start: usize,
    len: usize,
}

impl SharedBytes {
    /// Wraps a whole owner.
    pub fn new(owner: Arc<dyn AsRef<[u8]> + Send + Sync>) -> Self {
        let len = (*owner).as_ref().len();
        Self {
            owner,
            file_mapped: false,
            start: 0,
            len,
        }
    }

    /// Bytes of a read-only private memory map of a file: their resident pages may be dropped
    /// at any time ([`SharedBytes::release_resident`]) and come back from the file unchanged.
    ///
    /// # Safety
    /// `owner` must be such a mapping (never written through, e.g. `memmap2::Mmap`), so that
    /// dropping its pages cannot lose data.
    pub unsafe fn file_mapped(owner: Arc<dyn AsRef<[u8]> + Send + Sync>) -> Self {
        Self {
            file_mapped: true,
            ..Self::new(owner)
        }
    }

    /// Drops this process's resident pages wholly inside `range` of these bytes when they are
    /// a file mapping (they fault back in from the file, unchanged, when read again); does
    /// nothing otherwise. Used after a matrix was repacked, so the raw copy stops counting.
    pub fn release_resident(&self, range: Range<usize>) {
        #[cfg(target_os = "linux")]
        if self.file_mapped && range.start <= range.end && range.end <= self.len {
            const PAGE: usize = 4096;
            let base = self.as_slice().as_ptr() as usize;
            let start = (base + range.start).div_ceil(PAGE) * PAGE;
            let end = (base + range.end) / PAGE * PAGE;
            if end > start {
                // SAFETY: the pages lie inside a read-only private file mapping (the
                // constructor's contract): MADV_DONTNEED only drops them from this process;
                // the next read maps the file's unchanged contents again.
                unsafe {
                    libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = range;
    }

    /// Takes ownership of a vector.
    pub fn from_vec(v: Vec<u8>) -> Self {
        Self::new(Arc::new(v))
    }

    /// A sub-range (relative to this range), or `None` when it is out of bounds.
    pub fn slice(&self, range: Range<usize>) -> Option<Self> {
        if range.start > range.end || range.end > self.len {
            return None;
        }
        Some(Self {
            owner: self.owner.clone(),
            file_mapped: self.file_mapped,
            start: self.start + range.start,
            len: range.end - range.start,
        })
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &(*self.owner).as_ref()[self.start..self.start + self.len]
    }
}

impl Deref for SharedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl From<Vec<u8>> for SharedBytes {
    fn from(v: Vec<u8>) -> Self {
        Self::from_vec(v)
    }
}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedBytes({} bytes at {})", self.len, self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_share_and_bound_check() {
        let b = SharedBytes::from_vec((0..10).collect());
        let s = b.slice(2..6).unwrap();
        assert_eq!(&*s, &[2, 3, 4, 5]);
        let s2 = s.slice(1..3).unwrap();
        assert_eq!(&*s2, &[3, 4]);
        assert!(s.slice(2..5).is_none());
        #[allow(clippy::reversed_empty_ranges)]
        let bad = b.slice(5..4);
        assert!(bad.is_none());
    }
}
