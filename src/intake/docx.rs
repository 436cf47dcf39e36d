//! DOCX: `word/document.xml` read through `zip` and `quick-xml`, paragraphs and tables in
//! document order, headings by their style, pages split where the author broke them. The
//! archive's expansion is capped whatever its headers claim (a zip bomb is refused).

use super::{layout, Limits, Outcome, Page};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use std::io::{Cursor, Read};

/// A block of the document body in order.
enum Block {
    Paragraph {
        heading: Option<usize>,
        text: String,
    },
    Table(Vec<Vec<String>>),
    PageBreak,
}

pub fn read(content: &[u8], limits: &Limits) -> Outcome {
    let xml = match document_xml(content, limits.max_expanded_bytes) {
        Ok(x) => x,
        Err(e) => return Outcome::Refused(e),
    };
    let blocks = match blocks(&xml) {
        Ok(b) => b,
        Err(e) => return Outcome::Refused(format!("The DOCX's document.xml is damaged: {e}")),
    };
    let mut pages: Vec<Page> = Vec::new();
    let mut current: Vec<Block> = Vec::new();
    for b in blocks {
        if matches!(b, Block::PageBreak) {
            pages.push(page(pages.len() + 1, std::mem::take(&mut current)));
        } else {
            current.push(b);
        }
    }
    pages.push(page(pages.len() + 1, current));
    if pages.len() > limits.max_pages {
        return Outcome::Refused(format!(
            "The DOCX has {} pages; at most {} are read",
            pages.len(),
            limits.max_pages
        ));
    }
    Outcome::Read(pages)
}

fn document_xml(content: &[u8], cap: u64) -> Result<Vec<u8>, String> {
    let mut zip = zip::ZipArchive::new(Cursor::new(content))
        .map_err(|e| format!("The DOCX is not a readable ZIP archive: {e}"))?;
    let mut f = zip
        .by_name("word/document.xml")
        .map_err(|_| "The DOCX has no word/document.xml".to_string())?;
    if f.size() > cap {
        return Err(format!(
            "The DOCX's text expands to {} bytes; at most {cap} are read",
            f.size()
        ));
    }
    let mut out = Vec::new();
    // The header's size may lie: read one byte past the cap to notice.
    (&mut f)
        .take(cap + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("The DOCX is damaged: {e}"))?;
    if out.len() as u64 > cap {
        return Err(format!("The DOCX's text expands past {cap} bytes; refused"));
    }
    Ok(out)
}

fn local(e: &BytesStart) -> Vec<u8> {
    e.local_name().as_ref().to_vec()
}

fn attr(e: &BytesStart, name: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == name)
        .map(|a| String::from_utf8_lossy(&a.value).into_owned())
}

