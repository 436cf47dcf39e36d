//! The store's own connection, transaction, statement and row types. Every store module and
//! every layer above speaks to these, never to the database driver, so that a second backend
//! (PostgreSQL, `docs/postgres/plan.md`) is a second variant here rather than a second copy of
//! each module. The surface is the subset of rusqlite's the store uses, under the same names;
//! values still travel as rusqlite's `ToSql`/`FromSql`, which the plan keeps as the neutral
//! value model.

mod pg;
pub use pg::blocking_section;

use rusqlite::types::{FromSql, FromSqlError, ValueRef};
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
    #[error("{}", pg_message(.0))]
    Pg(#[from] postgres::Error),
    #[error("query returned no rows")]
    NoRows,
    /// A value that does not fit where it goes (a PostgreSQL type the store does not use).
    #[error("{0}")]
    Value(String),
    /// SQLite's own machinery (pragmas, blobs, backup) asked of another backend.
    #[error(
        "SQLite's own machinery (a pragma, a blob, a backup) was asked of a PostgreSQL database"
    )]
    SqliteOnly,
}

pub type DbResult<T> = Result<T, DbError>;

/// PostgreSQL's own words for an error from the server (the client's `Display` says only "db
/// error"), with its code.
fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({}): {detail}", db.message(), db.code().code()),
            None => format!("{} ({})", db.message(), db.code().code()),
        },
        None => e.to_string(),
    }
}

impl DbError {
    pub fn is_no_rows(&self) -> bool {
        matches!(
            self,
            DbError::Sqlite(rusqlite::Error::QueryReturnedNoRows) | DbError::NoRows
        )
    }

    /// PostgreSQL's five-character code for the error, when it is one of PostgreSQL's.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            DbError::Pg(e) => e.code().map(|c| c.code()),
            _ => None,
        }
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
    Pg(Box<pg::PgConn>),
}

/// The store's lock for writers in PostgreSQL ("QUIR", then the schema): every write
/// transaction takes it, as SQLite's `BEGIN IMMEDIATE` takes the database's write lock, so the
/// single-writer reasoning of the store holds across processes. Per schema, so that Quires in
/// two schemas of one database do not wait for each other.
pub const PG_WRITE_LOCK: i32 = 0x5155_4952;

/// A writer's `BEGIN` in PostgreSQL: the transaction, then the writers' lock of this schema.
const PG_WRITE_BEGIN: &str =
    "BEGIN; SELECT pg_advisory_xact_lock(1364543826, hashtext(current_schema()))";

/// The lock one `quire serve` holds for its whole life on a PostgreSQL schema ("QUIS"), as
/// `<db>.lock` on a SQLite file; a session lock, apart from the writers' transaction lock.
pub const PG_SERVE_LOCK: i32 = 0x5155_4953;

impl Connection {
    pub(crate) fn from_sqlite(c: rusqlite::Connection) -> Self {
        Connection {
            inner: Inner::Sqlite(c),
        }
    }

