//! posnet commands run as child processes of another posnet command
//! (`posnet demo`, `posnet bench`): each in its own process group with its
//! own log, ready when it prints its first JSON line, stopped with SIGTERM.

use anyhow::{Context, Result, bail};
use std::ffi::OsStr;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// How long a child may take to print its first line (a safety net: they
/// take well under a second).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a child may take to stop on SIGTERM: a terminal lets a
/// payment under way end, which may wait for its card (60 s) and the
/// host's answer.
const STOP_TIMEOUT: Duration = Duration::from_secs(90);
/// Lines of a child's log shown when it fails.
const LOG_TAIL_LINES: usize = 30;
/// The master key `posnet ca init` generates beside the deployment when
/// none is configured, relative to the children's directory.
pub const MASTER_KEY: &str = "deployment/master.key";

/// Runs posnet commands as the demo's children: in the data directory,
/// without the caller's `POSNET_*` settings (a master key or data
/// directory of another deployment must not leak in), except `POSNET_LOG`.
pub struct Posnet {
    /// The posnet binary.
    pub exe: PathBuf,
    /// The directory the children run in.
    pub root: PathBuf,
}

impl Posnet {
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new(&self.exe);
        for (name, _) in std::env::vars_os() {
            let text = name.to_string_lossy();
            if text.starts_with("POSNET_") && text != "POSNET_LOG" {
                c.env_remove(&name);
            }
        }
        // It stops by itself should this process die without stopping it.
        c.env(
            crate::host_cmd::PARENT_PID_ENV,
            std::process::id().to_string(),
        );
        // Once `ca init` has made the master key, every command takes it
        // from here (without the fallback's warning in every log).
        let master_key = self.root.join(MASTER_KEY);
        if master_key.exists() {
            c.env("POSNET_MASTER_KEY_FILE", master_key);
        }
        c.args(args)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.root.join("logs").join(name)
    }

    /// Runs a command to its end and returns its standard output. Its
    /// standard error goes to `logs/setup.log` after the command line
    /// (which carries no secret: those go through the environment and
    /// standard input); its output, which may, does not.
    pub async fn run(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        input: Option<&str>,
    ) -> Result<String> {
        let mut command = self.command(args);
        command
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if input.is_some() {
            command.stdin(Stdio::piped());
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", self.exe.display()))?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(text.as_bytes()).await?;
            stdin.write_all(b"\n").await?;
        }
        let out = child.wait_with_output().await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let log = self.log_path("setup.log");
        let mut file = append(&log)?;
        writeln!(file, "$ posnet {}\n{stderr}", command_line(args))
            .with_context(|| format!("writing {}", log.display()))?;
        if !out.status.success() {
            bail!(
                "`posnet {}` failed ({}): {}",
                command_line(args),
                out.status,
                stderr.trim()
            );
        }
        String::from_utf8(out.stdout).context("the command's output is not UTF-8")
    }

    /// Starts a long-running command (its own process group; standard
    /// error, then the rest of its output, to `logs/<log>`) and waits for
    /// its first line, which says it is ready.
    pub async fn start(
        &self,
        name: String,
        log: &str,
        args: &[String],
        order: u8,
    ) -> Result<(Daemon, serde_json::Value)> {
        let log = self.log_path(log);
        let mut file = append(&log)?;
        let log_start = file.metadata()?.len();
        writeln!(
            file,
            "--- posnet {} (started by posnet demo)",
            command_line(args)
        )?;
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let mut stdout = BufReader::new(child.stdout.take().context("the child's output")?);
        let mut daemon = Daemon {
            name,
            log,
            log_start,
            child,
            order,
        };
        let mut line = String::new();
        let read = tokio::time::timeout(READY_TIMEOUT, stdout.read_line(&mut line)).await;
        let first: Option<serde_json::Value> = match read {
            Ok(Ok(n)) if n > 0 => serde_json::from_str(&line).ok(),
            _ => None,
        };
        let Some(first) = first else {
            let failure = match read {
                Err(_) => format!(
                    "did not say it was ready within {} s",
                    READY_TIMEOUT.as_secs()
                ),
                Ok(_) => match daemon.child.try_wait() {
                    Ok(Some(status)) => format!("stopped at start ({status})"),
                    _ => format!("printed {line:?} instead of its first JSON line"),
                },
            };
            let _ = daemon.stop().await;
            bail!(daemon.failure(&failure));
        };
        let rest = daemon.log.clone();
        tokio::spawn(async move {
            if let Ok(file) = tokio::fs::OpenOptions::new().append(true).open(&rest).await {
                let mut file = tokio::io::BufWriter::new(file);
                let _ = tokio::io::copy(&mut stdout, &mut file).await;
                let _ = file.flush().await;
            }
        });
        Ok((daemon, first))
    }
}

