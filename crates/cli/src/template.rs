//! A subset of Go's `text/template`, enough for docker's `--format` flags.
//!
//! The data is a JSON value (what the daemon returned, or the row object a listing builds).
//! Supported: text, `{{.Field.Sub}}`, `{{.}}`, `{{$}}`, variables (`{{$v := .X}}`,
//! `{{range $k, $v := .M}}`), pipelines (`{{.X | json}}`), parenthesised sub-expressions,
//! string/number/bool literals, `{{if}}`/`{{else if}}`/`{{else}}`/`{{end}}`, `{{range}}`
//! (arrays and maps, with `{{else}}`), `{{with}}`, trim markers (`{{-`, `-}}`), and the
//! functions docker offers: `json`, `index`, `join`, `split`, `upper`, `lower`, `title`,
//! `len`, `print`, `println`, `printf` (`%s %d %v %q`), `truncate`, `pad`, `eq`, `ne`, `lt`,
//! `le`, `gt`, `ge`, `not`, `and`, `or`.
//!
//! Values print like Go's `%v`: strings raw, arrays as `[a b]`, maps as `map[k:v]`, a
//! missing map key as `<no value>`.

use serde_json::{Map, Value};

/// A template parse or execution error.
#[derive(Debug, thiserror::Error)]
#[error("template: {0}")]
pub struct TemplateError(String);

fn err<T>(msg: impl Into<String>) -> Result<T, TemplateError> {
    Err(TemplateError(msg.into()))
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
}

#[derive(Debug, Clone)]
struct Pipeline {
    decl: Vec<String>,
    cmds: Vec<Vec<Arg>>,
}

#[derive(Debug, Clone)]
enum Arg {
    Field(Vec<String>),
    Var(String, Vec<String>),
    Str(String),
    Num(f64),
    Bool(bool),
    Nil,
    Ident(String),
    Sub(Box<Pipeline>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Field(Vec<String>),
    Var(String, Vec<String>),
    Str(String),
    Num(f64),
    Ident(String),
    Pipe,
    LParen,
    RParen,
    Declare,
    Comma,
}

/// Template text split into literal text and action bodies.
enum Item {
    Text(String),
    Action(String),
}

fn split_items(src: &str) -> Result<Vec<Item>, TemplateError> {
    let mut items = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[start + 2..];
        let (trim_left, body_start) = if after.starts_with("- ") || after.starts_with("-\t") {
            (true, 2)
        } else {
            (false, 0)
        };
        if trim_left {
            text = text.trim_end();
        }
        if !text.is_empty() {
            items.push(Item::Text(text.to_string()));
        }
        let after = &after[body_start..];
        let Some(end) = find_close(after) else {
            return err("unclosed action");
        };
        let mut body = &after[..end];
        trim_next = false;
        if body.ends_with(" -") || body.ends_with("\t-") {
            body = &body[..body.len() - 2];
            trim_next = true;
        }
        items.push(Item::Action(body.trim().to_string()));
        rest = &after[end + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    if !text.is_empty() {
        items.push(Item::Text(text.to_string()));
    }
    Ok(items)
}

/// Finds the `}}` closing an action, skipping quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn field_chain(s: &str) -> Vec<String> {
    s.split('.')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

fn lex(src: &str) -> Result<Vec<Tok>, TemplateError> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    let word_char = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        match c {
            '|' => {
                toks.push(Tok::Pipe);
                i += 1;
            }
            '(' => {
                toks.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                toks.push(Tok::RParen);
                i += 1;
            }
            ',' => {
                toks.push(Tok::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                toks.push(Tok::Declare);
                i += 2;
            }
            '=' => {
                toks.push(Tok::Declare);
                i += 1;
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                        s.push(match chars[i] {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            other => other,
                        });
                    } else {
                        s.push(chars[i]);
                    }
                    i += 1;
                }
                if i >= chars.len() {
                    return err("unterminated quoted string");
                }
                i += 1;
                toks.push(Tok::Str(s));
            }
            '`' => {
                let start = i + 1;
                i += 1;
                while i < chars.len() && chars[i] != '`' {
                    i += 1;
                }
                if i >= chars.len() {
                    return err("unterminated raw string");
                }
                toks.push(Tok::Str(chars[start..i].iter().collect()));
                i += 1;
            }
            '.' => {
                let start = i;
                i += 1;
                while i < chars.len() && word_char(chars[i]) {
                    i += 1;
                }
                let s: String = chars[start..i].iter().collect();
                toks.push(Tok::Field(field_chain(&s)));
            }
            '$' => {
                let start = i + 1;
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                let fstart = i;
                while i < chars.len() && word_char(chars[i]) {
                    i += 1;
                }
                let fields: String = chars[fstart..i].iter().collect();
                toks.push(Tok::Var(name, field_chain(&fields)));
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let s: String = chars[start..i].iter().collect();
                let n: f64 = s
                    .parse()
                    .map_err(|_| TemplateError(format!("bad number syntax: {s:?}")))?;
                toks.push(Tok::Num(n));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                toks.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            other => return err(format!("unexpected {other:?} in action")),
        }
    }
    Ok(toks)
}