fn blocks(xml: &[u8]) -> Result<Vec<Block>, quick_xml::Error> {
    let mut r = Reader::from_reader(xml);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    // Tables nest; each level holds its rows, the current row and the current cell's text.
    let mut tables: Vec<(Vec<Vec<String>>, Vec<String>, String)> = Vec::new();
    let mut para = String::new();
    let mut heading: Option<usize> = None;
    let mut in_text = false;
    loop {
        match r.read_event_into(&mut buf)? {
            Event::Start(e) | Event::Empty(e) => match local(&e).as_slice() {
                b"p" => {
                    para.clear();
                    heading = None;
                }
                b"pStyle" => {
                    heading = attr(&e, b"val").and_then(|v| {
                        let l = v.to_ascii_lowercase();
                        let n = l.strip_prefix("heading")?.trim().parse::<usize>().ok()?;
                        Some(n.clamp(1, 6))
                    });
                }
                b"t" => in_text = true,
                b"tab" => para.push('\t'),
                // A page break inside a table reads as a space (the `br` arm below).
                b"br" if attr(&e, b"type").as_deref() == Some("page") && tables.is_empty() => {
                    out.push(Block::PageBreak);
                }
                b"br" | b"cr" => para.push(' '),
                b"tbl" => tables.push((Vec::new(), Vec::new(), String::new())),
                b"tr" => {
                    if let Some(t) = tables.last_mut() {
                        t.1.clear();
                    }
                }
                b"tc" => {
                    if let Some(t) = tables.last_mut() {
                        t.2.clear();
                    }
                }
                _ => {}
            },
            Event::Text(t) if in_text => para.push_str(&t.unescape()?),
            Event::End(e) => match e.local_name().as_ref() {
                b"t" => in_text = false,
                b"p" => {
                    let text = para.split_whitespace().collect::<Vec<_>>().join(" ");
                    match tables.last_mut() {
                        Some(t) => {
                            if !t.2.is_empty() && !text.is_empty() {
                                t.2.push(' ');
                            }
                            t.2.push_str(&text);
                        }
                        None if !text.is_empty() => out.push(Block::Paragraph { heading, text }),
                        None => {}
                    }
                }
                b"tc" => {
                    if let Some(t) = tables.last_mut() {
                        let cell = std::mem::take(&mut t.2);
                        t.1.push(cell);
                    }
                }
                b"tr" => {
                    if let Some(t) = tables.last_mut() {
                        let row = std::mem::take(&mut t.1);
                        t.0.push(row);
                    }
                }
                b"tbl" => {
                    if let Some((rows, _, _)) = tables.pop() {
                        match tables.last_mut() {
                            // A table inside a cell reads as that cell's text.
                            Some(outer) => {
                                let inner: Vec<String> =
                                    rows.iter().map(|r| r.join(" | ")).collect();
                                outer.2.push_str(&inner.join("; "));
                            }
                            None if !rows.is_empty() => out.push(Block::Table(rows)),
                            None => {}
                        }
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

fn page(number: usize, blocks: Vec<Block>) -> Page {
    let mut text = Vec::new();
    let mut md = Vec::new();
    for b in blocks {
        match b {
            Block::Paragraph { heading, text: t } => {
                md.push(match heading {
                    Some(n) => format!("{} {t}", "#".repeat(n)),
                    None => t.clone(),
                });
                text.push(t);
            }
            Block::Table(rows) => {
                text.extend(rows.iter().map(|r| r.join(" | ")));
                md.push(layout::table(&rows));
            }
            Block::PageBreak => {}
        }
    }
    Page {
        number: number as u32,
        width: 0.0,
        height: 0.0,
        text: text.join("\n"),
        markdown: md.join("\n\n"),
        words: Vec::new(),
        ocr: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    pub fn docx(body: &str) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default();
        z.start_file("word/document.xml", opts).unwrap();
        write!(
            z,
            r#"<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>{body}</w:body></w:document>"#
        )
        .unwrap();
        z.finish().unwrap();
        buf.into_inner()
    }

    #[test]
    fn paragraphs_headings_tables_and_page_breaks_in_order() {
        let body = r#"<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Invoice</w:t></w:r></w:p>
            <w:p><w:r><w:t xml:space="preserve">Invoice number: </w:t></w:r><w:r><w:t>30064443</w:t></w:r></w:p>
            <w:tbl><w:tr><w:tc><w:p><w:r><w:t>Item</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>Price</w:t></w:r></w:p></w:tc></w:tr>
            <w:tr><w:tc><w:p><w:r><w:t>Bolts</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>3.00</w:t></w:r></w:p></w:tc></w:tr></w:tbl>
            <w:p><w:r><w:br w:type="page"/></w:r></w:p><w:p><w:r><w:t>Total 3.00</w:t></w:r></w:p>"#;
        let Outcome::Read(pages) = read(&docx(body), &Limits::default()) else {
            panic!("read")
        };
        assert_eq!(pages.len(), 2);
        assert_eq!(
            pages[0].text,
            "Invoice\nInvoice number: 30064443\nItem | Price\nBolts | 3.00"
        );
        assert!(
            pages[0].markdown.starts_with("# Invoice\n\n"),
            "{}",
            pages[0].markdown
        );
        assert!(pages[0]
            .markdown
            .contains("| Item | Price |\n| --- | --- |\n| Bolts | 3.00 |"));
        assert_eq!(pages[1].text, "Total 3.00");
    }

    #[test]
    fn an_archive_that_expands_past_the_cap_is_refused() {
        let body = format!("<w:p><w:r><w:t>{}</w:t></w:r></w:p>", "a".repeat(100_000));
        let limits = Limits {
            max_expanded_bytes: 10_000,
            ..Limits::default()
        };
        match read(&docx(&body), &limits) {
            Outcome::Refused(m) => assert!(m.contains("expands"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read(b"PK\x03\x04garbage", &Limits::default()),
            Outcome::Refused(_)
        ));
    }
}
