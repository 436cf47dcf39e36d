//! The store's own connection, transaction, statement and row types. Every store module and
//! every layer above speaks to these, never to the database driver, so that a second backend
//! (PostgreSQL, `docs/postgres/plan.md`) is a second variant here rather than a second copy of
//! each module. The surface is the subset of rusqlite's the store uses, under the same names;
//! values still travel as rusqlite's `ToSql`/`FromSql`, which the plan keeps as the neutral
//! value model.

use rusqlite::types::{FromSql, ValueRef};
use rusqlite::RowIndex;
use std::path::Path;

pub use rusqlite::params;
pub use rusqlite::types::ToSql;

/// The values bound to a statement's placeholders, in order: `params![…]`, an array of one
/// type, `[]`, or `params_from_iter`. Unlike the driver's, this trait hands the values over as
/// they are, so that a backend other than SQLite can encode them by the types it inferred.
pub trait Params {
    fn with_values<R>(self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R;
}

impl Params for &[&dyn ToSql] {
    fn with_values<R>(self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
        f(self)
    }
}

impl Params for [&(dyn ToSql + Send + Sync); 0] {
    fn with_values<R>(self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
        f(&[])
    }
}

macro_rules! array_params {
    ($($n:literal)+) => {$(
        impl<T: ToSql> Params for [T; $n] {
            fn with_values<R>(self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
                f(&self.each_ref().map(|v| v as &dyn ToSql))
            }
        }
    )+};
}

array_params!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);

/// Values of one type from an iterator, bound in order.
pub struct ParamsFromIter<I>(I);

pub fn params_from_iter<I>(values: I) -> ParamsFromIter<I>
where
    I: IntoIterator,
    I::Item: ToSql,
{
    ParamsFromIter(values)
}

impl<I> Params for ParamsFromIter<I>
where
    I: IntoIterator,
    I::Item: ToSql,
{
    fn with_values<R>(self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
        let owned: Vec<I::Item> = self.0.into_iter().collect();
        let values: Vec<&dyn ToSql> = owned.iter().map(|v| v as &dyn ToSql).collect();
        f(&values)
    }
}

/// A failed statement, as the backend reported it.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

pub type DbResult<T> = Result<T, DbError>;

impl DbError {
    /// The query that expected a row found none.
    pub fn no_rows() -> Self {
        DbError::Sqlite(rusqlite::Error::QueryReturnedNoRows)
    }

    pub fn is_no_rows(&self) -> bool {
        matches!(self, DbError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
    }
}

/// `Ok(None)` for a query that found no row.
pub trait OptionalExtension<T> {
    fn optional(self) -> DbResult<Option<T>>;
}

impl<T> OptionalExtension<T> for DbResult<T> {
    fn optional(self) -> DbResult<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_no_rows() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// One connection to the database. Like the driver's, it is `Send` and used by one thread at a
/// time.
pub struct Connection {
    inner: Inner,
}

enum Inner {
    Sqlite(rusqlite::Connection),
}

impl Connection {
    pub(crate) fn from_sqlite(c: rusqlite::Connection) -> Self {
        Connection {
            inner: Inner::Sqlite(c),
        }
    }

    /// Opens a SQLite file with the driver's defaults (tests and one-off tools).
    pub fn open(path: impl AsRef<Path>) -> DbResult<Self> {
        Ok(Self::from_sqlite(rusqlite::Connection::open(path)?))
    }

    /// The SQLite connection underneath, for what only SQLite has (pragmas, blobs, backup).
    pub(crate) fn sqlite(&self) -> &rusqlite::Connection {
        match &self.inner {
            Inner::Sqlite(c) => c,
        }
    }

    pub(crate) fn sqlite_mut(&mut self) -> &mut rusqlite::Connection {
        match &mut self.inner {
            Inner::Sqlite(c) => c,
        }
    }

    pub fn execute<P: Params>(&self, sql: &str, params: P) -> DbResult<usize> {
        Ok(params.with_values(|v| self.sqlite().execute(sql, v))?)
    }

    /// Runs statements separated by semicolons, without parameters.
    pub fn execute_batch(&self, sql: &str) -> DbResult<()> {
        Ok(self.sqlite().execute_batch(sql)?)
    }

