use super::body::{media_type, parse_value, read_limited, too_large, typed};
use super::error::ApiError;
use super::extract::{Call, Id, Read, Write};
use super::idempotency::Reply;
use super::pagination::{self, query_map};

use crate::answers::{
    Deleted, Document, DocumentLinks, DocumentMarkdown, DocumentPage, MarkdownPage,
};
use crate::domain::canonical::{canonical_json, sha256_hex};
use crate::domain::documents::{check_metadata, detect_type};
use crate::domain::documents::{is_binary, JPEG, PDF, PNG, TIFF};
use crate::engine::documents::TextLayer;
use crate::intake::Page;
use crate::store;
use crate::store::documents::{DocumentRow, NewDocument};
use crate::store::Connection;
use actix_multipart::Multipart;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

pub fn render(d: &DocumentRow) -> Document {
    Document {
        id: d.id.clone(),
        filename: d.filename.clone(),
        mime_type: d.mime_type.clone(),
        size_bytes: d.size_bytes,
        sha256: d.sha256.clone(),
        metadata: d.metadata.clone(),
        created_at: d.created_at.clone(),
        status: d.status.clone(),
        error: d.error.clone(),
        pages: d.pages,
        type_detected: d.kind.clone(),
        language_detected: d.language.clone(),
        links: DocumentLinks {
            self_: format!("/v1/documents/{}", d.id),
            markdown: format!("/v1/documents/{}/markdown", d.id),
        },
        duplicate: None,
        text: None,
    }
}

/// A document as received, before storage.
pub struct Upload {
    pub filename: String,
    pub declared_type: Option<String>,
    pub content: Vec<u8>,
    pub metadata: Value,
}

/// A document given inline: its text as `content`, or its bytes as `content_base64`.
#[derive(Deserialize, ToSchema)]
#[schema(as = DocumentInput)]
pub struct InlineDocument {
    #[schema(min_length = 1, max_length = 255)]
    pub filename: Option<String>,
    #[schema(min_length = 1)]
    pub content: Option<String>,
    #[schema(min_length = 1, content_encoding = "base64")]
    pub content_base64: Option<String>,
    /// Declared type; the filename's extension tells it when absent.
    pub mime_type: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// Turns an inline JSON document into an upload (also used by inline pipeline documents).
pub fn inline_upload(d: InlineDocument, at: &str) -> Result<Upload, ApiError> {
    let filename = d
        .filename
        .ok_or_else(|| ApiError::bad(format!("{at}filename is required")))?;
    let content = match (d.content, d.content_base64) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad(format!(
                "{at}give content or content_base64, not both"
            )))
        }
        (Some(c), None) => c.into_bytes(),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map_err(|e| ApiError::bad(format!("{at}content_base64 is not valid base64: {e}")))?,
        (None, None) => Vec::new(),
    };
    Ok(Upload {
        filename,
        declared_type: d.mime_type,
        content,
        metadata: d.metadata.unwrap_or(json!({})),
    })
}

/// Checks an upload's name, type, size and metadata: 400/413/415, or its media type.
/// The largest request body that can carry a document of `max_upload` bytes (base64 in JSON,
/// or a multipart part, with room for the rest of the body).
pub fn upload_body_limit(max_upload: usize) -> usize {
    max_upload / 3 * 4 + 64 * 1024
}

pub fn check_upload(u: &Upload, max_upload: usize) -> Result<String, ApiError> {
    let n = u.filename.chars().count();
    if n == 0 || n > 255 {
        return Err(ApiError::bad("filename must be 1-255 characters"));
    }
    if u.content.is_empty() {
        return Err(ApiError::MissingDocument("The document is empty".into()));
    }
    if u.content.len() > max_upload {
        return Err(ApiError::PayloadTooLarge(format!(
            "The document exceeds the upload limit of {max_upload} bytes"
        )));
    }
    check_metadata(&u.metadata).map_err(ApiError::BadRequest)?;
    detect_type(u.declared_type.as_deref(), &u.filename, &u.content)
        .map_err(ApiError::UnsupportedMediaType)
}

