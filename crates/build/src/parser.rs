//! The Dockerfile model: the text is tokenised by the `parse-dockerfile` crate and turned
//! into [`Dockerfile`] here, with Docker's flag checks and line numbers.
//!
//! Values are kept *unexpanded*: variable substitution depends on `ARG`/`ENV` state that
//! only exists while building, so the builder expands each instruction when it runs it
//! (see [`crate::expand`]). Shell-form commands have their line continuations joined and
//! continuation comment lines dropped, as Docker does.

use parse_dockerfile as pd;

use crate::error::BuildError;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq)]
pub struct Dockerfile {
    /// The escape character (`\` unless `# escape=` says `` ` ``).
    pub escape: char,
    /// The `# syntax=` directive, recorded and otherwise ignored.
    pub syntax: Option<String>,
    /// `ARG`s before the first `FROM` (usable in `FROM` lines only, and inherited by
    /// `ARG NAME` without a value inside a stage).
    pub meta_args: Vec<Instruction>,
    /// The stages, in file order.
    pub stages: Vec<Stage>,
}

/// One `FROM` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// 0-based index (what `--from=0` refers to).
    pub index: usize,
    /// The `AS` name, lowercased.
    pub name: Option<String>,
    /// The `FROM` instruction ([`InstructionKind::From`]).
    pub from: Instruction,
    /// The instructions after `FROM`, up to the next `FROM`.
    pub instructions: Vec<Instruction>,
}

/// An instruction with its position and original text.
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    /// 1-based line of the keyword.
    pub line: usize,
    /// The instruction as written, continuations joined (what `Step n/m :` prints).
    pub text: String,
    /// What it says.
    pub kind: InstructionKind,
}

/// A command of `RUN`, `CMD`, `ENTRYPOINT` or `HEALTHCHECK CMD`.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// JSON array form, run as is.
    Exec(Vec<String>),
    /// Shell form, run through the stage's `SHELL` (default `/bin/sh -c`).
    Shell(String),
}

/// A here-document body.
#[derive(Debug, Clone, PartialEq)]
pub struct Heredoc {
    /// The delimiter word (`EOF` in `<<EOF`); `COPY <<EOF /dir/` names the file after it.
    pub name: String,
    /// The body, with its trailing newline.
    pub content: String,
    /// `false` when the delimiter was quoted (no variable expansion).
    pub expand: bool,
}

/// A raw (unexpanded, quotes intact) `key=value` pair of `ENV` or `LABEL`.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyValue {
    /// The key as written.
    pub key: String,
    /// The value as written.
    pub value: String,
}

/// One name of an `ARG` instruction.
#[derive(Debug, Clone, PartialEq)]
pub struct ArgDecl {
    /// The name.
    pub name: String,
    /// The default as written (unexpanded), if any.
    pub default: Option<String>,
}

/// A `COPY`/`ADD` source.
#[derive(Debug, Clone, PartialEq)]
pub enum CopySource {
    /// A path or glob (or URL for `ADD`), unexpanded.
    Path(String),
    /// An inline here-document.
    Heredoc(Heredoc),
}

/// The arguments of `COPY` and `ADD`.
#[derive(Debug, Clone, PartialEq)]
pub struct CopySpec {
    /// `true` for `ADD` (archives are extracted, URLs fetched).
    pub add: bool,
    /// The sources.
    pub sources: Vec<CopySource>,
    /// The destination, unexpanded.
    pub dest: String,
    /// `--from=<stage|index|image>`.
    pub from: Option<String>,
    /// `--chown=user[:group]`.
    pub chown: Option<String>,
    /// `--chmod=<octal>`.
    pub chmod: Option<String>,
    /// `--link` (accepted; layers are independent of their parent anyway).
    pub link: bool,
}

/// Options of `HEALTHCHECK CMD`, durations in nanoseconds as in the image config.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HealthcheckSpec {
    /// The probe; `None` is `HEALTHCHECK NONE`.
    pub command: Option<Command>,
    /// `--interval`.
    pub interval: Option<i64>,
    /// `--timeout`.
    pub timeout: Option<i64>,
    /// `--start-period`.
    pub start_period: Option<i64>,
    /// `--start-interval`.
    pub start_interval: Option<i64>,
    /// `--retries`.
    pub retries: Option<i64>,
}

/// What an instruction says.
#[derive(Debug, Clone, PartialEq)]
pub enum InstructionKind {
    /// `FROM [--platform=p] image [AS name]`.
    From {
        /// Image reference, stage name or `scratch`, unexpanded.
        image: String,
        /// `--platform`, unexpanded.
        platform: Option<String>,
        /// The lowercased `AS` name.
        name: Option<String>,
    },
    /// `RUN`.
    Run {
        /// The command.
        command: Command,
        /// A here-document: the script when the command is empty, else the command's stdin.
        heredoc: Option<Heredoc>,
        /// `--network=default|none|host`.
        network: Option<String>,
    },
    /// `CMD`.
    Cmd(Command),
    /// `ENTRYPOINT`.
    Entrypoint(Command),
    /// `ENV`.
    Env(Vec<KeyValue>),
    /// `ARG`.
    Arg(Vec<ArgDecl>),
    /// `LABEL`.
    Label(Vec<KeyValue>),
    /// `EXPOSE`, raw words.
    Expose(Vec<String>),
    /// `WORKDIR`.
    Workdir(String),
    /// `USER`.
    User(String),
    /// `VOLUME`, raw words.
    Volume(Vec<String>),
    /// `STOPSIGNAL`.
    Stopsignal(String),
    /// `HEALTHCHECK`.
    Healthcheck(HealthcheckSpec),
    /// `ONBUILD`: the trigger's text, stored in the image config.
    Onbuild(String),
    /// `MAINTAINER`.
    Maintainer(String),
    /// `SHELL`.
    Shell(Vec<String>),
    /// `COPY` / `ADD`.
    Copy(CopySpec),
}

