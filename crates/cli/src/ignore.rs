//! `.dockerignore` patterns, matched like docker's pattern matcher.
//!
//! Each line is a pattern relative to the context root (comments `#` and blank lines are
//! skipped, a leading `/` is dropped, paths are cleaned). `*` matches within one path
//! element, `?` one character but `/`, `[...]` a class, `**` any number of elements, and
//! `\` escapes. A pattern starting with `!` re-includes what earlier patterns excluded; the
//! last pattern that matches a path or any of its parent directories decides.

/// One `.dockerignore` pattern.
#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    exclusion: bool,
}

/// A parsed `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

/// Cleans a slash path like Go's `path.Clean` (no leading `/` kept, `.` and `..` resolved).
fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

impl Ignore {
    /// Parses the text of a `.dockerignore`.
    pub fn parse(text: &str) -> Ignore {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (exclusion, body) = match l.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, l),
            };
            let text = clean(body);
            if text.is_empty() {
                continue;
            }
            patterns.push(Pattern { text, exclusion });
        }
        Ignore { patterns }
    }

    /// Whether any pattern re-includes paths (then excluded directories must still be walked).
    pub fn has_exclusions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// Whether the context-relative slash path `rel` is ignored.
    pub fn is_ignored(&self, rel: &str) -> bool {
        let rel = clean(rel);
        let mut parents = Vec::new();
        let mut acc = String::new();
        for seg in rel.split('/') {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(seg);
            parents.push(acc.clone());
        }
        let mut ignored = false;
        for p in &self.patterns {
            let hit = glob_match(p.text.as_bytes(), rel.as_bytes())
                || parents[..parents.len().saturating_sub(1)]
                    .iter()
                    .any(|par| glob_match(p.text.as_bytes(), par.as_bytes()));
            if hit {
                ignored = !p.exclusion;
            }
        }
        ignored
    }
}

/// Matches `s` against a docker glob pattern.
pub fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    if pat.is_empty() {
        return s.is_empty();
    }
    match pat[0] {
        b'*' if pat.get(1) == Some(&b'*') => {
            let rest = &pat[2..];
            if let Some(after) = rest.strip_prefix(b"/") {
                // `**/`: zero or more whole directories.
                (0..=s.len()).any(|i| (i == 0 || s[i - 1] == b'/') && glob_match(after, &s[i..]))
            } else {
                (0..=s.len()).any(|i| glob_match(rest, &s[i..]))
            }
        }
        b'*' => {
            let rest = &pat[1..];
            let mut i = 0;
            loop {
                if glob_match(rest, &s[i..]) {
                    return true;
                }
                if i >= s.len() || s[i] == b'/' {
                    return false;
                }
                i += 1;
            }
        }
        b'?' => !s.is_empty() && s[0] != b'/' && glob_match(&pat[1..], &s[1..]),
        b'[' => {
            let Some(end) = pat[1..].iter().position(|&c| c == b']').map(|e| e + 1) else {
                return !s.is_empty() && s[0] == b'[' && glob_match(&pat[1..], &s[1..]);
            };
            if s.is_empty() || s[0] == b'/' {
                return false;
            }
            let mut class = &pat[1..end];
            let negate = matches!(class.first(), Some(b'^') | Some(b'!'));
            if negate {
                class = &class[1..];
            }
            let c = s[0];
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    if class[i] <= c && c <= class[i + 2] {
                        hit = true;
                    }
                    i += 3;
                } else {
                    if class[i] == c {
                        hit = true;
                    }
                    i += 1;
                }
            }
            hit != negate && glob_match(&pat[end + 1..], &s[1..])
        }
        b'\\' if pat.len() > 1 => !s.is_empty() && s[0] == pat[1] && glob_match(&pat[2..], &s[1..]),
        c => !s.is_empty() && s[0] == c && glob_match(&pat[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"*.txt", b"a.txt"));
        assert!(!glob_match(b"*.txt", b"d/a.txt"));
        assert!(glob_match(b"**/*.txt", b"a.txt"));
        assert!(glob_match(b"**/*.txt", b"d/e/a.txt"));
        assert!(glob_match(b"d/**", b"d/e/f"));
        assert!(glob_match(b"a/**/b", b"a/b"));
        assert!(glob_match(b"a/**/b", b"a/x/y/b"));
        assert!(glob_match(b"?.md", b"a.md"));
        assert!(!glob_match(b"?.md", b"ab.md"));
        assert!(glob_match(b"[a-c]x", b"bx"));
        assert!(!glob_match(b"[^a-c]x", b"bx"));
        assert!(glob_match(b"\\*", b"*"));
        assert!(!glob_match(b"\\*", b"a"));
    }

    #[test]
    fn dockerignore_rules() {
        let ig = Ignore::parse("# comment\n\n/node_modules\n*.log\n!keep.log\ntmp/**\nsecret/\n");
        assert!(ig.is_ignored("node_modules"));
        assert!(ig.is_ignored("node_modules/a/b.js"));
        assert!(ig.is_ignored("app.log"));
        assert!(!ig.is_ignored("keep.log"));
        assert!(!ig.is_ignored("sub/app.log"));
        assert!(ig.is_ignored("tmp/x/y"));
        assert!(ig.is_ignored("secret/key"));
        assert!(!ig.is_ignored("src/main.rs"));
        assert!(ig.has_exclusions());
        let ig = Ignore::parse("docs\n!docs/README.md\n");
        assert!(ig.is_ignored("docs/other.md"));
        assert!(!ig.is_ignored("docs/README.md"));
        let ig = Ignore::parse("./a/../b\n");
        assert!(ig.is_ignored("b"));
        assert!(!Ignore::parse("").is_ignored("x"));
    }
}
