//! Reading order from positioned words: words gathered into lines by their vertical overlap,
//! each line read left to right, and a ` | ` where a gap on the line is wider than a few
//! characters, so a label and the value printed apart from it read as `Invoice number |
//! 30064443`, and a table's row as its cells. Also the page's Markdown: a run of lines that
//! split into the same number of cells is a table.

use super::Word;
use crate::domain::cells::Provenance;

/// A gap wider than this many average character widths separates two cells of a line.
const CELL_GAP_CHARS: f32 = 2.5;

/// Lines of `words`, top to bottom, each a list of cells left to right.
pub fn lines(words: &[Word]) -> Vec<Vec<String>> {
    let mut sorted: Vec<&Word> = words.iter().filter(|w| !w.text.trim().is_empty()).collect();
    sorted.sort_by(|a, b| {
        let (ca, cb) = (center(a), center(b));
        ca.total_cmp(&cb).then(a.x0.total_cmp(&b.x0))
    });
    let mut rows: Vec<Vec<&Word>> = Vec::new();
    for w in sorted {
        let joins = rows.last().is_some_and(|row| {
            let (top, bottom) = row
                .iter()
                .fold((f32::MAX, f32::MIN), |(t, b), x| (t.min(x.y0), b.max(x.y1)));
            let overlap = w.y1.min(bottom) - w.y0.max(top);
            overlap > 0.5 * (w.y1 - w.y0).min(bottom - top).max(0.1)
        });
        match rows.last_mut() {
            Some(row) if joins => row.push(w),
            _ => rows.push(vec![w]),
        }
    }
    rows.into_iter()
        .map(|mut row| {
            row.sort_by(|a, b| a.x0.total_cmp(&b.x0));
            cells(&row)
        })
        .collect()
}

fn center(w: &Word) -> f32 {
    (w.y0 + w.y1) / 2.0
}

fn cells(row: &[&Word]) -> Vec<String> {
    let chars: usize = row.iter().map(|w| w.text.chars().count()).sum();
    let width: f32 = row.iter().map(|w| (w.x1 - w.x0).max(0.0)).sum();
    let char_w = if chars > 0 {
        (width / chars as f32).max(0.5)
    } else {
        1.0
    };
    let mut out: Vec<String> = Vec::new();
    let mut prev_end: Option<f32> = None;
    for w in row {
        let text = w.text.trim();
        match (prev_end, out.last_mut()) {
            (Some(end), Some(cell)) if w.x0 - end <= CELL_GAP_CHARS * char_w => {
                // Glyphs of one word placed apart by the producer are joined without a space.
                if w.x0 - end > 0.15 * char_w {
                    cell.push(' ');
                }
                cell.push_str(text);
            }
            _ => out.push(text.to_string()),
        }
        prev_end = Some(w.x1);
    }
    out
}

/// A page's text from its lines.
pub fn text(lines: &[Vec<String>]) -> String {
    lines
        .iter()
        .map(|cells| cells.join(" | "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A page's Markdown from its lines: runs of two or more lines with the same number (≥ 2) of
/// cells become a table whose first line is the header; other lines are paragraphs.
pub fn markdown(lines: &[Vec<String>]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let n = lines[i].len();
        let mut j = i + 1;
        while n >= 2 && j < lines.len() && lines[j].len() == n {
            j += 1;
        }
        if n >= 2 && j - i >= 2 {
            out.push(table(&lines[i..j]));
            i = j;
        } else {
            out.push(escape(&lines[i].join(" ")));
            i += 1;
        }
    }
    out.join("\n\n")
}

/// A Markdown table of rows of cells, the first row its header.
pub fn table(rows: &[Vec<String>]) -> String {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let line = |row: &[String]| {
        let mut cells: Vec<String> = row.iter().map(|c| escape(c).replace('|', "\\|")).collect();
        cells.resize(width, String::new());
        format!("| {} |", cells.join(" | "))
    };
    let mut out = vec![line(&rows[0]), format!("|{}", " --- |".repeat(width))];
    out.extend(rows[1..].iter().map(|r| line(r)));
    out.join("\n")
}

/// Text that Markdown would read as markup at a line's start, escaped.
fn escape(s: &str) -> String {
    let t = s.trim();
    match t.chars().next() {
        Some('#' | '>' | '-' | '*' | '+') => format!("\\{t}"),
        _ => t.to_string(),
    }
}

/// Finds the line a value was read from on its page, the value in it (its text as the
/// document prints it, else what follows the line's label) and the words that print it.
pub fn locate(pages: &[super::Page], line: &str, value: &str) -> Option<Provenance> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let page = pages.iter().find(|p| p.text.contains(line))?;
    let line_at = page.text.find(line)?;
    let (v_at, v_len) = match line.find(value).filter(|_| !value.is_empty()) {
        Some(at) => (at, value.len()),
        None => {
            let after = line
                .rfind(" | ")
                .map(|i| i + 3)
                .or_else(|| line.find(':').map(|i| i + 1))?;
            let tail = &line[after..];
            let lead = tail.len() - tail.trim_start().len();
            (after + lead, tail.trim().len())
        }
    };
    let chars = |bytes: usize| page.text[..bytes].chars().count();
    let start = chars(line_at + v_at);
    let end = chars(line_at + v_at + v_len);
    let shown = &line[v_at..v_at + v_len];
    let printed = printing_words(&page.words, shown).unwrap_or_default();
    Some(placed(page, start, end, &printed))
}

/// Where a whole line stands (a table's row): its span in the page's text, and the box around
/// the words printed on its row that the line holds.
pub fn locate_row(pages: &[super::Page], line: &str) -> Option<Provenance> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let page = pages.iter().find(|p| p.text.contains(line))?;
    let at = page.text.find(line)?;
    let chars = |bytes: usize| page.text[..bytes].chars().count();
    // The row is found by its longest cell, whose words are the least likely to stand on
    // another row as well.
    let longest = line.split(" | ").max_by_key(|c| c.len())?;
    let printed = match printing_words(&page.words, longest.trim()) {
        Some(anchor) => {
            let (y, half) = (
                center(anchor[0]),
                (anchor[0].y1 - anchor[0].y0).max(1.0) / 2.0,
            );
            let tokens: std::collections::HashSet<&str> = line.split_whitespace().collect();
            page.words
                .iter()
                .filter(|w| (center(w) - y).abs() <= half && tokens.contains(w.text.as_str()))
                .collect()
        }
        None => Vec::new(),
    };
    Some(placed(page, chars(at), chars(at + line.len()), &printed))
}

