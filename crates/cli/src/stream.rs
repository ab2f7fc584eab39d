//! Decoders for the daemon's streams.
//!
//! * [`Demuxer`]: the multiplexed stdout/stderr stream of attach, logs and exec: frames of an
//!   8-byte header (`[stream, 0, 0, 0, size as big-endian u32]`) followed by `size` bytes.
//! * [`JsonStream`]: the JSON-message streams of pull, push, build, load and events
//!   (concatenated or newline-separated JSON objects).
//! * [`Progress`]: docker's display of JSON messages: on a terminal one line per layer id,
//!   redrawn in place with a progress bar; otherwise one plain line per status change.

use std::collections::HashMap;
use std::io::Write;

use serde_json::Value;

/// Which stream a demultiplexed chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Container stdin (echoed back by some daemons).
    Stdin,
    /// Container stdout.
    Stdout,
    /// Container stderr.
    Stderr,
    /// Daemon system errors (stream id 3).
    System,
}

/// Splits a multiplexed byte stream into stdout/stderr chunks; feed it bytes as they come.
#[derive(Debug, Default)]
pub struct Demuxer {
    buf: Vec<u8>,
}

impl Demuxer {
    /// An empty demuxer.
    pub fn new() -> Demuxer {
        Demuxer::default()
    }

    /// Adds bytes and returns every complete frame now available.
    pub fn feed(&mut self, data: &[u8]) -> Vec<(StreamKind, Vec<u8>)> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut off = 0;
        while self.buf.len() - off >= 8 {
            let h = &self.buf[off..off + 8];
            let size = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
            if self.buf.len() - off - 8 < size {
                break;
            }
            let kind = match h[0] {
                0 => StreamKind::Stdin,
                2 => StreamKind::Stderr,
                3 => StreamKind::System,
                _ => StreamKind::Stdout,
            };
            out.push((kind, self.buf[off + 8..off + 8 + size].to_vec()));
            off += 8 + size;
        }
        self.buf.drain(..off);
        out
    }

    /// Bytes of an incomplete frame still buffered.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Encodes one frame (used by tests and by anything that must produce the format).
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![kind, 0, 0, 0];
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Splits a byte stream of JSON values; feed it bytes as they come.
#[derive(Debug, Default)]
pub struct JsonStream {
    buf: Vec<u8>,
}

impl JsonStream {
    /// An empty decoder.
    pub fn new() -> JsonStream {
        JsonStream::default()
    }

    /// Adds bytes and returns every complete JSON value now available.
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<Value>, serde_json::Error> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut consumed = 0;
        {
            let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
            loop {
                match it.next() {
                    Some(Ok(v)) => {
                        consumed = it.byte_offset();
                        out.push(v);
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(e)) => return Err(e),
                    None => {
                        consumed = it.byte_offset();
                        break;
                    }
                }
            }
        }
        self.buf.drain(..consumed);
        Ok(out)
    }
}

/// The error carried by a JSON message (`error` / `errorDetail.message`), if any.
pub fn message_error(m: &Value) -> Option<String> {
    if let Some(e) = m
        .get("errorDetail")
        .and_then(|d| d.get("message"))
        .and_then(Value::as_str)
    {
        return Some(e.to_string());
    }
    m.get("error").and_then(Value::as_str).map(str::to_string)
}

/// Renders docker's progress bar for a `progressDetail` (`[=====>     ] 1.2MB/5MB`).
pub fn progress_bar(detail: &Value) -> String {
    let current = detail.get("current").and_then(Value::as_f64).unwrap_or(0.0);
    let total = detail.get("total").and_then(Value::as_f64).unwrap_or(0.0);
    if current <= 0.0 && total <= 0.0 {
        return String::new();
    }
    let sizes = if total > 0.0 {
        format!(
            "{}/{}",
            crate::format::human_size(current),
            crate::format::human_size(total)
        )
    } else {
        crate::format::human_size(current)
    };
    if total <= 0.0 {
        return sizes;
    }
    let width = 50usize;
    let pct = (current / total).clamp(0.0, 1.0);
    let filled = (pct * width as f64) as usize;
    let mut bar = String::from("[");
    bar.push_str(&"=".repeat(filled));
    if filled < width {
        bar.push('>');
        bar.push_str(&" ".repeat(width - filled - 1));
    }
    bar.push(']');
    format!("{bar} {sizes:>17}")
}

/// Docker's JSON-message display (pull, push, load, build status).
pub struct Progress<W: Write> {
    out: W,
    tty: bool,
    lines: HashMap<String, usize>,
}

impl<W: Write> Progress<W> {
    /// A display writing to `out`; `tty` enables in-place redraws.
    pub fn new(out: W, tty: bool) -> Progress<W> {
        Progress {
            out,
            tty,
            lines: HashMap::new(),
        }
    }