    /// Opens a SQLite file with the driver's defaults and the store's busy timeout (tests and
    /// one-off tools).
    pub fn open(path: impl AsRef<Path>) -> DbResult<Self> {
        let c = rusqlite::Connection::open(path)?;
        c.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self::from_sqlite(c))
    }

    /// Connects to PostgreSQL (`postgres://…`), with the session settings the store relies on:
    /// a lock not granted in 5 s is an error (the store's "busy", as SQLite's busy timeout).
    pub fn connect_pg(url: &str) -> DbResult<Self> {
        let client = pg::off_runtime(|| postgres::Client::connect(url, postgres::NoTls))??;
        Self::from_pg(client)
    }

    /// Connects to the PostgreSQL database `config` describes, as `connect_pg`.
    pub fn connect_pg_config(config: &postgres::Config) -> DbResult<Self> {
        Self::from_pg(pg::off_runtime(|| config.connect(postgres::NoTls))??)
    }

    fn from_pg(client: postgres::Client) -> DbResult<Self> {
        let c = Connection {
            inner: Inner::Pg(Box::new(pg::PgConn::new(client))),
        };
        // Acknowledged writes commit durably whatever the database's or role's default says;
        // the executor's writer alone turns it off (`queue::writer_pragmas`).
        c.execute_batch(
            "SET lock_timeout = '5s'; SET application_name = 'quire'; SET synchronous_commit = on",
        )?;
        Ok(c)
    }

    /// The SQL dialect this connection speaks (`store::sql`).
    pub fn dialect(&self) -> super::sql::Dialect {
        match &self.inner {
            Inner::Sqlite(_) => super::sql::Dialect::Sqlite,
            Inner::Pg(_) => super::sql::Dialect::Postgres,
        }
    }

    /// The SQLite connection underneath, for what only SQLite has (pragmas, blobs, backup).
    pub(crate) fn sqlite(&self) -> DbResult<&rusqlite::Connection> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(c),
            Inner::Pg(_) => Err(DbError::SqliteOnly),
        }
    }

    pub(crate) fn sqlite_mut(&mut self) -> DbResult<&mut rusqlite::Connection> {
        match &mut self.inner {
            Inner::Sqlite(c) => Ok(c),
            Inner::Pg(_) => Err(DbError::SqliteOnly),
        }
    }

    pub fn execute<P: Params>(&self, sql: &str, params: P) -> DbResult<usize> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(params.with_values(|v| c.execute(sql, v))?),
            Inner::Pg(c) => {
                let st = c.statement(sql, false)?;
                params.with_values(|v| c.execute(&st, v))
            }
        }
    }

    /// Runs statements separated by semicolons, without parameters.
    pub fn execute_batch(&self, sql: &str) -> DbResult<()> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Inner::Pg(c) => c.batch(sql),
        }
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
        let inner = match &self.inner {
            Inner::Sqlite(c) => StatementInner::Plain(c.prepare(sql)?),
            Inner::Pg(c) => StatementInner::Pg(c, c.statement(sql, false)?),
        };
        Ok(Statement { inner })
    }

    /// A statement from the connection's cache of prepared statements.
    pub fn prepare_cached(&self, sql: &str) -> DbResult<Statement<'_>> {
        let inner = match &self.inner {
            Inner::Sqlite(c) => StatementInner::Cached(c.prepare_cached(sql)?),
            Inner::Pg(c) => StatementInner::Pg(c, c.statement(sql, true)?),
        };
        Ok(Statement { inner })
    }

    /// A transaction that reads one snapshot, on a shared reference: the caller keeps it to one
    /// thread and does not nest it (the store never does).
    pub fn unchecked_transaction(&self) -> DbResult<Transaction<'_>> {
        match self.inner {
            Inner::Sqlite(_) => Transaction::begin(self, "BEGIN DEFERRED"),
            Inner::Pg(_) => Transaction::begin(self, "BEGIN ISOLATION LEVEL REPEATABLE READ"),
        }
    }

    /// A write transaction that takes the write lock at once.
    pub fn begin_immediate(&mut self) -> DbResult<Transaction<'_>> {
        match self.inner {
            Inner::Sqlite(_) => Transaction::begin(self, "BEGIN IMMEDIATE"),
            Inner::Pg(_) => Transaction::begin(self, PG_WRITE_BEGIN),
        }
    }

    /// Whether the server closed this connection (a PostgreSQL restart, a terminated backend):
    /// a connection held for long must then be opened again. A SQLite file's never is.
    /// PostgreSQL: waits up to `timeout` for notifications on the channels this session
    /// `LISTEN`s to, answering how many arrived. SQLite has none: it sleeps and answers 0.
    pub fn wait_notifications(&self, timeout: std::time::Duration) -> DbResult<usize> {
        match &self.inner {
            Inner::Sqlite(_) => {
                std::thread::sleep(timeout);
                Ok(0)
            }
            Inner::Pg(c) => c.wait_notifications(timeout),
        }
    }

    pub fn is_broken(&self) -> bool {
        match &self.inner {
            Inner::Sqlite(_) => false,
            Inner::Pg(c) => c.is_closed(),
        }
    }

    /// Whether a transaction is open.
    fn in_transaction(&self) -> bool {
        match &self.inner {
            Inner::Sqlite(c) => !c.is_autocommit(),
            Inner::Pg(c) => c.in_transaction(),
        }
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
        if let Err(e) = conn.execute_batch(sql) {
            // PostgreSQL's `BEGIN` may have run before the lock it waited for timed out.
            if conn.in_transaction() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            return Err(e);
        }
        Ok(Transaction { conn, done: false })
    }

    pub fn commit(mut self) -> DbResult<()> {
        if let Inner::Pg(c) = &self.conn.inner {
            // PostgreSQL answers the COMMIT of an aborted transaction by rolling it back, without
            // an error: the caller must not take that for a commit.
            if c.failed() {
                return Err(DbError::Value(
                    "the transaction was rolled back: a statement in it failed".into(),
                ));
            }
        }
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
    Pg(&'c pg::PgConn, postgres::Statement),
}

impl Statement<'_> {
    pub fn execute<P: Params>(&mut self, params: P) -> DbResult<usize> {
        match &mut self.inner {
            StatementInner::Plain(s) => Ok(params.with_values(|v| s.execute(v))?),
            StatementInner::Cached(s) => Ok(params.with_values(|v| s.execute(v))?),
            StatementInner::Pg(c, st) => params.with_values(|v| c.execute(st, v)),
        }
    }

    pub fn query<P: Params>(&mut self, params: P) -> DbResult<Rows<'_>> {
        let inner = match &mut self.inner {
            StatementInner::Plain(s) => RowsInner::Sqlite(params.with_values(move |v| s.query(v))?),
            StatementInner::Cached(s) => {
                RowsInner::Sqlite(params.with_values(move |v| s.query(v))?)
            }
            StatementInner::Pg(c, st) => RowsInner::Pg {
                rows: params.with_values(|v| c.query(st, v))?,
                at: 0,
            },
        };
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
            None => Err(DbError::NoRows),
        }
    }

    /// Whether the query finds any row.
    pub fn exists<P: Params>(&mut self, params: P) -> DbResult<bool> {
        Ok(self.query(params)?.next()?.is_some())
    }
}