/// `args` as a shell line.
pub fn command_line<S: AsRef<str>>(args: &[S]) -> String {
    let words: Vec<String> = args.iter().map(|a| shell_word(a.as_ref())).collect();
    words.join(" ")
}

/// Opens a log file for appending (owner-only, as everything of the demo).
pub fn append(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// A long-running child: host, back office or terminal.
pub struct Daemon {
    /// What it is, in messages.
    pub name: String,
    /// Its log file.
    pub log: PathBuf,
    /// Where this run's part of the log begins.
    log_start: u64,
    child: Child,
    /// When it stops: terminals (0) before the host (1) before the back
    /// office (2).
    order: u8,
}

impl Daemon {
    /// `what` happened to it, with the end of its log of this run.
    pub fn failure(&self, what: &str) -> String {
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        let start = usize::try_from(self.log_start)
            .unwrap_or(0)
            .min(bytes.len());
        let text = String::from_utf8_lossy(&bytes[start..]);
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        format!(
            "{} {what}; the end of {}:\n{tail}",
            self.name,
            self.log.display()
        )
    }

    /// Its process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Asks it to stop (SIGTERM), unless it has already.
    pub fn terminate(&mut self) {
        if let Ok(None) = self.child.try_wait()
            && let Some(pid) = self.child.id().and_then(|id| i32::try_from(id).ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }

    /// Waits for it to stop after [`Daemon::terminate`] (SIGKILL after
    /// [`STOP_TIMEOUT`]). Returns how it ended, or why that is unknown.
    pub async fn stopped(&mut self) -> std::result::Result<ExitStatus, String> {
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => Err(format!("cannot wait for it: {e}")),
            Err(_) => {
                let _ = self.child.kill().await;
                Err(format!(
                    "did not stop within {} s of SIGTERM and was killed",
                    STOP_TIMEOUT.as_secs()
                ))
            }
        }
    }

    /// [`Daemon::terminate`], then [`Daemon::stopped`].
    pub async fn stop(&mut self) -> std::result::Result<ExitStatus, String> {
        self.terminate();
        self.stopped().await
    }
}

/// The first child that has stopped, if any.
pub fn first_stopped(daemons: &mut [Daemon]) -> Option<usize> {
    daemons
        .iter_mut()
        .position(|d| matches!(d.child.try_wait(), Ok(Some(_))))
}

/// Stops every child, in order; the failures, if any, in one message.
pub async fn stop_all(daemons: &mut [Daemon]) -> Result<()> {
    daemons.sort_by_key(|d| d.order);
    let mut failures = Vec::new();
    for group in daemons.chunk_by_mut(|a, b| a.order == b.order) {
        // Every child of the group is asked first, so that both terminals
        // wind down at once.
        group.iter_mut().for_each(Daemon::terminate);
        for daemon in group {
            match daemon.stopped().await {
                Ok(status) if status.success() => {}
                Ok(status) => failures.push(daemon.failure(&format!("stopped with {status}"))),
                Err(e) => failures.push(daemon.failure(&e)),
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        bail!(failures.join("\n\n"))
    }
}

/// A path or word as a shell takes it.
pub fn shell_word(text: &str) -> String {
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:=@".contains(&b))
    {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}
