//! Reading a container's json-file log: filtering by stream and time, `tail`, and
//! following (inotify on the log file until the container stops).

use crate::error::{EngineError, Result};
use bytes::Bytes;
use serde::Deserialize;
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use tokio::sync::mpsc;

/// Where a container's log is and how to know it stopped.
pub struct LogSource {
    /// The live log file.
    pub path: PathBuf,
    /// How many files rotation keeps (`path.1` .. `path.{max_files-1}`).
    pub max_files: u32,
    /// Resolves when the container is not running.
    pub stopped: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Whether it ran when the source was made.
    pub running_now: bool,
    /// Whether the container uses a terminal (one stream, no multiplexing).
    pub tty: bool,
}

/// What to read (`GET /containers/{id}/logs` query).
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Include stdout.
    pub stdout: bool,
    /// Include stderr.
    pub stderr: bool,
    /// Keep streaming new lines until the container stops.
    pub follow: bool,
    /// Only lines at or after this Unix time (seconds, fractional).
    pub since: Option<f64>,
    /// Only lines before this Unix time.
    pub until: Option<f64>,
    /// Only the last N lines.
    pub tail: Option<usize>,
}

/// One log line.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// 1 = stdout, 2 = stderr.
    pub stream: u8,
    /// RFC 3339 time.
    pub time: String,
    /// The bytes of the line (with its newline).
    pub line: Bytes,
}

#[derive(Deserialize)]
struct Line {
    log: String,
    stream: String,
    time: String,
}

fn parse(line: &[u8], opts: &LogOptions) -> Option<LogEntry> {
    let l: Line = serde_json::from_slice(line).ok()?;
    let stream = if l.stream == "stderr" { 2 } else { 1 };
    if (stream == 1 && !opts.stdout) || (stream == 2 && !opts.stderr) {
        return None;
    }
    if opts.since.is_some() || opts.until.is_some() {
        let t = chrono::DateTime::parse_from_rfc3339(&l.time).ok()?;
        let secs = t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9;
        if opts.since.is_some_and(|s| secs < s) || opts.until.is_some_and(|u| secs >= u) {
            return None;
        }
    }
    Some(LogEntry {
        stream,
        time: l.time,
        line: Bytes::from(l.log.into_bytes()),
    })
}

/// Reads whole lines from `r` from its current position; returns how many bytes were
/// consumed (a trailing partial line is left for later).
fn read_lines<R: Read>(r: R, opts: &LogOptions, out: &mut Vec<LogEntry>) -> u64 {
    let mut br = BufReader::new(r);
    let mut consumed = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match br.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if buf.last() != Some(&b'\n') {
                    break;
                }
                consumed += n as u64;
                if let Some(e) = parse(&buf, opts) {
                    out.push(e);
                }
            }
        }
    }
    consumed
}

/// Streams the log entries selected by `opts`; the receiver ends after the last one (or,
/// when following, once the container stopped and its log is read to the end).
pub fn stream(src: LogSource, opts: LogOptions) -> mpsc::Receiver<Result<LogEntry>> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        if let Err(e) = run(src, opts, &tx).await {
            let _ = tx.send(Err(e)).await;
        }
    });
    rx
}

async fn run(src: LogSource, opts: LogOptions, tx: &mpsc::Sender<Result<LogEntry>>) -> Result<()> {
    let mut entries = Vec::new();
    for n in (1..src.max_files.max(1)).rev() {
        let p = PathBuf::from(format!("{}.{n}", src.path.display()));
        if let Ok(f) = std::fs::File::open(&p) {
            read_lines(f, &opts, &mut entries);
        }
    }
    let mut offset = 0u64;
    if let Ok(f) = std::fs::File::open(&src.path) {
        offset = read_lines(f, &opts, &mut entries);
    }
    if let Some(t) = opts.tail {
        if entries.len() > t {
            entries.drain(..entries.len() - t);
        }
    }
    for e in entries {
        if tx.send(Ok(e)).await.is_err() {
            return Ok(());
        }
    }
    if !opts.follow || !src.running_now {
        return Ok(());
    }
    follow(&src.path, offset, src.stopped, &opts, tx).await
}

/// An inotify instance with a raw fd for tokio's reactor.
struct Ino(nix::sys::inotify::Inotify);

