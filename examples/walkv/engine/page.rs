//! The data page: a 4 KiB slotted page holding the records of one bucket,
//! with the LSN of the last change applied and a CRC-32 in its header.
//!
//! ```text
//! offset  size  field
//!      0     8  page LSN (u64 LE): the log record that last changed the page
//!      8     4  CRC-32 of the whole page with these four bytes read as zero
//!     12     2  slot count n (u16 LE)
//!     14     2  start of the record area (u16 LE; records fill it to the end)
//!     16    2n  slot directory: record offsets (u16 LE), in key order
//!    ...        free space
//!  start        records, packed: key (u64 LE), value length (u16 LE), value
//! ```
//!
//! A page of zeros (never written: the data file is created sparse) is a
//! valid empty page with LSN 0. A change rebuilds the page from its
//! records ([`Page::with`]), so the records stay packed and sorted; the
//! caller then seals it with the change's LSN ([`Page::seal`]), which sets
//! the checksum.

use std::io;

use page_cache::PAGE_SIZE;

use super::crc;

/// Bytes of the page header.
pub const HEADER: usize = 16;
/// Bytes of a record before its value: key and value length.
const RECORD_HEADER: usize = 10;
/// Bytes of a slot in the directory.
const SLOT: usize = 2;
/// The longest value a record holds.
pub const MAX_VALUE: usize = 100;

fn corrupt(index: u64, what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("walkv: data page {index}: {what}"))
}

fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes([b[at], b[at + 1]]) as usize
}

/// The LSN in a page's header (what the cache's `WriteAheadLog::page_lsn` reads).
pub fn lsn(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes[..8].try_into().expect("a page holds a header"))
}

/// The checksum a page's bytes should carry: CRC-32 of the page with the
/// checksum field taken as zero.
fn checksum(bytes: &[u8]) -> u32 {
    let c = crc::update(0, &bytes[..8]);
    let c = crc::update(c, &[0; 4]);
    crc::update(c, &bytes[12..])
}

/// The read verifier's test: the page is all zeros or carries its checksum.
/// `InvalidData` otherwise (a torn or corrupt page).
pub fn verify(index: u64, bytes: &[u8]) -> io::Result<()> {
    if bytes.len() != PAGE_SIZE {
        return Err(corrupt(index, "not a whole page"));
    }
    let stored = u32::from_le_bytes(bytes[8..12].try_into().expect("four bytes"));
    if stored == checksum(bytes) || bytes.iter().all(|&b| b == 0) {
        Ok(())
    } else {
        Err(corrupt(index, "checksum mismatch (torn or corrupt page)"))
    }
}

/// A data page's bytes, checked for structure (not for the checksum, which
/// the read verifier checked as the page came in).
pub struct Page<'a> {
    bytes: &'a [u8],
    index: u64,
}

impl<'a> Page<'a> {
    /// Parses page `index`: the slot directory and every record must lie
    /// inside the page, and the keys must be in order.
    pub fn parse(index: u64, bytes: &'a [u8]) -> io::Result<Page<'a>> {
        if bytes.len() != PAGE_SIZE {
            return Err(corrupt(index, "not a whole page"));
        }
        let page = Page { bytes, index };
        let n = page.len();
        let start = u16_at(bytes, 14);
        if n == 0 {
            return Ok(page);
        }
        if HEADER + n * SLOT > start || start > PAGE_SIZE {
            return Err(corrupt(index, "slot directory overlaps the records"));
        }
        let mut last = None;
        for slot in 0..n {
            let at = u16_at(bytes, HEADER + slot * SLOT);
            if at < start || at + RECORD_HEADER > PAGE_SIZE || at + RECORD_HEADER + u16_at(bytes, at + 8) > PAGE_SIZE {
                return Err(corrupt(index, "record outside the page"));
            }
            let key = page.key(slot);
            if last.is_some_and(|l| l >= key) {
                return Err(corrupt(index, "keys out of order"));
            }
            last = Some(key);
        }
        Ok(page)
    }

    /// The page's LSN.
    pub fn lsn(&self) -> u64 {
        lsn(self.bytes)
    }

    /// Records in the page.
    pub fn len(&self) -> usize {
        u16_at(self.bytes, 12)
    }

    fn key(&self, slot: usize) -> u64 {
        let at = u16_at(self.bytes, HEADER + slot * SLOT);
        u64::from_le_bytes(self.bytes[at..at + 8].try_into().expect("eight bytes"))
    }

    fn value(&self, slot: usize) -> &'a [u8] {
        let at = u16_at(self.bytes, HEADER + slot * SLOT);
        let len = u16_at(self.bytes, at + 8);
        &self.bytes[at + RECORD_HEADER..at + RECORD_HEADER + len]
    }

