//! Variable expansion and word splitting with Docker's Dockerfile rules.
//!
//! Dockerfile instructions that take paths or names (`FROM`, `COPY`, `ADD`, `ENV`, `ARG`,
//! `LABEL`, `EXPOSE`, `WORKDIR`, `USER`, `VOLUME`, `STOPSIGNAL`) expand variables before
//! use; `RUN`, `CMD`, `ENTRYPOINT`, `HEALTHCHECK` and `SHELL` do not (the shell does).
//! The rules follow Docker's shell lexer:
//!
//! * `$NAME` and `${NAME}`; an unset variable expands to the empty string.
//! * `${NAME:-word}` word if unset or empty, `${NAME-word}` word if unset,
//!   `${NAME:+word}` word if set and non-empty, `${NAME+word}` word if set,
//!   `${NAME:?msg}` / `${NAME?msg}` an error if unset (or empty).
//! * Pattern modifiers, with shell glob patterns (`*`, `?`, `[a-z]`, `[!x]`, the escape
//!   character and quotes make a character literal): `${NAME#pat}` / `${NAME##pat}`
//!   remove the shortest / longest matching prefix, `${NAME%pat}` / `${NAME%%pat}` the
//!   shortest / longest matching suffix, `${NAME/pat/repl}` replaces the first (leftmost,
//!   longest) match and `${NAME//pat/repl}` every match (`${NAME/pat}` deletes it). An
//!   unset variable expands to the empty string; an empty pattern changes nothing.
//! * Single quotes keep everything literally; double quotes keep everything but `$`
//!   expansions, and inside them the escape character escapes only `"`, `$` and itself.
//! * Outside quotes the escape character (`\`, or `` ` `` with `# escape=`) makes the next
//!   character literal.
//! * In word mode ([`expand_words`]) unquoted whitespace separates words, including
//!   whitespace that comes out of an unquoted variable.

use std::collections::HashMap;

/// Where expansion looks variables up.
pub trait Lookup {
    /// The value of `name`, or `None` when it is not set.
    fn get(&self, name: &str) -> Option<&str>;
}

impl Lookup for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }
}

impl Lookup for std::collections::BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        std::collections::BTreeMap::get(self, name).map(String::as_str)
    }
}

/// Why a word could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// A quote was opened and never closed.
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(&'static str),
    /// `${` without its closing brace.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${}`, `${:x}` and similar.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// A modifier other than `-`, `+`, `?` (with or without `:`), `#`, `##`, `%`, `%%`,
    /// `/`, `//`.
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(char),
    /// `${NAME?msg}` / `${NAME:?msg}` on an unset (or empty) variable.
    #[error("{name}: {message}")]
    Required {
        /// The variable.
        name: String,
        /// The message from the Dockerfile or the default one.
        message: String,
    },
}

impl errkind::HasKind for ExpandError {
    fn kind(&self) -> errkind::ErrorKind {
        errkind::ErrorKind::InvalidArgument
    }
}

/// Expands one word: quotes are removed, variables substituted, whitespace kept.
pub fn expand_word(word: &str, env: &dyn Lookup, escape: char) -> Result<String, ExpandError> {
    let mut lx = Lexer::new(word, env, escape);
    let (s, _) = lx.process_until(None)?;
    Ok(s)
}

/// Expands a word list: like [`expand_word`] but splits at unquoted whitespace.
pub fn expand_words(
    word: &str,
    env: &dyn Lookup,
    escape: char,
) -> Result<Vec<String>, ExpandError> {
    let mut lx = Lexer::new(word, env, escape);
    let (_, words) = lx.process_until(None)?;
    Ok(words)
}

/// Expands a here-document body: only `$NAME`/`${...}` are substituted (an escaped `$`
/// stays literal); quotes and other characters are kept as written.
pub fn expand_heredoc(body: &str, env: &dyn Lookup, escape: char) -> Result<String, ExpandError> {
    let mut lx = Lexer::new(body, env, escape);
    let mut out = String::new();
    while let Some(c) = lx.peek() {
        if c == '$' {
            out.push_str(&lx.dollar()?);
        } else if c == escape && lx.chars.get(lx.pos + 1) == Some(&'$') {
            lx.pos += 2;
            out.push('$');
        } else {
            lx.pos += 1;
            out.push(c);
        }
    }
    Ok(out)
}

