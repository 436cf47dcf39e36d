//! A small PDF writer for generated test documents: pages of text lines placed at given points
//! in a standard font (Helvetica, no embedding), so the text layer's words have known positions
//! and the demo, the benchmark and the tests have born-digital PDFs with known values.

use std::fmt::Write;

/// A line of text at `(x, y)` points from the page's top-left corner, in `size` points.
pub struct Line {
    pub x: f32,
    pub y: f32,
    pub size: f32,
    pub text: String,
}

impl Line {
    pub fn at(x: f32, y: f32, text: impl Into<String>) -> Self {
        Line {
            x,
            y,
            size: 11.0,
            text: text.into(),
        }
    }
}

/// A4 in points.
const WIDTH: f32 = 595.0;
const HEIGHT: f32 = 842.0;

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '(' | ')' | '\\' => {
                out.push('\\');
                out.push(ch);
            }
            // WinAnsiEncoding: the euro sign is 0x80; other non-ASCII as octal escapes.
            '€' => out.push_str("\\200"),
            c if (c as u32) < 0x80 => out.push(c),
            c if (c as u32) < 0x100 => {
                let _ = write!(out, "\\{:03o}", c as u32);
            }
            _ => out.push('?'),
        }
    }
    out
}

/// A PDF of `pages`, each a list of lines.
pub fn pdf(pages: &[Vec<Line>]) -> Vec<u8> {
    let n = pages.len();
    // Objects: 1 catalog, 2 pages, 3 font, then a page and its content stream per page.
    let mut objects: Vec<String> = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".into(),
        format!(
            "<< /Type /Pages /Count {n} /Kids [{}] >>",
            (0..n)
                .map(|i| format!("{} 0 R", 4 + 2 * i))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".into(),
    ];
    for (i, lines) in pages.iter().enumerate() {
        let mut stream = String::new();
        for l in lines {
            let _ = writeln!(
                stream,
                "BT /F1 {} Tf {} {} Td ({}) Tj ET",
                l.size,
                l.x,
                HEIGHT - l.y - l.size,
                escape(&l.text)
            );
        }
        objects.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {WIDTH} {HEIGHT}] \
             /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
            5 + 2 * i
        ));
        objects.push(format!(
            "<< /Length {} >>\nstream\n{stream}endstream",
            stream.len()
        ));
    }
    let mut out: Vec<u8> = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    let mut tail = format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1);
    for off in offsets {
        let _ = writeln!(tail, "{off:010} 00000 n ");
    }
    let _ = write!(
        tail,
        "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
        objects.len() + 1
    );
    out.extend_from_slice(tail.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pdf_is_well_formed_and_poppler_reads_its_text_where_installed() {
        let bytes = pdf(&[
            vec![
                Line::at(50.0, 60.0, "Invoice"),
                Line::at(50.0, 100.0, "Invoice number"),
                Line::at(400.0, 100.0, "30064443"),
                Line::at(50.0, 130.0, "Total (EUR)"),
                Line::at(400.0, 130.0, "€ 4.904,94"),
            ],
            vec![Line::at(50.0, 60.0, "Page two")],
        ]);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("%PDF-1.4"));
        assert!(text.contains("/Count 2"));
        let xref: usize = text
            .rsplit("startxref\n")
            .next()
            .and_then(|t| t.lines().next())
            .and_then(|n| n.parse().ok())
            .expect("startxref");
        assert!(
            bytes[xref..].starts_with(b"xref"),
            "startxref points at the table"
        );
        let Ok(out) = std::process::Command::new("pdftotext")
            .args(["-layout", "-", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().expect("stdin").write_all(&bytes)?;
                c.wait_with_output()
            })
        else {
            eprintln!("pdftotext not installed: the text check is skipped");
            return;
        };
        let read = String::from_utf8_lossy(&out.stdout);
        assert!(read.contains("30064443"), "{read}");
        assert!(read.contains("€ 4.904,94"), "{read}");
        assert!(read.contains("Page two"), "{read}");
    }
}
