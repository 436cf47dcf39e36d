//! The few places where SQLite's and PostgreSQL's SQL differ, as fragments a statement is built
//! from (`docs/postgres/plan.md`, step 3). A statement names what it needs ("this parameter is
//! a JSON list of integers", "the larger of two values") and each dialect renders it in its own
//! words; the SQLite rendering is the text the store used before the seam, byte for byte, so
//! the partial indexes whose conditions a query must repeat exactly still match.
//!
//! Placeholders are written `?N` everywhere; [`numbered`] turns them into PostgreSQL's `$N`.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    const ALL: usize = 2;

    fn index(self) -> usize {
        match self {
            Dialect::Sqlite => 0,
            Dialect::Postgres => 1,
        }
    }
}

/// A statement whose text depends only on the dialect: rendered once per dialect on first use,
/// so a hot statement costs no formatting per call and keeps one entry in the statement cache.
pub struct Sql {
    render: fn(Dialect) -> String,
    text: [OnceLock<String>; Dialect::ALL],
}

impl Sql {
    pub const fn new(render: fn(Dialect) -> String) -> Self {
        Sql {
            render,
            text: [OnceLock::new(), OnceLock::new()],
        }
    }

    pub fn text(&self, d: Dialect) -> &str {
        self.text[d.index()].get_or_init(|| (self.render)(d))
    }
}

/// What a JSON list parameter holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    Int,
    Text,
}

/// The members of the JSON array in parameter `n`, as a subquery's rows (`x IN (…)`). The
/// parameter stays JSON text in both dialects, so callers bind the same value.
pub fn in_list(d: Dialect, n: u8, elem: Elem) -> String {
    match (d, elem) {
        (Dialect::Sqlite, _) => format!("SELECT value FROM json_each(?{n})"),
        (Dialect::Postgres, Elem::Int) => {
            format!("SELECT value::bigint FROM jsonb_array_elements_text(?{n}::jsonb)")
        }
        (Dialect::Postgres, Elem::Text) => {
            format!("SELECT value FROM jsonb_array_elements_text(?{n}::jsonb)")
        }
    }
}

/// The members of the JSON array stored in column `col` (text), as a table `value`.
pub fn json_elems(d: Dialect, col: &str) -> String {
    match d {
        Dialect::Sqlite => format!("json_each({col})"),
        Dialect::Postgres => format!("jsonb_array_elements_text({col}::jsonb)"),
    }
}

/// A join with every member of the JSON array in text column `col`, as `alias.value`.
pub fn join_json_elems(d: Dialect, col: &str, alias: &str) -> String {
    match d {
        Dialect::Sqlite => format!("JOIN json_each({col}) {alias}"),
        Dialect::Postgres => format!("CROSS JOIN jsonb_array_elements_text({col}::jsonb) {alias}"),
    }
}

/// The larger of two values (SQLite's scalar `max`).
pub fn greatest(d: Dialect, a: &str, b: &str) -> String {
    match d {
        Dialect::Sqlite => format!("max({a}, {b})"),
        Dialect::Postgres => format!("GREATEST({a}, {b})"),
    }
}

/// The smaller of two values (SQLite's scalar `min`).
pub fn least(d: Dialect, a: &str, b: &str) -> String {
    match d {
        Dialect::Sqlite => format!("min({a}, {b})"),
        Dialect::Postgres => format!("LEAST({a}, {b})"),
    }
}

/// Whether text `hay` contains `needle`, case-sensitively.
pub fn contains(d: Dialect, hay: &str, needle: &str) -> String {
    match d {
        Dialect::Sqlite => format!("instr({hay}, {needle}) > 0"),
        Dialect::Postgres => format!("strpos({hay}, {needle}) > 0"),
    }
}

/// The member `key` of the JSON object in text column `col`, as text.
pub fn json_member(d: Dialect, col: &str, key: &str) -> String {
    match d {
        Dialect::Sqlite => format!("json_extract({col}, '$.{key}')"),
        // `json`: the text is parsed for the one member, not converted to `jsonb` whole. (A NUL
        // escape anywhere in it would still fail the statement: metadata refuses them.)
        Dialect::Postgres => format!("({col}::json ->> '{key}')"),
    }
}

/// The member `key` of the object under the key given by the SQL expression `outer` in the JSON
/// object of column `col`, as text.
pub fn json_nested_member(d: Dialect, col: &str, outer: &str, key: &str) -> String {
    match d {
        Dialect::Sqlite => format!("json_extract({col}, '$.\"' || {outer} || '\".{key}')"),
        Dialect::Postgres => format!("({col}::jsonb -> {outer} ->> '{key}')"),
    }
}

/// Element `i` of the JSON array in the expression `value` (a member of [`json_elems`]), as an
/// integer.
pub fn json_index(d: Dialect, value: &str, i: usize) -> String {
    match d {
        Dialect::Sqlite => format!("json_extract({value}, '$[{i}]')"),
        Dialect::Postgres => format!("({value}::jsonb ->> {i})::bigint"),
    }
}