/// Accumulates words the way Docker's lexer does.
#[derive(Default)]
struct Words {
    words: Vec<String>,
    cur: String,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word && !self.cur.is_empty() {
                self.words.push(std::mem::take(&mut self.cur));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }
    fn add_raw_char(&mut self, c: char) {
        self.cur.push(c);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        for c in s.chars() {
            self.add_char(c);
        }
    }
    fn add_raw_string(&mut self, s: &str) {
        self.cur.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.cur.is_empty() {
            self.words.push(self.cur);
        }
        self.words
    }
}

/// How deeply `${a:-${b:-...}}` may nest (untrusted input must not exhaust the stack).
const MAX_DEPTH: usize = 64;

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
    env: &'a dyn Lookup,
    escape: char,
}

impl<'a> Lexer<'a> {
    fn new(s: &str, env: &'a dyn Lookup, escape: char) -> Self {
        Lexer {
            chars: s.chars().collect(),
            pos: 0,
            depth: 0,
            env,
            escape,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    /// Processes up to `stop` (consumed) or the end; returns the joined text and the words.
    fn process_until(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), ExpandError> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match c {
                '\'' => {
                    let s = self.single_quote()?;
                    result.push_str(&s);
                    words.add_raw_string(&s);
                }
                '"' => {
                    let s = self.double_quote()?;
                    result.push_str(&s);
                    words.add_raw_string(&s);
                }
                '$' => {
                    let s = self.dollar()?;
                    result.push_str(&s);
                    words.add_string(&s);
                }
                _ => {
                    self.pos += 1;
                    if c == self.escape {
                        match self.next() {
                            Some(n) => {
                                words.add_raw_char(n);
                                result.push(n);
                            }
                            None => break,
                        }
                    } else {
                        words.add_char(c);
                        result.push(c);
                    }
                }
            }
        }
        if stop.is_some() {
            return Err(ExpandError::MissingBrace);
        }
        Ok((result, words.finish()))
    }

