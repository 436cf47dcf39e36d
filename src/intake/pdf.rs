//! PDF: the text layer read with `pdf_oxide` (chosen over `pdf-extract`, `lopdf` and poppler's
//! `pdftotext` on the corpus, README "Documents"), words with their boxes turned into lines in
//! reading order (`layout`). A page without a text layer (a scan) is rendered by poppler's
//! `pdftoppm` and read by Tesseract where both are installed.

use super::{layout, ocr, render, Limits, Outcome, Page, Word};
use pdf_oxide::PdfDocument;
use std::panic::{catch_unwind, AssertUnwindSafe};

pub fn read(content: &[u8], limits: &Limits) -> Outcome {
    let doc = match PdfDocument::from_bytes(content.to_vec()) {
        Ok(d) => d,
        Err(e) => return Outcome::Refused(format!("The PDF is damaged: {e}")),
    };
    // Without a check, an encrypted file reads as empty pages instead of an error.
    if doc.is_encrypted() && !doc.authenticate(b"").unwrap_or(false) {
        return Outcome::Refused(
            "The PDF is encrypted with a password; upload it without the password".into(),
        );
    }
    let n = match doc.page_count() {
        Ok(0) => return Outcome::Refused("The PDF has no pages".into()),
        Ok(n) => n,
        Err(e) => return Outcome::Refused(format!("The PDF's page tree is damaged: {e}")),
    };
    if n > limits.max_pages {
        return Outcome::Refused(format!(
            "The PDF has {n} pages; at most {} are read (--max-document-pages)",
            limits.max_pages
        ));
    }
    let mut pages = Vec::with_capacity(n);
    let mut blank = Vec::new();
    for i in 0..n {
        // A page the parser cannot take reads as blank; the others still count.
        let words = catch_unwind(AssertUnwindSafe(|| page_words(&doc, i))).unwrap_or_default();
        let (width, height) = page_size(&doc, i, &words);
        let words: Vec<Word> = words.into_iter().map(|w| to_top_left(w, height)).collect();
        let lines = layout::lines(&words);
        if words.is_empty() {
            blank.push(i);
        }
        pages.push(Page {
            number: i as u32 + 1,
            width,
            height,
            text: layout::text(&lines),
            markdown: layout::markdown(&lines),
            words,
            ocr: false,
        });
    }
    if blank.is_empty() {
        return Outcome::Read(pages);
    }
    match ocr_pages(content, &blank, limits) {
        Ok(read) => {
            for p in read {
                let at = p.number as usize - 1;
                pages[at] = p;
            }
            Outcome::Read(pages)
        }
        // A scan that cannot be read here leaves the document unreadable; a scan the tools
        // fail on is damaged; a text PDF with a blank page keeps its text.
        Err(Ocr::Missing(why)) if blank.len() == n => Outcome::Unreadable(
            format!("The PDF has no text layer (a scan) and OCR is not available: {why}"),
            pages,
        ),
        Err(Ocr::Failed(why)) if blank.len() == n => Outcome::Refused(format!(
            "The PDF has no text layer and its pages cannot be read: {why}"
        )),
        Err(_) => Outcome::Read(pages),
    }
}

/// Why pages without text could not be read.
enum Ocr {
    /// Tesseract or poppler is not installed.
    Missing(String),
    /// They are, and failed on this file.
    Failed(String),
}

/// A page's words in PDF space (y up, boxes from their bottom-left corner).
fn page_words(doc: &PdfDocument, i: usize) -> Vec<Word> {
    let Ok(words) = doc.extract_words(i) else {
        return Vec::new();
    };
    words
        .into_iter()
        .filter(|w| !w.text.trim().is_empty())
        .map(|w| Word {
            text: w.text.trim().to_string(),
            x0: w.bbox.x,
            y0: w.bbox.y,
            x1: w.bbox.x + w.bbox.width,
            y1: w.bbox.y + w.bbox.height,
            conf: None,
        })
        .collect()
}

/// The page's size in points: its media box, or (inherited boxes the parser does not resolve)
/// the extent of its words on a Letter page at least.
fn page_size(doc: &PdfDocument, i: usize, words: &[Word]) -> (f32, f32) {
    if let Ok((x0, y0, x1, y1)) = doc.get_page_media_box(i) {
        if x1 > x0 && y1 > y0 {
            return (x1 - x0, y1 - y0);
        }
    }
    let (w, h) = words
        .iter()
        .fold((612.0f32, 792.0f32), |(w, h), x| (w.max(x.x1), h.max(x.y1)));
    (w, h)
}

/// A word's box measured from the page's top-left corner, as images and readers measure.
fn to_top_left(w: Word, height: f32) -> Word {
    Word {
        y0: height - w.y1,
        y1: height - w.y0,
        ..w
    }
}

/// Renders the given pages (0-based) with `pdftoppm` and reads them with Tesseract.
fn ocr_pages(content: &[u8], pages: &[usize], limits: &Limits) -> Result<Vec<Page>, Ocr> {
    let langs = ocr::languages(limits).ok_or(Ocr::Missing(ocr::INSTALL_HINT.into()))?;
    let failed = |e: String| Ocr::Failed(e);
    let dir = tempfile::tempdir().map_err(|e| failed(format!("no room for OCR's files: {e}")))?;
    let pdf = dir.path().join("doc.pdf");
    std::fs::write(&pdf, content).map_err(|e| failed(format!("no room for OCR's files: {e}")))?;
    let mut out = Vec::with_capacity(pages.len());
    for &i in pages {
        let n = i as u32 + 1;
        // This runs in the reader child, whose own limits bound the renderer too.
        let png = render::render(&pdf, dir.path(), n, 200, None)
            .map_err(Ocr::Missing)?
            .map_err(failed)?;
        if let Ok(size) = imagesize::size(&png) {
            if size.width as u64 * size.height as u64 > limits.max_pixels {
                return Err(failed(format!("page {n} is too large to read")));
            }
        }
        out.push(ocr::page(&limits.tesseract, &png, i as u32 + 1, &langs).map_err(failed)?);
    }
    Ok(out)
}