/// A multipart upload: the document, the body's fingerprint, and its other parts as text.
pub struct MultipartUpload {
    /// The `file` part; `None` when the body has none.
    pub upload: Option<Upload>,
    pub hash: String,
    pub fields: std::collections::HashMap<String, String>,
}

/// Reads a multipart body: the `file` part (at most `max_upload` bytes), a `metadata` part, and
/// the text parts named in `wanted` (at most 1 MiB each); other parts are read and dropped.
pub async fn read_multipart(
    req: &HttpRequest,
    payload: web::Payload,
    max_upload: usize,
    wanted: &[&str],
) -> Result<MultipartUpload, ApiError> {
    let mut mp = Multipart::new(req.headers(), payload);
    let mut file: Option<(String, Option<String>, Vec<u8>)> = None;
    let mut metadata = json!({});
    let mut fields = std::collections::HashMap::new();
    let mut fp = Sha256::new();
    while let Some(part) = mp.next().await {
        let mut part = part.map_err(|e| ApiError::bad(format!("Malformed multipart body: {e}")))?;
        let name = part.name().unwrap_or("").to_string();
        let filename = part
            .content_disposition()
            .and_then(|cd| cd.get_filename())
            .map(str::to_string);
        let ctype = part.content_type().map(|m| m.essence_str().to_string());
        let limit = if name == "file" {
            max_upload
        } else {
            1024 * 1024
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = part.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::bad(format!("Malformed multipart body: {e}")))?;
            if bytes.len() + chunk.len() > limit {
                return Err(too_large(limit));
            }
            bytes.extend_from_slice(&chunk);
        }
        for piece in [
            name.as_bytes(),
            filename.as_deref().unwrap_or("").as_bytes(),
            ctype.as_deref().unwrap_or("").as_bytes(),
            &bytes,
        ] {
            fp.update((piece.len() as u64).to_le_bytes());
            fp.update(piece);
        }
        match name.as_str() {
            "file" => file = Some((filename.unwrap_or_default(), ctype, bytes)),
            "metadata" => {
                metadata = serde_json::from_slice(&bytes)
                    .map_err(|e| ApiError::bad(format!("metadata part is not valid JSON: {e}")))?;
            }
            other if wanted.contains(&other) => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| ApiError::bad(format!("part '{name}' is not UTF-8 text")))?;
                fields.insert(name, text);
            }
            _ => {}
        }
    }
    let upload = file.map(|(filename, ctype, content)| Upload {
        filename,
        declared_type: ctype.filter(|t| t != "application/octet-stream"),
        content,
        metadata,
    });
    Ok(MultipartUpload {
        upload,
        hash: hex::encode(fp.finalize()),
        fields,
    })
}

/// The upload's text layer, read off the actix worker (a binary format in the reader child).
pub async fn read_layer<S>(
    call: &Call<S>,
    upload: Upload,
    mime: &str,
) -> Result<(Upload, TextLayer), ApiError> {
    let (reader, mime) = (call.state.config.reader.clone(), mime.to_string());
    super::blocking(move || {
        let layer = crate::engine::documents::read_upload(&reader, &upload.content, &mime)?;
        Ok((upload, layer))
    })
    .await
}

pub async fn create(call: Call<Write>, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let max_upload = call.state.config.max_upload;
    let (upload, body_hash) = match media_type(&call.req).as_deref() {
        Some("multipart/form-data") => {
            let m = read_multipart(&call.req, payload, max_upload, &[]).await?;
            let upload = m
                .upload
                .ok_or_else(|| ApiError::MissingDocument("No 'file' part in the upload".into()))?;
            (upload, m.hash)
        }
        Some("application/json") => {
            let limit = upload_body_limit(max_upload);
            let raw = parse_value(&read_limited(&call.req, payload, limit).await?)?;
            let doc: InlineDocument = typed(&raw)?;
            (
                inline_upload(doc, "")?,
                sha256_hex(canonical_json(&raw).as_bytes()),
            )
        }
        _ => {
            return Err(ApiError::UnsupportedMediaType(
                "Content-Type must be application/json or multipart/form-data".into(),
            ))
        }
    };
    let mime = check_upload(&upload, max_upload)?;
    let (upload, layer) = read_layer(&call, upload, &mime).await?;
    call.write_with(
        move || body_hash,
        move |tx, org| {
            let sha = sha256_hex(&upload.content);
            let new = NewDocument {
                filename: &upload.filename,
                mime_type: &mime,
                sha256: &sha,
                metadata: &upload.metadata,
                content: &upload.content,
                layer: layer.as_layer(),
            };
            let (doc, dup) = crate::engine::events::add_document(tx, org, new)?;
            let body = render(&doc);
            if dup {
                Ok(Reply::ok(Document {
                    duplicate: Some(true),
                    ..body
                }))
            } else {
                Ok(Reply::created(body))
            }
        },
    )
    .await
}