    /// Shows one message. Returns the message's error, if it carries one.
    pub fn show(&mut self, m: &Value) -> std::io::Result<Option<String>> {
        if let Some(e) = message_error(m) {
            return Ok(Some(e));
        }
        if let Some(s) = m.get("stream").and_then(Value::as_str) {
            self.lines.clear();
            self.out.write_all(s.as_bytes())?;
            return Ok(None);
        }
        let id = m.get("id").and_then(Value::as_str).unwrap_or("");
        let status = m.get("status").and_then(Value::as_str).unwrap_or("");
        let detail = m.get("progressDetail").cloned().unwrap_or(Value::Null);
        let bar = progress_bar(&detail);
        let is_progress = !bar.is_empty()
            || m.get("progress")
                .and_then(Value::as_str)
                .is_some_and(|p| !p.is_empty());
        if status.is_empty() && id.is_empty() {
            return Ok(None);
        }
        if !self.tty {
            if is_progress {
                return Ok(None);
            }
            if !id.is_empty() {
                writeln!(self.out, "{id}: {status}")?;
            } else {
                writeln!(self.out, "{status}")?;
            }
            return Ok(None);
        }
        if id.is_empty() {
            self.lines.clear();
            writeln!(self.out, "{status}")?;
            return Ok(None);
        }
        let n = self.lines.len();
        let line = match self.lines.get(id) {
            Some(l) => *l,
            None => {
                self.lines.insert(id.to_string(), n);
                writeln!(self.out)?;
                n
            }
        };
        let up = self.lines.len() - line;
        write!(self.out, "\x1b[{up}A\r\x1b[2K{id}: {status}")?;
        if !bar.is_empty() {
            write!(self.out, " {bar}")?;
        }
        write!(self.out, "\r\x1b[{up}B")?;
        self.out.flush()?;
        Ok(None)
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn demux_split_frames() {
        let mut data = frame(1, b"hello\n");
        data.extend(frame(2, b"oops\n"));
        data.extend(frame(1, b""));
        let mut d = Demuxer::new();
        // Feed byte by byte: frames appear only once complete.
        let mut got = Vec::new();
        for b in &data {
            got.extend(d.feed(std::slice::from_ref(b)));
        }
        assert_eq!(
            got,
            vec![
                (StreamKind::Stdout, b"hello\n".to_vec()),
                (StreamKind::Stderr, b"oops\n".to_vec()),
                (StreamKind::Stdout, Vec::new()),
            ]
        );
        assert_eq!(d.pending(), 0);
        let partial = d.feed(&frame(1, b"abc")[..9]);
        assert!(partial.is_empty());
        assert_eq!(d.pending(), 9);
    }

    #[test]
    fn json_stream_handles_splits_and_newlines() {
        let mut s = JsonStream::new();
        let a = s.feed(b"{\"status\":\"a\"}\r\n{\"sta").unwrap();
        assert_eq!(a, vec![json!({"status": "a"})]);
        let b = s.feed(b"tus\":\"b\"}{\"x\":1}\n").unwrap();
        assert_eq!(b, vec![json!({"status": "b"}), json!({"x": 1})]);
        assert!(s.feed(b"  \n").unwrap().is_empty());
        assert!(s.feed(b"}garbage").is_err());
    }

    #[test]
    fn errors_in_messages() {
        assert_eq!(
            message_error(&json!({"errorDetail": {"message": "boom"}, "error": "boom2"})),
            Some("boom".into())
        );
        assert_eq!(message_error(&json!({"error": "e"})), Some("e".into()));
        assert_eq!(message_error(&json!({"status": "ok"})), None);
    }

    #[test]
    fn bar_rendering() {
        let b = progress_bar(&json!({"current": 1_200_000, "total": 5_000_000}));
        assert!(b.starts_with("[============>"), "{b}");
        assert!(b.ends_with("1.2MB/5MB"), "{b}");
        assert_eq!(progress_bar(&json!({})), "");
    }

    #[test]
    fn plain_display_skips_progress_lines() {
        let mut p = Progress::new(Vec::new(), false);
        p.show(&json!({"status": "Pulling from library/busybox", "id": "latest"}))
            .unwrap();
        p.show(&json!({"status": "Pulling fs layer", "id": "abc"}))
            .unwrap();
        p.show(&json!({"status": "Downloading", "id": "abc", "progressDetail": {"current": 5, "total": 10}})).unwrap();
        p.show(&json!({"status": "Pull complete", "id": "abc"}))
            .unwrap();
        p.show(&json!({"status": "Digest: sha256:00"})).unwrap();
        let e = p.show(&json!({"error": "bad"})).unwrap();
        assert_eq!(e.as_deref(), Some("bad"));
        let out = String::from_utf8(p.into_inner()).unwrap();
        assert_eq!(
            out,
            "latest: Pulling from library/busybox\nabc: Pulling fs layer\nabc: Pull complete\nDigest: sha256:00\n"
        );
    }

    #[test]
    fn tty_display_redraws_lines() {
        let mut p = Progress::new(Vec::new(), true);
        p.show(&json!({"status": "Downloading", "id": "abc", "progressDetail": {"current": 5, "total": 10}})).unwrap();
        p.show(&json!({"status": "Download complete", "id": "abc"}))
            .unwrap();
        let out = String::from_utf8(p.into_inner()).unwrap();
        assert_eq!(out.matches('\n').count(), 1, "one line per id: {out:?}");
        assert!(out.contains("\x1b[1A\r\x1b[2Kabc: Download complete"));
    }
}