impl InstructionKind {
    /// The instruction keyword, upper case.
    pub fn keyword(&self) -> &'static str {
        match self {
            InstructionKind::From { .. } => "FROM",
            InstructionKind::Run { .. } => "RUN",
            InstructionKind::Cmd(_) => "CMD",
            InstructionKind::Entrypoint(_) => "ENTRYPOINT",
            InstructionKind::Env(_) => "ENV",
            InstructionKind::Arg(_) => "ARG",
            InstructionKind::Label(_) => "LABEL",
            InstructionKind::Expose(_) => "EXPOSE",
            InstructionKind::Workdir(_) => "WORKDIR",
            InstructionKind::User(_) => "USER",
            InstructionKind::Volume(_) => "VOLUME",
            InstructionKind::Stopsignal(_) => "STOPSIGNAL",
            InstructionKind::Healthcheck(_) => "HEALTHCHECK",
            InstructionKind::Onbuild(_) => "ONBUILD",
            InstructionKind::Maintainer(_) => "MAINTAINER",
            InstructionKind::Shell(_) => "SHELL",
            InstructionKind::Copy(c) => {
                if c.add {
                    "ADD"
                } else {
                    "COPY"
                }
            }
        }
    }
}

/// Parses a Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile, BuildError> {
    // Here-documents that do not open the RUN command (`RUN cat <<EOF > f`) are cut out
    // before tokenising (the tokenizer only knows `RUN <<EOF`); lines keep their numbers.
    let (pre, inline) = split_inline_heredocs(text, directive_escape(text));
    let text = pre.as_str();
    let df = pd::parse(text).map_err(|e| BuildError::parse(e.line().max(1), parse_message(&e)))?;
    let escape = df
        .parser_directives
        .escape
        .as_ref()
        .map(|d| d.value.value)
        .unwrap_or('\\');
    let syntax = df
        .parser_directives
        .syntax
        .as_ref()
        .map(|d| d.value.value.to_string());
    let lines = LineIndex::new(text);
    let starts: Vec<usize> = df.instructions.iter().map(keyword_start).collect();
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for (i, inst) in df.instructions.iter().enumerate() {
        let start = starts[i];
        let end = starts.get(i + 1).copied().unwrap_or(text.len());
        let raw = &text[start..end];
        let line = lines.line(start);
        let mut kind = convert(inst, text, escape, line, raw, false)?;
        if let (
            Some(body),
            InstructionKind::Run {
                command: Command::Shell(script),
                heredoc,
                ..
            },
        ) = (inline.get(&line), &mut kind)
        {
            // The shell reads the here-documents itself, as BuildKit arranges it.
            script.push('\n');
            script.push_str(body);
            *heredoc = None;
        }
        let converted = Instruction {
            line,
            text: display_text(raw, escape),
            kind,
        };
        match (&converted.kind, stages.last_mut()) {
            (InstructionKind::From { name, .. }, _) => {
                if let Some(n) = name {
                    if stages.iter().any(|s| s.name.as_deref() == Some(n.as_str())) {
                        return Err(BuildError::parse(
                            line,
                            format!("duplicate stage name {n:?}"),
                        ));
                    }
                }
                stages.push(Stage {
                    index: stages.len(),
                    name: name.clone(),
                    from: converted,
                    instructions: Vec::new(),
                });
            }
            (InstructionKind::Arg(_), None) => meta_args.push(converted),
            (_, Some(stage)) => stage.instructions.push(converted),
            (_, None) => {
                return Err(BuildError::parse(
                    line,
                    format!("{} before the first FROM", converted.kind.keyword()),
                ))
            }
        }
    }
    if stages.is_empty() {
        return Err(BuildError::parse(
            lines.line(text.len()),
            "no FROM instruction: a Dockerfile must start a stage",
        ));
    }
    Ok(Dockerfile {
        escape,
        syntax,
        meta_args,
        stages,
    })
}

/// The `# escape=` directive's character, read the way the tokenizer does (only in the
/// leading comment block).
fn directive_escape(text: &str) -> char {
    for line in text.lines() {
        let Some(c) = line.trim_start().strip_prefix('#') else {
            break;
        };
        let c = c.trim();
        if let Some((k, v)) = c.split_once('=') {
            if k.trim().eq_ignore_ascii_case("escape") && v.trim() == "`" {
                return '`';
            }
        }
    }
    '\\'
}

