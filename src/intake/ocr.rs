//! OCR through Tesseract's command line (Debian's `tesseract-ocr`, optional): images, and PDF
//! pages without a text layer once rendered by poppler's `pdftoppm` (also optional). Words come
//! with their boxes and confidences (`tsv` output). Without Tesseract a document that needs it
//! is stored with status `error` and a reason naming what to install.

use super::{layout, Limits, Outcome, Page, Word};
use std::path::Path;
use std::process::{Command, Stdio};

/// What to install for OCR, for messages.
pub const INSTALL_HINT: &str =
    "install Tesseract (Debian: apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-deu)";

/// The requested languages Tesseract has, joined by `+`; `None` when Tesseract is missing or
/// has none of them.
pub fn languages(limits: &Limits) -> Option<String> {
    let wanted = &limits.ocr_languages;
    let out = Command::new(&limits.tesseract)
        .arg("--list-langs")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let listed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let have: Vec<&str> = listed.lines().map(str::trim).collect();
    let usable: Vec<&str> = wanted.split('+').filter(|l| have.contains(l)).collect();
    (!usable.is_empty()).then(|| usable.join("+"))
}

/// An uploaded image: its pixel count checked from its header before anything decodes it.
pub fn read_image(content: &[u8], limits: &Limits) -> Outcome {
    let size = match imagesize::blob_size(content) {
        Ok(s) => s,
        Err(e) => return Outcome::Refused(format!("The image is damaged: {e}")),
    };
    let pixels = size.width as u64 * size.height as u64;
    if pixels > limits.max_pixels {
        return Outcome::Refused(format!(
            "The image is {} × {} pixels; at most {} pixels are read",
            size.width, size.height, limits.max_pixels
        ));
    }
    let Some(langs) = languages(limits) else {
        return Outcome::Unreadable(format!("The image needs OCR: {INSTALL_HINT}"), Vec::new());
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return Outcome::Unreadable(format!("No room for OCR's files: {e}"), Vec::new()),
    };
    let path = dir.path().join("page");
    if let Err(e) = std::fs::write(&path, content) {
        return Outcome::Unreadable(format!("No room for OCR's files: {e}"), Vec::new());
    }
    match page(&limits.tesseract, &path, 1, &langs) {
        Ok(p) => Outcome::Read(vec![p]),
        Err(e) => Outcome::Refused(e),
    }
}

/// One page image through Tesseract: its words with boxes (pixels) and confidences.
pub fn page(tesseract: &str, image: &Path, number: u32, langs: &str) -> Result<Page, String> {
    let out = Command::new(tesseract)
        .arg(image)
        .arg("stdout")
        .args(["-l", langs, "--psm", "3", "tsv"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("Tesseract did not run: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "Tesseract could not read the image: {}",
            err.lines().last().unwrap_or("").trim()
        ));
    }
    let tsv = String::from_utf8_lossy(&out.stdout);
    let (words, width, height) = parse_tsv(&tsv);
    let lines = layout::lines(&words);
    Ok(Page {
        number,
        width,
        height,
        text: layout::text(&lines),
        markdown: layout::markdown(&lines),
        words,
        ocr: true,
    })
}

/// Words (level 5 rows) and the page size (the level 1 row) of Tesseract's TSV.
fn parse_tsv(tsv: &str) -> (Vec<Word>, f32, f32) {
    let (mut words, mut width, mut height) = (Vec::new(), 0.0, 0.0);
    for line in tsv.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 12 {
            continue;
        }
        let num = |i: usize| cols[i].trim().parse::<f32>().unwrap_or(0.0);
        let (left, top, w, h) = (num(6), num(7), num(8), num(9));
        match cols[0] {
            "1" => {
                width = w;
                height = h;
            }
            "5" if !cols[11].trim().is_empty() => words.push(Word {
                text: cols[11].trim().to_string(),
                x0: left,
                y0: top,
                x1: left + w,
                y1: top + h,
                conf: Some((num(10) / 100.0).clamp(0.0, 1.0)),
            }),
            _ => {}
        }
    }
    (words, width, height)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_rows_become_words_with_boxes_and_confidences() {
        let tsv = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n\
                   1\t1\t0\t0\t0\t0\t0\t0\t800\t600\t-1\t\n\
                   5\t1\t1\t1\t1\t1\t10\t20\t60\t12\t96.5\tInvoice\n\
                   5\t1\t1\t1\t1\t2\t300\t21\t50\t12\t91\t4711\n";
        let (words, w, h) = parse_tsv(tsv);
        assert_eq!((w, h), (800.0, 600.0));
        assert_eq!(words.len(), 2);
        assert_eq!(words[1].text, "4711");
        assert_eq!(words[1].x1, 350.0);
        assert_eq!(words[0].conf, Some(0.965));
    }
}