/// The rows of a running query.
pub struct Rows<'s> {
    inner: RowsInner<'s>,
}

enum RowsInner<'s> {
    Sqlite(rusqlite::Rows<'s>),
    /// PostgreSQL's rows, all read when the query ran.
    Pg {
        rows: Vec<postgres::Row>,
        at: usize,
    },
}

impl Rows<'_> {
    #[allow(clippy::should_implement_trait)] // a lending iterator: each row borrows the cursor
    pub fn next(&mut self) -> DbResult<Option<Row<'_>>> {
        match &mut self.inner {
            RowsInner::Sqlite(rows) => Ok(rows.next()?.map(|r| Row {
                inner: RowInner::Sqlite(r),
            })),
            RowsInner::Pg { rows, at } => {
                let row = rows.get(*at);
                *at += 1;
                Ok(row.map(|r| Row {
                    inner: RowInner::Pg(r),
                }))
            }
        }
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

/// A column's position in a row, from 0 (by position only: no store code reads by name).
pub trait ColumnIndex: Copy {
    fn position(self) -> usize;
}

impl ColumnIndex for usize {
    fn position(self) -> usize {
        self
    }
}

/// One row of a result.
pub struct Row<'s> {
    inner: RowInner<'s>,
}

enum RowInner<'s> {
    Sqlite(&'s rusqlite::Row<'s>),
    Pg(&'s postgres::Row),
}

impl Row<'_> {
    /// Column `idx` (from 0) as `T`, decoded from the value SQLite would give in either backend.
    pub fn get<I: ColumnIndex, T: FromSql>(&self, idx: I) -> DbResult<T> {
        let idx = idx.position();
        match self.inner {
            RowInner::Sqlite(r) => Ok(r.get(idx)?),
            RowInner::Pg(r) => {
                let v = pg::value_ref(r, idx)?;
                // The same error SQLite's driver gives, so a corrupt value reads as corrupt.
                T::column_result(v).map_err(|e| {
                    DbError::Sqlite(match e {
                        FromSqlError::Other(cause) => {
                            rusqlite::Error::FromSqlConversionFailure(idx, v.data_type(), cause)
                        }
                        FromSqlError::InvalidType => rusqlite::Error::InvalidColumnType(
                            idx,
                            r.columns()[idx].name().to_owned(),
                            v.data_type(),
                        ),
                        other => rusqlite::Error::FromSqlConversionFailure(
                            idx,
                            v.data_type(),
                            Box::new(other),
                        ),
                    })
                })
            }
        }
    }

    pub fn get_ref<I: ColumnIndex>(&self, idx: I) -> DbResult<ValueRef<'_>> {
        let idx = idx.position();
        match self.inner {
            RowInner::Sqlite(r) => Ok(r.get_ref(idx)?),
            RowInner::Pg(r) => pg::value_ref(r, idx),
        }
    }

    /// The name of column `idx`, for messages.
    pub fn column_name(&self, idx: usize) -> DbResult<&str> {
        match self.inner {
            RowInner::Sqlite(r) => Ok(r.as_ref().column_name(idx)?),
            RowInner::Pg(r) => r
                .columns()
                .get(idx)
                .map(|c| c.name())
                .ok_or_else(|| DbError::Value(format!("no column {idx}"))),
        }
    }
}