/// A span of a page with the box around the words that print it and their OCR confidence.
fn placed(page: &super::Page, start: usize, end: usize, printed: &[&Word]) -> Provenance {
    let confs: Vec<f32> = printed.iter().filter_map(|w| w.conf).collect();
    Provenance {
        page: page.number,
        start,
        end,
        bbox: (!printed.is_empty()).then(|| {
            printed
                .iter()
                .fold([f32::MAX, f32::MAX, f32::MIN, f32::MIN], |b, w| {
                    [
                        b[0].min(w.x0),
                        b[1].min(w.y0),
                        b[2].max(w.x1),
                        b[3].max(w.y1),
                    ]
                })
        }),
        ocr_confidence: (!confs.is_empty()).then(|| confs.iter().sum::<f32>() / confs.len() as f32),
    }
}

/// The words that print `text` side by side on one row.
fn printing_words<'a>(words: &'a [Word], text: &str) -> Option<Vec<&'a Word>> {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let first = *tokens.first()?;
    words.iter().filter(|w| w.text == first).find_map(|start| {
        let row =
            |w: &Word| (center(w) - center(start)).abs() <= (start.y1 - start.y0).max(1.0) / 2.0;
        let mut on_row: Vec<&Word> = words
            .iter()
            .filter(|w| row(w) && w.x0 >= start.x0)
            .collect();
        on_row.sort_by(|a, b| a.x0.total_cmp(&b.x0));
        let taken: Vec<&Word> = on_row.into_iter().take(tokens.len()).collect();
        let same =
            taken.len() == tokens.len() && taken.iter().zip(&tokens).all(|(w, t)| w.text == *t);
        same.then_some(taken)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(text: &str, x0: f32, y0: f32) -> Word {
        Word {
            text: text.into(),
            x0,
            y0,
            x1: x0 + 6.0 * text.chars().count() as f32,
            y1: y0 + 10.0,
            conf: None,
        }
    }

    /// An invoice's label and number far apart on one line, and a total with its currency.
    fn invoice_words() -> Vec<Word> {
        vec![
            w("Invoice", 50.0, 100.0),
            w("number", 98.0, 100.5),
            w("30064443", 400.0, 101.0),
            w("Total", 50.0, 130.0),
            w("€", 400.0, 130.0),
            w("4.904,94", 412.0, 130.0),
        ]
    }

    #[test]
    fn a_label_and_its_distant_value_read_as_two_cells_of_one_line() {
        // Out of reading order, as a PDF may hold them.
        let mut words = invoice_words();
        words.rotate_left(2);
        let l = lines(&words);
        assert_eq!(text(&l), "Invoice number | 30064443\nTotal | € 4.904,94");
    }

    #[test]
    fn a_value_is_located_on_its_page_by_span_and_box() {
        let words = invoice_words();
        let l = lines(&words);
        let page = super::super::Page {
            number: 2,
            width: 595.0,
            height: 842.0,
            text: text(&l),
            markdown: String::new(),
            words,
            ocr: false,
        };
        let at = locate(
            std::slice::from_ref(&page),
            "Total | € 4.904,94",
            "€ 4.904,94",
        )
        .unwrap();
        assert_eq!(at.page, 2);
        assert_eq!(
            &page
                .text
                .chars()
                .skip(at.start)
                .take(at.end - at.start)
                .collect::<String>(),
            "€ 4.904,94"
        );
        assert_eq!(at.bbox, Some([400.0, 130.0, 460.0, 140.0]));
        // A typed value (4904.94) is found as what follows the label.
        let typed = locate(std::slice::from_ref(&page), "Total | € 4.904,94", "4904.94").unwrap();
        assert_eq!((typed.start, typed.end), (at.start, at.end));
        assert!(locate(std::slice::from_ref(&page), "Due | 5", "5").is_none());
        assert_eq!(
            at.ocr_confidence, None,
            "a text layer has no OCR confidence"
        );
        let mut scanned = page.clone();
        for (word, conf) in scanned
            .words
            .iter_mut()
            .zip([0.9, 0.9, 0.5, 0.7].iter().cycle())
        {
            word.conf = Some(*conf);
        }
        let read = locate(&[scanned], "Total | € 4.904,94", "4904.94").unwrap();
        let mean = read.ocr_confidence.unwrap();
        assert!((0.0..=1.0).contains(&mean), "{mean}");
    }

    #[test]
    fn rows_with_the_same_cells_become_a_markdown_table() {
        let l = vec![
            vec!["Item".into(), "Qty".into(), "Price".into()],
            vec!["Bolts".into(), "2".into(), "3.00".into()],
            vec!["Total 6.00".into()],
        ];
        assert_eq!(
            markdown(&l),
            "| Item | Qty | Price |\n| --- | --- | --- |\n| Bolts | 2 | 3.00 |\n\nTotal 6.00"
        );
    }
}