impl std::os::fd::AsRawFd for Ino {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

async fn follow(
    path: &Path,
    mut offset: u64,
    mut stopped: Pin<Box<dyn Future<Output = ()> + Send>>,
    opts: &LogOptions,
    tx: &mpsc::Sender<Result<LogEntry>>,
) -> Result<()> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
        .map_err(|e| EngineError::io("inotify", path, e.into()))?;
    let flags =
        AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_MOVE_SELF | AddWatchFlags::IN_CLOSE_WRITE;
    if let Err(e) = ino.add_watch(path, flags) {
        return Err(EngineError::io("watch log", path, e.into()));
    }
    // SAFETY: the inotify descriptor is owned by the value moved into the AsyncFd, so it
    // stays open for as long as it is registered and is closed only after deregistration.
    let afd = unsafe { tokio::io::unix::AsyncFd::register(Ino(ino)) }
        .map_err(|e| EngineError::io("watch log", path, e.into()))?;
    let mut done = false;
    loop {
        // Read what is there.
        let mut entries = Vec::new();
        let mut rotated = false;
        if let Ok(mut f) = std::fs::File::open(path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < offset {
                offset = 0;
            }
            if f.seek(SeekFrom::Start(offset)).is_ok() {
                offset += read_lines(f, opts, &mut entries);
            }
        }
        for e in entries {
            if tx.send(Ok(e)).await.is_err() {
                return Ok(());
            }
        }
        if done {
            return Ok(());
        }
        tokio::select! {
            _ = &mut stopped => { done = true; }
            r = afd.readable() => {
                if let Ok(mut g) = r {
                    if let Ok(evs) = g.get_inner().0.read_events() {
                        rotated = evs.iter().any(|e| e.mask.contains(AddWatchFlags::IN_MOVE_SELF));
                    }
                    g.clear_ready();
                }
            }
            _ = tx.closed() => return Ok(()),
        }
        if rotated {
            // The file we read was renamed to `.1`; read its rest, then start the new one.
            let old = PathBuf::from(format!("{}.1", path.display()));
            let mut entries = Vec::new();
            if let Ok(mut f) = std::fs::File::open(&old) {
                if f.seek(SeekFrom::Start(offset)).is_ok() {
                    read_lines(f, opts, &mut entries);
                }
            }
            for e in entries {
                if tx.send(Ok(e)).await.is_err() {
                    return Ok(());
                }
            }
            offset = 0;
            let _ = afd.get_ref().0.add_watch(path, flags);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_filters_and_tails() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x-json.log");
        std::fs::write(
            &p,
            concat!(
                r#"{"log":"one\n","stream":"stdout","time":"2024-01-01T00:00:00.000000001Z"}"#,
                "\n",
                r#"{"log":"two\n","stream":"stderr","time":"2024-01-01T00:00:01Z"}"#,
                "\n",
                r#"{"log":"three\n","stream":"stdout","time":"2024-01-01T00:00:02Z"}"#,
                "\n",
                r#"{"log":"partial"#,
            ),
        )
        .unwrap();
        let src = || LogSource {
            path: p.clone(),
            max_files: 1,
            stopped: Box::pin(async {}),
            running_now: false,
            tty: false,
        };
        let all = LogOptions {
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let mut rx = stream(src(), all.clone());
        let mut got = Vec::new();
        while let Some(e) = rx.recv().await {
            got.push(e.unwrap());
        }
        assert_eq!(
            got.iter()
                .map(|e| String::from_utf8_lossy(&e.line).to_string())
                .collect::<Vec<_>>(),
            ["one\n", "two\n", "three\n"]
        );
        assert_eq!(got[1].stream, 2);
        let mut rx = stream(
            src(),
            LogOptions {
                stdout: true,
                tail: Some(1),
                ..Default::default()
            },
        );
        assert_eq!(&rx.recv().await.unwrap().unwrap().line[..], b"three\n");
        assert!(rx.recv().await.is_none());
        let since = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:01Z")
            .unwrap()
            .timestamp() as f64;
        let mut rx = stream(
            src(),
            LogOptions {
                since: Some(since),
                ..all
            },
        );
        assert_eq!(&rx.recv().await.unwrap().unwrap().line[..], b"two\n");
    }
}
