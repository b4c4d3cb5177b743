//! Running the built `posnet` binary from integration tests: one-shot
//! commands that must succeed, and long-running processes (`host run`,
//! `terminal run`) that print one JSON line when ready and are stopped with
//! SIGTERM or SIGKILL.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// `posnet` in `dir`, without the caller's `POSNET_*` variables, logging warnings only.
pub fn posnet(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_posnet"));
    for (name, _) in std::env::vars() {
        if name.starts_with("POSNET_") {
            c.env_remove(name);
        }
    }
    c.env("POSNET_LOG", "warn").current_dir(dir);
    c
}

/// Runs `command` with `args`; fails the test, with its stderr, unless it succeeds.
pub fn run(mut command: Command, args: &[&str]) -> Output {
    let out = command.args(args).output().expect("posnet runs");
    assert!(
        out.status.success(),
        "posnet {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A long-running `posnet` process, stopped when dropped; its log (stderr,
/// in `dir`) is printed if the test fails.
pub struct Daemon {
    child: Child,
    log: PathBuf,
    /// The JSON line it printed when ready.
    pub first_line: serde_json::Value,
}

impl Daemon {
    /// Starts `command` with `args`, logging to `dir/log`, and waits for its first line.
    pub fn start(mut command: Command, args: &[&str], dir: &Path, log: &str) -> Daemon {
        let log = dir.join(log);
        let mut child = command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("posnet starts");
        // A process that fails to start (a bind error) ends without the line.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let first_line = serde_json::from_str(&line).unwrap_or_else(|_| {
            panic!(
                "posnet {args:?} printed {line:?}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        Daemon {
            child,
            log,
            first_line,
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "stopped cleanly on SIGTERM: {exit}");
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- {} ---\n{}",
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}