/// A time bound of a list filter: RFC 3339, or a date (its midnight, UTC).
fn time_bound(
    q: &std::collections::HashMap<String, String>,
    key: &str,
) -> Result<Option<String>, ApiError> {
    let Some(raw) = q.get(key) else {
        return Ok(None);
    };
    let t = chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&chrono::Utc))
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
                .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
        })
        .map_err(|_| {
            ApiError::bad(format!(
                "{key} must be an RFC 3339 time or a YYYY-MM-DD date"
            ))
        })?;
    Ok(Some(crate::domain::ids::format_time(t)))
}

pub async fn list(call: Call<Read>) -> Result<HttpResponse, ApiError> {
    let filters = ["status", "search", "after", "before", "source_id", "order"];
    // Each order is its own list: a cursor of one is refused by the other.
    let ascending = pagination::ascending(call.req.query_string())?;
    let list = if ascending {
        "documents:asc"
    } else {
        "documents"
    };
    let (q, cursors, page) = call.page(list, 100, &filters)?;
    let status = q.get("status").cloned();
    if let Some(s) = &status {
        if !["pending", "processing", "completed", "error"].contains(&s.as_str()) {
            return Err(ApiError::bad(
                "status must be one of pending, processing, completed, error",
            ));
        }
    }
    let source_id = q
        .get("source_id")
        .map(|s| {
            crate::domain::ids::parse_id(s).ok_or_else(|| ApiError::bad("source_id must be a UUID"))
        })
        .transpose()?;
    let filter = store::documents::DocFilter {
        status,
        search: q.get("search").filter(|s| !s.is_empty()).cloned(),
        after: time_bound(&q, "after")?,
        before: time_bound(&q, "before")?,
        source_id,
        ascending,
    };
    call.answer(move |c, org| {
        let (rows, total) =
            store::documents::list_filtered(c, org, &filter, page.after, page.limit + 1)?;
        Ok(pagination::page(
            rows,
            total,
            &page,
            &cursors,
            |d| d.seq,
            |d| render(&d),
        ))
    })
    .await
}

pub async fn get(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    let state = &call.state;
    let q = query_map(call.req.query_string())?;
    let with_text = q
        .get("include")
        .is_some_and(|v| v.split(',').any(|p| p.trim() == "text"));
    let permit = if with_text {
        Some(state.heavy.try_enter()?)
    } else {
        None
    };
    let d = call
        .read(move |c, org| {
            store::documents::get(c, org, &id)?.ok_or_else(|| ApiError::not_found("Document"))
        })
        .await?;
    let Some(permit) = permit else {
        return Ok(HttpResponse::Ok().json(render(&d)));
    };
    // The text can be as large as an upload: it is escaped and written piece by piece after
    // the document's other members, never held as a second copy or a JSON tree.
    let head = serde_json::to_string(&render(&d)).map_err(|e| ApiError::Internal(e.to_string()))?;
    let st = state.clone();
    super::limits::answer_streamed(
        state.heavy.clone(),
        Some(permit),
        "application/json",
        move |sink| {
            st.db.read_snapshot(|c| {
                sink.write(head.strip_suffix('}').unwrap_or(&head).as_bytes())?;
                sink.write(if head.len() > 2 {
                    b",\"text\":"
                } else {
                    b"\"text\":"
                })?;
                // The whole text is checked before its first byte goes out: bytes that are not
                // UTF-8 give `null`, and a status already sent cannot change its mind.
                let mut check = Utf8Pieces::default();
                store::documents::read_content(c, &d.id, TEXT_PIECE, |b| {
                    check.feed(b, |_| Ok(()))
                })?;
                if !check.finish() {
                    return sink.write(b"null}");
                }
                sink.write(b"\"")?;
                let mut pieces = Utf8Pieces::default();
                store::documents::read_content(c, &d.id, TEXT_PIECE, |b| {
                    pieces.feed(b, |text| {
                        let quoted = serde_json::to_string(text)
                            .map_err(|e| ApiError::Internal(e.to_string()))?;
                        sink.write(&quoted.as_bytes()[1..quoted.len() - 1])
                    })
                })?;
                sink.write(b"\"}")
            })
        },
    )
    .await
}