/// The here-document delimiters a shell command opens (`<<EOF`, `<<-'END'`), in order.
/// A delimiter must start with a letter, `_` or a quote, so `$((1<<2))` is not one.
fn inline_delims(cmd: &str) -> Vec<(String, bool)> {
    let b = cmd.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 2 < b.len() {
        if b[i] == b'<' && b[i + 1] == b'<' && (i == 0 || b[i - 1] != b'<') && b[i + 2] != b'<' {
            let mut j = i + 2;
            let strip = b.get(j) == Some(&b'-');
            if strip {
                j += 1;
            }
            let quote = match b.get(j) {
                Some(q @ (b'"' | b'\'')) => {
                    j += 1;
                    Some(*q)
                }
                _ => None,
            };
            let start = j;
            if b.get(j)
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
            {
                while b
                    .get(j)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
                {
                    j += 1;
                }
                if quote.is_none() || b.get(j) == quote.as_ref() {
                    out.push((cmd[start..j].to_string(), strip));
                }
            }
            i = j.max(i + 2);
            continue;
        }
        i += 1;
    }
    out
}

/// Cuts the bodies of here-documents opened inside a shell-form `RUN` command (not at
/// its start) out of `text`, replacing each body line with an empty line. Returns the
/// new text and, per 1-based line of the `RUN` keyword, the bodies with their
/// terminator lines.
fn split_inline_heredocs(
    text: &str,
    escape: char,
) -> (String, std::collections::HashMap<usize, String>) {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out: Vec<&str> = Vec::with_capacity(lines.len());
    let mut bodies = std::collections::HashMap::new();
    let mut i = 0;
    while i < lines.len() {
        let start = i;
        let mut logical = String::new();
        loop {
            let l = lines[i];
            out.push(l);
            i += 1;
            match continued(l, escape) {
                Some(head) if i < lines.len() => logical.push_str(head),
                _ => {
                    logical.push_str(l);
                    break;
                }
            }
        }
        let t = logical.trim_start();
        let word = t.split_whitespace().next().unwrap_or("");
        if !word.eq_ignore_ascii_case("RUN") {
            continue;
        }
        let mut rest = t[word.len()..].trim_start();
        while rest.starts_with("--") {
            rest = rest
                .split_once(char::is_whitespace)
                .map(|(_, r)| r.trim_start())
                .unwrap_or("");
        }
        if rest.starts_with("<<") || rest.starts_with('[') {
            continue;
        }
        let delims = inline_delims(rest);
        if delims.is_empty() {
            continue;
        }
        let mut body = String::new();
        for (delim, strip_tabs) in delims {
            while i < lines.len() {
                let l = lines[i];
                out.push("");
                i += 1;
                body.push_str(l);
                body.push('\n');
                let cmp = if strip_tabs {
                    l.trim_start_matches('\t')
                } else {
                    l
                };
                if cmp.trim_end_matches('\r') == delim {
                    break;
                }
            }
        }
        bodies.insert(start + 1, body);
    }
    (out.join("\n"), bodies)
}

/// Parses the text of one `ONBUILD` trigger (as stored in an image config).
pub fn parse_trigger(trigger: &str, escape: char, line: usize) -> Result<Instruction, BuildError> {
    let text = format!("FROM scratch\n{trigger}\n");
    let df = pd::parse(&text).map_err(|e| BuildError::parse(line, parse_message(&e)))?;
    let Some(inst) = df.instructions.get(1) else {
        return Err(BuildError::parse(
            line,
            format!("invalid ONBUILD trigger {trigger:?}"),
        ));
    };
    let raw = &text[keyword_start(inst)..];
    Ok(Instruction {
        line,
        text: display_text(raw, escape),
        kind: convert(inst, &text, escape, line, raw, true)?,
    })
}

fn parse_message(e: &pd::Error) -> String {
    // The crate's message carries its own position suffix; we report the line ourselves.
    let s = e.to_string();
    match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Maps byte offsets to 1-based line numbers.
struct LineIndex {
    newlines: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        LineIndex {
            newlines: text
                .bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i)
                .collect(),
        }
    }
    fn line(&self, offset: usize) -> usize {
        self.newlines.partition_point(|&n| n < offset) + 1
    }
}

fn keyword_start(inst: &pd::Instruction<'_>) -> usize {
    use pd::Instruction as I;
    match inst {
        I::Add(i) => i.add.span.start,
        I::Arg(i) => i.arg.span.start,
        I::Cmd(i) => i.cmd.span.start,
        I::Copy(i) => i.copy.span.start,
        I::Entrypoint(i) => i.entrypoint.span.start,
        I::Env(i) => i.env.span.start,
        I::Expose(i) => i.expose.span.start,
        I::From(i) => i.from.span.start,
        I::Healthcheck(i) => i.healthcheck.span.start,
        I::Label(i) => i.label.span.start,
        I::Maintainer(i) => i.maintainer.span.start,
        I::Onbuild(i) => i.onbuild.span.start,
        I::Run(i) => i.run.span.start,
        I::Shell(i) => i.shell.span.start,
        I::Stopsignal(i) => i.stopsignal.span.start,
        I::User(i) => i.user.span.start,
        I::Volume(i) => i.volume.span.start,
        I::Workdir(i) => i.workdir.span.start,
        _ => 0,
    }
}

/// Whether `line` ends with the escape character (trailing spaces allowed): a continuation.
fn continued(line: &str, escape: char) -> Option<&str> {
    let t = line.trim_end_matches([' ', '\t', '\r']);
    t.strip_suffix(escape)
}