/// The pool's connection manager, handing out the store's `Connection`. PostgreSQL connects
/// with the `postgres` client directly: `r2d2_postgres` would hand out a bare client, while the
/// pool here holds the store's connection, which owns its client and its statements.
pub struct Manager {
    inner: ManagerInner,
}

enum ManagerInner {
    Sqlite(r2d2_sqlite::SqliteConnectionManager),
    Pg(postgres::Config),
}

impl Manager {
    pub fn sqlite(sqlite: r2d2_sqlite::SqliteConnectionManager) -> Self {
        Manager {
            inner: ManagerInner::Sqlite(sqlite),
        }
    }

    /// A manager for the PostgreSQL database at `url` (`postgres://user@host/db`).
    pub fn pg(url: &str) -> DbResult<Self> {
        Ok(Self::pg_config(url.parse()?))
    }

    pub fn pg_config(config: postgres::Config) -> Self {
        Manager {
            inner: ManagerInner::Pg(config),
        }
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Connection;
    type Error = DbError;

    fn connect(&self) -> Result<Connection, DbError> {
        match &self.inner {
            ManagerInner::Sqlite(m) => Ok(m.connect().map(Connection::from_sqlite)?),
            ManagerInner::Pg(config) => Connection::connect_pg_config(config),
        }
    }

    fn is_valid(&self, c: &mut Connection) -> Result<(), DbError> {
        match &self.inner {
            ManagerInner::Sqlite(m) => Ok(m.is_valid(c.sqlite_mut()?)?),
            ManagerInner::Pg(_) => c.execute_batch(""),
        }
    }

    fn has_broken(&self, c: &mut Connection) -> bool {
        match (&self.inner, &mut c.inner) {
            (ManagerInner::Sqlite(m), Inner::Sqlite(c)) => m.has_broken(c),
            (_, Inner::Pg(c)) => c.is_closed(),
            (ManagerInner::Pg(_), Inner::Sqlite(_)) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{pg_url, scratch};
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
    fn the_writers_begin_takes_the_writers_lock() {
        assert!(PG_WRITE_BEGIN.contains(&format!("({PG_WRITE_LOCK}, ")));
        assert_ne!(PG_WRITE_LOCK, PG_SERVE_LOCK);
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

    #[test]
    fn postgres_binds_and_reads_the_values_sqlite_would() {
        let Some(s) = scratch() else { return };
        let c = &s.c;
        assert_eq!(c.dialect(), super::super::sql::Dialect::Postgres);
        c.execute_batch(
            "CREATE TABLE t(seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, n BIGINT, flag INTEGER,
                            ratio DOUBLE PRECISION, name TEXT, doc TEXT, bytes BYTEA, small SMALLINT)",
        )
        .unwrap();
        let seq: i64 = c
            .query_row(
                "INSERT INTO t(n, flag, ratio, name, doc, bytes, small) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 RETURNING seq",
                params![
                    1i64 << 40,
                    true,
                    0.25,
                    "a'b",
                    r#"{"k":[1,2]}"#,
                    vec![0u8, 255],
                    3
                ],
                |r| r.get(0),
            )
            .unwrap();
        c.execute(
            "INSERT INTO t(n, flag, name) VALUES (?1, ?2, ?3)",
            params![None::<i64>, false, None::<String>],
        )
        .unwrap();
        let (n, flag, ratio, name, bytes, small): (i64, bool, f64, String, Vec<u8>, u16) = c
            .query_row(
                "SELECT n, flag, ratio, name, bytes, small FROM t WHERE seq = ?1",
                [seq],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(
            (n, flag, ratio, name.as_str(), bytes, small),
            (1 << 40, true, 0.25, "a'b", vec![0, 255], 3)
        );
        // JSON stays text; the database looks inside it where a statement asks.
        let k: i64 = c
            .query_row(
                "SELECT (doc::jsonb -> 'k' ->> 1)::bigint FROM t WHERE seq = ?1",
                [seq],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(k, 2);
        let nulls: (Option<i64>, bool, Option<String>) = c
            .query_row("SELECT n, flag, name FROM t WHERE seq <> ?1", [seq], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(nulls, (None, false, None));
        // PostgreSQL's text cannot hold a NUL: it is stored as the replacement character, where
        // SQLite would keep it, rather than failing the write; bytes keep theirs.
        let nul: String = c
            .query_row(
                "UPDATE t SET name = ?2 WHERE seq = ?1 RETURNING name",
                params![seq, "a\0b\0"],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(nul, "a\u{fffd}b\u{fffd}");
        // Bytes that are not UTF-8 read as text without failing (a search's fallback).
        let as_text = super::super::sql::blob_as_text(c.dialect(), "bytes");
        let t: String = c
            .query_row(
                &format!("SELECT {as_text} FROM t WHERE seq = ?1"),
                [seq],
                |r| r.get(0),
            )
            .unwrap();
        assert!(t.starts_with("\\000"), "{t}");
        // A boolean parameter and a JSON list, as the store's statements write them.
        let d = c.dialect();
        let in_list = super::super::sql::in_list(d, 1, super::super::sql::Elem::Int);
        let found: Vec<i64> = c
            .prepare_cached(&format!(
                "SELECT seq FROM t WHERE seq IN ({in_list}) AND (?2 OR flag = 1) ORDER BY seq"
            ))
            .unwrap()
            .query_map(params![format!("[{seq}, 999]"), false], |r| r.get(0))
            .unwrap()
            .collect::<DbResult<_>>()
            .unwrap();
        assert_eq!(found, vec![seq]);
    }

    #[test]
    fn postgres_refuses_what_the_store_never_reads_and_says_when_a_row_is_missing() {
        let Some(s) = scratch() else { return };
        let c = &s.c;
        c.execute_batch("CREATE TABLE t(x BIGINT UNIQUE)").unwrap();
        c.execute("INSERT INTO t(x) VALUES (?1)", [1]).unwrap();
        let sum = c.query_row("SELECT sum(x) FROM t", [], |r| r.get::<_, i64>(0));
        assert!(sum.is_err(), "NUMERIC is refused: the SQL casts sums");
        let none: Option<i64> = c
            .query_row("SELECT x FROM t WHERE x = ?1", [2], |r| r.get(0))
            .optional()
            .unwrap();
        assert_eq!(none, None);
        let dup = c.execute("INSERT INTO t(x) VALUES (?1)", [1]).unwrap_err();
        assert_eq!(dup.sqlstate(), Some("23505"));
        assert!(matches!(
            super::super::StoreError::from(dup),
            super::super::StoreError::Db(_)
        ));
        assert!(
            c.sqlite().is_err(),
            "SQLite's machinery is refused, not faked"
        );
    }

    #[test]
    fn postgres_transactions_roll_back_unless_committed_and_writers_take_one_lock() {
        let Some(mut s) = scratch() else { return };
        s.c.execute_batch("CREATE TABLE t(x BIGINT)").unwrap();
        {
            let tx = s.c.unchecked_transaction().unwrap();
            tx.execute("INSERT INTO t VALUES (?1)", [1]).unwrap();
        }
        {
            // A failed statement aborts PostgreSQL's transaction: its commit is an error (the
            // server would roll back quietly), and the connection goes on.
            let tx = s.c.unchecked_transaction().unwrap();
            tx.execute("INSERT INTO t VALUES (?1)", [9]).unwrap();
            assert!(tx.execute("INSERT INTO nowhere VALUES (1)", []).is_err());
            assert!(
                tx.commit().is_err(),
                "an aborted transaction does not commit"
            );
        }
        {
            // Rolled back to a savepoint, it is whole again.
            let tx = s.c.unchecked_transaction().unwrap();
            tx.execute("INSERT INTO t VALUES (?1)", [5]).unwrap();
            tx.execute_batch("SAVEPOINT item").unwrap();
            assert!(tx.execute("INSERT INTO nowhere VALUES (1)", []).is_err());
            tx.execute_batch("ROLLBACK TO item; RELEASE item").unwrap();
            assert!(
                tx.in_transaction(),
                "a savepoint's rollback ends no transaction"
            );
            tx.commit().unwrap();
        }
        assert!(!s.c.in_transaction());
        let other = Connection::connect_pg(&pg_url().unwrap()).unwrap();
        other
            .execute_batch(&format!(
                "SET search_path TO {}; SET lock_timeout = '200ms'",
                s.schema
            ))
            .unwrap();
        let mut other = other;
        let tx = s.c.begin_immediate().unwrap();
        tx.execute("INSERT INTO t VALUES (?1)", [2]).unwrap();
        // A second writer waits for the lock, then gives up as busy.
        let busy = other.begin_immediate().err().expect("the lock is held");
        assert!(
            !other.in_transaction(),
            "the BEGIN whose lock timed out was rolled back"
        );
        assert!(matches!(
            super::super::StoreError::from(busy),
            super::super::StoreError::Busy
        ));
        tx.commit().unwrap();
        let tx = other.begin_immediate().unwrap();
        tx.execute("INSERT INTO t VALUES (?1)", [3]).unwrap();
        tx.commit().unwrap();
        let xs: Vec<i64> =
            s.c.prepare("SELECT x FROM t ORDER BY x")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<DbResult<_>>()
                .unwrap();
        assert_eq!(xs, vec![2, 3, 5]);
    }

    #[test]
    fn a_pool_of_postgres_connections_hands_out_store_connections() {
        let Some(url) = pg_url() else { return };
        let pool = r2d2::Pool::builder()
            .max_size(2)
            .build(Manager::pg(&url).unwrap())
            .unwrap();
        let a = pool.get().unwrap();
        let b = pool.get().unwrap();
        let pid = |c: &Connection| -> i64 {
            c.query_row("SELECT pg_backend_pid()::bigint", [], |r| r.get(0))
                .unwrap()
        };
        assert_ne!(pid(&a), pid(&b));
        let lock: String = a.query_row("SHOW lock_timeout", [], |r| r.get(0)).unwrap();
        assert_eq!(lock, "5s");
        assert!(Manager::pg("not a url").is_err());
    }
}

/// PostgreSQL for tests: a server named by `QUIRE_TEST_POSTGRES_URL`, a schema per test.
#[cfg(test)]
pub(crate) mod testing {
    use super::Connection;

    /// A connection to the PostgreSQL of `QUIRE_TEST_POSTGRES_URL` in a schema of its own,
    /// dropped with it; `None` (and a notice) without one, unless `QUIRE_REQUIRE_OPTIONAL` says
    /// every optional part is installed.
    pub(crate) struct Scratch {
        pub c: Connection,
        pub schema: String,
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = self.c.execute_batch("ROLLBACK");
            let _ = self
                .c
                .execute_batch(&format!("DROP SCHEMA {} CASCADE", self.schema));
        }
    }

    pub(crate) fn pg_url() -> Option<String> {
        match std::env::var("QUIRE_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                assert!(
                    std::env::var_os("QUIRE_REQUIRE_OPTIONAL").is_none(),
                    "PostgreSQL is required here (QUIRE_REQUIRE_OPTIONAL is set) but QUIRE_TEST_POSTGRES_URL is not set"
                );
                eprintln!("notice: QUIRE_TEST_POSTGRES_URL is not set; skipping a PostgreSQL test");
                None
            }
        }
    }

    pub(crate) fn scratch() -> Option<Scratch> {
        let c = Connection::connect_pg(&pg_url()?).expect("connect to QUIRE_TEST_POSTGRES_URL");
        let schema = format!("quire_test_{:016x}", rand::random::<u64>());
        c.execute_batch(&format!(
            "CREATE SCHEMA {schema}; SET search_path TO {schema}"
        ))
        .expect("a schema of its own");
        Some(Scratch { c, schema })
    }
}
