//! Documents' text layers: a binary upload (PDF, DOCX, PNG, JPEG, TIFF) becomes pages of text
//! with their words and boxes, which extraction, review and the page endpoints read.
//!
//! Parsing an untrusted file runs in a child process of this binary (`quire read-document`,
//! see `child`), under an address-space limit, a CPU limit and a wall-clock budget: a file that
//! would hang the parser, exhaust memory or crash it ends as a refusal of that one upload and
//! nothing else. `read` is what the child runs.

pub mod child;
pub mod docx;
pub mod layout;
pub mod ocr;
pub mod pdf;
pub mod render;

use crate::domain::documents::{DOCX, JPEG, PDF, PNG, TIFF};
use serde::{Deserialize, Serialize};

/// A word on a page, with its box in points (PDF) or pixels (images) from the top-left corner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Word {
    pub text: String,
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
    /// OCR confidence, 0–1; absent for a text layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<f32>,
}

/// One page of a document's text layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page {
    /// From 1.
    pub number: u32,
    pub width: f32,
    pub height: f32,
    /// The page's text in reading order: lines top to bottom, a ` | ` between cells that stand
    /// apart on one line (a label and its value, table columns).
    pub text: String,
    /// Its Markdown (headings, paragraphs, tables).
    pub markdown: String,
    pub words: Vec<Word>,
    /// Whether the text came from OCR.
    pub ocr: bool,
}

/// What reading a document gave.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Outcome {
    /// Its pages.
    Read(Vec<Page>),
    /// The file cannot be read (encrypted, damaged, over a limit): the upload is refused.
    Refused(String),
    /// The file is fine but this server cannot read it (OCR not installed): the document is
    /// stored with status `error`, this reason and the pages it has (blank), so that its page
    /// count is still right.
    Unreadable(String, Vec<Page>),
}

/// Bounds on reading one document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Limits {
    pub max_pages: usize,
    /// Most pixels of an image (or a page rendered for OCR).
    pub max_pixels: u64,
    /// Most bytes a DOCX may expand to.
    pub max_expanded_bytes: u64,
    /// Tesseract's languages, e.g. `eng+deu`.
    pub ocr_languages: String,
    /// The Tesseract command (a name on PATH or a path).
    pub tesseract: String,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pages: 500,
            max_pixels: 100_000_000,
            max_expanded_bytes: 200 * 1024 * 1024,
            ocr_languages: "eng+deu".into(),
            tesseract: "tesseract".into(),
        }
    }
}

/// Reads `content` of the binary type `mime` into pages (in this process: the child's work).
pub fn read(content: &[u8], mime: &str, limits: &Limits) -> Outcome {
    match mime {
        PDF => pdf::read(content, limits),
        DOCX => docx::read(content, limits),
        PNG | JPEG | TIFF => ocr::read_image(content, limits),
        other => Outcome::Refused(format!("{other} has no text layer to read")),
    }
}

/// The whole text of a document's pages, as extraction reads it (pages apart by a form feed).
pub fn full_text(pages: &[Page]) -> String {
    pages
        .iter()
        .map(|p| p.text.as_str())
        .collect::<Vec<_>>()
        .join("\n\u{c}\n")
}

/// The document's language when the text tells it reliably: its ISO 639-1 code (`en`, `de`)
/// where it has one, else ISO 639-3.
pub fn language(text: &str) -> Option<String> {
    let info = whatlang::detect(text)?;
    if !info.is_reliable() {
        return None;
    }
    let three = info.lang().code();
    const TWO: [(&str, &str); 26] = [
        ("eng", "en"),
        ("deu", "de"),
        ("fra", "fr"),
        ("nld", "nl"),
        ("spa", "es"),
        ("ita", "it"),
        ("por", "pt"),
        ("pol", "pl"),
        ("swe", "sv"),
        ("dan", "da"),
        ("nob", "nb"),
        ("fin", "fi"),
        ("ces", "cs"),
        ("rus", "ru"),
        ("ukr", "uk"),
        ("ara", "ar"),
        ("tur", "tr"),
        ("jpn", "ja"),
        ("cmn", "zh"),
        ("kor", "ko"),
        ("hun", "hu"),
        ("ron", "ro"),
        ("ell", "el"),
        ("heb", "he"),
        ("hin", "hi"),
        ("slk", "sk"),
    ];
    Some(
        TWO.iter()
            .find(|(t, _)| *t == three)
            .map_or(three, |(_, two)| *two)
            .to_string(),
    )
}

/// What kind of business document the text is, told by the words it calls itself
/// (`Invoice`, `Rechnung`, `Facture`, `Factuur`, …); `None` when nothing says.
pub fn kind(text: &str) -> Option<&'static str> {
    const KINDS: [(&str, &[&str]); 6] = [
        (
            "credit_note",
            &["credit note", "gutschrift", "avoir", "creditnota"],
        ),
        (
            "invoice",
            &["invoice", "rechnung", "facture", "factuur", "tax invoice"],
        ),
        (
            "receipt",
            &["receipt", "quittung", "kassenbon", "reçu", "kassabon"],
        ),
        (
            "purchase_order",
            &["purchase order", "bestellung", "bon de commande"],
        ),
        ("quote", &["quotation", "angebot", "devis", "offerte"]),
        ("contract", &["agreement", "contract", "vertrag", "contrat"]),
    ];
    let head: String = text.chars().take(4000).collect::<String>().to_lowercase();
    KINDS
        .iter()
        .find(|(_, words)| words.iter().any(|w| head.contains(w)))
        .map(|(k, _)| *k)
}
