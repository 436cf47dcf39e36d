use super::conn::{params, Connection, DbResult, Row};
use super::sql::{self, Dialect, Sql};
use super::{optional, StoreError};
use crate::domain::ids::{new_id, now_rfc3339};
use crate::intake::Page;
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct DocumentRow {
    pub seq: i64,
    pub id: String,
    pub filename: String,
    pub mime_type: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub metadata: Value,
    pub created_at: String,
    /// `completed`, or `error` when this server could not read it (`error` says why).
    pub status: String,
    pub error: Option<String>,
    pub pages: i64,
    pub language: Option<String>,
    pub kind: Option<String>,
}

const COLS: &str =
    "seq, id, filename, mime_type, size_bytes, sha256, metadata, created_at, status, error, pages, language, kind";

fn row(r: &Row) -> DbResult<DocumentRow> {
    Ok(DocumentRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        filename: r.get(2)?,
        mime_type: r.get(3)?,
        size_bytes: r.get(4)?,
        sha256: r.get(5)?,
        metadata: super::json(r, 6, "documents")?,
        created_at: r.get(7)?,
        status: r.get(8)?,
        error: r.get(9)?,
        pages: r.get(10)?,
        language: r.get(11)?,
        kind: r.get(12)?,
    })
}

pub struct NewDocument<'a> {
    pub filename: &'a str,
    pub mime_type: &'a str,
    pub sha256: &'a str,
    pub metadata: &'a Value,
    pub content: &'a [u8],
    /// What intake read of it.
    pub layer: Layer<'a>,
}

/// A document's text layer as intake read it.
pub struct Layer<'a> {
    /// The pages of a binary document; empty for the text formats.
    pub pages: &'a [Page],
    /// Their text as extraction reads it (`intake::full_text`); none for the text formats.
    pub text: Option<&'a str>,
    /// Why this server could not read it (its status is then `error`).
    pub error: Option<&'a str>,
    pub language: Option<&'a str>,
    pub kind: Option<&'a str>,
}

/// A stored page.
pub struct PageRow {
    pub page: Page,
}

/// Stores a document, or finds the live one with the same bytes and metadata:
/// `(row, true)` when it already existed.
pub fn insert_or_find(
    c: &Connection,
    org_id: &str,
    d: NewDocument,
) -> Result<(DocumentRow, bool), StoreError> {
    let meta = crate::domain::canonical::canonical_json(d.metadata);
    let sql = format!(
        "SELECT {COLS} FROM documents WHERE org_id = ?1 AND sha256 = ?2 AND deleted_at IS NULL ORDER BY seq"
    );
    let existing = c
        .prepare_cached(&sql)?
        .query_map(params![org_id, d.sha256], row)?
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(found) = existing
        .into_iter()
        .find(|e| crate::domain::canonical::canonical_json(&e.metadata) == meta)
    {
        return Ok((found, true));
    }
    let id = new_id();
    let layer = &d.layer;
    let status = if layer.error.is_some() {
        "error"
    } else {
        "completed"
    };
    let seq = c.prepare_cached(
        "INSERT INTO documents(id, org_id, filename, mime_type, size_bytes, sha256, metadata, content, created_at,
                               status, error, pages, language, kind, text)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) RETURNING seq",
    )?
    .query_row(params![
        id,
        org_id,
        d.filename,
        d.mime_type,
        d.content.len() as i64,
        d.sha256,
        d.metadata.to_string(),
        d.content,
        now_rfc3339(),
        status,
        layer.error,
        layer.pages.len().max(1) as i64,
        layer.language,
        layer.kind,
        layer.text,
    ], |r| r.get::<_, i64>(0))?;
    let mut add = c.prepare_cached(
        "INSERT INTO document_pages(document_seq, number, width, height, text, markdown, words, ocr)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for p in layer.pages {
        let words = serde_json::to_string(&p.words)
            .map_err(|e| StoreError::Refused(format!("the page's words: {e}")))?;
        add.execute(params![
            seq, p.number, p.width, p.height, p.text, p.markdown, words, p.ocr
        ])?;
    }
    let doc =
        get(c, org_id, &id)?.ok_or_else(|| StoreError::Refused("document vanished".into()))?;
    Ok((doc, false))
}

