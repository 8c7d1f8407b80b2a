//! The redb storage backend the roles use under amnesia.
//!
//! redb's own `InMemoryBackend` keeps the database "file" in one `Vec<u8>`.
//! redb grows its file by doubling regions, so that vector is mostly
//! length nobody wrote — measured at 3.3× the data stored with 52 MB of
//! objects — and every growth copies it all into a new allocation (with
//! the old one alive until the copy ends). This backend keeps the file as
//! 64 KiB pages allocated when first written: length nobody wrote costs
//! nothing, growing copies nothing, and truncating frees the pages past
//! the end. Same contract as the built-in backend: reads and writes must
//! fall within the length.

use std::io;
use std::sync::RwLock;

const PAGE: usize = 64 * 1024;

#[derive(Default)]
pub struct PagedMemory {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    len: u64,
    pages: Vec<Option<Box<[u8]>>>,
}

impl std::fmt::Debug for PagedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (len, resident) = self
            .inner
            .read()
            .map(|g| (g.len, g.pages.iter().flatten().count() * PAGE))
            .unwrap_or_default();
        f.debug_struct("PagedMemory")
            .field("len", &len)
            .field("resident", &resident)
            .finish()
    }
}

fn poisoned<T>(_: T) -> io::Error {
    io::Error::other("memory backend lock poisoned by a panic")
}

fn out_of_range() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "offset out of range")
}

impl PagedMemory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held in pages (what the backend costs in RAM).
    pub fn resident_bytes(&self) -> u64 {
        self.inner
            .read()
            .map(|g| (g.pages.iter().flatten().count() * PAGE) as u64)
            .unwrap_or(0)
    }
}

/// The (page, offset in page, length) pieces of `len` bytes at `offset`.
fn pieces(mut offset: u64, len: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let mut left = len;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let page = (offset / PAGE as u64) as usize;
        let at = (offset % PAGE as u64) as usize;
        let n = (PAGE - at).min(left);
        offset += n as u64;
        left -= n;
        Some((page, at, n))
    })
}

fn in_range(offset: u64, n: usize, len: u64) -> io::Result<()> {
    match offset.checked_add(n as u64) {
        Some(end) if end <= len => Ok(()),
        _ => Err(out_of_range()),
    }
}

impl redb::StorageBackend for PagedMemory {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.inner.read().map_err(poisoned)?.len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let g = self.inner.read().map_err(poisoned)?;
        in_range(offset, out.len(), g.len)?;
        let mut done = 0;
        for (page, at, n) in pieces(offset, out.len()) {
            let dst = &mut out[done..done + n];
            match g.pages.get(page).and_then(Option::as_deref) {
                Some(p) => dst.copy_from_slice(&p[at..at + n]),
                None => dst.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut g = self.inner.write().map_err(poisoned)?;
        let pages = usize::try_from(len.div_ceil(PAGE as u64)).map_err(|_| out_of_range())?;
        if len < g.len {
            g.pages.truncate(pages);
            // What a shrink cut off reads as zeros if the file grows again.
            let tail = (len % PAGE as u64) as usize;
            if tail != 0 {
                if let Some(Some(last)) = g.pages.last_mut() {
                    last[tail..].fill(0);
                }
            }
        }
        g.len = len;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut g = self.inner.write().map_err(poisoned)?;
        in_range(offset, data.len(), g.len)?;
        let mut done = 0;
        for (page, at, n) in pieces(offset, data.len()) {
            if g.pages.len() <= page {
                g.pages.resize_with(page + 1, || None);
            }
            let p = g.pages[page].get_or_insert_with(|| vec![0u8; PAGE].into_boxed_slice());
            p[at..at + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::StorageBackend;

    #[test]
    fn reads_what_was_written_across_pages_and_zeros_elsewhere() {
        let m = PagedMemory::new();
        m.set_len(10 * PAGE as u64).unwrap();
        assert_eq!(m.resident_bytes(), 0, "length alone costs nothing");
        let data: Vec<u8> = (0..PAGE + 300).map(|i| (i % 251) as u8).collect();
        let at = 3 * PAGE as u64 - 100;
        m.write(at, &data).unwrap();
        // 100 bytes of page 2, all of page 3, 200 bytes of page 4.
        assert_eq!(m.resident_bytes(), 3 * PAGE as u64);
        let mut back = vec![0u8; data.len()];
        m.read(at, &mut back).unwrap();
        assert_eq!(back, data);
        let mut zeros = vec![1u8; 64];
        m.read(0, &mut zeros).unwrap();
        assert!(zeros.iter().all(|&b| b == 0));
        // Out of range either way.
        assert!(m.read(10 * PAGE as u64 - 1, &mut [0u8; 2]).is_err());
        assert!(m.write(10 * PAGE as u64, &[1]).is_err());
        assert!(m.write(u64::MAX, &[1]).is_err());
    }

    #[test]
    fn shrinking_frees_pages_and_forgets_the_cut_bytes() {
        let m = PagedMemory::new();
        m.set_len(4 * PAGE as u64).unwrap();
        m.write(0, &vec![9u8; 4 * PAGE]).unwrap();
        m.set_len(PAGE as u64 + 10).unwrap();
        assert_eq!(m.resident_bytes(), 2 * PAGE as u64);
        m.set_len(4 * PAGE as u64).unwrap();
        let mut b = vec![0u8; 20];
        m.read(PAGE as u64, &mut b).unwrap();
        assert_eq!(&b[..10], &[9u8; 10]);
        assert_eq!(&b[10..], &[0u8; 10]);
        let mut c = vec![1u8; PAGE];
        m.read(3 * PAGE as u64, &mut c).unwrap();
        assert!(c.iter().all(|&x| x == 0));
    }

    #[test]
    fn redb_runs_on_it() {
        const T: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("t");
        let db = redb::Database::builder()
            .create_with_backend(PagedMemory::new())
            .unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(T).unwrap();
            for i in 0..200u64 {
                t.insert(i, vec![i as u8; 10_000].as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
        let r = redb::ReadableDatabase::begin_read(&db).unwrap();
        let t = r.open_table(T).unwrap();
        assert_eq!(
            t.get(7).unwrap().unwrap().value(),
            vec![7u8; 10_000].as_slice()
        );
    }
}