    fn single_quote(&mut self) -> Result<String, ExpandError> {
        self.pos += 1;
        let mut s = String::new();
        loop {
            match self.next() {
                None => return Err(ExpandError::Unterminated("single-quote")),
                Some('\'') => return Ok(s),
                Some(c) => s.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, ExpandError> {
        self.pos += 1;
        let mut s = String::new();
        loop {
            match self.peek() {
                None => return Err(ExpandError::Unterminated("double-quote")),
                Some('"') => {
                    self.pos += 1;
                    return Ok(s);
                }
                Some('$') => {
                    let v = self.dollar()?;
                    s.push_str(&v);
                }
                Some(c) => {
                    self.pos += 1;
                    if c == self.escape {
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                self.pos += 1;
                                s.push(n);
                            }
                            Some(_) => s.push(c),
                        }
                    } else {
                        s.push(c);
                    }
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    self.pos += 1;
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && "@*#?-$!".contains(c) {
                self.pos += 1;
                name.push(c);
                return name;
            }
            if !(c.is_alphanumeric() || c == '_') {
                break;
            }
            self.pos += 1;
            name.push(c);
        }
        name
    }

    fn lookup(&self, name: &str) -> Option<String> {
        self.env.get(name).map(str::to_string)
    }

    fn dollar(&mut self) -> Result<String, ExpandError> {
        if self.depth >= MAX_DEPTH {
            return Err(ExpandError::BadSubstitution);
        }
        self.depth += 1;
        let r = self.dollar_inner();
        self.depth -= 1;
        r
    }

    fn dollar_inner(&mut self) -> Result<String, ExpandError> {
        self.pos += 1; // '$'
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(self.lookup(&name).unwrap_or_default());
        }
        self.pos += 1; // '{'
        match self.peek() {
            None => return Err(ExpandError::MissingBrace),
            Some('{') | Some('}') | Some(':') => return Err(ExpandError::BadSubstitution),
            _ => {}
        }
        let name = self.name();
        let value = self.lookup(&name);
        match self.next() {
            None => Err(ExpandError::MissingBrace),
            Some('}') => Ok(value.unwrap_or_default()),
            Some(':') => {
                let modifier = self.next().ok_or(ExpandError::MissingBrace)?;
                let (word, _) = self.process_until(Some('}'))?;
                let set_nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
                match modifier {
                    '-' => Ok(if set_nonempty {
                        value.unwrap_or_default()
                    } else {
                        word
                    }),
                    '+' => Ok(if set_nonempty { word } else { String::new() }),
                    '?' => {
                        if set_nonempty {
                            Ok(value.unwrap_or_default())
                        } else {
                            Err(ExpandError::Required {
                                name,
                                message: if word.is_empty() {
                                    "is not allowed to be empty".to_string()
                                } else {
                                    word
                                },
                            })
                        }
                    }
                    other => Err(ExpandError::UnsupportedModifier(other)),
                }
            }
            Some(m @ ('-' | '+' | '?')) => {
                let (word, _) = self.process_until(Some('}'))?;
                match (m, value) {
                    ('-', Some(v)) => Ok(v),
                    ('-', None) => Ok(word),
                    ('+', Some(_)) => Ok(word),
                    ('+', None) => Ok(String::new()),
                    (_, Some(v)) => Ok(v),
                    (_, None) => Err(ExpandError::Required {
                        name,
                        message: if word.is_empty() {
                            "is not allowed to be unset".to_string()
                        } else {
                            word
                        },
                    }),
                }
            }
            Some(m @ ('#' | '%')) => {
                let greedy = self.peek() == Some(m);
                if greedy {
                    self.pos += 1;
                }
                let (pattern, _) = self.pattern_until(&['}'])?;
                let glob = Glob::parse(&pattern, self.escape);
                let value: Vec<char> = value.unwrap_or_default().chars().collect();
                Ok(if m == '#' {
                    glob.trim_prefix(&value, greedy)
                } else {
                    glob.trim_suffix(&value, greedy)
                })
            }
            Some('/') => {
                let all = self.peek() == Some('/');
                if all {
                    self.pos += 1;
                }
                let (pattern, stop) = self.pattern_until(&['/', '}'])?;
                let replacement = if stop == '/' {
                    self.process_until(Some('}'))?.0
                } else {
                    String::new()
                };
                let glob = Glob::parse(&pattern, self.escape);
                let value: Vec<char> = value.unwrap_or_default().chars().collect();
                Ok(glob.replace(&value, &replacement, all))
            }
            Some(other) => Err(ExpandError::UnsupportedModifier(other)),
        }
    }

    /// Reads a glob pattern up to one of `stops` (consumed; returned with the pattern).
    /// The escape character and the character after it are kept as written (the glob
    /// parser reads them as a literal), quoted text has its glob characters escaped, and
    /// variables are expanded in place (their values act as patterns, as in the shell).
    fn pattern_until(&mut self, stops: &[char]) -> Result<(String, char), ExpandError> {
        let mut out = String::new();
        let esc = self.escape;
        let quote_into = |out: &mut String, s: &str| {
            for c in s.chars() {
                if "*?[]".contains(c) || c == esc {
                    out.push(esc);
                }
                out.push(c);
            }
        };
        while let Some(c) = self.peek() {
            if stops.contains(&c) {
                self.pos += 1;
                return Ok((out, c));
            }
            match c {
                '\'' => {
                    let s = self.single_quote()?;
                    quote_into(&mut out, &s);
                }
                '"' => {
                    let s = self.double_quote()?;
                    quote_into(&mut out, &s);
                }
                '$' => {
                    let s = self.dollar()?;
                    out.push_str(&s);
                }
                _ => {
                    self.pos += 1;
                    out.push(c);
                    if c == esc {
                        match self.next() {
                            Some(n) => out.push(n),
                            None => break,
                        }
                    }
                }
            }
        }
        Err(ExpandError::MissingBrace)
    }
}

/// One element of a shell glob pattern.
#[derive(Debug, Clone, PartialEq)]
enum GlobTok {
    /// A character that matches itself.
    Lit(char),
    /// `?`: any one character.
    Any,
    /// `*`: any run of characters, also empty.
    Star,
    /// `[...]`: one character in (or, negated, not in) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl GlobTok {
    fn matches(&self, c: char) -> bool {
        match self {
            GlobTok::Lit(l) => *l == c,
            GlobTok::Any => true,
            GlobTok::Star => true,
            GlobTok::Class { negated, ranges } => {
                ranges.iter().any(|(a, b)| *a <= c && c <= *b) != *negated
            }
        }
    }
}

/// A shell glob pattern, matched by a set-of-states simulation (linear in the text for
/// each start position, so untrusted patterns cannot make matching explode).
#[derive(Debug, Clone, PartialEq)]
struct Glob {
    toks: Vec<GlobTok>,
}

impl Glob {
    /// Parses `pat`: `*`, `?`, `[...]` (`!` or `^` negates, `a-z` ranges, a `]` first is
    /// literal; an unclosed `[` is a literal `[`), `escape` makes the next character
    /// literal.
    fn parse(pat: &str, escape: char) -> Glob {
        let chars: Vec<char> = pat.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                c if c == escape => {
                    if let Some(n) = chars.get(i) {
                        toks.push(GlobTok::Lit(*n));
                        i += 1;
                    }
                }
                '*' => {
                    if toks.last() != Some(&GlobTok::Star) {
                        toks.push(GlobTok::Star);
                    }
                }
                '?' => toks.push(GlobTok::Any),
                '[' => match Self::class(&chars, i, escape) {
                    Some((tok, next)) => {
                        toks.push(tok);
                        i = next;
                    }
                    None => toks.push(GlobTok::Lit('[')),
                },
                c => toks.push(GlobTok::Lit(c)),
            }
        }
        Glob { toks }
    }

