//! The PostgreSQL side of the store's connection (`docs/postgres/plan.md`, step 5): one client,
//! its prepared statements, and the translation of values both ways. The store binds and reads
//! rusqlite's neutral values (`ToSql` → `ValueRef`, `ValueRef` → `FromSql`), so every row mapper
//! and every `params!` is shared by both backends; here a value is encoded as the type
//! PostgreSQL inferred for its parameter, and a column decoded into the value SQLite would
//! have given (integers and booleans as integers, JSON as text).

use super::{DbError, DbResult};
use bytes::{BufMut, BytesMut};
use postgres::types::{FromSql, IsNull, ToSql as PgToSql, Type};
use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::error::Error;

type BoxError = Box<dyn Error + Sync + Send>;

/// More distinct statement texts than the store has: a cache this full is cleared rather than
/// grown (a few statements interpolate lists of numbers into their text).
const CACHE_LIMIT: usize = 1024;

pub(super) struct PgConn {
    /// Dropped by hand (`Drop`): closing the client blocks too.
    client: std::mem::ManuallyDrop<RefCell<postgres::Client>>,
    /// Prepared statements by their text as the store wrote it (`?N`).
    statements: RefCell<HashMap<String, postgres::Statement>>,
    /// A statement failed since the last `BEGIN` or `ROLLBACK`: PostgreSQL has aborted the
    /// transaction, and would answer its `COMMIT` by rolling back without an error.
    failed: Cell<bool>,
    /// A transaction is open: a `BEGIN` ran and no `COMMIT` or `ROLLBACK` (but to a savepoint)
    /// ended it. The client does not say, and a rollback outside one only warns.
    open: Cell<bool>,
}

impl PgConn {
    pub(super) fn new(client: postgres::Client) -> Self {
        PgConn {
            client: std::mem::ManuallyDrop::new(RefCell::new(client)),
            statements: RefCell::new(HashMap::new()),
            failed: Cell::new(false),
            open: Cell::new(false),
        }
    }

    /// `r`, noting a failure.
    fn noted<T>(&self, r: DbResult<T>) -> DbResult<T> {
        if r.is_err() {
            self.failed.set(true);
        }
        r
    }

    fn on_client<R: Send>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<R, postgres::Error> + Send,
    ) -> DbResult<R> {
        let mut client = self.client.borrow_mut();
        let client: &mut postgres::Client = &mut client;
        Ok(off_runtime(|| f(client))??)
    }

    /// Waits up to `timeout` for notifications on the channels this session listens to; how
    /// many arrived (0 at the timeout).
    pub(super) fn wait_notifications(&self, timeout: std::time::Duration) -> DbResult<usize> {
        use postgres::fallible_iterator::FallibleIterator;
        self.on_client(|c| {
            let mut n = c.notifications();
            let mut got = usize::from(n.timeout_iter(timeout).next()?.is_some());
            // What arrived with it is taken now, so one wake-up answers a burst.
            while n.iter().next()?.is_some() {
                got += 1;
            }
            Ok(got)
        })
    }

    /// Whether a statement failed since the transaction began (or a savepoint was rolled back to).
    pub(super) fn failed(&self) -> bool {
        self.failed.get()
    }

    /// The server's statement for `sql`, prepared once when `cached`.
    pub(super) fn statement(&self, sql: &str, cached: bool) -> DbResult<postgres::Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let text = crate::store::sql::numbered(sql);
        let prepared = self.noted(self.on_client(|c| c.prepare(&text)))?;
        if cached {
            let mut cache = self.statements.borrow_mut();
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(sql.to_owned(), prepared.clone());
        }
        Ok(prepared)
    }

    pub(super) fn execute(
        &self,
        st: &postgres::Statement,
        values: &[&dyn ToSql],
    ) -> DbResult<usize> {
        let n = self.noted(with_bound(values, |bound| {
            self.on_client(|c| c.execute(st, bound))
        }))?;
        Ok(n as usize)
    }

    /// Every row at once: no borrow of the client outlives the call, so a row mapper may run
    /// queries of its own.
    pub(super) fn query(
        &self,
        st: &postgres::Statement,
        values: &[&dyn ToSql],
    ) -> DbResult<Vec<postgres::Row>> {
        self.noted(with_bound(values, |bound| {
            self.on_client(|c| c.query(st, bound))
        }))
    }

    pub(super) fn batch(&self, sql: &str) -> DbResult<()> {
        let head = sql.trim_start();
        let begins = starts_with_ci(head, "BEGIN");
        let rolls_back = starts_with_ci(head, "ROLLBACK");
        // `BEGIN` counts as run even when a later statement of its batch failed (the writers'
        // lock timing out): the transaction is then open, and aborted.
        if begins {
            self.open.set(true);
        } else if starts_with_ci(head, "COMMIT")
            || (rolls_back && !starts_with_ci(head.get(8..).unwrap_or("").trim_start(), "TO"))
        {
            // Ended either way: a failed COMMIT rolls back too.
            self.open.set(false);
        }
        let r = self.noted(self.on_client(|c| c.batch_execute(sql)));
        // A new transaction, or a rollback (to a savepoint too), clears PostgreSQL's aborted state.
        if r.is_ok() && (begins || rolls_back) {
            self.failed.set(false);
        }
        r
    }

    pub(super) fn in_transaction(&self) -> bool {
        self.open.get() && !self.is_closed()
    }

    pub(super) fn is_closed(&self) -> bool {
        self.client.borrow().is_closed()
    }
}