fn parse_pipeline(toks: &[Tok]) -> Result<Pipeline, TemplateError> {
    let mut pos = 0;
    let p = parse_pipe_at(toks, &mut pos, true)?;
    if pos != toks.len() {
        return err("unexpected tokens after pipeline");
    }
    Ok(p)
}

fn parse_pipe_at(toks: &[Tok], pos: &mut usize, top: bool) -> Result<Pipeline, TemplateError> {
    let mut decl = Vec::new();
    if top {
        // `$a := ...` or `$a, $b := ...`
        let mut j = *pos;
        let mut names = Vec::new();
        while let Some(Tok::Var(n, f)) = toks.get(j) {
            if !f.is_empty() {
                break;
            }
            names.push(n.clone());
            j += 1;
            if toks.get(j) == Some(&Tok::Comma) {
                j += 1;
                continue;
            }
            break;
        }
        if !names.is_empty() && toks.get(j) == Some(&Tok::Declare) {
            decl = names;
            *pos = j + 1;
        }
    }
    let mut cmds = Vec::new();
    let mut cur = Vec::new();
    while let Some(t) = toks.get(*pos) {
        *pos += 1;
        match t {
            Tok::Pipe => {
                if cur.is_empty() {
                    return err("missing command before |");
                }
                cmds.push(std::mem::take(&mut cur));
            }
            Tok::LParen => {
                let sub = parse_pipe_at(toks, pos, false)?;
                if toks.get(*pos) != Some(&Tok::RParen) {
                    return err("unclosed left paren");
                }
                *pos += 1;
                cur.push(Arg::Sub(Box::new(sub)));
            }
            Tok::RParen => {
                *pos -= 1;
                break;
            }
            Tok::Field(f) => cur.push(Arg::Field(f.clone())),
            Tok::Var(n, f) => cur.push(Arg::Var(n.clone(), f.clone())),
            Tok::Str(s) => cur.push(Arg::Str(s.clone())),
            Tok::Num(n) => cur.push(Arg::Num(*n)),
            Tok::Ident(id) => cur.push(match id.as_str() {
                "true" => Arg::Bool(true),
                "false" => Arg::Bool(false),
                "nil" => Arg::Nil,
                _ => Arg::Ident(id.clone()),
            }),
            Tok::Declare | Tok::Comma => return err("unexpected := or ,"),
        }
    }
    if cur.is_empty() {
        return err("missing value for command");
    }
    cmds.push(cur);
    Ok(Pipeline { decl, cmds })
}

enum Stop {
    End,
    Else(Option<String>),
    Eof,
}