    /// A bracket expression starting after `[` at `i`; returns it and the index after `]`.
    fn class(chars: &[char], mut i: usize, escape: char) -> Option<(GlobTok, usize)> {
        let negated = matches!(chars.get(i), Some('!') | Some('^'));
        if negated {
            i += 1;
        }
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let mut c = *chars.get(i)?;
            if c == ']' && !first {
                return Some((GlobTok::Class { negated, ranges }, i + 1));
            }
            first = false;
            i += 1;
            if c == escape {
                c = *chars.get(i)?;
                i += 1;
            }
            let mut hi = c;
            if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|n| *n != ']') {
                hi = chars[i + 1];
                i += 2;
                if hi == escape {
                    hi = *chars.get(i)?;
                    i += 1;
                }
            }
            ranges.push((c, hi));
        }
    }

    /// Adds the states reachable without consuming a character.
    fn close(&self, states: &mut [bool]) {
        for k in 0..self.toks.len() {
            if states[k] && self.toks[k] == GlobTok::Star {
                states[k + 1] = true;
            }
        }
    }

    /// Every `n` (ascending) such that the pattern matches exactly `text[..n]`.
    fn match_lengths(&self, text: &[char]) -> Vec<usize> {
        let m = self.toks.len();
        let mut states = vec![false; m + 1];
        states[0] = true;
        self.close(&mut states);
        let mut out = Vec::new();
        if states[m] {
            out.push(0);
        }
        for (i, c) in text.iter().enumerate() {
            let mut next = vec![false; m + 1];
            let mut any = false;
            for (k, tok) in self.toks.iter().enumerate() {
                if states[k] && tok.matches(*c) {
                    let to = if self.toks[k] == GlobTok::Star {
                        k
                    } else {
                        k + 1
                    };
                    next[to] = true;
                    any = true;
                }
            }
            if !any {
                break;
            }
            self.close(&mut next);
            if next[m] {
                out.push(i + 1);
            }
            states = next;
        }
        out
    }

    /// The pattern read backwards (for suffixes).
    fn reversed(&self) -> Glob {
        Glob {
            toks: self.toks.iter().rev().cloned().collect(),
        }
    }

    /// `${v#pat}` (shortest) / `${v##pat}` (greedy).
    fn trim_prefix(&self, value: &[char], greedy: bool) -> String {
        if self.toks.is_empty() {
            return value.iter().collect();
        }
        let lens = self.match_lengths(value);
        let cut = if greedy { lens.last() } else { lens.first() };
        value[cut.copied().unwrap_or(0)..].iter().collect()
    }

    /// `${v%pat}` (shortest) / `${v%%pat}` (greedy).
    fn trim_suffix(&self, value: &[char], greedy: bool) -> String {
        if self.toks.is_empty() {
            return value.iter().collect();
        }
        let rev: Vec<char> = value.iter().rev().copied().collect();
        let lens = self.reversed().match_lengths(&rev);
        let cut = if greedy { lens.last() } else { lens.first() };
        value[..value.len() - cut.copied().unwrap_or(0)]
            .iter()
            .collect()
    }

    /// `${v/pat/repl}` (first match) / `${v//pat/repl}` (every match): leftmost, longest
    /// matches; empty matches are not replaced.
    fn replace(&self, value: &[char], repl: &str, all: bool) -> String {
        let mut out = String::new();
        if self.toks.is_empty() {
            return value.iter().collect();
        }
        let mut i = 0;
        let mut replaced = false;
        while i < value.len() {
            let longest = if replaced && !all {
                None
            } else {
                self.match_lengths(&value[i..])
                    .last()
                    .copied()
                    .filter(|n| *n > 0)
            };
            match longest {
                Some(n) => {
                    out.push_str(repl);
                    i += n;
                    replaced = true;
                }
                None => {
                    out.push(value[i]);
                    i += 1;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        [
            ("A", "alpha"),
            ("E", ""),
            ("SP", "x y  z"),
            ("P", "/usr/local"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn word_expansion_table() {
        let cases: &[(&str, &str)] = &[
            ("$A", "alpha"),
            ("${A}", "alpha"),
            ("pre${A}post", "prealphapost"),
            ("$Apost", ""),
            ("$UNSET", ""),
            ("${UNSET:-def}", "def"),
            ("${E:-def}", "def"),
            ("${E-def}", ""),
            ("${UNSET-def}", "def"),
            ("${A:-def}", "alpha"),
            ("${A:+alt}", "alt"),
            ("${E:+alt}", ""),
            ("${E+alt}", "alt"),
            ("${UNSET+alt}", ""),
            ("${UNSET:-$A}", "alpha"),
            ("${UNSET:-${P}/bin}", "/usr/local/bin"),
            ("'$A'", "$A"),
            ("\"$A\"", "alpha"),
            ("\"a \\\"q\\\" \\$A \\x\"", "a \"q\" $A \\x"),
            ("\\$A", "$A"),
            ("a\\ b", "a b"),
            ("$", "$"),
            ("a$", "a$"),
            ("$1", ""),
            ("x y", "x y"),
            ("${SP}", "x y  z"),
            ("trail\\", "trail"),
        ];
        for (input, want) in cases {
            let got = expand_word(input, &env(), '\\').unwrap();
            assert_eq!(&got, want, "input {input:?}");
        }
    }

    #[test]
    fn pattern_modifiers() {
        let mut e = env();
        for (k, v) in [
            ("F", "/usr/local/lib/libfoo.so.1.2"),
            ("V", "v1.2.3-rc1"),
            ("S", "a*b*c"),
            ("X", "aXbXc"),
        ] {
            e.insert(k.into(), v.into());
        }
        let cases: &[(&str, &str)] = &[
            ("${F#*/}", "usr/local/lib/libfoo.so.1.2"),
            ("${F##*/}", "libfoo.so.1.2"),
            ("${F%.*}", "/usr/local/lib/libfoo.so.1"),
            ("${F%%.*}", "/usr/local/lib/libfoo"),
            ("${F%/*}", "/usr/local/lib"),
            ("${V#v}", "1.2.3-rc1"),
            ("${V#x}", "v1.2.3-rc1"),
            ("${V%-rc[0-9]}", "v1.2.3"),
            ("${V%-rc[!0-9]}", "v1.2.3-rc1"),
            ("${V#?}", "1.2.3-rc1"),
            ("${V##*[.]}", "3-rc1"),
            ("${V/./_}", "v1_2.3-rc1"),
            ("${V//./_}", "v1_2_3-rc1"),
            ("${V//[0-9]/N}", "vN.N.N-rcN"),
            ("${V/-rc*/}", "v1.2.3"),
            ("${V/-rc*}", "v1.2.3"),
            ("${V/#/x}", "v1.2.3-rc1"),
            ("${V//}", "v1.2.3-rc1"),
            ("${V/1*./}", "v3-rc1"),
            ("${S//\\*/-}", "a-b-c"),
            ("${S//'*'/+}", "a+b+c"),
            ("${S//\"*\"/+}", "a+b+c"),
            ("${S//*/x}", "x"),
            ("${X//X/$A}", "aalphabalphac"),
            ("${X//x/-}", "aXbXc"),
            ("${X/[XY]/ }", "a bXc"),
            ("${UNSET#x}", ""),
            ("${UNSET//x/y}", ""),
            ("${P#$P}", ""),
            ("${P%/*}/bin", "/usr/bin"),
            ("${A#}", "alpha"),
            ("${A%[}", "alpha"),
        ];
        for (input, want) in cases {
            let got = expand_word(input, &e, '\\').unwrap();
            assert_eq!(&got, want, "input {input:?}");
        }
        // With the backtick escape.
        assert_eq!(expand_word("${S//`*/-}", &e, '`').unwrap(), "a-b-c");
        // Long values with many stars stay fast.
        let long: String = "ab".repeat(2000);
        e.insert("L".into(), long);
        let pat = format!("${{L//{}/x}}", "*a".repeat(50));
        assert_eq!(expand_word(&pat, &e, '\\').unwrap(), "xb");
    }

    #[test]
    fn heredoc_expansion_keeps_quotes() {
        let got = expand_heredoc("say \"$A\" '${P}' \\$A\n", &env(), '\\').unwrap();
        assert_eq!(got, "say \"alpha\" '/usr/local' $A\n");
    }

    #[test]
    fn backtick_escape() {
        assert_eq!(expand_word("a`$A", &env(), '`').unwrap(), "a$A");
        assert_eq!(expand_word("C:\\dir", &env(), '`').unwrap(), "C:\\dir");
    }

    #[test]
    fn words_split_on_unquoted_whitespace() {
        let w = expand_words("a \"b c\" 'd e' $SP \"$SP\" f\\ g", &env(), '\\').unwrap();
        assert_eq!(w, vec!["a", "b c", "d e", "x", "y", "z", "x y  z", "f g"]);
        assert_eq!(
            expand_words("  80/tcp   443 ", &env(), '\\').unwrap(),
            vec!["80/tcp", "443"]
        );
    }

    #[test]
    fn expansion_errors() {
        let cases: &[(&str, ExpandError)] = &[
            ("'abc", ExpandError::Unterminated("single-quote")),
            ("\"abc", ExpandError::Unterminated("double-quote")),
            ("${A", ExpandError::MissingBrace),
            ("${}", ExpandError::BadSubstitution),
            ("${A=x}", ExpandError::UnsupportedModifier('=')),
            ("${A#x", ExpandError::MissingBrace),
            ("${A/x", ExpandError::MissingBrace),
            (
                "${UNSET:?need it}",
                ExpandError::Required {
                    name: "UNSET".into(),
                    message: "need it".into(),
                },
            ),
            (
                "${UNSET?}",
                ExpandError::Required {
                    name: "UNSET".into(),
                    message: "is not allowed to be unset".into(),
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                &expand_word(input, &env(), '\\').unwrap_err(),
                want,
                "{input}"
            );
        }
        assert_eq!(expand_word("${E?x}", &env(), '\\').unwrap(), "");
        let deep = format!("{}x{}", "${U:-".repeat(10_000), "}".repeat(10_000));
        assert_eq!(
            expand_word(&deep, &env(), '\\').unwrap_err(),
            ExpandError::BadSubstitution
        );
        let ok = format!("{}x{}", "${U:-".repeat(20), "}".repeat(20));
        assert_eq!(expand_word(&ok, &env(), '\\').unwrap(), "x");
    }
}