/// The JSON array in text column `col` with the pair `[a, b]` of integers appended.
pub fn json_append_pair(d: Dialect, col: &str, a: &str, b: &str) -> String {
    match d {
        Dialect::Sqlite => format!("json_insert({col}, '$[#]', json_array({a}, {b}))"),
        Dialect::Postgres => format!(
            "({col}::jsonb || jsonb_build_array(jsonb_build_array(({a})::bigint, ({b})::bigint)))::text"
        ),
    }
}

/// A blob column read as UTF-8 text.
pub fn blob_as_text(d: Dialect, col: &str) -> String {
    match d {
        Dialect::Sqlite => format!("CAST({col} AS TEXT)"),
        // Not `convert_from`, which fails the statement on bytes that are not UTF-8 (or a NUL):
        // ASCII reads as itself, other bytes as octal escapes.
        Dialect::Postgres => format!("encode({col}, 'escape')"),
    }
}

/// A text column read as its UTF-8 bytes.
pub fn text_as_blob(d: Dialect, col: &str) -> String {
    match d {
        Dialect::Sqlite => format!("CAST({col} AS BLOB)"),
        Dialect::Postgres => format!("convert_to({col}, 'UTF8')"),
    }
}

/// `LIKE` that ignores ASCII case, as SQLite's does by default.
pub fn like_ci(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => "LIKE",
        Dialect::Postgres => "ILIKE",
    }
}

/// SQLite's index hint, preceded by a space; PostgreSQL plans without one.
pub fn indexed_by(d: Dialect, index: &str) -> String {
    match d {
        Dialect::Sqlite => format!(" INDEXED BY {index}"),
        Dialect::Postgres => String::new(),
    }
}

/// The row locks a claim takes, preceded by a space: none in SQLite, where the writer holds the
/// whole database; in PostgreSQL, the rows this statement read, skipping what another holds.
pub fn skip_locked(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => "",
        Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
    }
}

/// [`skip_locked`] for the rows of one table of a join (`alias`), not those of every table.
pub fn skip_locked_of(d: Dialect, alias: &str) -> String {
    match d {
        Dialect::Sqlite => String::new(),
        Dialect::Postgres => format!(" FOR UPDATE OF {alias} SKIP LOCKED"),
    }
}

/// Whether parameter `n` is NULL, the parameter being of type `ty` where the statement uses
/// it otherwise. PostgreSQL fixes a parameter's type at its first use, so an untyped `$n IS NULL`
/// before `status = $n` leaves it undetermined and the statement does not prepare.
pub fn is_null(d: Dialect, n: u8, ty: &str) -> String {
    match d {
        Dialect::Sqlite => format!("?{n} IS NULL"),
        Dialect::Postgres => format!("?{n}::{ty} IS NULL"),
    }
}

/// The boolean `expr` as the integer flag (0/1) the store's flag columns hold; SQLite's booleans
/// are those integers already.
pub fn flag(d: Dialect, expr: &str) -> String {
    match d {
        Dialect::Sqlite => expr.to_string(),
        Dialect::Postgres => format!("CASE WHEN {expr} THEN 1 ELSE 0 END"),
    }
}

/// The sum of an integer expression as an integer (PostgreSQL's `sum` of `bigint` is
/// `numeric`, which the store does not read).
pub fn sum_int(d: Dialect, expr: &str) -> String {
    match d {
        Dialect::Sqlite => format!("sum({expr})"),
        Dialect::Postgres => format!("sum({expr})::bigint"),
    }
}

/// Parameter `n` with a type PostgreSQL cannot infer from where it stands (the select list of
/// an `INSERT … SELECT`); SQLite needs none.
pub fn typed(d: Dialect, n: u8, ty: &str) -> String {
    match d {
        Dialect::Sqlite => format!("?{n}"),
        Dialect::Postgres => format!("?{n}::{ty}"),
    }
}