const TEXT_PIECE: usize = 32 * 1024;

/// Cuts a byte stream into valid UTF-8 pieces, carrying a character split between two reads
/// over to the next; remembers whether anything was not UTF-8.
#[derive(Default)]
struct Utf8Pieces {
    carry: Vec<u8>,
    invalid: bool,
}

impl Utf8Pieces {
    fn feed(
        &mut self,
        bytes: &[u8],
        mut out: impl FnMut(&str) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        if self.invalid {
            return Ok(());
        }
        self.carry.extend_from_slice(bytes);
        let data = std::mem::take(&mut self.carry);
        let valid = match std::str::from_utf8(&data) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => {
                self.invalid = true;
                return Ok(());
            }
        };
        let text =
            std::str::from_utf8(&data[..valid]).map_err(|e| ApiError::Internal(e.to_string()))?;
        if !text.is_empty() {
            out(text)?;
        }
        self.carry = data[valid..].to_vec();
        Ok(())
    }

    /// True when everything fed was UTF-8, with no character left unfinished.
    fn finish(&self) -> bool {
        !self.invalid && self.carry.is_empty()
    }
}

/// The document's pages: a binary format's text layer, or a text format as its one page.
fn doc_pages(c: &Connection, d: &DocumentRow) -> Result<Vec<Page>, ApiError> {
    if is_binary(&d.mime_type) {
        return Ok(store::documents::pages(c, &d.id)?
            .into_iter()
            .map(|r| r.page)
            .collect());
    }
    let text = String::from_utf8_lossy(&store::documents::content(c, &d.id)?).into_owned();
    Ok(vec![Page {
        number: 1,
        width: 0.0,
        height: 0.0,
        markdown: text_markdown(&d.mime_type, &text),
        text,
        words: Vec::new(),
        ocr: false,
    }])
}

/// A text format as Markdown: Markdown as it is, CSV as a table, JSON in a code block.
fn text_markdown(mime: &str, text: &str) -> String {
    match mime {
        "text/csv" => {
            let mut r = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(text.as_bytes());
            let rows: Vec<Vec<String>> = r
                .records()
                .map_while(Result::ok)
                .map(|rec| rec.iter().map(str::to_string).collect())
                .collect();
            if rows.is_empty() {
                String::new()
            } else {
                crate::intake::layout::table(&rows)
            }
        }
        "application/json" => format!("```json\n{}\n```", text.trim_end()),
        _ => text.to_string(),
    }
}

pub fn document(c: &Connection, org: &str, id: &str) -> Result<DocumentRow, ApiError> {
    store::documents::get(c, org, id)?.ok_or_else(|| ApiError::not_found("Document"))
}

/// The document's text as Markdown, page by page and joined.
pub fn markdown_of(c: &Connection, d: &DocumentRow) -> Result<DocumentMarkdown, ApiError> {
    let pages: Vec<MarkdownPage> = doc_pages(c, d)?
        .into_iter()
        .map(|p| MarkdownPage {
            number: p.number,
            markdown: p.markdown,
        })
        .collect();
    let markdown = pages
        .iter()
        .map(|p| p.markdown.as_str())
        .collect::<Vec<_>>()
        .join("\n\n---\n\n");
    Ok(DocumentMarkdown {
        document_id: d.id.clone(),
        pages,
        markdown,
    })
}

pub async fn markdown(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    let permit = call.heavy_if(true)?;
    let answer = call
        .read(move |c, org| markdown_of(c, &document(c, org, &id)?))
        .await;
    drop(permit);
    Ok(HttpResponse::Ok().json(answer?))
}

