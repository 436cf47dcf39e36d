//! Runs `quire read-document` on one upload: the bytes on stdin, the outcome as JSON on stdout.
//! The child gets an address-space limit and a CPU-time limit (inherited by the Tesseract and
//! poppler processes it starts) and its own process group, which is killed whole when the
//! wall-clock budget runs out. Whatever the file does to the parser, the service sees an
//! `Outcome`.

use super::{Limits, Outcome};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How the reader child runs.
#[derive(Debug, Clone)]
pub struct Reader {
    /// The `quire` binary (the running one unless a test names it).
    pub exe: Option<PathBuf>,
    pub timeout: Duration,
    /// Address space of the child, bytes.
    pub memory: u64,
    pub limits: Limits,
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            exe: None,
            timeout: Duration::from_secs(120),
            memory: 2 * 1024 * 1024 * 1024,
            limits: Limits::default(),
        }
    }
}

/// The most JSON a child may answer with (pages of words); past it the upload is refused.
const MAX_ANSWER: u64 = 512 * 1024 * 1024;

impl Reader {
    /// Reads `content` of binary type `mime` in a child process, within the budget.
    pub fn read(&self, content: &[u8], mime: &str) -> Outcome {
        match self.run(content, mime) {
            Ok(o) => o,
            Err(e) => Outcome::Refused(e),
        }
    }

    fn run(&self, content: &[u8], mime: &str) -> Result<Outcome, String> {
        let exe = match &self.exe {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(|e| format!("cannot find quire: {e}"))?,
        };
        let limits = serde_json::to_string(&self.limits).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(exe);
        cmd.args(["read-document", "--mime", mime, "--limits", &limits])
            .env("RUST_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        confine(&mut cmd, self.memory, self.timeout);
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("the document reader did not start: {e}"))?;
        let mut stdin = child.stdin.take().ok_or("the reader has no stdin")?;
        let mut stdout = child.stdout.take().ok_or("the reader has no stdout")?;
        let mut stderr = child.stderr.take().ok_or("the reader has no stderr")?;
        let bytes = content.to_vec();
        // Feeding and draining on their own threads: a child that stops reading or writes a
        // lot cannot block the other side.
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = (&mut stdout).take(MAX_ANSWER + 1).read_to_end(&mut out);
            out
        });
        let errors = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut out);
            out
        });
        let status = wait_within(&mut child, started, self.timeout)
            .map_err(|e| format!("waiting for the reader failed: {e}"))?;
        let _ = feeder.join();
        let out = reader.join().unwrap_or_default();
        let err = errors.join().unwrap_or_default();
        let Some(status) = status else {
            return Err(format!(
                "reading the document took longer than {}s (--intake-timeout)",
                self.timeout.as_secs()
            ));
        };
        if out.len() as u64 > MAX_ANSWER {
            return Err("the document's text layer is too large".into());
        }
        if !status.success() {
            let why = String::from_utf8_lossy(&err);
            let last = why
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            return Err(
                if last.contains("memory allocation") || last.contains("alloc") {
                    format!(
                        "reading the document needed more than {} MiB (--intake-memory)",
                        self.memory / (1024 * 1024)
                    )
                } else {
                    format!("the document could not be read ({status}): {}", last.trim())
                },
            );
        }
        serde_json::from_slice(&out).map_err(|e| format!("the reader's answer is garbled: {e}"))
    }
}

/// Waits for a confined child until `budget` has passed since `started`; then kills its process
/// group and answers `None`.
pub(crate) fn wait_within(
    child: &mut std::process::Child,
    started: Instant,
    budget: Duration,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    loop {
        match child.try_wait()? {
            Some(s) => return Ok(Some(s)),
            None if started.elapsed() >= budget => {
                kill_group(child.id());
                let _ = child.wait();
                return Ok(None);
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

#[cfg(unix)]
pub(crate) fn confine(cmd: &mut Command, memory: u64, timeout: Duration) {
    use std::os::unix::process::CommandExt;
    let cpu = timeout.as_secs().max(1) + 1;
    // SAFETY: between fork and exec only async-signal-safe calls are made (setpgid, setrlimit).
    unsafe {
        cmd.pre_exec(move || {
            libc::setpgid(0, 0);
            let mem = libc::rlimit {
                rlim_cur: memory as libc::rlim_t,
                rlim_max: memory as libc::rlim_t,
            };
            libc::setrlimit(libc::RLIMIT_AS, &mem);
            let secs = libc::rlimit {
                rlim_cur: cpu as libc::rlim_t,
                rlim_max: cpu as libc::rlim_t,
            };
            libc::setrlimit(libc::RLIMIT_CPU, &secs);
            Ok(())
        });
    }
}

#[cfg(not(unix))]
pub(crate) fn confine(_: &mut Command, _: u64, _: Duration) {}

#[cfg(unix)]
pub(crate) fn kill_group(pid: u32) {
    // SAFETY: a plain signal to the child's own process group.
    unsafe {
        libc::kill(-(pid as i32), libc::SIGKILL);
    }
}

#[cfg(not(unix))]
pub(crate) fn kill_group(_: u32) {}

/// The child's side: the bytes from stdin, the outcome to stdout.
pub fn serve_child(mime: &str, limits: &str) -> Result<(), String> {
    let limits: Limits = serde_json::from_str(limits).map_err(|e| format!("--limits: {e}"))?;
    let mut content = Vec::new();
    std::io::stdin()
        .read_to_end(&mut content)
        .map_err(|e| format!("reading stdin: {e}"))?;
    let outcome = match std::panic::catch_unwind(|| super::read(&content, mime, &limits)) {
        Ok(o) => o,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            Outcome::Refused(format!("the parser failed on this file: {what}"))
        }
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &outcome).map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())
}
