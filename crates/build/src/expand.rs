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
    /// A modifier other than `-`, `+`, `?` (with or without `:`).
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
            Some(other) => Err(ExpandError::UnsupportedModifier(other)),
        }
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
            ("${A%x}", ExpandError::UnsupportedModifier('%')),
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