/// Joins a logical line: continuations removed, comment and blank lines inside it dropped.
fn join_logical(raw: &str, escape: char) -> String {
    let mut out = String::new();
    let mut first = true;
    for line in raw.split('\n') {
        if !first {
            let t = line.trim_start();
            if t.starts_with('#') || t.trim_end().is_empty() {
                continue;
            }
        }
        first = false;
        match continued(line, escape) {
            Some(head) => out.push_str(head),
            None => {
                out.push_str(line.trim_end_matches('\r'));
                return out;
            }
        }
    }
    out
}

/// The instruction's first logical line, trimmed (what the build log shows).
fn display_text(raw: &str, escape: char) -> String {
    join_logical(raw, escape).trim().to_string()
}

/// Joins the continuations of a shell-form command.
fn shell_text(s: &str, escape: char) -> String {
    join_logical(s, escape).trim().to_string()
}

fn command(c: &pd::Command<'_>, escape: char) -> Command {
    match c {
        pd::Command::Exec(v) => {
            Command::Exec(v.value.iter().map(|s| s.value.to_string()).collect())
        }
        pd::Command::Shell(s) => Command::Shell(shell_text(s.value, escape)),
        _ => Command::Exec(Vec::new()),
    }
}

/// The delimiters of the here-documents an instruction line opens (`<<EOF`, `<<-"EOT"`).
fn heredoc_names(raw: &str, escape: char) -> Vec<String> {
    join_logical(raw, escape)
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("<<"))
        .map(|w| {
            let w = w.strip_prefix('-').unwrap_or(w);
            w.trim_matches(|c| c == '"' || c == '\'').to_string()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Checks flags against the allowed names; returns (name, value) pairs.
fn flags(
    opts: &[pd::Flag<'_>],
    allowed: &[&str],
    keyword: &str,
    line: usize,
) -> Result<Vec<(String, Option<String>)>, BuildError> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for f in opts {
        let name = f.name.value.to_string();
        if !allowed.contains(&name.as_str()) {
            return Err(BuildError::parse(
                line,
                format!("unknown flag for {keyword}: --{name}"),
            ));
        }
        if out.iter().any(|(n, _)| *n == name) && name != "mount" {
            return Err(BuildError::parse(
                line,
                format!("duplicate flag for {keyword}: --{name}"),
            ));
        }
        out.push((name, f.value.as_ref().map(|v| v.value.to_string())));
    }
    Ok(out)
}

fn flag_value(
    flags: &[(String, Option<String>)],
    name: &str,
    line: usize,
) -> Result<Option<String>, BuildError> {
    match flags.iter().find(|(n, _)| n == name) {
        None => Ok(None),
        Some((_, Some(v))) => Ok(Some(v.clone())),
        Some((_, None)) => Err(BuildError::parse(
            line,
            format!("flag --{name} needs a value"),
        )),
    }
}

fn flag_bool(
    flags: &[(String, Option<String>)],
    name: &str,
    line: usize,
) -> Result<bool, BuildError> {
    match flags.iter().find(|(n, _)| n == name) {
        None => Ok(false),
        Some((_, None)) => Ok(true),
        Some((_, Some(v))) => match v.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(BuildError::parse(
                line,
                format!("flag --{name} expects true or false, got {v:?}"),
            )),
        },
    }
}

/// Docker's `parseWords`: splits at unquoted whitespace, keeping quotes and escapes.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            if c == escape && q != '\'' {
                if i + 1 == chars.len() {
                    break;
                }
                word.push(c);
                i += 1;
                word.push(chars[i]);
                i += 1;
                continue;
            }
            word.push(c);
            i += 1;
            continue;
        }
        if !in_word {
            if c.is_whitespace() {
                i += 1;
                continue;
            }
            in_word = true;
        }
        if c.is_whitespace() {
            if blank_ok || !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            blank_ok = false;
            in_word = false;
            i += 1;
            continue;
        }
        if c == '\'' || c == '"' {
            quote = Some(c);
            blank_ok = true;
        }
        if c == escape {
            if i + 1 == chars.len() {
                i += 1;
                continue;
            }
            word.push(c);
            i += 1;
        }
        word.push(chars[i]);
        i += 1;
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// `ENV`/`LABEL` arguments: `k=v ...` or the legacy `k value with spaces`.
fn name_values(
    rest: &str,
    keyword: &str,
    escape: char,
    line: usize,
) -> Result<Vec<KeyValue>, BuildError> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Err(BuildError::parse(
            line,
            format!("{keyword} requires at least one argument"),
        ));
    };
    if !first.contains('=') {
        let rest = rest.trim_start();
        let Some(split) = rest.find(char::is_whitespace) else {
            return Err(BuildError::parse(
                line,
                format!("{keyword} must have two arguments"),
            ));
        };
        return Ok(vec![KeyValue {
            key: rest[..split].to_string(),
            value: rest[split..].trim().to_string(),
        }]);
    }
    let mut out = Vec::new();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(BuildError::parse(
                line,
                format!("syntax error - can't find = in {w:?}. Must be of the form: name=value"),
            ));
        };
        if k.is_empty() {
            return Err(BuildError::parse(
                line,
                format!("{keyword} names can not be blank"),
            ));
        }
        out.push(KeyValue {
            key: k.to_string(),
            value: v.to_string(),
        });
    }
    Ok(out)
}

fn valid_stage_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

/// Parses a Go-style duration (`1m30s`, `500ms`, `10s`) to nanoseconds.
pub(crate) fn parse_duration(s: &str) -> Option<i64> {
    if s == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * mult;
    }
    Some(total as i64)
}