fn parse_list(items: &[Item], pos: &mut usize) -> Result<(Vec<Node>, Stop), TemplateError> {
    let mut nodes = Vec::new();
    while *pos < items.len() {
        let item = &items[*pos];
        *pos += 1;
        match item {
            Item::Text(t) => nodes.push(Node::Text(t.clone())),
            Item::Action(a) => {
                if a.starts_with("/*") {
                    continue;
                }
                let (kw, rest) = match a.split_once(char::is_whitespace) {
                    Some((k, r)) => (k, r.trim()),
                    None => (a.as_str(), ""),
                };
                match kw {
                    "end" => return Ok((nodes, Stop::End)),
                    "else" => {
                        let r = if rest.is_empty() {
                            None
                        } else {
                            Some(rest.to_string())
                        };
                        return Ok((nodes, Stop::Else(r)));
                    }
                    "if" | "with" | "range" => {
                        let node = parse_block(kw, rest, items, pos)?;
                        nodes.push(node);
                    }
                    _ => nodes.push(Node::Action(parse_pipeline(&lex(a)?)?)),
                }
            }
        }
    }
    Ok((nodes, Stop::Eof))
}

fn parse_block(
    kw: &str,
    rest: &str,
    items: &[Item],
    pos: &mut usize,
) -> Result<Node, TemplateError> {
    let pipe = parse_pipeline(&lex(rest)?)?;
    let (body, stop) = parse_list(items, pos)?;
    let else_body = match stop {
        Stop::End => Vec::new(),
        Stop::Eof => return err(format!("unexpected EOF in {kw}")),
        Stop::Else(None) => {
            let (e, stop) = parse_list(items, pos)?;
            if !matches!(stop, Stop::End) {
                return err(format!("expected end after else in {kw}"));
            }
            e
        }
        Stop::Else(Some(chain)) => {
            // `{{else if X}}` / `{{else with X}}`: a nested block that shares our `end`.
            let (k2, r2) = match chain.split_once(char::is_whitespace) {
                Some((k, r)) => (k.to_string(), r.trim().to_string()),
                None => return err("malformed else"),
            };
            if k2 != "if" && k2 != "with" {
                return err(format!("unexpected else {k2}"));
            }
            vec![parse_block(&k2, &r2, items, pos)?]
        }
    };
    Ok(match kw {
        "if" => Node::If(pipe, body, else_body),
        "with" => Node::With(pipe, body, else_body),
        _ => Node::Range(pipe, body, else_body),
    })
}

/// Execution state: the variable stack (`$` is the root).
struct Scope {
    vars: Vec<(String, Value)>,
}

impl Scope {
    fn get(&self, name: &str) -> Result<Value, TemplateError> {
        for (n, v) in self.vars.iter().rev() {
            if n == name {
                return Ok(v.clone());
            }
        }
        err(format!("undefined variable: ${name}"))
    }
}

/// Marker for a missing map key (prints as `<no value>`).
const MISSING: &str = "\u{0}<no value>";

fn missing() -> Value {
    Value::String(MISSING.to_string())
}

fn is_missing(v: &Value) -> bool {
    v.as_str() == Some(MISSING)
}

impl Template {
    /// Parses a template.
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let items = split_items(src)?;
        let mut pos = 0;
        let (nodes, stop) = parse_list(&items, &mut pos)?;
        match stop {
            Stop::Eof => Ok(Template { nodes }),
            Stop::End => err("unexpected {{end}}"),
            Stop::Else(_) => err("unexpected {{else}}"),
        }
    }

    /// Executes the template on `data`.
    pub fn render(&self, data: &Value) -> Result<String, TemplateError> {
        let mut out = String::new();
        let mut scope = Scope {
            vars: vec![(String::new(), data.clone())],
        };
        exec_list(&self.nodes, data, &mut scope, &mut out)?;
        Ok(out)
    }
}