    /// The value of `key`, by binary search over the slot directory.
    pub fn get(&self, key: u64) -> Option<&'a [u8]> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.key(mid).cmp(&key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(self.value(mid)),
            }
        }
        None
    }

    /// The records, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (u64, &'a [u8])> + '_ {
        (0..self.len()).map(|slot| (self.key(slot), self.value(slot)))
    }

    /// A new image of this page with `key` set to `value` (`None`: removed),
    /// not yet sealed; `StorageFull` if the records no longer fit.
    pub fn with(&self, key: u64, value: Option<&[u8]>) -> io::Result<Box<[u8; PAGE_SIZE]>> {
        let mut entries: Vec<(u64, &[u8])> = self.entries().filter(|&(k, _)| k != key).collect();
        if let Some(v) = value {
            let at = entries.partition_point(|&(k, _)| k < key);
            entries.insert(at, (key, v));
        }
        let need: usize = HEADER + entries.iter().map(|(_, v)| SLOT + RECORD_HEADER + v.len()).sum::<usize>();
        if need > PAGE_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("walkv: data page {} is full ({need} bytes needed)", self.index),
            ));
        }
        let mut out = Box::new([0u8; PAGE_SIZE]);
        let mut end = PAGE_SIZE;
        for (slot, (k, v)) in entries.iter().enumerate() {
            end -= RECORD_HEADER + v.len();
            out[end..end + 8].copy_from_slice(&k.to_le_bytes());
            out[end + 8..end + 10].copy_from_slice(&(v.len() as u16).to_le_bytes());
            out[end + RECORD_HEADER..end + RECORD_HEADER + v.len()].copy_from_slice(v);
            out[HEADER + slot * SLOT..HEADER + slot * SLOT + 2].copy_from_slice(&(end as u16).to_le_bytes());
        }
        out[12..14].copy_from_slice(&(entries.len() as u16).to_le_bytes());
        out[14..16].copy_from_slice(&(end as u16).to_le_bytes());
        Ok(out)
    }
}

/// Stamps a page image with the LSN of the change it holds and its checksum.
pub fn seal(bytes: &mut [u8; PAGE_SIZE], lsn: u64) {
    bytes[..8].copy_from_slice(&lsn.to_le_bytes());
    let sum = checksum(&bytes[..]);
    bytes[8..12].copy_from_slice(&sum.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_remove_seal_verify() {
        let zero = [0u8; PAGE_SIZE];
        verify(0, &zero).unwrap();
        let empty = Page::parse(0, &zero).unwrap();
        assert_eq!((empty.len(), empty.lsn()), (0, 0));
        let mut a = empty.with(7, Some(b"seven")).unwrap();
        seal(&mut a, 3);
        verify(0, &a[..]).unwrap();
        let mut b = Page::parse(0, &a[..]).unwrap().with(2, Some(b"two")).unwrap();
        seal(&mut b, 4);
        let p = Page::parse(0, &b[..]).unwrap();
        assert_eq!(
            (p.lsn(), p.len(), p.get(2), p.get(7), p.get(5)),
            (4, 2, Some(&b"two"[..]), Some(&b"seven"[..]), None)
        );
        let c = p.with(7, None).unwrap();
        assert_eq!(Page::parse(0, &c[..]).unwrap().entries().collect::<Vec<_>>(), vec![(2, &b"two"[..])]);
        b[100] ^= 1;
        assert_eq!(verify(0, &b[..]).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn full_page_is_refused() {
        let zero = [0u8; PAGE_SIZE];
        let mut page = Page::parse(0, &zero).unwrap().with(0, Some(&[1; MAX_VALUE])).unwrap();
        let mut key = 1;
        loop {
            match Page::parse(0, &page[..]).unwrap().with(key, Some(&[1; MAX_VALUE])) {
                Ok(p) => page = p,
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::StorageFull);
                    break;
                }
            }
            key += 1;
        }
        assert_eq!(key as usize, (PAGE_SIZE - HEADER) / (SLOT + RECORD_HEADER + MAX_VALUE));
    }
}
