//! Small helpers: RFC 3339 timestamps, atomic file writes, /proc parsing.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The current UTC time as RFC 3339 with nanoseconds (`2006-01-02T15:04:05.000000000Z`).
pub fn now_rfc3339() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs() as i64, d.subsec_nanos())
}

/// Formats seconds since the epoch (UTC) as RFC 3339 with nanoseconds.
pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (proleptic Gregorian), after Howard Hinnant's public-domain algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Writes `data` to `path` atomically: a temporary file beside it, then rename, so a
/// reader never sees a partial file even if the writer dies half-way.
///
/// No fsync: runtime state describes live processes, which do not survive a host crash
/// either (and the state root is normally a tmpfs under /run), so only atomicity against
/// a crashing runtime matters, and an fsync would cost milliseconds per container.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
    }
    fs::rename(&tmp, path)
}

/// What /proc/PID/stat says about a process: its state letter and start time (clock ticks
/// since boot). `None` when the process does not exist.
pub fn proc_stat(pid: i32) -> Option<(u8, u64)> {
    let text = fs::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.bytes().next()?;
    // Field 3 is the state; the start time is field 22, i.e. 19 further on.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// True when `pid` runs (not a zombie) and started at `start_time`.
pub fn alive(pid: i32, start_time: u64) -> bool {
    match proc_stat(pid) {
        Some((state, st)) => st == start_time && state != b'Z' && state != b'X',
        None => false,
    }
}

/// Parses a signal given as a name (`KILL`, `SIGKILL`, case-insensitive) or a number.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" | "CLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => {
            let rt = name.strip_prefix("RTMIN")?;
            let off: i32 = if rt.is_empty() {
                0
            } else {
                rt.strip_prefix('+')?.parse().ok()?
            };
            let n = libc::SIGRTMIN() + off;
            return (n <= libc::SIGRTMAX()).then_some(n);
        }
    };
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(rfc3339(1_700_000_000, 0), "2023-11-14T22:13:20.000000000Z");
    }

    #[test]
    fn parses_signals() {
        assert_eq!(parse_signal("KILL"), Some(9));
        assert_eq!(parse_signal("sigterm"), Some(15));
        assert_eq!(parse_signal("2"), Some(2));
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("NOPE"), None);
        assert_eq!(parse_signal("RTMIN+1"), Some(libc::SIGRTMIN() + 1));
    }

    #[test]
    fn reads_own_stat() {
        let (state, start) = proc_stat(std::process::id() as i32).unwrap();
        assert!(state == b'R' || state == b'S');
        assert!(alive(std::process::id() as i32, start));
        assert!(!alive(std::process::id() as i32, start + 1));
    }
}