fn exec_list(
    nodes: &[Node],
    dot: &Value,
    scope: &mut Scope,
    out: &mut String,
) -> Result<(), TemplateError> {
    let depth = scope.vars.len();
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => {
                let v = eval_pipeline(p, dot, scope)?;
                if p.decl.is_empty() {
                    out.push_str(&print_value(&v));
                }
            }
            Node::If(p, body, els) => {
                let v = eval_pipeline(p, dot, scope)?;
                let branch = if truthy(&v) { body } else { els };
                exec_list(branch, dot, scope, out)?;
            }
            Node::With(p, body, els) => {
                let v = eval_pipeline(p, dot, scope)?;
                if truthy(&v) {
                    exec_list(body, &v, scope, out)?;
                } else {
                    exec_list(els, dot, scope, out)?;
                }
            }
            Node::Range(p, body, els) => {
                let mut p2 = p.clone();
                let decl = std::mem::take(&mut p2.decl);
                let v = eval_pipeline(&p2, dot, scope)?;
                let entries: Vec<(Value, Value)> = match &v {
                    Value::Array(a) => a
                        .iter()
                        .enumerate()
                        .map(|(i, x)| (Value::from(i), x.clone()))
                        .collect(),
                    Value::Object(m) => m
                        .iter()
                        .map(|(k, x)| (Value::String(k.clone()), x.clone()))
                        .collect(),
                    Value::Null => Vec::new(),
                    v if is_missing(v) => Vec::new(),
                    Value::Number(n) => (0..n.as_u64().unwrap_or(0))
                        .map(|i| (Value::from(i), Value::from(i)))
                        .collect(),
                    _ => return err("range can't iterate over value"),
                };
                if entries.is_empty() {
                    exec_list(els, dot, scope, out)?;
                }
                for (k, x) in entries {
                    let d = scope.vars.len();
                    match decl.len() {
                        0 => {}
                        1 => scope.vars.push((decl[0].clone(), x.clone())),
                        _ => {
                            scope.vars.push((decl[0].clone(), k));
                            scope.vars.push((decl[1].clone(), x.clone()));
                        }
                    }
                    exec_list(body, &x, scope, out)?;
                    scope.vars.truncate(d);
                }
            }
        }
    }
    scope.vars.truncate(depth.max(1));
    Ok(())
}

fn eval_pipeline(p: &Pipeline, dot: &Value, scope: &mut Scope) -> Result<Value, TemplateError> {
    let mut piped: Option<Value> = None;
    for cmd in &p.cmds {
        piped = Some(eval_cmd(cmd, dot, scope, piped)?);
    }
    let v = piped.unwrap_or(Value::Null);
    if let Some(name) = p.decl.first() {
        scope.vars.push((name.clone(), v.clone()));
    }
    Ok(v)
}

