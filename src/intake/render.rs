//! Page images for reviewers: a PDF page rendered to PNG by poppler's `pdftoppm` (optional),
//! in its own process group under the reader's time budget.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where poppler is missing, for messages.
pub const HINT: &str = "page images of PDFs need poppler-utils (pdftoppm)";

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
    let prefix = dir.path().join("page");
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
    .arg(&src)
    .arg(&prefix)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    super::child::confine(&mut cmd, 1024 * 1024 * 1024, budget);
    let mut child = cmd.spawn().map_err(|_| HINT.to_string())?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() >= budget => {
                super::child::kill_group(child.id());
                let _ = child.wait();
                return Err(format!(
                    "rendering page {number} took longer than {}s",
                    budget.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting for pdftoppm failed: {e}")),
        }
    };
    if !status.success() {
        return Err(format!("pdftoppm could not render page {number}"));
    }
    std::fs::read(prefix.with_extension("png"))
        .map_err(|e| format!("page {number} did not render: {e}"))
}
