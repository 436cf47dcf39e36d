//! SQLite allocates through mimalloc (`store::allocator`). A test binary of its own: the
//! allocator can only be chosen before SQLite's first use in the process, and `tests/it` runs
//! many tests at once.

#[test]
fn sqlite_allocates_through_mimalloc_and_works() {
    assert!(
        quire::store::allocator::use_mimalloc(),
        "SQLite refused the allocator before its first use"
    );
    // SAFETY: plain SQLite allocation calls, freed with the matching function.
    unsafe {
        let p = rusqlite::ffi::sqlite3_malloc(1000);
        assert!(!p.is_null());
        assert!(
            libmimalloc_sys::mi_is_in_heap_region(p),
            "sqlite3_malloc did not come from mimalloc"
        );
        rusqlite::ffi::sqlite3_free(p);
    }
    // And a database that allocates (pages, an index, a sort, a resize) works on it.
    let dir = tempfile::tempdir().unwrap();
    let c = rusqlite::Connection::open(dir.path().join("a.db")).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE t(x TEXT); CREATE INDEX t_x ON t(x);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO t SELECT printf('%08d-%s', i, hex(randomblob(60))) FROM n;",
    )
    .unwrap();
    let (n, max): (i64, String) = c
        .query_row("SELECT count(*), max(x) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(n, 20000);
    assert!(max.starts_with("00020000-"), "{max}");
    let sorted: Vec<String> = c
        .prepare("SELECT x FROM t ORDER BY substr(x, 10) LIMIT 3")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(sorted.len(), 3);
}