thread_local! {
    /// This thread may block on the client in place (`blocking_section`).
    static MAY_BLOCK: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` marking its thread as one where the PostgreSQL client may block in place: the
/// threads of actix's blocking pool carry a tokio handle, as its runtime threads do, but are
/// not inside a runtime's `block_on`, and nothing else tells them apart.
pub fn blocking_section<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            MAY_BLOCK.with(|b| b.set(self.0));
        }
    }
    let _restore = Restore(MAY_BLOCK.with(|b| b.replace(true)));
    f()
}

/// Runs `f`, which drives the client, where the client may block. The synchronous client
/// runs its own runtime with `block_on`, which tokio refuses on a thread inside another
/// runtime (actix's, where start-up and the key check run); there a thread of the moment runs
/// it, borrowing what it needs. Threads without a runtime (the executor, the dispatchers) and
/// the blocking pool's run it in place.
pub(crate) fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> DbResult<R> {
    if MAY_BLOCK.with(Cell::get) || tokio::runtime::Handle::try_current().is_err() {
        return Ok(f());
    }
    std::thread::scope(|s| {
        let thread = std::thread::Builder::new()
            .name("quire-pg".into())
            .spawn_scoped(s, f)
            .map_err(|e| DbError::Value(format!("cannot start a thread for the database: {e}")))?;
        match thread.join() {
            Ok(r) => Ok(r),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.as_bytes()
        .get(..prefix.len())
        .is_some_and(|h| h.eq_ignore_ascii_case(prefix.as_bytes()))
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // SAFETY: taken once, here, and `self.client` is never used again.
        let client = unsafe { std::mem::ManuallyDrop::take(&mut self.client) };
        let _ = off_runtime(move || drop(client));
    }
}

/// Runs `f` with the values as PostgreSQL parameters.
fn with_bound<R>(
    values: &[&dyn ToSql],
    f: impl FnOnce(&[&(dyn PgToSql + Sync)]) -> DbResult<R>,
) -> DbResult<R> {
    let outputs = values
        .iter()
        .map(|v| v.to_sql())
        .collect::<Result<Vec<_>, _>>()?;
    let bound = outputs
        .iter()
        .map(|o| match o {
            ToSqlOutput::Borrowed(v) => Ok(Bound(*v)),
            ToSqlOutput::Owned(v) => Ok(Bound(ValueRef::from(v))),
            _ => Err(DbError::Value(
                "a zero-filled blob cannot be bound to a PostgreSQL parameter".into(),
            )),
        })
        .collect::<DbResult<Vec<_>>>()?;
    let params: Vec<&(dyn PgToSql + Sync)> =
        bound.iter().map(|b| b as &(dyn PgToSql + Sync)).collect();
    f(&params)
}

/// One bound value, encoded for whatever type PostgreSQL inferred for its parameter.
#[derive(Debug)]
struct Bound<'a>(ValueRef<'a>);

fn is_text(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
    )
}

impl PgToSql for Bound<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self.0 {
            ValueRef::Null => Ok(IsNull::Yes),
            ValueRef::Integer(i) => match *ty {
                Type::INT8 => PgToSql::to_sql(&i, ty, out),
                Type::INT4 => PgToSql::to_sql(&i32::try_from(i)?, ty, out),
                Type::INT2 => PgToSql::to_sql(&i16::try_from(i)?, ty, out),
                Type::BOOL => PgToSql::to_sql(&(i != 0), ty, out),
                Type::FLOAT8 => PgToSql::to_sql(&(i as f64), ty, out),
                Type::FLOAT4 => PgToSql::to_sql(&(i as f32), ty, out),
                _ if is_text(ty) => {
                    out.put_slice(i.to_string().as_bytes());
                    Ok(IsNull::No)
                }
                _ => Err(format!("an integer cannot be bound to a {ty} parameter").into()),
            },
            ValueRef::Real(f) => match *ty {
                Type::FLOAT8 => PgToSql::to_sql(&f, ty, out),
                Type::FLOAT4 => PgToSql::to_sql(&(f as f32), ty, out),
                _ if is_text(ty) => {
                    out.put_slice(f.to_string().as_bytes());
                    Ok(IsNull::No)
                }
                _ => Err(format!("a real number cannot be bound to a {ty} parameter").into()),
            },
            ValueRef::Text(bytes) => {
                let text = std::str::from_utf8(bytes)?;
                match *ty {
                    Type::JSON => out.put_slice(text.as_bytes()),
                    // jsonb's binary form is a version byte, then the text.
                    Type::JSONB => {
                        out.put_u8(1);
                        out.put_slice(text.as_bytes());
                    }
                    Type::BYTEA => out.put_slice(bytes),
                    _ if is_text(ty) => put_text(out, text),
                    _ => return Err(format!("text cannot be bound to a {ty} parameter").into()),
                }
                Ok(IsNull::No)
            }
            ValueRef::Blob(bytes) => match *ty {
                Type::BYTEA => {
                    out.put_slice(bytes);
                    Ok(IsNull::No)
                }
                _ if is_text(ty) => {
                    put_text(out, std::str::from_utf8(bytes)?);
                    Ok(IsNull::No)
                }
                _ => Err(format!("a blob cannot be bound to a {ty} parameter").into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// Text for a text-like parameter. PostgreSQL's text cannot hold the NUL character (SQLite's
/// can): each becomes U+FFFD, the replacement character, rather than failing the statement, so
/// no text a document or a request carries can fail a write. The document's own bytes are
/// `bytea` and kept as sent.
fn put_text(out: &mut BytesMut, text: &str) {
    if !text.contains('\0') {
        out.put_slice(text.as_bytes());
        return;
    }
    for (i, part) in text.split('\0').enumerate() {
        if i > 0 {
            out.put_slice("\u{fffd}".as_bytes());
        }
        out.put_slice(part.as_bytes());
    }
}

/// A text-like column as text: text and names, and JSON, which the store reads as text.
struct Text<'a>(&'a str);

impl<'a> FromSql<'a> for Text<'a> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let raw = match *ty {
            Type::JSONB => match raw.split_first() {
                Some((1, rest)) => rest,
                _ => return Err("an unknown jsonb version".into()),
            },
            _ => raw,
        };
        Ok(Text(std::str::from_utf8(raw)?))
    }

    fn accepts(ty: &Type) -> bool {
        is_text(ty) || matches!(*ty, Type::JSON | Type::JSONB)
    }
}

/// Column `i` as the value SQLite would have given. NUMERIC is refused (the store's SQL casts
/// sums to `bigint`), as is any type the store never stores.
pub(super) fn value_ref(row: &postgres::Row, i: usize) -> DbResult<ValueRef<'_>> {
    let Some(column) = row.columns().get(i) else {
        return Err(DbError::Value(format!("no column {i}")));
    };
    let v = match *column.type_() {
        Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(ValueRef::Integer),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map(|v| ValueRef::Integer(v.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)?
            .map(|v| ValueRef::Integer(v.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)?
            .map(|v| ValueRef::Integer(v.into())),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map(ValueRef::Real),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)?
            .map(|v| ValueRef::Real(v.into())),
        Type::BYTEA => row.try_get::<_, Option<&[u8]>>(i)?.map(ValueRef::Blob),
        _ => row
            .try_get::<_, Option<Text>>(i)?
            .map(|t| ValueRef::Text(t.0.as_bytes())),
    };
    Ok(v.unwrap_or(ValueRef::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(v: ValueRef<'_>, ty: &Type) -> Result<Option<Vec<u8>>, BoxError> {
        let mut out = BytesMut::new();
        Ok(match Bound(v).to_sql(ty, &mut out)? {
            IsNull::Yes => None,
            IsNull::No => Some(out.to_vec()),
        })
    }

    #[test]
    fn a_value_is_encoded_as_the_type_postgres_inferred() {
        assert_eq!(
            encoded(ValueRef::Integer(7), &Type::INT8).unwrap(),
            Some(7i64.to_be_bytes().to_vec())
        );
        assert_eq!(
            encoded(ValueRef::Integer(7), &Type::INT4).unwrap(),
            Some(7i32.to_be_bytes().to_vec())
        );
        assert_eq!(
            encoded(ValueRef::Integer(1), &Type::BOOL).unwrap(),
            Some(vec![1])
        );
        assert_eq!(
            encoded(ValueRef::Integer(0), &Type::BOOL).unwrap(),
            Some(vec![0])
        );
        assert_eq!(
            encoded(ValueRef::Integer(12), &Type::TEXT).unwrap(),
            Some(b"12".to_vec())
        );
        assert_eq!(
            encoded(ValueRef::Real(0.5), &Type::FLOAT8).unwrap(),
            Some(0.5f64.to_be_bytes().to_vec())
        );
        assert_eq!(
            encoded(ValueRef::Text(b"[1]"), &Type::JSONB).unwrap(),
            Some(b"\x01[1]".to_vec())
        );
        assert_eq!(
            encoded(ValueRef::Text(b"a"), &Type::VARCHAR).unwrap(),
            Some(b"a".to_vec())
        );
        assert_eq!(
            encoded(ValueRef::Blob(b"\x00\xff"), &Type::BYTEA).unwrap(),
            Some(vec![0, 255])
        );
        assert_eq!(encoded(ValueRef::Null, &Type::INT8).unwrap(), None);
    }

    #[test]
    fn a_value_that_does_not_fit_its_parameter_is_refused() {
        assert!(encoded(ValueRef::Integer(1 << 40), &Type::INT4).is_err());
        assert!(encoded(ValueRef::Text(b"1"), &Type::INT8).is_err());
        assert!(encoded(ValueRef::Blob(b"\xff"), &Type::TEXT).is_err());
        assert!(encoded(ValueRef::Real(1.0), &Type::INT8).is_err());
        assert!(encoded(ValueRef::Integer(1), &Type::NUMERIC).is_err());
    }

    #[test]
    fn json_columns_read_as_their_text() {
        assert_eq!(Text::from_sql(&Type::JSONB, b"\x01{}").unwrap().0, "{}");
        assert_eq!(Text::from_sql(&Type::JSON, b"[1]").unwrap().0, "[1]");
        assert!(Text::from_sql(&Type::JSONB, b"\x02{}").is_err());
        assert!(!<Text as FromSql>::accepts(&Type::NUMERIC));
    }
}

#[cfg(test)]
mod runtime_tests {
    use super::{blocking_section, off_runtime};

    fn runs_on() -> Option<String> {
        off_runtime(|| std::thread::current().name().map(str::to_string)).unwrap()
    }

    #[test]
    fn the_client_runs_in_place_except_inside_a_runtimes_block_on() {
        let here = std::thread::current().name().map(str::to_string);
        assert_eq!(runs_on(), here, "no runtime: in place");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let inside = rt.block_on(async { runs_on() });
        assert_eq!(
            inside.as_deref(),
            Some("quire-pg"),
            "inside block_on: a thread of its own"
        );
        let pooled = rt.block_on(async {
            tokio::task::spawn_blocking(|| blocking_section(runs_on))
                .await
                .unwrap()
        });
        assert_ne!(
            pooled.as_deref(),
            Some("quire-pg"),
            "the blocking pool: in place"
        );
    }
}
