//! The real file underneath a mapping: positioned, vectored I/O on a
//! `std::fs::File` (preadv/pwritev), buffered or O_DIRECT. This is the only
//! module that issues file syscalls by hand.

use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::AsRawFd;

/// What a mapping reads and writes pages through. Implement it to put the
/// cache over something other than a plain file (tests inject faults here).
pub trait Backing: Send + Sync {
    /// Reads into `bufs` at `offset` (one vectored call); returns bytes read,
    /// short at end of file.
    fn read_vectored_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> io::Result<usize>;
    /// Writes `bufs` at `offset` (one vectored call); returns bytes written.
    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<usize>;
    /// Like `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;
    /// Like `fsync`.
    fn sync_all(&self) -> io::Result<()>;
    /// Like `ftruncate`.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's size as the file system sees it.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Whether the backing refuses every write (an object in a store):
    /// `PageCache::open_backing` refuses a writable open of it. Default
    /// `false`.
    fn is_read_only(&self) -> bool {
        false
    }
    /// Whether buffers and offsets must be page-aligned (O_DIRECT).
    fn is_direct(&self) -> bool {
        false
    }
    /// What the file system says of the file now (`statx`), for
    /// close-to-open revalidation; `None` (the default) for a backing that
    /// is not a file, whose pages are then never revalidated.
    fn stat(&self) -> io::Result<Option<FileStat>> {
        Ok(None)
    }
    /// The file descriptor, for I/O submitted in batches on io_uring;
    /// `None` (the default) keeps this backing on its own methods, one call
    /// at a time.
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// Reads many scattered ranges (`(offset, buffer)`, any order), one
    /// result per range: bytes read, short only at end of file. A backing
    /// with latency to hide (an object store) overrides it to merge
    /// neighbours and keep requests in flight together; the default reads
    /// each range in turn with `read_vectored_at`. `CachedFile::prefetch`
    /// calls it for backings with no file descriptor.
    fn read_batch(&self, reqs: &mut [(u64, &mut [u8])]) -> Vec<io::Result<usize>> {
        reqs.iter_mut()
            .map(|(offset, buf)| {
                let mut done = 0;
                while done < buf.len() {
                    match self.read_vectored_at(&mut [IoSliceMut::new(&mut buf[done..])], *offset + done as u64) {
                        Ok(0) => break,
                        Ok(n) => done += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(done)
            })
            .collect()
    }
}

/// What the cache knows of a file on disk (from `statx`): who it is
/// (device, inode, birth time) and what moves when anyone changes it
/// (size, mtime, ctime). Inode numbers are reused once a file is deleted;
/// the birth time tells the new file from the old one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// Device, as `st_dev`.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Birth time in nanoseconds since the epoch, where the file system
    /// keeps one.
    pub btime_ns: Option<i128>,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, in nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Last status change, in nanoseconds since the epoch. Every write,
    /// truncation, rename over and chmod moves it (fine-grained on Linux
    /// 6.13 and later once someone has asked for it, as this call does).
    pub ctime_ns: i128,
    /// File type and permission bits (`st_mode`).
    pub mode: u32,
}

impl FileStat {
    /// The same file (device, inode and birth time).
    pub fn same_file(&self, other: &FileStat) -> bool {
        self.dev == other.dev && self.ino == other.ino && self.btime_ns == other.btime_ns
    }

    /// The same file with the same contents, as far as its attributes tell:
    /// same file, size, mtime and ctime.
    pub fn unchanged(&self, other: &FileStat) -> bool {
        self.same_file(other)
            && self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.ctime_ns == other.ctime_ns
    }

