//! The allocation journal: which document a worker was on when an allocation failed.
//!
//! A failed allocation aborts the process, and on stable Rust no code of ours runs after it
//! (`std::alloc::set_alloc_error_hook` is unstable). The binary's global allocator is the system
//! allocator with one addition: when it is about to return null (the failure that makes Rust
//! abort), it appends `seq token bytes` of the failing thread's document to a journal file
//! beside the database, with one `write(2)` from a stack buffer, allocating nothing. At the next
//! start the executor reads the journal and quarantines the document that was still claimed by
//! that claim, after one restart instead of two (DESIGN: poison documents).
//!
//! An out-of-memory kill by the kernel (SIGKILL) cannot be seen at all; that case is left to
//! the rule of two consecutive unclean exits.

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc as Inner;
use std::cell::Cell;
use std::io::Read;
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// mimalloc, noting in the journal an allocation that fails.
///
/// mimalloc instead of the system allocator: the workers and the writer allocate a great deal of
/// short-lived JSON and strings, and the executor runs about a quarter more documents a second
/// with it (README, Performance).
pub struct Recording;

/// mimalloc commits an arena eagerly by default, and never purges what it committed that way:
/// Quire's peak RSS doubled with it (73 → 156 MB in `quire bench --docs 10000`). Arenas commit
/// on demand here, and freed pages are purged after mimalloc's usual delay (89 MB; purging at
/// once took it to 74 MB but cost 12–18% of the throughput and slowed the slowest pages).
/// Set before `main`, because the first arena is made by the first allocation, which the Rust
/// runtime makes before any code of ours runs.
#[used]
#[link_section = ".init_array"]
static MIMALLOC_OPTIONS: extern "C" fn() = mimalloc_options;

extern "C" fn mimalloc_options() {
    // The `mi_option_t` value from the header of the pinned mimalloc (v3, libmimalloc-sys
    // =0.1.49), which does not export it.
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    // SAFETY: a plain option setter, called once before any thread exists.
    unsafe { libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0) }
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static FD: AtomicI32 = AtomicI32::new(-1);

thread_local! {
    /// The document (seq, claim token) this thread is working on; (0, 0) for none.
    static WORK: Cell<(i64, u64)> = const { Cell::new((0, 0)) };
}

// SAFETY: every call is passed to mimalloc unchanged; the only addition runs after it
// answered null and neither allocates nor unwinds.
unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { Inner.alloc(layout) };
        if p.is_null() {
            failed(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { Inner.alloc_zeroed(layout) };
        if p.is_null() {
            failed(layout.size());
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { Inner.realloc(ptr, layout, new_size) };
        if p.is_null() {
            failed(new_size);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { Inner.dealloc(ptr, layout) }
    }
}

/// Called by the binary that installs `Recording` as its global allocator: only then does the
/// executor keep a journal (an in-process test server would otherwise write one it never needs).
pub fn enable() {
    ENABLED.store(true, Ordering::SeqCst);
}

fn failed(bytes: usize) {
    let fd = FD.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let Ok((seq, token)) = WORK.try_with(|w| w.get()) else {
        return;
    };
    if seq <= 0 {
        return;
    }
    let mut line = [0u8; 64];
    let mut n = 0;
    for (i, v) in [seq as u64, token, bytes as u64].into_iter().enumerate() {
        if i > 0 {
            line[n] = b' ';
            n += 1;
        }
        n += write_decimal(&mut line[n..], v);
    }
    line[n] = b'\n';
    // SAFETY: `fd` was opened for appending by `open` and is never closed; the buffer is ours.
    unsafe { libc::write(fd, line.as_ptr().cast(), n + 1) };
}

/// Writes `v` in decimal at the start of `out` (at least 20 bytes): how many bytes it took.
fn write_decimal(out: &mut [u8], mut v: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (v % 10) as u8;
        len += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..len {
        out[i] = digits[len - 1 - i];
    }
    len
}

/// While alive, a failed allocation on this thread is journaled against this claim.
pub struct Working(());

pub fn working_on(seq: i64, token: &str) -> Working {
    let token = u64::from_str_radix(token, 16).unwrap_or(0);
    let _ = WORK.try_with(|w| w.set((seq, token)));
    Working(())
}

impl Drop for Working {
    fn drop(&mut self) {
        let _ = WORK.try_with(|w| w.set((0, 0)));
    }
}

/// One failed allocation: the document, its claim token (as the store writes it) and the size.
#[derive(Debug, PartialEq)]
pub struct Entry {
    pub seq: i64,
    pub token: String,
    pub bytes: u64,
}

pub fn journal_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".alloc-journal");
    PathBuf::from(p)
}

/// The entries a previous process left, if the journal is enabled and has any.
pub fn read(db: &Path) -> Vec<Entry> {
    if !ENABLED.load(Ordering::SeqCst) {
        return Vec::new();
    }
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(journal_path(db)) {
        // A line cut short by the abort is skipped, not guessed at.
        let _ = f.read_to_string(&mut text);
    }
    parse(&text)
}

fn parse(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let seq = parts.next()?.parse().ok()?;
            let token: u64 = parts.next()?.parse().ok()?;
            let bytes = parts.next()?.parse().ok()?;
            parts.next().is_none().then(|| Entry {
                seq,
                token: format!("{token:016x}"),
                bytes,
            })
        })
        .collect()
}

/// Starts an empty journal for this process (once the previous one's entries are applied).
pub fn open(db: &Path) -> std::io::Result<()> {
    if !ENABLED.load(Ordering::SeqCst) {
        return Ok(());
    }
    use std::os::unix::fs::OpenOptionsExt;
    // Never through a link, and readable by this user only: for PostgreSQL the journal may sit
    // in a shared directory (`store::Db::state_path`).
    let f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(journal_path(db))?;
    let fd = f.into_raw_fd();
    let old = FD.swap(fd, Ordering::SeqCst);
    if old >= 0 {
        // SAFETY: `old` came from an earlier `open` and no one else holds it.
        unsafe { libc::close(old) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_back_as_written_and_a_cut_line_is_skipped() {
        let mut buf = [0u8; 20];
        let n = write_decimal(&mut buf, u64::MAX);
        assert_eq!(&buf[..n], u64::MAX.to_string().as_bytes());
        let n = write_decimal(&mut buf, 0);
        assert_eq!(&buf[..n], b"0");
        let text = format!("7 {} 4611686018427387904\n9 12", 0xabcdu64);
        assert_eq!(
            parse(&text),
            vec![Entry {
                seq: 7,
                token: "000000000000abcd".into(),
                bytes: 1 << 62
            }]
        );
    }
}
