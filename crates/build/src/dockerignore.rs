//! `.dockerignore` patterns with Docker's semantics.
//!
//! One pattern per line; blank lines and lines starting with `#` are ignored; surrounding
//! whitespace is trimmed. A leading `!` makes an exception (re-includes what an earlier
//! pattern excluded); the last matching pattern decides. Patterns are cleaned like paths
//! (`./a//b` is `a/b`, a leading `/` is dropped) and matched against paths relative to the
//! context root: `*` and `?` within one path component, `[a-z]` classes, `\` escapes and
//! `**` for any number of components. A pattern that matches a directory also matches
//! everything below it.

/// A parsed `.dockerignore`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq)]
struct Pattern {
    segments: Vec<String>,
    exception: bool,
}

/// Cleans a slash path lexically: drops `.` and empty components, resolves `..` where it
/// can. Leading `..` that cannot be resolved are kept. The result has no leading slash.
pub(crate) fn clean_rel(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| l != "..") {
                    out.pop();
                } else if !path.starts_with('/') {
                    out.push("..".to_string());
                }
            }
            c => out.push(c.to_string()),
        }
    }
    out
}

impl DockerIgnore {
    /// Parses the text of a `.dockerignore` file.
    pub fn parse(text: &str) -> Self {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let mut p = line.trim();
            if p.is_empty() || p.starts_with('#') {
                continue;
            }
            let exception = if let Some(rest) = p.strip_prefix('!') {
                p = rest.trim();
                true
            } else {
                false
            };
            let mut segments = clean_rel(p);
            // `**/**` is `**`; collapsing keeps matching polynomial.
            segments.dedup_by(|a, b| a == "**" && b == "**");
            if segments.is_empty() {
                continue;
            }
            patterns.push(Pattern {
                segments,
                exception,
            });
        }
        DockerIgnore { patterns }
    }

    /// Whether there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether the context-relative path `rel` (slash separated) is excluded.
    pub fn is_excluded(&self, rel: &str) -> bool {
        let segs: Vec<&str> = rel
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .collect();
        if segs.is_empty() {
            return false;
        }
        let mut excluded = false;
        for p in &self.patterns {
            let pat: Vec<&str> = p.segments.iter().map(String::as_str).collect();
            let matched = (1..=segs.len()).any(|n| match_segments(&pat, &segs[..n]));
            if matched {
                excluded = !p.exception;
            }
        }
        excluded
    }

    /// Whether some exception pattern could re-include something below the directory
    /// `rel` (so an excluded directory must still be walked).
    pub fn may_include_below(&self, rel: &str) -> bool {
        let segs: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
        self.patterns.iter().any(|p| {
            p.exception && {
                let pat: Vec<&str> = p.segments.iter().map(String::as_str).collect();
                prefix_may_match(&pat, &segs)
            }
        })
    }
}

/// Whether a path starting with `segs` could match `pat`.
fn prefix_may_match(pat: &[&str], segs: &[&str]) -> bool {
    match (pat.first(), segs.first()) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(&"**"), Some(_)) => true,
        (Some(p), Some(s)) => glob_segment(p, s) && prefix_may_match(&pat[1..], &segs[1..]),
    }
}

/// Matches path components against pattern components (`**` spans any number).
pub(crate) fn match_segments(pat: &[&str], segs: &[&str]) -> bool {
    match pat.first() {
        None => segs.is_empty(),
        Some(&"**") => (0..=segs.len()).any(|k| match_segments(&pat[1..], &segs[k..])),
        Some(p) => {
            !segs.is_empty() && glob_segment(p, segs[0]) && match_segments(&pat[1..], &segs[1..])
        }
    }
}

/// Whether `s` contains glob metacharacters.
pub(crate) fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// One element of a component pattern.
#[derive(Debug)]
enum Tok {
    /// `*` (any run of characters).
    Star,
    /// Matches exactly one character.
    One(Matcher),
}