    /// Whether this is a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
}

fn ts_ns(t: libc::statx_timestamp) -> i128 {
    t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128
}

/// `statx` of an open file.
pub(crate) fn statx(file: &File) -> io::Result<FileStat> {
    // SAFETY: statx is plain old data; all-zero is a valid value.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let mask = libc::STATX_BASIC_STATS | libc::STATX_BTIME;
    // SAFETY: the descriptor is open for the call (borrowed from `file`),
    // the path is a NUL-terminated empty string (AT_EMPTY_PATH: the
    // descriptor itself), and `st` is valid for writes of a `statx`.
    let r = unsafe { libc::statx(file.as_raw_fd(), c"".as_ptr(), libc::AT_EMPTY_PATH, mask, &mut st) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(FileStat {
        dev: libc::makedev(st.stx_dev_major, st.stx_dev_minor),
        ino: st.stx_ino,
        btime_ns: (st.stx_mask & libc::STATX_BTIME != 0).then(|| ts_ns(st.stx_btime)),
        size: st.stx_size,
        mtime_ns: ts_ns(st.stx_mtime),
        ctime_ns: ts_ns(st.stx_ctime),
        mode: st.stx_mode as u32,
    })
}

/// The backing of a mapping with no open handle: the cache holds no
/// descriptor for it (so a deleted file's space is freed at once), keeps
/// its clean pages, and does no I/O until an open installs a new backing.
#[derive(Debug)]
pub(crate) struct Detached;

fn detached() -> io::Error {
    io::Error::other("page cache: the file has no open handle")
}

impl Backing for Detached {
    fn read_vectored_at(&self, _: &mut [IoSliceMut<'_>], _: u64) -> io::Result<usize> {
        Err(detached())
    }
    fn write_vectored_at(&self, _: &[IoSlice<'_>], _: u64) -> io::Result<usize> {
        Err(detached())
    }
    /// Nothing to sync: a mapping is detached only when it has no dirty
    /// pages, and what the last close wrote went to the file then.
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
    fn sync_all(&self) -> io::Result<()> {
        Ok(())
    }
    fn set_len(&self, _: u64) -> io::Result<()> {
        Err(detached())
    }
    fn len(&self) -> io::Result<u64> {
        Err(detached())
    }
}

/// A plain file: buffered, or O_DIRECT with page-aligned buffers.
#[derive(Debug)]
pub struct FileBacking {
    file: File,
    direct: bool,
}

impl FileBacking {
    /// Wraps an open file; `direct` says it was opened with O_DIRECT.
    pub fn new(file: File, direct: bool) -> FileBacking {
        FileBacking { file, direct }
    }
}

fn cvt(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

fn to_off(offset: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(offset).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset too large"))
}

/// IOV_MAX on Linux.
const IOV_MAX: usize = 1024;

impl Backing for FileBacking {
    fn read_vectored_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> io::Result<usize> {
        let n = bufs.len().min(IOV_MAX) as libc::c_int;
        let off = to_off(offset)?;
        let fd = self.file.as_raw_fd();
        loop {
            let r = if n == 1 {
                // One buffer (a random miss): pread64, which skips copying
                // an iovec array in. Issued as a raw syscall, as is preadv
                // below: libc's wrappers are cancellation points and pay to
                // switch cancellation on and off around every call.
                // SAFETY: bufs[0] is valid for writes of its length for the
                // duration of the call.
                unsafe { libc::syscall(libc::SYS_pread64, fd, bufs[0].as_mut_ptr(), bufs[0].len(), off) as isize }
            } else {
                // SAFETY: IoSliceMut is ABI-compatible with `struct iovec`
                // (std guarantees it on unix); the slices are valid for
                // writes of their lengths for the duration of the call, and
                // n <= bufs.len(). preadv takes the offset in two halves.
                unsafe {
                    libc::syscall(
                        libc::SYS_preadv,
                        fd,
                        bufs.as_mut_ptr(),
                        n,
                        off as u64 as libc::c_ulong,
                        0 as libc::c_ulong,
                    ) as isize
                }
            };
            match cvt(r) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<usize> {
        let n = bufs.len().min(IOV_MAX) as libc::c_int;
        let off = to_off(offset)?;
        loop {
            // SAFETY: IoSlice is ABI-compatible with `struct iovec`; the
            // slices are valid for reads of their lengths during the call.
            let r = unsafe { libc::pwritev(self.file.as_raw_fd(), bufs.as_ptr().cast(), n, off) };
            match cvt(r) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn is_direct(&self) -> bool {
        self.direct
    }

    fn stat(&self) -> io::Result<Option<FileStat>> {
        statx(&self.file).map(Some)
    }

    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(self.file.as_raw_fd())
    }
}

/// The O_DIRECT open flag, for `OpenOptionsExt::custom_flags`.
pub(crate) const O_DIRECT: i32 = libc::O_DIRECT;

/// Whether an open file may be (read, written), from its access mode.
pub(crate) fn access_mode(file: &File) -> io::Result<(bool, bool)> {
    // SAFETY: F_GETFL takes no pointer argument and the descriptor is open
    // for the duration of the call (borrowed from `file`).
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(match flags & libc::O_ACCMODE {
        libc::O_RDONLY => (true, false),
        libc::O_WRONLY => (false, true),
        _ => (true, true),
    })
}