fn convert(
    inst: &pd::Instruction<'_>,
    _text: &str,
    escape: char,
    line: usize,
    raw: &str,
    in_onbuild: bool,
) -> Result<InstructionKind, BuildError> {
    use pd::Instruction as I;
    Ok(match inst {
        I::From(f) => {
            if in_onbuild {
                return Err(BuildError::parse(
                    line,
                    "FROM isn't allowed as an ONBUILD trigger",
                ));
            }
            let fl = flags(&f.options, &["platform"], "FROM", line)?;
            let name = match &f.as_ {
                Some((_, n)) => {
                    let n = n.value.to_lowercase();
                    if !valid_stage_name(&n) {
                        return Err(BuildError::parse(
                            line,
                            format!("invalid name for build stage: {n:?}, name can't start with a number or contain symbols"),
                        ));
                    }
                    Some(n)
                }
                None => None,
            };
            InstructionKind::From {
                image: f.image.value.to_string(),
                platform: flag_value(&fl, "platform", line)?,
                name,
            }
        }
        I::Run(r) => {
            let fl = flags(&r.options, &["network", "mount", "security"], "RUN", line)?;
            if fl.iter().any(|(n, _)| n == "mount") {
                return Err(BuildError::parse(
                    line,
                    "RUN --mount is not supported by this builder",
                ));
            }
            if let Some((_, v)) = fl.iter().find(|(n, _)| n == "security") {
                if v.as_deref() != Some("sandbox") {
                    return Err(BuildError::parse(
                        line,
                        "RUN --security=insecure is not supported",
                    ));
                }
            }
            let network = flag_value(&fl, "network", line)?;
            if let Some(n) = &network {
                if !["default", "none", "host"].contains(&n.as_str()) {
                    return Err(BuildError::parse(
                        line,
                        format!("unsupported RUN --network value {n:?}: use default, none or host"),
                    ));
                }
            }
            let heredoc = r.here_docs.first().map(|h| Heredoc {
                name: heredoc_names(raw, escape)
                    .into_iter()
                    .next()
                    .unwrap_or_default(),
                content: h.value.to_string(),
                expand: h.expand,
            });
            InstructionKind::Run {
                command: command(&r.arguments, escape),
                heredoc,
                network,
            }
        }
        I::Cmd(c) => InstructionKind::Cmd(command(&c.arguments, escape)),
        I::Entrypoint(c) => InstructionKind::Entrypoint(command(&c.arguments, escape)),
        I::Env(e) => InstructionKind::Env(name_values(&e.arguments.value, "ENV", escape, line)?),
        I::Label(l) => {
            InstructionKind::Label(name_values(&l.arguments.value, "LABEL", escape, line)?)
        }
        I::Arg(a) => {
            let mut decls = Vec::new();
            for w in parse_words(&a.arguments.value, escape) {
                let (name, default) = match w.split_once('=') {
                    Some((n, d)) => (n.to_string(), Some(d.to_string())),
                    None => (w.clone(), None),
                };
                if name.is_empty() {
                    return Err(BuildError::parse(line, "ARG names can not be blank"));
                }
                decls.push(ArgDecl { name, default });
            }
            InstructionKind::Arg(decls)
        }
        I::Expose(e) => {
            InstructionKind::Expose(e.arguments.iter().map(|s| s.value.to_string()).collect())
        }
        I::Workdir(w) => InstructionKind::Workdir(w.arguments.value.to_string()),
        I::User(u) => InstructionKind::User(u.arguments.value.to_string()),
        I::Volume(v) => InstructionKind::Volume(match &v.arguments {
            pd::JsonOrStringArray::Json(a) => a.value.iter().map(|s| s.value.to_string()).collect(),
            pd::JsonOrStringArray::String(a) => a.iter().map(|s| s.value.to_string()).collect(),
        }),
        I::Stopsignal(s) => InstructionKind::Stopsignal(s.arguments.value.to_string()),
        I::Maintainer(m) => {
            if in_onbuild {
                return Err(BuildError::parse(
                    line,
                    "MAINTAINER isn't allowed as an ONBUILD trigger",
                ));
            }
            InstructionKind::Maintainer(m.name.value.to_string())
        }
        I::Shell(s) => {
            let args: Vec<String> = s.arguments.iter().map(|a| a.value.to_string()).collect();
            if args.is_empty() {
                return Err(BuildError::parse(
                    line,
                    "SHELL requires at least one argument",
                ));
            }
            InstructionKind::Shell(args)
        }
        I::Healthcheck(h) => {
            let fl = flags(
                &h.options,
                &[
                    "interval",
                    "timeout",
                    "start-period",
                    "start-interval",
                    "retries",
                ],
                "HEALTHCHECK",
                line,
            )?;
            let mut spec = HealthcheckSpec::default();
            for (name, value) in &fl {
                let v = value.as_deref().ok_or_else(|| {
                    BuildError::parse(line, format!("flag --{name} needs a value"))
                })?;
                if name == "retries" {
                    let n: i64 = v.parse().map_err(|_| {
                        BuildError::parse(line, format!("invalid --retries value {v:?}"))
                    })?;
                    if n < 0 {
                        return Err(BuildError::parse(line, "--retries cannot be negative"));
                    }
                    spec.retries = Some(n);
                    continue;
                }
                let d = parse_duration(v).ok_or_else(|| {
                    BuildError::parse(line, format!("invalid duration for --{name}: {v:?}"))
                })?;
                if d != 0 && d < 1_000_000 {
                    return Err(BuildError::parse(
                        line,
                        format!("--{name} cannot be less than 1ms"),
                    ));
                }
                match name.as_str() {
                    "interval" => spec.interval = Some(d),
                    "timeout" => spec.timeout = Some(d),
                    "start-period" => spec.start_period = Some(d),
                    _ => spec.start_interval = Some(d),
                }
            }
            match &h.arguments {
                pd::HealthcheckArguments::Cmd { arguments, .. } => {
                    spec.command = Some(command(arguments, escape));
                }
                pd::HealthcheckArguments::None { .. } => {
                    if !fl.is_empty() {
                        return Err(BuildError::parse(line, "HEALTHCHECK NONE takes no options"));
                    }
                }
                _ => {
                    return Err(BuildError::parse(line, "HEALTHCHECK expects CMD or NONE"));
                }
            }
            InstructionKind::Healthcheck(spec)
        }
        I::Onbuild(o) => {
            if in_onbuild {
                return Err(BuildError::parse(
                    line,
                    "chaining ONBUILD via ONBUILD ONBUILD isn't allowed",
                ));
            }
            if matches!(*o.instruction, I::Onbuild(_)) {
                return Err(BuildError::parse(
                    line,
                    "chaining ONBUILD via ONBUILD ONBUILD isn't allowed",
                ));
            }
            // Validate the trigger now (flags, forbidden instructions) ...
            let inner_start = keyword_start(&o.instruction);
            let inner_raw = &raw[inner_start.saturating_sub(o.onbuild.span.start)..];
            convert(&o.instruction, _text, escape, line, inner_raw, true)?;
            // ... and store its text, as Docker does.
            InstructionKind::Onbuild(display_text(inner_raw, escape))
        }
        I::Add(a) => InstructionKind::Copy(copy_spec(
            true, &a.options, &a.src, &a.dest, line, raw, escape,
        )?),
        I::Copy(c) => InstructionKind::Copy(copy_spec(
            false, &c.options, &c.src, &c.dest, line, raw, escape,
        )?),
        _ => return Err(BuildError::parse(line, "unsupported instruction")),
    })
}

