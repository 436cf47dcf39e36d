//! SQLite allocates through mimalloc, the process's own allocator.
//!
//! By default SQLite calls the C library's malloc. glibc's arenas are limited to two (`main`,
//! to keep the resident size flat), so the writer, the workers, the checkpointer and the HTTP
//! readers queue on the two arena locks: in `perf sched` of a first run the writer blocked on
//! one about 190 times a second, inside its inserts and commits. mimalloc keeps a heap per
//! thread, takes no lock on the fast path, and returns freed pages on the schedule
//! `alloc_journal` sets for everything else.

use libmimalloc_sys as mi;
use rusqlite::ffi;
use std::ffi::{c_int, c_void};

unsafe extern "C" fn malloc(n: c_int) -> *mut c_void {
    // SAFETY: mimalloc accepts any size; SQLite never asks for a negative one.
    unsafe { mi::mi_malloc(n.max(0) as usize) }
}

unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: SQLite frees only what `malloc`/`realloc` above returned.
    unsafe { mi::mi_free(p) }
}

unsafe extern "C" fn realloc(p: *mut c_void, n: c_int) -> *mut c_void {
    // SAFETY: as for `malloc` and `free`.
    unsafe { mi::mi_realloc(p, n.max(0) as usize) }
}

unsafe extern "C" fn size(p: *mut c_void) -> c_int {
    // SAFETY: `p` came from the functions above.
    let n = unsafe { mi::mi_usable_size(p) };
    n.min(c_int::MAX as usize) as c_int
}

unsafe extern "C" fn roundup(n: c_int) -> c_int {
    // SAFETY: a pure function of the size.
    let r = unsafe { mi::mi_good_size(n.max(0) as usize) };
    r.min(c_int::MAX as usize) as c_int
}

unsafe extern "C" fn init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn shutdown(_: *mut c_void) {}

/// Points SQLite's allocations at mimalloc. Call before the first connection opens (SQLite
/// refuses a change of allocator once initialized, and this then answers false).
pub fn use_mimalloc() -> bool {
    let methods = ffi::sqlite3_mem_methods {
        xMalloc: Some(malloc),
        xFree: Some(free),
        xRealloc: Some(realloc),
        xSize: Some(size),
        xRoundup: Some(roundup),
        xInit: Some(init),
        xShutdown: Some(shutdown),
        pAppData: std::ptr::null_mut(),
    };
    // SAFETY: SQLITE_CONFIG_MALLOC takes a pointer to a `sqlite3_mem_methods` that SQLite
    // copies before returning; it is only valid before `sqlite3_initialize`, and SQLite
    // reports misuse as SQLITE_MISUSE rather than acting on it.
    unsafe {
        ffi::sqlite3_config(
            ffi::SQLITE_CONFIG_MALLOC,
            &methods as *const ffi::sqlite3_mem_methods,
        ) == ffi::SQLITE_OK
    }
}
