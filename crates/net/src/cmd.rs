//! Running the host tools (`ip`, `nsenter`, `iptables-restore`) with input on stdin.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::{NetError, Result};

/// Runs `program args...`, feeding `stdin` if given; fails with the trimmed stderr when
/// the exit status is not zero. Returns stdout.
pub(crate) fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let cmdline = || format!("{program} {}", args.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().map_err(|source| NetError::Spawn {
        command: cmdline(),
        source,
    })?;
    if let Some(input) = stdin {
        if let Some(mut w) = child.stdin.take() {
            // A write error shows up as a failed exit status below.
            let _ = w.write_all(input.as_bytes());
        }
    }
    let out = child.wait_with_output().map_err(|source| NetError::Spawn {
        command: cmdline(),
        source,
    })?;
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if stderr.is_empty() {
            stderr = format!("exit status {}", out.status);
        }
        if let Some(input) = stdin {
            tracing::debug!(input, "failed command input");
        }
        return Err(NetError::Command {
            command: cmdline(),
            stderr,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