fn field(v: &Value, chain: &[String]) -> Result<Value, TemplateError> {
    let mut cur = v.clone();
    for f in chain {
        cur = match &cur {
            Value::Object(m) => m.get(f).cloned().unwrap_or_else(missing),
            Value::Null => missing(),
            v if is_missing(v) => missing(),
            _ => {
                return err(format!(
                    "can't evaluate field {f} in type {}",
                    type_name(&cur)
                ))
            }
        };
    }
    Ok(cur)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

fn eval_arg(a: &Arg, dot: &Value, scope: &mut Scope) -> Result<Value, TemplateError> {
    Ok(match a {
        Arg::Field(chain) => field(dot, chain)?,
        Arg::Var(n, chain) => field(&scope.get(n)?, chain)?,
        Arg::Str(s) => Value::String(s.clone()),
        Arg::Num(n) => num(*n),
        Arg::Bool(b) => Value::Bool(*b),
        Arg::Nil => Value::Null,
        Arg::Sub(p) => eval_pipeline(p, dot, scope)?,
        Arg::Ident(f) => call(f, Vec::new())?,
    })
}

fn num(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

fn eval_cmd(
    cmd: &[Arg],
    dot: &Value,
    scope: &mut Scope,
    piped: Option<Value>,
) -> Result<Value, TemplateError> {
    if let Some(Arg::Ident(f)) = cmd.first() {
        let mut args = Vec::with_capacity(cmd.len());
        for a in &cmd[1..] {
            args.push(eval_arg(a, dot, scope)?);
        }
        if let Some(p) = piped {
            args.push(p);
        }
        return call(f, args);
    }
    if cmd.len() != 1 {
        return err("can't give argument to non-function");
    }
    if piped.is_some() {
        return err("can't pipe into a non-function");
    }
    eval_arg(&cmd[0], dot, scope)
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().unwrap_or(0.0) != 0.0,
        Value::String(s) => !s.is_empty() && s != MISSING,
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// Prints a value like Go's `%v`.
pub fn print_value(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s == MISSING => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(print_value).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Object(m) => {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}:{}", print_value(v)))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

fn clean(v: Value) -> Value {
    if is_missing(&v) {
        Value::Null
    } else {
        v
    }
}

fn as_str(v: &Value) -> String {
    match v {
        Value::String(s) if s != MISSING => s.clone(),
        other => print_value(other),
    }
}

fn cmp_values(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn call(name: &str, args: Vec<Value>) -> Result<Value, TemplateError> {
    let n = args.len();
    let need = |k: usize| -> Result<(), TemplateError> {
        if n < k {
            err(format!("wrong number of args for {name}: want {k} got {n}"))
        } else {
            Ok(())
        }
    };
    Ok(match name {
        "json" => {
            need(1)?;
            let v = clean(args[0].clone());
            Value::String(serde_json::to_string(&v).map_err(|e| TemplateError(e.to_string()))?)
        }
        "index" => {
            need(1)?;
            let mut cur = args[0].clone();
            for k in &args[1..] {
                cur = match (&cur, k) {
                    (Value::Object(m), key) => m.get(&as_str(key)).cloned().unwrap_or_else(missing),
                    (Value::Array(a), Value::Number(i)) => {
                        let i = i.as_u64().unwrap_or(u64::MAX) as usize;
                        match a.get(i) {
                            Some(v) => v.clone(),
                            None => {
                                return err(format!("error calling index: index out of range: {i}"))
                            }
                        }
                    }
                    (Value::Null, _) => missing(),
                    (v, _) if is_missing(v) => missing(),
                    _ => return err("error calling index: can't index item"),
                };
            }
            cur
        }
        "join" => {
            need(2)?;
            let sep = as_str(&args[1]);
            match &args[0] {
                Value::Array(a) => {
                    Value::String(a.iter().map(as_str).collect::<Vec<_>>().join(&sep))
                }
                Value::Null => Value::String(String::new()),
                v => Value::String(as_str(v)),
            }
        }
        "split" => {
            need(2)?;
            let s = as_str(&args[0]);
            let sep = as_str(&args[1]);
            Value::Array(
                s.split(sep.as_str())
                    .map(|p| Value::String(p.to_string()))
                    .collect(),
            )
        }
        "upper" => {
            need(1)?;
            Value::String(as_str(&args[0]).to_uppercase())
        }
        "lower" => {
            need(1)?;
            Value::String(as_str(&args[0]).to_lowercase())
        }
        "title" => {
            need(1)?;
            let s = as_str(&args[0]);
            let mut out = String::new();
            let mut start = true;
            for c in s.chars() {
                if start && c.is_alphabetic() {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                start = !c.is_alphanumeric();
            }
            Value::String(out)
        }
        "len" => {
            need(1)?;
            Value::from(match &args[0] {
                Value::Array(a) => a.len(),
                Value::Object(m) => m.len(),
                Value::String(s) if s != MISSING => s.chars().count(),
                Value::Null => 0,
                _ => return err("error calling len: len of unsupported type"),
            })
        }
        "print" => Value::String(args.iter().map(as_str).collect::<Vec<_>>().join("")),
        "println" => Value::String(format!(
            "{}\n",
            args.iter().map(as_str).collect::<Vec<_>>().join(" ")
        )),
        "printf" => {
            need(1)?;
            Value::String(printf(&as_str(&args[0]), &args[1..]))
        }
        "truncate" => {
            need(2)?;
            let s = as_str(&args[0]);
            let k = args[1].as_u64().unwrap_or(0) as usize;
            Value::String(s.chars().take(k).collect())
        }
        "pad" => {
            need(3)?;
            let s = as_str(&args[0]);
            let l = args[1].as_u64().unwrap_or(0) as usize;
            let r = args[2].as_u64().unwrap_or(0) as usize;
            Value::String(format!("{}{s}{}", " ".repeat(l), " ".repeat(r)))
        }
        "eq" => {
            need(2)?;
            let a = clean(args[0].clone());
            Value::Bool(args[1..].iter().any(|b| {
                let b = clean(b.clone());
                match (a.as_f64(), b.as_f64()) {
                    (Some(x), Some(y)) => x == y,
                    _ => a == b,
                }
            }))
        }
        "ne" => {
            need(2)?;
            let (a, b) = (clean(args[0].clone()), clean(args[1].clone()));
            Value::Bool(match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => x != y,
                _ => a != b,
            })
        }
        "lt" | "le" | "gt" | "ge" => {
            need(2)?;
            let Some(o) = cmp_values(&args[0], &args[1]) else {
                return err(format!(
                    "error calling {name}: incompatible types for comparison"
                ));
            };
            use std::cmp::Ordering::*;
            Value::Bool(match name {
                "lt" => o == Less,
                "le" => o != Greater,
                "gt" => o == Greater,
                _ => o != Less,
            })
        }
        "not" => {
            need(1)?;
            Value::Bool(!truthy(&args[0]))
        }
        "and" => {
            need(1)?;
            args.iter()
                .find(|a| !truthy(a))
                .cloned()
                .unwrap_or_else(|| args[n - 1].clone())
        }
        "or" => {
            need(1)?;
            args.iter()
                .find(|a| truthy(a))
                .cloned()
                .unwrap_or_else(|| args[n - 1].clone())
        }
        other => return err(format!("function \"{other}\" not defined")),
    })
}

fn printf(fmt: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut it = args.iter();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('q') => out.push_str(&format!("{:?}", it.next().map(as_str).unwrap_or_default())),
            Some(_) => out.push_str(&it.next().map(as_str).unwrap_or_default()),
            None => out.push('%'),
        }
    }
    out
}

/// A `--format` value prepared like docker's formatter: a `table` prefix is noted and
/// removed, and the two-character escapes `\t` and `\n` become real tabs and newlines.
#[derive(Debug, Clone)]
pub struct Format {
    /// Whether the output is a table (header row, tab-aligned columns).
    pub table: bool,
    /// The template for one item.
    pub template: Template,
}

impl Format {
    /// Parses a `--format` value.
    pub fn parse(format: &str) -> Result<Format, TemplateError> {
        let (table, body) = match format.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => (true, rest),
            _ => (false, format),
        };
        let body = body
            .trim_matches(' ')
            .replace("\\t", "\t")
            .replace("\\n", "\n");
        Ok(Format {
            table,
            template: Template::parse(&body)?,
        })
    }

    /// Renders items: for a table, a header row (the template run on `headers`) and
    /// aligned rows; otherwise one line per item.
    pub fn render(
        &self,
        items: &[Value],
        headers: &Map<String, Value>,
    ) -> Result<String, TemplateError> {
        let mut text = String::new();
        if self.table {
            let h = self.template.render(&Value::Object(headers.clone()))?;
            text.push_str(&h);
            text.push('\n');
        }
        for item in items {
            text.push_str(&self.template.render(item)?);
            text.push('\n');
        }
        Ok(if self.table {
            crate::format::tabwrite(&text)
        } else {
            text
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(t: &str, v: &Value) -> String {
        Template::parse(t).unwrap().render(v).unwrap()
    }

    #[test]
    fn fields_and_text() {
        let v = json!({"ID": "abc", "State": {"Running": true, "Pid": 42}, "NetworkSettings": {"IPAddress": "10.0.0.2"}});
        assert_eq!(r("id={{.ID}}", &v), "id=abc");
        assert_eq!(r("{{.State.Running}} {{.State.Pid}}", &v), "true 42");
        assert_eq!(r("{{.NetworkSettings.IPAddress}}", &v), "10.0.0.2");
        assert_eq!(r("{{.Nope}}", &v), "<no value>");
        assert_eq!(r("{{ .ID }}", &v), "abc");
        assert!(Template::parse("{{.ID}}")
            .unwrap()
            .render(&json!("x"))
            .is_err());
    }

    #[test]
    fn json_and_index() {
        let v = json!({"Config": {"Labels": {"x": "1", "a.b": "2"}, "Cmd": ["echo", "hi"]}});
        assert_eq!(r("{{json .Config.Labels}}", &v), r#"{"a.b":"2","x":"1"}"#);
        assert_eq!(r("{{index .Config.Labels \"x\"}}", &v), "1");
        assert_eq!(r("{{index .Config.Labels `a.b`}}", &v), "2");
        assert_eq!(r("{{index .Config.Cmd 1}}", &v), "hi");
        assert_eq!(r("{{.Config.Cmd | json}}", &v), r#"["echo","hi"]"#);
        assert_eq!(r("{{json .}}", &json!({"a": 1})), r#"{"a":1}"#);
        assert_eq!(r("{{.Config.Cmd}}", &v), "[echo hi]");
        assert_eq!(r("{{.Config.Labels}}", &v), "map[a.b:2 x:1]");
    }

    #[test]
    fn range_if_with_and_vars() {
        let v = json!({"Names": ["a", "b"], "M": {"k1": "v1", "k2": "v2"}, "E": [], "T": true, "F": false});
        assert_eq!(r("{{range .Names}}<{{.}}>{{end}}", &v), "<a><b>");
        assert_eq!(
            r("{{range $k, $v := .M}}{{$k}}={{$v}};{{end}}", &v),
            "k1=v1;k2=v2;"
        );
        assert_eq!(r("{{range .E}}x{{else}}empty{{end}}", &v), "empty");
        assert_eq!(r("{{if .T}}yes{{else}}no{{end}}", &v), "yes");
        assert_eq!(
            r("{{if .F}}yes{{else if .T}}elif{{else}}no{{end}}", &v),
            "elif"
        );
        assert_eq!(r("{{with .M}}{{.k1}}{{end}}", &v), "v1");
        assert_eq!(r("{{$x := .M.k2}}[{{$x}}]", &v), "[v2]");
        assert_eq!(r("{{range .Names}}{{$.M.k1}}{{end}}", &v), "v1v1");
        assert_eq!(r("{{if eq .M.k1 \"v1\"}}same{{end}}", &v), "same");
        assert_eq!(r("{{if not .F}}n{{end}}", &v), "n");
    }

    #[test]
    fn functions() {
        let v = json!({"N": ["a", "b"], "S": "Hello world"});
        assert_eq!(r("{{join .N \",\"}}", &v), "a,b");
        assert_eq!(
            r("{{upper .S}}|{{lower .S}}", &v),
            "HELLO WORLD|hello world"
        );
        assert_eq!(r("{{len .N}}", &v), "2");
        assert_eq!(r("{{title \"foo bar\"}}", &v), "Foo Bar");
        assert_eq!(r("{{index (split .S \" \") 1}}", &v), "world");
        assert_eq!(r("{{printf \"%s-%d\" .S 3}}", &v), "Hello world-3");
        assert_eq!(r("{{println .S}}", &v), "Hello world\n");
        assert_eq!(r("{{truncate .S 5}}", &v), "Hello");
    }

    #[test]
    fn trim_markers() {
        let v = json!({"A": "x"});
        assert_eq!(r("a  {{- .A -}}  b", &v), "axb");
    }

    #[test]
    fn parse_errors() {
        assert!(Template::parse("{{.A").is_err());
        assert!(Template::parse("{{if .A}}x").is_err());
        assert!(Template::parse("{{end}}").is_err());
        assert!(Template::parse("{{nosuch .A}}")
            .unwrap()
            .render(&json!({}))
            .is_err());
    }

    #[test]
    fn table_format() {
        let f = Format::parse("table {{.ID}}\\t{{.Name}}").unwrap();
        assert!(f.table);
        let mut h = Map::new();
        h.insert("ID".into(), json!("CONTAINER ID"));
        h.insert("Name".into(), json!("NAME"));
        let out = f.render(&[json!({"ID": "abc", "Name": "n1"})], &h).unwrap();
        assert_eq!(out, "CONTAINER ID   NAME\nabc            n1\n");
        let f = Format::parse("{{.ID}}:{{.Name}}").unwrap();
        assert!(!f.table);
        assert_eq!(
            f.render(&[json!({"ID": "a", "Name": "b"})], &h).unwrap(),
            "a:b\n"
        );
    }
}