#[derive(Debug)]
enum Matcher {
    Any,
    Lit(char),
    Class {
        negate: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Matcher {
    fn matches(&self, c: char) -> bool {
        match self {
            Matcher::Any => true,
            Matcher::Lit(l) => *l == c,
            Matcher::Class { negate, ranges } => {
                ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi) != *negate
            }
        }
    }
}

/// Tokenises a component pattern; `None` if it is malformed (an unclosed `[`).
fn tokens(pat: &str) -> Option<Vec<Tok>> {
    let p: Vec<char> = pat.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '*' => {
                if !matches!(out.last(), Some(Tok::Star)) {
                    out.push(Tok::Star);
                }
                i += 1;
            }
            '?' => {
                out.push(Tok::One(Matcher::Any));
                i += 1;
            }
            '\\' if i + 1 < p.len() => {
                out.push(Tok::One(Matcher::Lit(p[i + 1])));
                i += 2;
            }
            '[' => {
                i += 1;
                let negate = matches!(p.get(i), Some('^') | Some('!'));
                if negate {
                    i += 1;
                }
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let c = *p.get(i)?;
                    if c == ']' && !first {
                        i += 1;
                        break;
                    }
                    first = false;
                    let lo = if c == '\\' {
                        i += 1;
                        *p.get(i)?
                    } else {
                        c
                    };
                    i += 1;
                    let mut hi = lo;
                    if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|c| *c != ']') {
                        i += 1;
                        hi = if p[i] == '\\' {
                            i += 1;
                            *p.get(i)?
                        } else {
                            p[i]
                        };
                        i += 1;
                    }
                    ranges.push((lo, hi));
                }
                out.push(Tok::One(Matcher::Class { negate, ranges }));
            }
            c => {
                out.push(Tok::One(Matcher::Lit(c)));
                i += 1;
            }
        }
    }
    Some(out)
}

/// `filepath.Match` for one component: `*`, `?`, `[...]` (with `^`/`!` negation and
/// ranges) and `\` escapes. `**` inside a component acts like `*`. Runs in
/// O(pattern × name) time: only the last `*` is ever backtracked to.
pub(crate) fn glob_segment(pat: &str, s: &str) -> bool {
    let Some(toks) = tokens(pat) else {
        return false;
    };
    let t: Vec<char> = s.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match toks.get(pi) {
            Some(Tok::Star) => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(Tok::One(m)) if m.matches(t[ti]) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    toks[pi..].iter().all(|t| matches!(t, Tok::Star))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("*.md", "README.md", true),
            ("*.md", "docs/README.md", false),
            ("**/*.md", "docs/README.md", true),
            ("**/*.md", "README.md", true),
            ("docs", "docs/a/b.txt", true),
            ("/docs", "docs/a.txt", true),
            ("./docs/", "docs/a.txt", true),
            ("docs/**", "docs/a/b", true),
            ("a/**/z", "a/z", true),
            ("a/**/z", "a/b/c/z", true),
            ("a/**/z", "a/b/c/y", false),
            ("file?.txt", "file1.txt", true),
            ("file?.txt", "file10.txt", false),
            ("[a-c].log", "b.log", true),
            ("[!a-c].log", "b.log", false),
            ("[^a-c].log", "d.log", true),
            ("\\*.txt", "*.txt", true),
            ("\\*.txt", "a.txt", false),
            ("# comment", "# comment", false),
            ("node_modules", "src/node_modules/x", false),
            ("**/node_modules", "src/node_modules/x", true),
            ("a/../b", "b/x", true),
        ];
        for (pat, path, want) in cases {
            let di = DockerIgnore::parse(pat);
            assert_eq!(di.is_excluded(path), *want, "pattern {pat:?} path {path:?}");
        }
    }

    #[test]
    fn exceptions_last_match_wins() {
        let di = DockerIgnore::parse(
            "# logs\n*.log\n!keep.log\n\n  tmp/  \n!tmp/important\ntmp/important/secret\n",
        );
        assert!(di.is_excluded("a.log"));
        assert!(!di.is_excluded("keep.log"));
        assert!(di.is_excluded("tmp/x"));
        assert!(!di.is_excluded("tmp/important/y"));
        assert!(di.is_excluded("tmp/important/secret"));
        assert!(!di.is_excluded("src/main.rs"));
        assert!(di.may_include_below("tmp"));
        assert!(!di.may_include_below("other"));
    }

    #[test]
    fn glob_is_not_exponential() {
        let pat = "*a*a*a*a*a*a*a*a*a*a*a*a*b";
        let name = "a".repeat(200);
        let t = std::time::Instant::now();
        assert!(!glob_segment(pat, &name));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        assert!(glob_segment("*a*b", "xxaxxb"));
        assert!(
            !glob_segment("[abc", "a"),
            "malformed class matches nothing"
        );
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean_rel("./a//b/./c/"), vec!["a", "b", "c"]);
        assert_eq!(clean_rel("../x"), vec!["..", "x"]);
        assert_eq!(clean_rel("/../x"), vec!["x"]);
        assert_eq!(clean_rel("a/../../x"), vec!["..", "x"]);
    }
}
