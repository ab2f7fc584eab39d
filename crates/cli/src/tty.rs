//! The local terminal: raw mode for `-it`, window size, and detach-key detection.

use std::io::IsTerminal;

use rustix::termios::{self, OptionalActions, Termios};

/// Puts stdin's terminal in raw mode and restores it on drop.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Enters raw mode when stdin is a terminal; `None` otherwise.
    pub fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(&stdin, OptionalActions::Now, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}

/// The terminal size (rows, columns) of stdout, else stdin; `None` without a terminal.
pub fn size() -> Option<(u16, u16)> {
    let ws = termios::tcgetwinsize(std::io::stdout())
        .or_else(|_| termios::tcgetwinsize(std::io::stdin()))
        .ok()?;
    if ws.ws_row == 0 || ws.ws_col == 0 {
        return None;
    }
    Some((ws.ws_row, ws.ws_col))
}

/// Parses docker's `--detach-keys` (`ctrl-p,ctrl-q`, `a`, `ctrl-@`...) into bytes.
pub fn parse_detach_keys(spec: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for k in spec.split(',') {
        let k = k.trim();
        if let Some(c) = k.strip_prefix("ctrl-") {
            let b = match c.as_bytes() {
                [b] if b.is_ascii_lowercase() => b - b'a' + 1,
                [b'@'] => 0,
                [b'['] => 27,
                [b'\\'] => 28,
                [b']'] => 29,
                [b'^'] => 30,
                [b'_'] => 31,
                _ => anyhow::bail!("Unknown character: '{k}'"),
            };
            out.push(b);
        } else if k.len() == 1 {
            out.push(k.as_bytes()[0]);
        } else {
            anyhow::bail!("Unknown character: '{k}'");
        }
    }
    Ok(out)
}

/// Watches input for the detach sequence.
#[derive(Debug)]
pub struct DetachWatch {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachWatch {
    /// A watcher for `keys` (empty disables detection).
    pub fn new(keys: Vec<u8>) -> DetachWatch {
        DetachWatch { keys, matched: 0 }
    }

    /// Feeds input; returns the bytes to forward and whether the sequence completed.
    /// Bytes of a partial match are held back until the match fails.
    pub fn feed(&mut self, data: &[u8]) -> (Vec<u8>, bool) {
        if self.keys.is_empty() {
            return (data.to_vec(), false);
        }
        let mut out = Vec::with_capacity(data.len());
        for &b in data {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return (out, true);
                }
            } else {
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
                if b == self.keys[0] {
                    self.matched = 1;
                } else {
                    out.push(b);
                }
            }
        }
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), vec![16, 17]);
        assert_eq!(parse_detach_keys("a,ctrl-@").unwrap(), vec![b'a', 0]);
        assert!(parse_detach_keys("ctrl-1").is_err());
        assert!(parse_detach_keys("abc").is_err());
    }

    #[test]
    fn detach_watch() {
        let mut w = DetachWatch::new(vec![16, 17]);
        assert_eq!(w.feed(b"ab"), (b"ab".to_vec(), false));
        assert_eq!(w.feed(&[16]), (vec![], false));
        assert_eq!(w.feed(b"x"), (vec![16, b'x'], false));
        assert_eq!(w.feed(&[b'y', 16, 17, b'z']), (vec![b'y'], true));
        let mut off = DetachWatch::new(vec![]);
        assert_eq!(off.feed(&[16, 17]), (vec![16, 17], false));
    }
}