fn copy_spec(
    add: bool,
    opts: &[pd::Flag<'_>],
    src: &[pd::Source<'_>],
    dest: &pd::UnescapedString<'_>,
    line: usize,
    raw: &str,
    escape: char,
) -> Result<CopySpec, BuildError> {
    let mut names = heredoc_names(raw, escape).into_iter();
    let keyword = if add { "ADD" } else { "COPY" };
    let allowed: &[&str] = if add {
        &["chown", "chmod", "link", "checksum", "keep-git-dir"]
    } else {
        &["from", "chown", "chmod", "link"]
    };
    let fl = flags(opts, allowed, keyword, line)?;
    if flag_value(&fl, "checksum", line)?.is_some() {
        return Err(BuildError::parse(
            line,
            "ADD --checksum is not supported by this builder",
        ));
    }
    let sources = src
        .iter()
        .map(|s| match s {
            pd::Source::Path(p) => Ok(CopySource::Path(p.value.to_string())),
            pd::Source::HereDoc(h) => Ok(CopySource::Heredoc(Heredoc {
                name: names.next().unwrap_or_default(),
                content: h.value.to_string(),
                expand: h.expand,
            })),
            _ => Err(BuildError::parse(line, "unsupported source")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CopySpec {
        add,
        sources,
        dest: dest.value.to_string(),
        from: flag_value(&fl, "from", line)?,
        chown: flag_value(&fl, "chown", line)?,
        chmod: flag_value(&fl, "chmod", line)?,
        link: flag_bool(&fl, "link", line)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(src: &str) -> Instruction {
        let df = parse(&format!("FROM scratch\n{src}\n")).unwrap_or_else(|e| panic!("{src}: {e}"));
        df.stages[0].instructions[0].clone()
    }

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn every_instruction_table() {
        use InstructionKind as K;
        let s = |v: &str| v.to_string();
        let cases: Vec<(&str, InstructionKind)> = vec![
            (
                "RUN echo hi",
                K::Run { command: Command::Shell(s("echo hi")), heredoc: None, network: None },
            ),
            (
                "RUN [\"echo\", \"a b\"]",
                K::Run { command: Command::Exec(vec![s("echo"), s("a b")]), heredoc: None, network: None },
            ),
            (
                "RUN --network=none echo \\\n  # comment line\n  there",
                K::Run { command: Command::Shell(s("echo   there")), heredoc: None, network: Some(s("none")) },
            ),
            (
                "RUN <<EOF\necho a\necho b\nEOF",
                K::Run {
                    command: Command::Shell(s("")),
                    heredoc: Some(Heredoc {
                        name: s("EOF"),
                        content: s("echo a\necho b\n"),
                        expand: true,
                    }),
                    network: None,
                },
            ),
            ("CMD [\"a\", \"b\"]", K::Cmd(Command::Exec(vec![s("a"), s("b")]))),
            ("CMD echo $HOME", K::Cmd(Command::Shell(s("echo $HOME")))),
            ("ENTRYPOINT [\"/bin/app\"]", K::Entrypoint(Command::Exec(vec![s("/bin/app")]))),
            ("ENTRYPOINT exec app", K::Entrypoint(Command::Shell(s("exec app")))),
            ("ENV A=1 B=\"x y\"", K::Env(vec![kv("A", "1"), kv("B", "\"x y\"")])),
            ("ENV A=1 \\\n    C=3", K::Env(vec![kv("A", "1"), kv("C", "3")])),
            ("ENV LEGACY some value here", K::Env(vec![kv("LEGACY", "some value here")])),
            ("ENV A=b\\ c", K::Env(vec![kv("A", "b\\ c")])),
            (
                "ARG A B=2",
                K::Arg(vec![
                    ArgDecl { name: s("A"), default: None },
                    ArgDecl { name: s("B"), default: Some(s("2")) },
                ]),
            ),
            ("LABEL \"k\"=\"v 1\" k2=v2", K::Label(vec![kv("\"k\"", "\"v 1\""), kv("k2", "v2")])),
            ("EXPOSE 80/tcp 443", K::Expose(vec![s("80/tcp"), s("443")])),
            ("WORKDIR /app", K::Workdir(s("/app"))),
            ("USER 1000:1000", K::User(s("1000:1000"))),
            ("VOLUME [\"/a\", \"/b\"]", K::Volume(vec![s("/a"), s("/b")])),
            ("VOLUME /c /d", K::Volume(vec![s("/c"), s("/d")])),
            ("STOPSIGNAL SIGKILL", K::Stopsignal(s("SIGKILL"))),
            ("HEALTHCHECK NONE", K::Healthcheck(HealthcheckSpec::default())),
            (
                "HEALTHCHECK --interval=5s --timeout=1m30s --start-period=500ms --retries=3 CMD curl -f x",
                K::Healthcheck(HealthcheckSpec {
                    command: Some(Command::Shell(s("curl -f x"))),
                    interval: Some(5_000_000_000),
                    timeout: Some(90_000_000_000),
                    start_period: Some(500_000_000),
                    start_interval: None,
                    retries: Some(3),
                }),
            ),
            ("ONBUILD RUN echo onb", K::Onbuild(s("RUN echo onb"))),
            ("ONBUILD COPY . /app", K::Onbuild(s("COPY . /app"))),
            ("MAINTAINER Jane <j@x>", K::Maintainer(s("Jane <j@x>"))),
            ("SHELL [\"/bin/bash\", \"-c\"]", K::Shell(vec![s("/bin/bash"), s("-c")])),
            (
                "COPY --from=base --chown=1:1 --chmod=644 --link a b /dst/",
                K::Copy(CopySpec {
                    add: false,
                    sources: vec![CopySource::Path(s("a")), CopySource::Path(s("b"))],
                    dest: s("/dst/"),
                    from: Some(s("base")),
                    chown: Some(s("1:1")),
                    chmod: Some(s("644")),
                    link: true,
                }),
            ),
            (
                "COPY [\"a b\", \"/d\"]",
                K::Copy(CopySpec {
                    add: false,
                    sources: vec![CopySource::Path(s("a b"))],
                    dest: s("/d"),
                    from: None,
                    chown: None,
                    chmod: None,
                    link: false,
                }),
            ),
            (
                "ADD --chown=u app.tar.gz /opt/",
                K::Copy(CopySpec {
                    add: true,
                    sources: vec![CopySource::Path(s("app.tar.gz"))],
                    dest: s("/opt/"),
                    from: None,
                    chown: Some(s("u")),
                    chmod: None,
                    link: false,
                }),
            ),
            (
                "COPY <<EOT /f\nhello $A\nEOT",
                K::Copy(CopySpec {
                    add: false,
                    sources: vec![CopySource::Heredoc(Heredoc {
                        name: s("EOT"),
                        content: s("hello $A\n"),
                        expand: true,
                    })],
                    dest: s("/f"),
                    from: None,
                    chown: None,
                    chmod: None,
                    link: false,
                }),
            ),
        ];
        for (src, want) in cases {
            assert_eq!(one(src).kind, want, "{src}");
        }
    }

    #[test]
    fn stages_args_lines_and_text() {
        let text = "# syntax=docker/dockerfile:1\nARG V=1\nARG BASE\n\nFROM busybox:${V} AS Build\nRUN echo \\\n  hi\n# c\nFROM --platform=linux/amd64 build\nCOPY --from=build /x /y\n";
        let df = parse(text).unwrap();
        assert_eq!(df.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(df.escape, '\\');
        assert_eq!(df.meta_args.len(), 2);
        assert_eq!(df.stages.len(), 2);
        assert_eq!(df.stages[0].name.as_deref(), Some("build"));
        assert_eq!(df.stages[0].from.line, 5);
        assert_eq!(df.stages[0].instructions[0].line, 6);
        assert_eq!(df.stages[0].instructions[0].text, "RUN echo   hi");
        assert_eq!(df.stages[1].from.line, 9);
        assert_eq!(
            df.stages[1].from.kind,
            InstructionKind::From {
                image: "build".into(),
                platform: Some("linux/amd64".into()),
                name: None
            }
        );
        assert_eq!(df.stages[1].instructions[0].line, 10);
    }

    #[test]
    fn escape_directive_backtick() {
        let df = parse("# escape=`\nFROM scratch\nRUN echo a `\n  b\nENV P=C:\\dir\n").unwrap();
        assert_eq!(df.escape, '`');
        let ins = &df.stages[0].instructions;
        assert_eq!(
            ins[0].kind,
            InstructionKind::Run {
                command: Command::Shell("echo a   b".into()),
                heredoc: None,
                network: None
            }
        );
        assert_eq!(ins[1].kind, InstructionKind::Env(vec![kv("P", "C:\\dir")]));
    }

    #[test]
    fn bad_input_reports_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("FROM scratch\nRUN x\nFOO bar\n", 3, "unknown instruction"),
            ("# c\nRUN echo\n", 2, "FROM"),
            ("\n\n", 1, "FROM"),
            (
                "FROM scratch\n\nCOPY --bogus=1 a b\n",
                3,
                "unknown flag for COPY: --bogus",
            ),
            (
                "FROM scratch\nADD --from=x a b\n",
                2,
                "unknown flag for ADD: --from",
            ),
            ("FROM --foo=bar scratch\n", 1, "unknown flag for FROM"),
            ("FROM scratch\nENV\n", 2, "argument"),
            ("FROM scratch\nENV A=1 B\n", 2, "can't find ="),
            ("FROM scratch\nENV ONLYKEY\n", 2, "two arguments"),
            (
                "FROM scratch\nHEALTHCHECK --interval=abc CMD x\n",
                2,
                "invalid duration",
            ),
            (
                "FROM scratch\nHEALTHCHECK --retries=x CMD x\n",
                2,
                "--retries",
            ),
            (
                "FROM scratch\nONBUILD ONBUILD RUN x\n",
                2,
                "ONBUILD ONBUILD",
            ),
            ("FROM scratch\nONBUILD FROM x\n", 2, "FROM isn't allowed"),
            ("FROM scratch AS 1bad\n", 1, "invalid name"),
            ("FROM a AS x\nFROM b AS x\n", 2, "duplicate"),
            (
                "FROM scratch\nRUN --mount=type=cache,target=/x true\n",
                2,
                "--mount",
            ),
            ("FROM scratch\nRUN --network=bridge2 true\n", 2, "--network"),
            ("FROM scratch\nCOPY onlyone\n", 2, "at least two"),
            ("FROM scratch\nCOPY --link=maybe a b\n", 2, "--link"),
        ];
        for (text, line, needle) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line(), Some(*line), "{text:?}: {e}");
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
            assert_eq!(
                errkind::HasKind::kind(&e),
                errkind::ErrorKind::InvalidArgument
            );
        }
    }

    #[test]
    fn trigger_parsing() {
        let i = parse_trigger("RUN echo from trigger", '\\', 7).unwrap();
        assert_eq!(i.line, 7);
        assert!(matches!(i.kind, InstructionKind::Run { .. }));
        assert!(parse_trigger("FROM x", '\\', 1).is_err());
    }

    #[test]
    fn heredocs_inside_run_commands() {
        let text = "FROM scratch\nRUN cat <<EOF > /f && cat <<-'END' >> /f\nline $X\nEOF\n\tsecond\n\tEND\nRUN echo $((1<<2))\nCMD x\n";
        let df = parse(text).unwrap();
        let ins = &df.stages[0].instructions;
        assert_eq!(ins.len(), 3);
        assert_eq!(
            ins[0].kind,
            InstructionKind::Run {
                command: Command::Shell(
                    "cat <<EOF > /f && cat <<-'END' >> /f\nline $X\nEOF\n\tsecond\n\tEND\n".into()
                ),
                heredoc: None,
                network: None
            }
        );
        assert_eq!(ins[0].text, "RUN cat <<EOF > /f && cat <<-'END' >> /f");
        assert_eq!(ins[1].line, 7, "line numbers survive the cut");
        assert_eq!(ins[2].line, 8);
        assert_eq!(
            inline_delims("a <<EOF b<<\"Q\" c <<<here $((1<<2))"),
            vec![("EOF".to_string(), false), ("Q".to_string(), false)]
        );
    }

    #[test]
    fn crlf_line_endings() {
        let df =
            parse("FROM scratch\r\nENV A=1 \\\r\n  B=2\r\nRUN echo a \\\r\n  b\r\nCMD [\"x\"]\r\n")
                .unwrap();
        let ins = &df.stages[0].instructions;
        assert_eq!(
            ins[0].kind,
            InstructionKind::Env(vec![kv("A", "1"), kv("B", "2")])
        );
        assert_eq!(
            ins[1].kind,
            InstructionKind::Run {
                command: Command::Shell("echo a   b".into()),
                heredoc: None,
                network: None
            }
        );
        assert_eq!(
            ins[2].kind,
            InstructionKind::Cmd(Command::Exec(vec!["x".into()]))
        );
        assert_eq!(ins[2].line, 6);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h2m3s"), Some(3_723_000_000_000));
        assert_eq!(parse_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("5x"), None);
    }

    #[test]
    fn parse_words_docker_rules() {
        assert_eq!(
            parse_words("a=\"x y\" b='p q' c=d\\ e", '\\'),
            vec!["a=\"x y\"", "b='p q'", "c=d\\ e"]
        );
        assert_eq!(parse_words("  \"\"  x ", '\\'), vec!["\"\"", "x"]);
    }
}
