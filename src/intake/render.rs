//! Page images for reviewers: a PDF page rendered to PNG by poppler's `pdftoppm` (optional),
//! in its own process group under the reader's time budget.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where poppler is missing, for messages.
pub const HINT: &str = "install poppler-utils (pdftoppm renders PDF pages)";

/// Page `number` (from 1) of `pdf` as a PNG at `dpi`.
pub fn pdf_page_png(
    pdf: &[u8],
    number: u32,
    dpi: u32,
    budget: Duration,
) -> Result<Vec<u8>, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("no room to render: {e}"))?;
    let src = dir.path().join("doc.pdf");
    std::fs::write(&src, pdf).map_err(|e| format!("no room to render: {e}"))?;
    let png = render(&src, dir.path(), number, dpi, Some(budget))??;
    std::fs::read(&png).map_err(|e| format!("page {number} did not render: {e}"))
}

/// Page `number` of the PDF at `src` rendered into a PNG file in `dir`: `Err` when `pdftoppm`
/// is not installed, `Ok(Err)` when it failed on this page. With a `budget`, `pdftoppm` runs
/// confined and is killed when it runs out; without one it runs under its caller's limits (the
/// reader child's, whose process group is killed whole).
pub fn render(
    src: &Path,
    dir: &Path,
    number: u32,
    dpi: u32,
    budget: Option<Duration>,
) -> Result<Result<PathBuf, String>, String> {
    let prefix = dir.join(format!("page-{number}"));
    let n = number.to_string();
    let mut cmd = Command::new("pdftoppm");
    cmd.args([
        "-r",
        &dpi.to_string(),
        "-png",
        "-singlefile",
        "-f",
        &n,
        "-l",
        &n,
    ])
    .arg(src)
    .arg(&prefix)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if let Some(b) = budget {
        super::child::confine(&mut cmd, 1024 * 1024 * 1024, b);
    }
    let mut child = cmd.spawn().map_err(|_| HINT.to_string())?;
    let waited = match budget {
        Some(b) => super::child::wait_within(&mut child, Instant::now(), b),
        None => child.wait().map(Some),
    };
    let done = match waited {
        Ok(Some(status)) => status.success(),
        Ok(None) => {
            return Ok(Err(format!(
                "rendering page {number} took longer than {}s",
                budget.map_or(0, |b| b.as_secs())
            )))
        }
        Err(e) => return Ok(Err(format!("waiting for pdftoppm failed: {e}"))),
    };
    if !done {
        return Ok(Err(format!("pdftoppm could not render page {number}")));
    }
    Ok(Ok(prefix.with_extension("png")))
}
