//! A child process that dies with the test.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// A child process, killed by its pid (SIGKILL) and reaped when dropped, so a failing test
/// leaves nothing running. Its stdout is read line by line by a thread (the child never blocks
/// on a full pipe); its stderr goes to a file, whose tail failure messages quote.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Option<Child>,
    pid: u32,
    lines: Receiver<String>,
    stdout_seen: Vec<String>,
    stderr: PathBuf,
}

impl Process {
    /// Starts `command` with stdin closed, stdout piped and stderr written to
    /// `{log_dir}/{name}.stderr`.
    pub fn spawn(name: &str, mut command: Command, log_dir: &Path) -> Process {
        let stderr = log_dir.join(format!("{name}.stderr"));
        let file = File::create(&stderr).expect("create the stderr file");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Process {
            name: name.to_owned(),
            pid: child.id(),
            child: Some(child),
            lines,
            stdout_seen: Vec::new(),
            stderr,
        }
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for a stdout line that starts with `prefix` and returns the rest of it. Panics,
    /// quoting the output so far, when the process exits first or `timeout` passes.
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let rest = line.strip_prefix(prefix).map(str::to_owned);
                    self.stdout_seen.push(line);
                    if let Some(rest) = rest {
                        return rest;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let diagnostics = self.diagnostics();
                    panic!(
                        "{} printed no line starting with {prefix:?} within {timeout:?}\n{diagnostics}",
                        self.name
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit(Duration::from_secs(1));
                    let diagnostics = self.diagnostics();
                    panic!(
                        "{} closed its stdout (exit status: {status:?}) before printing a line starting with {prefix:?}\n{diagnostics}",
                        self.name
                    )
                }
            }
        }
    }

    /// Sends `signal` (a name such as `TERM` or `KILL`) with the shell's `kill` builtin.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("sh")
            .args(["-c", &format!("kill -{signal} {}", self.pid)])
            .status()
            .expect("run sh");
        assert!(status.success(), "kill -{signal} {} failed", self.pid);
    }

    /// SIGKILL by pid, then reaps the process. Does nothing when it has been reaped already.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The exit status, when the process has exited (reaping it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    /// Waits at most `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        crate::poll_until(timeout, Duration::from_millis(10), || self.try_status())
    }

    /// The stdout lines read so far (those [`wait_for_line`](Self::wait_for_line) went past,
    /// plus any waiting) and the last 3 KiB of stderr, for failure messages.
    pub fn diagnostics(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.stdout_seen.push(line);
        }
        let mut stderr = String::new();
        if let Ok(mut f) = File::open(&self.stderr) {
            let _ = f.read_to_string(&mut stderr);
        }
        let start = stderr.len().saturating_sub(3072);
        let start = (start..stderr.len())
            .find(|&i| stderr.is_char_boundary(i))
            .unwrap_or(stderr.len());
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr (tail) ---\n{}",
            self.name,
            self.stdout_seen.join("\n"),
            self.name,
            &stderr[start..]
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