/// A live (not deleted) document of the organization.
pub fn get(c: &Connection, org_id: &str, id: &str) -> Result<Option<DocumentRow>, StoreError> {
    let sql = format!(
        "SELECT {COLS} FROM documents WHERE id = ?1 AND org_id = ?2 AND deleted_at IS NULL"
    );
    optional(c.prepare_cached(&sql)?.query_row(params![id, org_id], row))
}

/// A document by id, deleted or not (a run that used it still shows it).
pub fn get_any(c: &Connection, id: &str) -> Result<Option<DocumentRow>, StoreError> {
    let sql = format!("SELECT {COLS} FROM documents WHERE id = ?1");
    optional(c.prepare_cached(&sql)?.query_row(params![id], row))
}

/// Whether the organization has (or had: deleted ones count) the document `id`.
pub fn owned(c: &Connection, org_id: &str, id: &str) -> Result<bool, StoreError> {
    Ok(
        c.prepare_cached("SELECT 1 FROM documents WHERE id = ?1 AND org_id = ?2")?
            .exists(params![id, org_id])?,
    )
}

/// The ids of the organization's live, readable documents, oldest first, at most `limit`.
pub fn completed_ids(c: &Connection, org_id: &str, limit: i64) -> Result<Vec<String>, StoreError> {
    let rows = c
        .prepare_cached(
            "SELECT id FROM documents WHERE org_id = ?1 AND deleted_at IS NULL AND status = 'completed' ORDER BY seq LIMIT ?2",
        )?
        .query_map(params![org_id, limit], |r| r.get(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// One page of a binary document's text layer.
pub fn page(c: &Connection, id: &str, number: u32) -> Result<Option<PageRow>, StoreError> {
    optional(
        c.prepare_cached(
            "SELECT p.number, p.width, p.height, p.text, p.markdown, p.words, p.ocr
             FROM document_pages p JOIN documents d ON d.seq = p.document_seq
             WHERE d.id = ?1 AND p.number = ?2",
        )?
        .query_row(params![id, number], page_row),
    )
}

/// A page image rendered before, if any.
pub fn page_image(c: &Connection, id: &str, number: u32) -> Result<Option<Vec<u8>>, StoreError> {
    optional(
        c.prepare_cached(
            "SELECT i.png FROM document_page_images i JOIN documents d ON d.seq = i.document_seq
             WHERE d.id = ?1 AND i.number = ?2",
        )?
        .query_row(params![id, number], |r| r.get(0)),
    )
}

/// Keeps a rendered page image (a second rendering of the same page replaces nothing).
pub fn keep_page_image(
    c: &Connection,
    id: &str,
    number: u32,
    png: &[u8],
) -> Result<(), StoreError> {
    // PostgreSQL types a parameter in a select list by itself (as text): the casts say.
    static KEEP: Sql = Sql::new(|d| {
        format!(
            "INSERT INTO document_page_images(document_seq, number, png)
         SELECT seq, {}, {} FROM documents WHERE id = ?1
         ON CONFLICT(document_seq, number) DO NOTHING",
            sql::typed(d, 2, "bigint"),
            sql::typed(d, 3, "bytea")
        )
    });
    c.prepare_cached(KEEP.text(c.dialect()))?
        .execute(params![id, number, png])?;
    Ok(())
}

/// Every page of a binary document's text layer, in order (none for the text formats).
pub fn pages(c: &Connection, id: &str) -> Result<Vec<PageRow>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT p.number, p.width, p.height, p.text, p.markdown, p.words, p.ocr
             FROM document_pages p JOIN documents d ON d.seq = p.document_seq
             WHERE d.id = ?1 ORDER BY p.number",
    )?
    .query_map([id], page_row)?
    .collect::<Result<Vec<_>, _>>()?)
}