    /// The first row's mapping; an error when there is none.
    pub fn query_row<T, P, F>(&self, sql: &str, params: P, f: F) -> DbResult<T>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> DbResult<T>,
    {
        let mut st = self.prepare(sql)?;
        st.query_row(params, f)
    }

    pub fn prepare(&self, sql: &str) -> DbResult<Statement<'_>> {
        Ok(Statement {
            inner: StatementInner::Plain(self.sqlite().prepare(sql)?),
        })
    }

    /// A statement from the connection's cache of prepared statements.
    pub fn prepare_cached(&self, sql: &str) -> DbResult<Statement<'_>> {
        Ok(Statement {
            inner: StatementInner::Cached(self.sqlite().prepare_cached(sql)?),
        })
    }

    /// Rows changed by the most recent statement.
    pub fn changes(&self) -> u64 {
        self.sqlite().changes()
    }

    /// A deferred transaction on a shared reference: the caller keeps it to one thread and does
    /// not nest it (the store never does).
    pub fn unchecked_transaction(&self) -> DbResult<Transaction<'_>> {
        Transaction::begin(self, "BEGIN DEFERRED")
    }

    /// A write transaction that takes the write lock at once.
    pub fn begin_immediate(&mut self) -> DbResult<Transaction<'_>> {
        Transaction::begin(self, "BEGIN IMMEDIATE")
    }

    fn in_transaction(&self) -> bool {
        !self.sqlite().is_autocommit()
    }
}

/// A transaction, rolled back when dropped uncommitted. It reads and writes as the connection
/// it borrows.
pub struct Transaction<'c> {
    conn: &'c Connection,
    done: bool,
}

impl<'c> Transaction<'c> {
    fn begin(conn: &'c Connection, sql: &str) -> DbResult<Self> {
        conn.execute_batch(sql)?;
        Ok(Transaction { conn, done: false })
    }

    pub fn commit(mut self) -> DbResult<()> {
        self.conn.execute_batch("COMMIT")?;
        self.done = true;
        Ok(())
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        // A failed statement may already have ended it (SQLite rolls back on some errors).
        if !self.done && self.conn.in_transaction() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// A prepared statement, cached or not.
pub struct Statement<'c> {
    inner: StatementInner<'c>,
}

enum StatementInner<'c> {
    Plain(rusqlite::Statement<'c>),
    Cached(rusqlite::CachedStatement<'c>),
}

impl<'c> Statement<'c> {
    fn sqlite(&mut self) -> &mut rusqlite::Statement<'c> {
        match &mut self.inner {
            StatementInner::Plain(s) => s,
            StatementInner::Cached(s) => s,
        }
    }

    pub fn execute<P: Params>(&mut self, params: P) -> DbResult<usize> {
        Ok(params.with_values(|v| self.sqlite().execute(v))?)
    }

    pub fn query<P: Params>(&mut self, params: P) -> DbResult<Rows<'_>> {
        let inner = params.with_values(move |v| self.sqlite().query(v))?;
        Ok(Rows { inner })
    }

    /// Every row, mapped by `f`, as they are read.
    pub fn query_map<T, P, F>(&mut self, params: P, f: F) -> DbResult<MappedRows<'_, F>>
    where
        P: Params,
        F: FnMut(&Row<'_>) -> DbResult<T>,
    {
        Ok(MappedRows {
            rows: self.query(params)?,
            f,
        })
    }

    /// The first row's mapping; an error when there is none.
    pub fn query_row<T, P, F>(&mut self, params: P, f: F) -> DbResult<T>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> DbResult<T>,
    {
        let mut rows = self.query(params)?;
        match rows.next()? {
            Some(r) => f(&r),
            None => Err(DbError::no_rows()),
        }
    }

    /// Whether the query finds any row.
    pub fn exists<P: Params>(&mut self, params: P) -> DbResult<bool> {
        Ok(self.query(params)?.next()?.is_some())
    }
}

/// The rows of a running query.
pub struct Rows<'s> {
    inner: rusqlite::Rows<'s>,
}

impl Rows<'_> {
    #[allow(clippy::should_implement_trait)] // a lending iterator: each row borrows the cursor
    pub fn next(&mut self) -> DbResult<Option<Row<'_>>> {
        Ok(self.inner.next()?.map(|inner| Row { inner }))
    }
}

/// The rows of a running query, each mapped as it is read.
pub struct MappedRows<'s, F> {
    rows: Rows<'s>,
    f: F,
}

