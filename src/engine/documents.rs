//! Intake: what an upload becomes before it is stored. The text formats are stored as they
//! are; a binary one (PDF, DOCX, image) is read into pages by the confined reader child, outside
//! any transaction, so a slow or hostile file holds no lock and no other request.

use super::EngineError;
use crate::domain::documents::is_binary;
use crate::intake::child::Reader;
use crate::intake::{self, Outcome, Page};
use crate::store::documents::Layer;

/// What intake read of one upload.
#[derive(Debug, Default)]
pub struct TextLayer {
    pub pages: Vec<Page>,
    /// The pages' text as extraction reads it (`intake::full_text`), for a binary format.
    pub text: Option<String>,
    /// Why this server could not read it (the document is stored with status `error`).
    pub error: Option<String>,
    pub language: Option<String>,
    pub kind: Option<&'static str>,
}

impl TextLayer {
    pub fn as_layer(&self) -> Layer<'_> {
        Layer {
            pages: &self.pages,
            text: self.text.as_deref(),
            error: self.error.as_deref(),
            language: self.language.as_deref(),
            kind: self.kind,
        }
    }
}

/// Reads an upload of `mime`: `Invalid` when the file itself cannot be read (encrypted,
/// damaged, over a limit, over the time budget), so the upload is refused with the reason.
pub fn read_upload(reader: &Reader, content: &[u8], mime: &str) -> Result<TextLayer, EngineError> {
    if !is_binary(mime) {
        let text = String::from_utf8_lossy(content);
        return Ok(TextLayer {
            language: intake::language(&text),
            kind: intake::kind(&text),
            ..TextLayer::default()
        });
    }
    match reader.read(content, mime) {
        Outcome::Read(pages) => {
            let text = intake::full_text(&pages);
            Ok(TextLayer {
                language: intake::language(&text),
                kind: intake::kind(&text),
                text: Some(text),
                pages,
                error: None,
            })
        }
        Outcome::Unreadable(why, pages) => Ok(TextLayer {
            error: Some(why),
            pages,
            ..TextLayer::default()
        }),
        Outcome::Refused(why) => Err(EngineError::Invalid(format!(
            "The document cannot be read: {why}"
        ))),
    }
}