fn page_row(r: &Row) -> DbResult<PageRow> {
    Ok(PageRow {
        page: Page {
            number: r.get(0)?,
            width: r.get::<_, f64>(1)? as f32,
            height: r.get::<_, f64>(2)? as f32,
            text: r.get(3)?,
            markdown: r.get(4)?,
            words: super::json(r, 5, "document_pages")?,
            ocr: r.get(6)?,
        },
    })
}

pub fn content(c: &Connection, id: &str) -> Result<Vec<u8>, StoreError> {
    Ok(
        c.prepare_cached("SELECT content FROM documents WHERE id = ?1")?
            .query_row([id], |r| r.get(0))?,
    )
}

/// Reads a document's content a piece at a time (SQLite's incremental blob I/O; PostgreSQL's
/// `substring` of the stored bytes), so a large document is never held whole; `f` gets each
/// piece in order. PostgreSQL's pieces agree with each other inside a snapshot
/// (`Db::read_snapshot`).
pub fn read_content<E: From<StoreError>>(
    c: &Connection,
    id: &str,
    piece: usize,
    mut f: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    use std::io::Read;
    if c.dialect() == Dialect::Postgres {
        return read_content_in_pieces(c, id, piece, f);
    }
    let rowid: i64 = c
        .prepare_cached("SELECT seq FROM documents WHERE id = ?1")
        .and_then(|mut st| st.query_row([id], |r| r.get(0)))
        .map_err(StoreError::from)?;
    let mut blob = c
        .sqlite()
        .map_err(StoreError::from)?
        .blob_open(rusqlite::MAIN_DB, "documents", "content", rowid, true)
        .map_err(StoreError::from)?;
    let mut buf = vec![0u8; piece.max(1)];
    loop {
        let n = blob
            .read(&mut buf)
            .map_err(|e| StoreError::Refused(format!("cannot read the document: {e}")))?;
        if n == 0 {
            return Ok(());
        }
        f(&buf[..n])?;
    }
}

const PG_PIECE: usize = 8 << 20;