impl<T, F> Iterator for MappedRows<'_, F>
where
    F: FnMut(&Row<'_>) -> DbResult<T>,
{
    type Item = DbResult<T>;

    fn next(&mut self) -> Option<DbResult<T>> {
        match self.rows.next() {
            Ok(Some(r)) => Some((self.f)(&r)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

/// One row of a result.
pub struct Row<'s> {
    inner: &'s rusqlite::Row<'s>,
}

impl Row<'_> {
    pub fn get<I: RowIndex, T: FromSql>(&self, idx: I) -> DbResult<T> {
        Ok(self.inner.get(idx)?)
    }

    pub fn get_ref<I: RowIndex>(&self, idx: I) -> DbResult<ValueRef<'_>> {
        Ok(self.inner.get_ref(idx)?)
    }

    /// The name of column `idx`, for messages.
    pub fn column_name(&self, idx: usize) -> DbResult<&str> {
        Ok(self.inner.as_ref().column_name(idx)?)
    }
}

/// The pool's connection manager: the driver's, handing out the store's `Connection`.
pub struct Manager {
    sqlite: r2d2_sqlite::SqliteConnectionManager,
}

impl Manager {
    pub fn sqlite(sqlite: r2d2_sqlite::SqliteConnectionManager) -> Self {
        Manager { sqlite }
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Connection;
    type Error = rusqlite::Error;

    fn connect(&self) -> Result<Connection, rusqlite::Error> {
        self.sqlite.connect().map(Connection::from_sqlite)
    }

    fn is_valid(&self, c: &mut Connection) -> Result<(), rusqlite::Error> {
        self.sqlite.is_valid(c.sqlite_mut())
    }

    fn has_broken(&self, c: &mut Connection) -> bool {
        self.sqlite.has_broken(c.sqlite_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_transaction_rolls_back_and_a_committed_one_stays() {
        let mut c = Connection::open(":memory:").unwrap();
        c.execute_batch("CREATE TABLE t(x INTEGER)").unwrap();
        {
            let tx = c.unchecked_transaction().unwrap();
            tx.execute("INSERT INTO t VALUES (?1)", [1]).unwrap();
        }
        let tx = c.begin_immediate().unwrap();
        tx.execute("INSERT INTO t VALUES (?1)", [2]).unwrap();
        tx.commit().unwrap();
        let xs: Vec<i64> = c
            .prepare("SELECT x FROM t")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<DbResult<_>>()
            .unwrap();
        assert_eq!(xs, vec![2]);
        assert!(!c.in_transaction());
    }

    #[test]
    fn every_form_of_parameters_binds_its_values_in_order() {
        let c = Connection::open(":memory:").unwrap();
        let sum = |sql: &str, p: &dyn Fn(&Connection, &str) -> DbResult<String>| p(&c, sql);
        let got = |r: &Row<'_>| r.get::<_, String>(0);
        assert_eq!(
            sum("SELECT ?1 || ?2 || ?3", &|c, q| c.query_row(
                q,
                params!["a", 2, 3.5],
                got
            ))
            .unwrap(),
            "a23.5"
        );
        assert_eq!(
            sum("SELECT ?2 || ?1", &|c, q| c.query_row(q, ["x", "y"], got)).unwrap(),
            "yx"
        );
        assert_eq!(
            sum("SELECT 'none'", &|c, q| c.query_row(q, [], got)).unwrap(),
            "none"
        );
        assert_eq!(
            sum("SELECT ?1 || ?2 || ?3", &|c, q| {
                c.prepare_cached(q)?
                    .query_row(params_from_iter(vec![7i64, 8, 9]), got)
            })
            .unwrap(),
            "789"
        );
    }

    #[test]
    fn a_missing_row_is_none_through_optional_and_an_error_otherwise() {
        let c = Connection::open(":memory:").unwrap();
        let none: Option<i64> = c
            .query_row("SELECT 1 WHERE 0", [], |r| r.get(0))
            .optional()
            .unwrap();
        assert_eq!(none, None);
        assert!(c
            .query_row("SELECT 1 WHERE 0", [], |r| r.get::<_, i64>(0))
            .unwrap_err()
            .is_no_rows());
        assert!(c.prepare_cached("SELECT 1").unwrap().exists([]).unwrap());
    }
}