pub async fn page(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    let number = page_number(&call)?;
    call.answer(move |c, org| {
        let d = document(c, org, &id)?;
        let page = if is_binary(&d.mime_type) {
            store::documents::page(c, &d.id, number)?.map(|r| r.page)
        } else {
            doc_pages(c, &d)?.into_iter().find(|p| p.number == number)
        };
        let page = page.ok_or_else(|| {
            ApiError::NotFound(format!(
                "The document has {} page(s); no page {number}",
                d.pages
            ))
        })?;
        Ok(DocumentPage {
            document_id: d.id,
            page,
        })
    })
    .await
}

/// `GET /v1/documents/{id}/pages/{page}/image`: a PDF page rendered (once, then kept), or the
/// uploaded image itself.
pub async fn page_image(call: Call<Read>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    let number = page_number(&call)?;
    let permit = call.heavy_if(true)?;
    let budget = call.state.config.reader.timeout;
    let lookup = id.clone();
    let (d, cached) = call
        .read(move |c, org| {
            let d = document(c, org, &lookup)?;
            let cached = store::documents::page_image(c, &d.id, number)?;
            Ok((d, cached))
        })
        .await?;
    if number as i64 > d.pages {
        return Err(ApiError::NotFound(format!(
            "The document has {} page(s); no page {number}",
            d.pages
        )));
    }
    let (png, media) = match d.mime_type.as_str() {
        PNG | JPEG | TIFF => {
            let doc = d.id.clone();
            let bytes = call
                .read(move |c, _| Ok(store::documents::content(c, &doc)?))
                .await?;
            (bytes, d.mime_type.clone())
        }
        PDF => match cached {
            Some(png) => (png, PNG.to_string()),
            None => {
                let doc = d.id.clone();
                let pdf = call
                    .read(move |c, _| Ok(store::documents::content(c, &doc)?))
                    .await?;
                let png = super::blocking(move || {
                    crate::intake::render::pdf_page_png(&pdf, number, 100, budget)
                        .map_err(ApiError::Unavailable)
                })
                .await?;
                let (kept, doc) = (png.clone(), d.id.clone());
                call.change_quietly(move |tx| {
                    store::documents::keep_page_image(tx, &doc, number, &kept)?;
                    Ok(())
                })
                .await?;
                (png, PNG.to_string())
            }
        },
        other => {
            return Err(ApiError::NotFound(format!(
                "A {other} document has no page images (PDF and image documents do)"
            )))
        }
    };
    drop(permit);
    Ok(HttpResponse::Ok().content_type(media).body(png))
}

fn page_number<S>(call: &Call<S>) -> Result<u32, ApiError> {
    let raw = call.req.match_info().get("page").unwrap_or("");
    raw.parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| ApiError::bad(format!("'{raw}' is not a page number (1, 2, ...)")))
}

pub async fn delete(call: Call<Write>, Id(id): Id) -> Result<HttpResponse, ApiError> {
    call.change(move |tx, org| {
        let d =
            store::documents::get(tx, org, &id)?.ok_or_else(|| ApiError::not_found("Document"))?;
        let uses = store::documents::active_uses(tx, &d.id)?;
        if uses > 0 {
            return Err(ApiError::Conflict(format!(
                "The document is used by {uses} active pipeline(s)"
            )));
        }
        store::documents::soft_delete(tx, &d.id)?;
        Ok(Deleted {
            deleted: true,
            id: d.id,
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(chunks: &[&[u8]]) -> (String, bool) {
        let mut p = Utf8Pieces::default();
        let mut out = String::new();
        for c in chunks {
            p.feed(c, |t| {
                out.push_str(t);
                Ok(())
            })
            .unwrap();
        }
        (out, p.finish())
    }

    #[test]
    fn characters_split_between_reads_come_out_whole_and_bad_bytes_are_noticed() {
        let euro = "€".as_bytes();
        assert_eq!(
            pieces(&[b"a", &euro[..1], &euro[1..], b"b"]),
            ("a€b".to_string(), true)
        );
        assert!(!pieces(&[b"a", &euro[..2]]).1, "an unfinished character");
        assert!(!pieces(&[b"a\xff", b"b"]).1);
    }
}