fn read_content_in_pieces<E: From<StoreError>>(
    c: &Connection,
    id: &str,
    piece: usize,
    mut f: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let len: i64 = c
        .query_row(
            "SELECT octet_length(content)::bigint FROM documents WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .map_err(StoreError::from)?;
    // Large pieces: compressed content is decompressed from its start for every `substring`,
    // so small ones would make a long document's read quadratic.
    let piece = i64::try_from(piece.max(PG_PIECE))
        .unwrap_or(i64::MAX)
        .min(i32::MAX as i64);
    let mut st = c
        .prepare_cached(
            "SELECT substring(content FROM ?2::integer FOR ?3::integer) FROM documents WHERE id = ?1",
        )
        .map_err(StoreError::from)?;
    let mut at = 0;
    while at < len {
        let bytes: Vec<u8> = st
            .query_row(params![id, at + 1, piece], |r| r.get(0))
            .map_err(StoreError::from)?;
        if bytes.is_empty() {
            break;
        }
        at += bytes.len() as i64;
        f(&bytes)?;
    }
    Ok(())
}

pub fn list(
    c: &Connection,
    org_id: &str,
    before_seq: Option<i64>,
    limit: i64,
) -> Result<(Vec<DocumentRow>, i64), StoreError> {
    let sql = format!(
        "SELECT {COLS} FROM documents WHERE org_id = ?1 AND deleted_at IS NULL AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
    );
    let rows = c
        .prepare_cached(&sql)?
        .query_map(params![org_id, before_seq.unwrap_or(i64::MAX), limit], row)?
        .collect::<Result<Vec<_>, _>>()?;
    let total = c.query_row(
        "SELECT count(*) FROM documents WHERE org_id = ?1 AND deleted_at IS NULL",
        [org_id],
        |r| r.get(0),
    )?;
    Ok((rows, total))
}

/// What `GET /v1/documents` can be narrowed by.
#[derive(Debug, Default, Clone)]
pub struct DocFilter {
    pub status: Option<String>,
    /// A substring of the filename, any case.
    pub search: Option<String>,
    /// Created strictly after / before these times (RFC 3339, milliseconds, `Z`).
    pub after: Option<String>,
    pub before: Option<String>,
    /// The `source_id` the document's metadata names.
    pub source_id: Option<String>,
    /// Oldest first instead of newest first.
    pub ascending: bool,
}

/// A page of the organization's live documents matching `f`, after the keyset position `pos`
/// in the list's order: `(rows, total matching)`.
pub fn list_filtered(
    c: &Connection,
    org_id: &str,
    f: &DocFilter,
    pos: Option<i64>,
    limit: i64,
) -> Result<(Vec<DocumentRow>, i64), StoreError> {
    let d = c.dialect();
    let null = |n| sql::is_null(d, n, "text");
    let filter = format!(
        "org_id = ?1 AND deleted_at IS NULL AND ({} OR status = ?2)
        AND ({} OR {})
        AND ({} OR created_at > ?4) AND ({} OR created_at < ?5)
        AND ({} OR {} = ?6)",
        null(2),
        null(3),
        sql::contains(d, "lower(filename)", "lower(?3)"),
        null(4),
        null(5),
        null(6),
        sql::json_member(d, "metadata", "source_id"),
    );
    let (cmp, dir, start) = super::keyset(f.ascending);
    let sql = format!(
        "SELECT {COLS} FROM documents WHERE {filter} AND seq {cmp} ?7 ORDER BY seq {dir} LIMIT ?8"
    );
    let rows = c
        .prepare_cached(&sql)?
        .query_map(
            params![
                org_id,
                f.status,
                f.search,
                f.after,
                f.before,
                f.source_id,
                pos.unwrap_or(start),
                limit
            ],
            row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let total = c.query_row(
        &format!("SELECT count(*) FROM documents WHERE {filter}"),
        params![org_id, f.status, f.search, f.after, f.before, f.source_id],
        |r| r.get(0),
    )?;
    Ok((rows, total))
}

/// The organization's live documents whose filename or text contains `q` (any case), newest
/// first, at most `limit`.
pub fn search(
    c: &Connection,
    org_id: &str,
    q: &str,
    limit: i64,
) -> Result<Vec<DocumentRow>, StoreError> {
    static SEARCH: Sql = Sql::new(|d| {
        let text = format!(
            "lower(coalesce(text, CASE WHEN mime_type {} 'text/%' OR mime_type = 'application/json'
                                            THEN {} END, ''))",
            sql::like_ci(d),
            sql::blob_as_text(d, "content"),
        );
        format!(
            "SELECT {COLS} FROM documents WHERE org_id = ?1 AND deleted_at IS NULL
           AND ({}
             OR {})
         ORDER BY seq DESC LIMIT ?3",
            sql::contains(d, "lower(filename)", "lower(?2)"),
            sql::contains(d, &text, "lower(?2)"),
        )
    });
    let rows = c
        .prepare_cached(SEARCH.text(c.dialect()))?
        .query_map(params![org_id, q, limit], row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// How many active pipelines use the document.
pub fn active_uses(c: &Connection, id: &str) -> Result<i64, StoreError> {
    Ok(c.query_row(
        "SELECT count(DISTINCT p.id) FROM pipeline_documents pd JOIN pipelines p ON p.id = pd.pipeline_id
         WHERE pd.document_id = ?1 AND p.status = 'active'",
        [id],
        |r| r.get(0),
    )?)
}

pub fn soft_delete(c: &Connection, id: &str) -> Result<(), StoreError> {
    c.execute(
        "UPDATE documents SET deleted_at = ?2 WHERE id = ?1",
        params![id, now_rfc3339()],
    )?;
    Ok(())
}