/// The text with SQLite's `?N` placeholders as PostgreSQL's `$N`. A bare `?` takes the number
/// after the largest seen so far, as in SQLite. Quoted literals, quoted identifiers and comments
/// are left alone (`'$[#]'` is a JSON path, not a placeholder).
pub fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut largest = 0u32;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for q in chars.by_ref() {
                    out.push(q);
                    // A doubled quote closes and reopens, which copies through the same way.
                    if q == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for q in chars.by_ref() {
                    out.push(q);
                    if q == '\n' {
                        break;
                    }
                }
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let n = match digits.parse::<u32>() {
                    Ok(n) => n,
                    Err(_) => largest + 1,
                };
                largest = largest.max(n);
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

/// The database's clock in Unix milliseconds: every node reads leases off one clock, so no
/// clock skew between hosts decides who is alive.
pub fn now_ms(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
        Dialect::Postgres => "(extract(epoch FROM clock_timestamp()) * 1000)::bigint",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Dialect::{Postgres as Pg, Sqlite};

    #[test]
    fn sqlite_renders_the_texts_the_store_used_before_the_seam() {
        assert_eq!(
            in_list(Sqlite, 3, Elem::Int),
            "SELECT value FROM json_each(?3)"
        );
        assert_eq!(json_elems(Sqlite, "w.events"), "json_each(w.events)");
        assert_eq!(
            join_json_elems(Sqlite, "pd.restarts", "r"),
            "JOIN json_each(pd.restarts) r"
        );
        assert_eq!(
            greatest(Sqlite, "unclean_exits", "1"),
            "max(unclean_exits, 1)"
        );
        assert_eq!(
            least(Sqlite, "?3", "coalesce(error_phase_index, 0)"),
            "min(?3, coalesce(error_phase_index, 0))"
        );
        assert_eq!(
            contains(Sqlite, "field_states", "'\"pinned\":true'"),
            "instr(field_states, '\"pinned\":true') > 0"
        );
        assert_eq!(
            json_member(Sqlite, "metadata", "source_id"),
            "json_extract(metadata, '$.source_id')"
        );
        assert_eq!(
            json_nested_member(Sqlite, "pd.field_states", "h.field_key", "stage_id"),
            "json_extract(pd.field_states, '$.\"' || h.field_key || '\".stage_id')"
        );
        assert_eq!(
            json_index(Sqlite, "r.value", 1),
            "json_extract(r.value, '$[1]')"
        );
        assert_eq!(
            json_append_pair(Sqlite, "restarts", "?2", "x"),
            "json_insert(restarts, '$[#]', json_array(?2, x))"
        );
        assert_eq!(blob_as_text(Sqlite, "content"), "CAST(content AS TEXT)");
        assert_eq!(text_as_blob(Sqlite, "d.text"), "CAST(d.text AS BLOB)");
        assert_eq!(like_ci(Sqlite), "LIKE");
        assert_eq!(indexed_by(Sqlite, "i"), " INDEXED BY i");
        assert_eq!(skip_locked(Sqlite), "");
        assert_eq!(typed(Sqlite, 2, "bigint"), "?2");
        assert_eq!(is_null(Sqlite, 3, "text"), "?3 IS NULL");
        assert_eq!(flag(Sqlite, "?5"), "?5");
        assert_eq!(sum_int(Sqlite, "s.count"), "sum(s.count)");
    }

    #[test]
    fn postgres_renders_its_own_words() {
        assert_eq!(
            in_list(Pg, 1, Elem::Int),
            "SELECT value::bigint FROM jsonb_array_elements_text(?1::jsonb)"
        );
        assert_eq!(
            in_list(Pg, 1, Elem::Text),
            "SELECT value FROM jsonb_array_elements_text(?1::jsonb)"
        );
        assert_eq!(greatest(Pg, "a", "b"), "GREATEST(a, b)");
        assert_eq!(least(Pg, "a", "b"), "LEAST(a, b)");
        assert_eq!(contains(Pg, "s", "'x'"), "strpos(s, 'x') > 0");
        assert_eq!(
            json_nested_member(Pg, "c", "k", "stage_id"),
            "(c::jsonb -> k ->> 'stage_id')"
        );
        assert_eq!(indexed_by(Pg, "i"), "");
        assert_eq!(skip_locked(Pg), " FOR UPDATE SKIP LOCKED");
        assert_eq!(skip_locked_of(Pg, "d"), " FOR UPDATE OF d SKIP LOCKED");
        assert_eq!(skip_locked_of(Sqlite, "d"), "");
        assert_eq!(typed(Pg, 2, "bigint"), "?2::bigint");
        assert_eq!(is_null(Pg, 3, "text"), "?3::text IS NULL");
        assert_eq!(flag(Pg, "?5"), "CASE WHEN ?5 THEN 1 ELSE 0 END");
        assert_eq!(sum_int(Pg, "s.count"), "sum(s.count)::bigint");
    }

    #[test]
    fn numbered_placeholders_skip_literals_identifiers_and_comments() {
        assert_eq!(
            numbered("SELECT ?1, ?12 FROM t WHERE a = ?1"),
            "SELECT $1, $12 FROM t WHERE a = $1"
        );
        assert_eq!(
            numbered("json_insert(r, '$[#]', json_array(?2, ?3))"),
            "json_insert(r, '$[#]', json_array($2, $3))"
        );
        assert_eq!(
            numbered("SELECT 'it''s ?1', \"col?\" -- why ?4\n, ?2"),
            "SELECT 'it''s ?1', \"col?\" -- why ?4\n, $2"
        );
        assert_eq!(
            numbered("VALUES (?, ?), (?5, ?)"),
            "VALUES ($1, $2), ($5, $6)"
        );
        assert_eq!(numbered("a - b -?1"), "a - b -$1");
    }

    #[test]
    fn a_statement_is_rendered_once_per_dialect() {
        static S: Sql = Sql::new(|d| format!("SELECT 1 WHERE x IN ({})", in_list(d, 1, Elem::Int)));
        let first = S.text(Sqlite) as *const str;
        assert_eq!(
            S.text(Sqlite),
            "SELECT 1 WHERE x IN (SELECT value FROM json_each(?1))"
        );
        assert!(std::ptr::eq(first, S.text(Sqlite)));
        assert!(S.text(Pg).contains("jsonb_array_elements_text"));
    }
}
