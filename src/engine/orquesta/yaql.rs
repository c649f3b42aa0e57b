//! The YAQL subset Orquesta workflows use inside `<% … %>`: a tokenizer, a Pratt parser into a
//! small AST, and an evaluator over `serde_json::Value`.
//!
//! Supported: literals (numbers, quoted strings, `true`/`false`/`null`, and YAQL "keyword
//! strings": a bare identifier such as `ctx(name)`'s `name` is the string `"name"`), `$` (the
//! data root, i.e. the workflow context, rebound to the element inside `select`/`where`),
//! attribute and index access (`a.b`, `a[0]`, `a['k']`), method syntax (`x.f(y)` is `f(x, y)`),
//! `= != < > <= >=` (`=` is equality; `==` is accepted too), `and or not`, `in`,
//! `+ - * / mod`, list `[…]` and dict `{k => v}` literals, named arguments `f(k => v)`, and the
//! pure functions in `builtin`. Workflow functions (`ctx()`, `result()`, `task()`, `st2kv()`,
//! the st2 filters…) come from the caller through `Host`.
//!
//! This module must stay pure: no I/O, no global state. Expressions are untrusted pack content
//! evaluated over untrusted results, so parsing and evaluation are bounded by `YAQL_MAX_DEPTH`,
//! `YAQL_FUEL`, `MAX_YAQL_BYTES`, `YAQL_MAX_LIST` and `YAQL_MAX_STRING`, and every failure is a
//! `YaqlError`, never a panic.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Map, Number, Value as Json};

/// Evaluation steps (AST node visits, plus one per element a builtin walks) one expression may
/// take. Real workflow expressions take tens of steps; `select` over a few thousand results
/// stays far below this, while a runaway expression stops within milliseconds.
pub const YAQL_FUEL: u64 = 100_000;

/// Deepest nesting of an expression (parentheses, calls, operator and attribute chains). It
/// bounds the recursion of the parser and the evaluator (and the drop of the AST), so hostile
/// input cannot overflow the stack; real expressions nest a handful of levels.
pub const YAQL_MAX_DEPTH: usize = 64;

/// Longest expression source accepted. Expressions are one-liners in workflow files.
pub const MAX_YAQL_BYTES: usize = 64 * 1024;

/// Most elements a list built by an expression (`range`, `+`, `zip`, literals) may have:
/// keeps a one-line expression from allocating gigabytes.
pub const YAQL_MAX_LIST: usize = 100_000;

/// Longest string an expression may build (concatenation, `join`, `*`): the render cap of the
/// Jinja side, so both languages produce values of the same bounded size.
pub const YAQL_MAX_STRING: usize = crate::expr::MAX_RENDER_BYTES;

/// Why parsing or evaluating failed. `MissingKey` is kept apart because Orquesta words it
/// differently ("Unable to resolve key …").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YaqlError {
    #[error("Parse error: {msg} at position {pos}")]
    Parse { pos: usize, msg: String },
    #[error("{0}")]
    MissingKey(String),
    #[error("{0}")]
    Eval(String),
    #[error("expression ran out of fuel: it took more than {YAQL_FUEL} evaluation steps (runaway expression?)")]
    OutOfFuel,
    #[error("expression nested deeper than {YAQL_MAX_DEPTH} levels")]
    TooDeep,
    #[error("{0}")]
    TooLarge(String),
}

fn eval_err(msg: impl Into<String>) -> YaqlError {
    YaqlError::Eval(msg.into())
}

/// What the workflow lends to an evaluation: the data root and the functions that need
/// workflow state. `call` returns `None` for names it does not know (the evaluator then tries
/// its builtins); a borrowed result avoids copying large task results.
pub trait Host {
    /// The data root: `$` and `ctx()`.
    fn root(&self) -> &Json;
    fn call(&self, name: &str, args: &[Json], kwargs: &[(String, Json)]) -> Option<Result<Cow<'_, Json>, YaqlError>>;
}

// ---------------------------------------------------------------------------------------------
// Tokenizer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Int(i64),
    Float(f64),
    Str(String),
    Ident(String),
    /// `$` (empty name) or `$name`.
    Dollar(String),
    Sym(&'static str),
    /// A character no token starts with; the parser reports it where it stands.
    Bad(char),
    End,
}

const SYMBOLS: [&str; 21] =
    ["=>", "==", "!=", "<=", ">=", "(", ")", "[", "]", "{", "}", ",", ".", ":", "=", "<", ">", "+", "-", "*", "/"];

fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>, YaqlError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_digit() {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let mut float = false;
            if i + 1 < bytes.len() && bytes[i] == b'.' && bytes[i + 1].is_ascii_digit() {
                float = true;
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
                let mut j = i + 1;
                if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
                    j += 1;
                }
                if j < bytes.len() && bytes[j].is_ascii_digit() {
                    float = true;
                    i = j;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let text = &src[start..i];
            let tok = if float {
                Tok::Float(text.parse().map_err(|_| parse_err(start, format!("bad number '{text}'")))?)
            } else {
                Tok::Int(text.parse().map_err(|_| parse_err(start, format!("integer '{text}' is too large")))?)
            };
            out.push((tok, start));
            continue;
        }
        if c == b'\'' || c == b'"' {
            let (s, next) = lex_string(src, i)?;
            out.push((Tok::Str(s), start));
            i = next;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push((Tok::Ident(src[start..i].to_string()), start));
            continue;
        }
        if c == b'$' {
            i += 1;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push((Tok::Dollar(src[start + 1..i].to_string()), start));
            continue;
        }
        match SYMBOLS.iter().find(|s| src[i..].starts_with(**s)) {
            Some(s) => {
                out.push((Tok::Sym(s), start));
                i += s.len();
            }
            None => {
                let ch = src[i..].chars().next().unwrap_or('?');
                out.push((Tok::Bad(ch), start));
                i += ch.len_utf8();
            }
        }
    }
    out.push((Tok::End, src.len()));
    Ok(out)
}

fn parse_err(pos: usize, msg: impl Into<String>) -> YaqlError {
    YaqlError::Parse { pos, msg: msg.into() }
}

/// A quoted string starting at `start` (the quote); returns the value and the index after it.
fn lex_string(src: &str, start: usize) -> Result<(String, usize), YaqlError> {
    let mut chars = src[start..].char_indices();
    let quote = chars.next().map(|(_, c)| c).unwrap_or('\'');
    let mut out = String::new();
    while let Some((off, c)) = chars.next() {
        if c == quote {
            return Ok((out, start + off + c.len_utf8()));
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some((_, e)) = chars.next() else { break };
        match e {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            '0' => out.push('\0'),
            'u' => {
                let hex: String = chars.by_ref().take(4).map(|(_, c)| c).collect();
                let ch = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                out.push(ch.ok_or_else(|| parse_err(start, format!("bad escape '\\u{hex}'")))?);
            }
            '\\' | '\'' | '"' | '/' => out.push(e),
            // Unknown escapes stay as written, as in Python (regexes rely on it: "\w+").
            other => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    Err(parse_err(start, "unterminated string"))
}

// ---------------------------------------------------------------------------------------------
// Parser

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Lit(Json),
    /// `$`: the data root (or the current element inside a `select`/`where` lambda).
    Root,
    /// `$name`.
    Var(String),
    List(Vec<Node>),
    Dict(Vec<(Node, Node)>),
    Attr(Box<Node>, String),
    Index(Box<Node>, Box<Node>),
    Call {
        name: String,
        args: Vec<Node>,
        kwargs: Vec<(String, Node)>,
    },
    Not(Box<Node>),
    Neg(Box<Node>),
    Bin(BinOp, Box<Node>, Box<Node>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    In,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

/// A parsed expression with its source (for error messages).
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub source: String,
    pub node: Node,
}

/// Parses one YAQL expression (without the `<% %>` delimiters).
pub fn parse(src: &str) -> Result<Expr, YaqlError> {
    if src.len() > MAX_YAQL_BYTES {
        return Err(YaqlError::TooLarge(format!("expression longer than {MAX_YAQL_BYTES} bytes")));
    }
    let toks = tokenize(src)?;
    let mut p = Parser { toks, pos: 0, depth: 0 };
    if p.peek() == &Tok::End {
        return Err(parse_err(0, "empty expression"));
    }
    let node = p.expr(0)?;
    match p.peek() {
        Tok::End => Ok(Expr { source: src.to_string(), node }),
        t => Err(parse_err(p.at(), format!("unexpected {}", describe(t)))),
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Int(i) => format!("number {i}"),
        Tok::Float(f) => format!("number {f}"),
        Tok::Str(s) => format!("string '{s}'"),
        Tok::Ident(s) => format!("'{s}'"),
        Tok::Dollar(s) => format!("'${s}'"),
        Tok::Sym(s) => format!("'{s}'"),
        Tok::Bad(c) => format!("'{c}'"),
        Tok::End => "end of expression".to_string(),
    }
}

/// Positional and named arguments of a call.
type CallArgs = (Vec<Node>, Vec<(String, Node)>);

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    depth: usize,
}

/// Binding powers (left, right) of the infix operators; higher binds tighter.
fn infix(t: &Tok) -> Option<(u8, u8, BinOp)> {
    Some(match t {
        Tok::Ident(s) if s == "or" => (1, 2, BinOp::Or),
        Tok::Ident(s) if s == "and" => (3, 4, BinOp::And),
        Tok::Sym("=") | Tok::Sym("==") => (7, 8, BinOp::Eq),
        Tok::Sym("!=") => (7, 8, BinOp::Ne),
        Tok::Sym("<") => (7, 8, BinOp::Lt),
        Tok::Sym(">") => (7, 8, BinOp::Gt),
        Tok::Sym("<=") => (7, 8, BinOp::Le),
        Tok::Sym(">=") => (7, 8, BinOp::Ge),
        Tok::Ident(s) if s == "in" => (7, 8, BinOp::In),
        Tok::Sym("+") => (9, 10, BinOp::Add),
        Tok::Sym("-") => (9, 10, BinOp::Sub),
        Tok::Sym("*") => (11, 12, BinOp::Mul),
        Tok::Sym("/") => (11, 12, BinOp::Div),
        Tok::Ident(s) if s == "mod" => (11, 12, BinOp::Mod),
        _ => return None,
    })
}

/// `not` binds looser than comparisons (`not a = b` is `not (a = b)`), tighter than `and`.
const NOT_BP: u8 = 5;
const NEG_BP: u8 = 13;
const POSTFIX_BP: u8 = 15;

impl Parser {
    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).map(|t| &t.0).unwrap_or(&Tok::End)
    }
    fn peek2(&self) -> &Tok {
        self.toks.get(self.pos + 1).map(|t| &t.0).unwrap_or(&Tok::End)
    }
    fn at(&self) -> usize {
        self.toks.get(self.pos).or(self.toks.last()).map(|t| t.1).unwrap_or(0)
    }
    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }
    fn expect(&mut self, sym: &'static str) -> Result<(), YaqlError> {
        if self.peek() == &Tok::Sym(sym) {
            self.pos += 1;
            Ok(())
        } else {
            Err(parse_err(self.at(), format!("expected '{sym}', found {}", describe(self.peek()))))
        }
    }

    fn expr(&mut self, min_bp: u8) -> Result<Node, YaqlError> {
        self.depth += 1;
        let r = self.expr_inner(min_bp);
        self.depth -= 1;
        r
    }

    fn expr_inner(&mut self, min_bp: u8) -> Result<Node, YaqlError> {
        if self.depth > YAQL_MAX_DEPTH {
            return Err(YaqlError::TooDeep);
        }
        let mut lhs = self.prefix()?;
        // Every operator or postfix applied here nests the tree one level deeper; count it
        // against the same limit as recursion so left-deep chains are bounded too.
        let mut chain = 0usize;
        loop {
            if self.depth + chain > YAQL_MAX_DEPTH {
                return Err(YaqlError::TooDeep);
            }
            let t = self.peek().clone();
            if matches!(t, Tok::Sym(".") | Tok::Sym("[")) && POSTFIX_BP >= min_bp {
                self.pos += 1;
                lhs = if t == Tok::Sym(".") { self.member(lhs)? } else { self.index(lhs)? };
                chain += 1;
                continue;
            }
            let Some((lbp, rbp, op)) = infix(&t) else { break };
            if lbp < min_bp {
                break;
            }
            self.pos += 1;
            let rhs = self.expr(rbp)?;
            lhs = Node::Bin(op, Box::new(lhs), Box::new(rhs));
            chain += 1;
        }
        Ok(lhs)
    }

    fn member(&mut self, recv: Node) -> Result<Node, YaqlError> {
        let pos = self.at();
        match self.next() {
            Tok::Ident(name) => {
                if self.peek() == &Tok::Sym("(") {
                    let (mut args, kwargs) = self.call_args()?;
                    args.insert(0, recv);
                    Ok(Node::Call { name, args, kwargs })
                } else {
                    Ok(Node::Attr(Box::new(recv), name))
                }
            }
            t => Err(parse_err(pos, format!("expected a name after '.', found {}", describe(&t)))),
        }
    }

    fn index(&mut self, recv: Node) -> Result<Node, YaqlError> {
        let idx = self.expr(0)?;
        self.expect("]")?;
        Ok(Node::Index(Box::new(recv), Box::new(idx)))
    }

    fn call_args(&mut self) -> Result<CallArgs, YaqlError> {
        self.expect("(")?;
        let mut args = Vec::new();
        let mut kwargs = Vec::new();
        if self.peek() == &Tok::Sym(")") {
            self.pos += 1;
            return Ok((args, kwargs));
        }
        loop {
            if let (Tok::Ident(name), Tok::Sym("=>")) = (self.peek().clone(), self.peek2().clone()) {
                self.pos += 2;
                kwargs.push((name, self.expr(0)?));
            } else {
                if !kwargs.is_empty() {
                    return Err(parse_err(self.at(), "positional argument after a named argument"));
                }
                args.push(self.expr(0)?);
            }
            let pos = self.at();
            match self.next() {
                Tok::Sym(",") => continue,
                Tok::Sym(")") => return Ok((args, kwargs)),
                t => return Err(parse_err(pos, format!("expected ',' or ')', found {}", describe(&t)))),
            }
        }
    }

    fn prefix(&mut self) -> Result<Node, YaqlError> {
        let pos = self.at();
        match self.next() {
            Tok::Int(i) => Ok(Node::Lit(Json::from(i))),
            Tok::Float(f) => Ok(Node::Lit(Number::from_f64(f).map(Json::Number).unwrap_or(Json::Null))),
            Tok::Str(s) => Ok(Node::Lit(Json::String(s))),
            Tok::Dollar(name) if name.is_empty() => Ok(Node::Root),
            Tok::Dollar(name) => Ok(Node::Var(name)),
            Tok::Ident(name) => match name.as_str() {
                "true" | "True" => Ok(Node::Lit(Json::Bool(true))),
                "false" | "False" => Ok(Node::Lit(Json::Bool(false))),
                "null" | "None" => Ok(Node::Lit(Json::Null)),
                "not" => Ok(Node::Not(Box::new(self.expr(NOT_BP)?))),
                _ if self.peek() == &Tok::Sym("(") => {
                    let (args, kwargs) = self.call_args()?;
                    Ok(Node::Call { name, args, kwargs })
                }
                // A YAQL keyword string: an unquoted name is the string itself.
                _ => Ok(Node::Lit(Json::String(name))),
            },
            Tok::Sym("(") => {
                let e = self.expr(0)?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Sym("-") => Ok(Node::Neg(Box::new(self.expr(NEG_BP)?))),
            Tok::Sym("+") => self.expr(NEG_BP),
            Tok::Sym("[") => {
                let mut items = Vec::new();
                if self.peek() != &Tok::Sym("]") {
                    loop {
                        items.push(self.expr(0)?);
                        if self.peek() == &Tok::Sym(",") {
                            self.pos += 1;
                            continue;
                        }
                        break;
                    }
                }
                self.expect("]")?;
                Ok(Node::List(items))
            }
            Tok::Sym("{") => {
                let mut entries = Vec::new();
                if self.peek() != &Tok::Sym("}") {
                    loop {
                        let k = self.expr(0)?;
                        let pos = self.at();
                        match self.next() {
                            Tok::Sym("=>") | Tok::Sym(":") => {}
                            t => return Err(parse_err(pos, format!("expected '=>' in dict, found {}", describe(&t)))),
                        }
                        entries.push((k, self.expr(0)?));
                        if self.peek() == &Tok::Sym(",") {
                            self.pos += 1;
                            continue;
                        }
                        break;
                    }
                }
                self.expect("}")?;
                Ok(Node::Dict(entries))
            }
            t => Err(parse_err(pos, format!("unexpected {}", describe(&t)))),
        }
    }
}

impl Expr {
    /// Function names the expression calls (for reporting unsupported ones at load time).
    pub fn functions(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect_calls(&self.node, &mut out);
        out
    }
}

fn collect_calls(n: &Node, out: &mut Vec<String>) {
    match n {
        Node::Call { name, args, kwargs } => {
            out.push(name.clone());
            args.iter().for_each(|a| collect_calls(a, out));
            kwargs.iter().for_each(|(_, a)| collect_calls(a, out));
        }
        Node::List(items) => items.iter().for_each(|a| collect_calls(a, out)),
        Node::Dict(items) => items.iter().for_each(|(k, v)| {
            collect_calls(k, out);
            collect_calls(v, out);
        }),
        Node::Attr(a, _) | Node::Not(a) | Node::Neg(a) => collect_calls(a, out),
        Node::Index(a, b) | Node::Bin(_, a, b) => {
            collect_calls(a, out);
            collect_calls(b, out);
        }
        Node::Lit(_) | Node::Root | Node::Var(_) => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluator

/// Evaluates `expr` against `host` with a fresh fuel budget.
pub fn evaluate(expr: &Expr, host: &dyn Host) -> Result<Json, YaqlError> {
    let mut ev = Eval { host, fuel: YAQL_FUEL, depth: 0 };
    ev.eval(&expr.node, host.root()).map(Cow::into_owned)
}

/// Names the evaluator implements itself (besides the lambda functions); the rest must come
/// from the `Host`.
pub const BUILTINS: &[&str] = &[
    "ctx",
    "len",
    "length",
    "count",
    "str",
    "int",
    "float",
    "bool",
    "list",
    "toList",
    "dict",
    "keys",
    "values",
    "items",
    "contains",
    "containsKey",
    "containsValue",
    "json",
    "zip",
    "join",
    "split",
    "lower",
    "upper",
    "toLower",
    "toUpper",
    "trim",
    "strip",
    "replace",
    "startsWith",
    "endsWith",
    "isList",
    "isDict",
    "isString",
    "isInteger",
    "isNumber",
    "isBoolean",
    "range",
    "abs",
    "min",
    "max",
    "sum",
    "first",
    "last",
    "distinct",
    "flatten",
    "select",
    "where",
    "filter",
    "any",
    "all",
];

struct Eval<'h> {
    host: &'h dyn Host,
    fuel: u64,
    depth: usize,
}

impl<'h> Eval<'h> {
    fn burn(&mut self, n: u64) -> Result<(), YaqlError> {
        if self.fuel < n {
            self.fuel = 0;
            return Err(YaqlError::OutOfFuel);
        }
        self.fuel -= n;
        Ok(())
    }

    fn eval<'v>(&mut self, node: &Node, dollar: &'v Json) -> Result<Cow<'v, Json>, YaqlError>
    where
        'h: 'v,
    {
        self.burn(1)?;
        self.depth += 1;
        let r = if self.depth > YAQL_MAX_DEPTH { Err(YaqlError::TooDeep) } else { self.eval_inner(node, dollar) };
        self.depth -= 1;
        r
    }

    fn eval_inner<'v>(&mut self, node: &Node, dollar: &'v Json) -> Result<Cow<'v, Json>, YaqlError>
    where
        'h: 'v,
    {
        match node {
            Node::Lit(v) => Ok(Cow::Owned(v.clone())),
            Node::Root => Ok(Cow::Borrowed(dollar)),
            Node::Var(name) => Err(eval_err(format!("Unknown variable \"${name}\""))),
            Node::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    out.push(self.eval(i, dollar)?.into_owned());
                }
                Ok(Cow::Owned(Json::Array(out)))
            }
            Node::Dict(entries) => {
                let mut out = Map::new();
                for (k, v) in entries {
                    let key = match self.eval(k, dollar)?.into_owned() {
                        Json::String(s) => s,
                        other => py_str(&other),
                    };
                    out.insert(key, self.eval(v, dollar)?.into_owned());
                }
                Ok(Cow::Owned(Json::Object(out)))
            }
            Node::Attr(recv, name) => {
                let r = self.eval(recv, dollar)?;
                attr(r, name)
            }
            Node::Index(recv, idx) => {
                let i = self.eval(idx, dollar)?.into_owned();
                let r = self.eval(recv, dollar)?;
                index(r, &i)
            }
            Node::Not(a) => {
                let v = self.eval(a, dollar)?;
                Ok(Cow::Owned(Json::Bool(!truthy(&v))))
            }
            Node::Neg(a) => {
                let v = self.eval(a, dollar)?;
                match v.as_ref() {
                    Json::Number(n) => Ok(Cow::Owned(match n.as_i64() {
                        Some(i) => Json::from(i.checked_neg().ok_or_else(|| eval_err("integer overflow"))?),
                        None => float(-n.as_f64().unwrap_or(0.0)),
                    })),
                    other => Err(eval_err(format!("bad operand type for unary -: '{}'", type_name(other)))),
                }
            }
            Node::Bin(BinOp::And, a, b) => {
                let l = self.eval(a, dollar)?;
                if !truthy(l.as_ref()) { Ok(l) } else { self.eval(b, dollar) }
            }
            Node::Bin(BinOp::Or, a, b) => {
                let l = self.eval(a, dollar)?;
                if truthy(l.as_ref()) { Ok(l) } else { self.eval(b, dollar) }
            }
            Node::Bin(op, a, b) => {
                let l = self.eval(a, dollar)?;
                let r = self.eval(b, dollar)?;
                self.binary(*op, &l, &r).map(Cow::Owned)
            }
            Node::Call { name, args, kwargs } => self.call(name, args, kwargs, dollar),
        }
    }

    fn call<'v>(
        &mut self,
        name: &str,
        args: &[Node],
        kwargs: &[(String, Node)],
        dollar: &'v Json,
    ) -> Result<Cow<'v, Json>, YaqlError>
    where
        'h: 'v,
    {
        // ctx() is by far the most frequent call: serve it without copying the context.
        if name == "ctx" && kwargs.is_empty() && args.len() <= 1 {
            let root: &'h Json = self.host.root();
            let Some(a) = args.first() else { return Ok(Cow::Borrowed(root)) };
            let key = self.eval(a, dollar)?;
            let Json::String(key) = key.as_ref() else {
                return Err(eval_err(format!("ctx() takes a variable name, got {}", type_name(&key))));
            };
            return match root.get(key.as_str()) {
                Some(v) => Ok(Cow::Borrowed(v)),
                None => Err(YaqlError::MissingKey(key.clone())),
            };
        }
        if matches!(name, "select" | "where" | "filter" | "any" | "all") && args.len() == 2 && kwargs.is_empty() {
            return self.lambda(name, &args[0], &args[1], dollar).map(Cow::Owned);
        }
        let mut vals = Vec::with_capacity(args.len());
        for a in args {
            vals.push(self.eval(a, dollar)?.into_owned());
        }
        let mut kw = Vec::with_capacity(kwargs.len());
        for (k, a) in kwargs {
            kw.push((k.clone(), self.eval(a, dollar)?.into_owned()));
        }
        let host: &'h dyn Host = self.host;
        if let Some(r) = host.call(name, &vals, &kw) {
            return r;
        }
        let work: usize = vals.iter().map(size_hint).sum();
        self.burn(work as u64)?;
        builtin(name, vals, kw).map(Cow::Owned)
    }

    fn lambda(&mut self, name: &str, coll: &Node, body: &Node, dollar: &Json) -> Result<Json, YaqlError> {
        let c = self.eval(coll, dollar)?;
        let items: Vec<&Json> = match c.as_ref() {
            Json::Array(a) => a.iter().collect(),
            Json::Object(m) => m.values().collect(),
            other => return Err(eval_err(format!("{name}() needs a collection, got {}", type_name(other)))),
        };
        let mut out = Vec::new();
        for item in items {
            let v = self.eval(body, item)?;
            match name {
                "select" => out.push(v.into_owned()),
                "any" if truthy(&v) => return Ok(Json::Bool(true)),
                "all" if !truthy(&v) => return Ok(Json::Bool(false)),
                "where" | "filter" if truthy(&v) => out.push(item.clone()),
                _ => {}
            }
        }
        Ok(match name {
            "any" => Json::Bool(false),
            "all" => Json::Bool(true),
            _ => Json::Array(out),
        })
    }

    fn binary(&mut self, op: BinOp, l: &Json, r: &Json) -> Result<Json, YaqlError> {
        Ok(match op {
            BinOp::Eq => Json::Bool(py_eq(l, r)),
            BinOp::Ne => Json::Bool(!py_eq(l, r)),
            BinOp::Lt => Json::Bool(py_cmp(l, r)? == Ordering::Less),
            BinOp::Gt => Json::Bool(py_cmp(l, r)? == Ordering::Greater),
            BinOp::Le => Json::Bool(py_cmp(l, r)? != Ordering::Greater),
            BinOp::Ge => Json::Bool(py_cmp(l, r)? != Ordering::Less),
            BinOp::In => {
                self.burn(size_hint(r) as u64)?;
                Json::Bool(contains(r, l)?)
            }
            BinOp::Add => match (l, r) {
                (Json::String(a), Json::String(b)) => {
                    check_string(a.len() + b.len())?;
                    Json::String(format!("{a}{b}"))
                }
                (Json::Array(a), Json::Array(b)) => {
                    check_list(a.len() + b.len())?;
                    self.burn((a.len() + b.len()) as u64)?;
                    Json::Array(a.iter().chain(b.iter()).cloned().collect())
                }
                (Json::Object(a), Json::Object(b)) => {
                    self.burn((a.len() + b.len()) as u64)?;
                    let mut m = a.clone();
                    m.extend(b.iter().map(|(k, v)| (k.clone(), v.clone())));
                    Json::Object(m)
                }
                _ => arith(op, l, r)?,
            },
            BinOp::Mul => match (l, r) {
                (Json::String(s), Json::Number(n)) | (Json::Number(n), Json::String(s)) => {
                    let times = n.as_i64().ok_or_else(|| eval_err("can't multiply a string by a float"))?.max(0);
                    check_string(s.len().saturating_mul(times as usize))?;
                    Json::String(s.repeat(times as usize))
                }
                _ => arith(op, l, r)?,
            },
            BinOp::Sub | BinOp::Div | BinOp::Mod => arith(op, l, r)?,
            BinOp::And | BinOp::Or => return Err(eval_err("internal: short-circuit operator")),
        })
    }
}

fn size_hint(v: &Json) -> usize {
    match v {
        Json::Array(a) => a.len(),
        Json::Object(m) => m.len(),
        Json::String(s) => s.len() / 64,
        _ => 0,
    }
}

fn check_list(n: usize) -> Result<(), YaqlError> {
    if n > YAQL_MAX_LIST {
        return Err(YaqlError::TooLarge(format!("list longer than {YAQL_MAX_LIST} elements")));
    }
    Ok(())
}

fn check_string(n: usize) -> Result<(), YaqlError> {
    if n > YAQL_MAX_STRING {
        return Err(YaqlError::TooLarge(format!("string longer than {YAQL_MAX_STRING} bytes")));
    }
    Ok(())
}

fn attr<'v>(recv: Cow<'v, Json>, name: &str) -> Result<Cow<'v, Json>, YaqlError> {
    match recv {
        Cow::Borrowed(Json::Object(m)) => match m.get(name) {
            Some(v) => Ok(Cow::Borrowed(v)),
            None => Err(YaqlError::MissingKey(name.to_string())),
        },
        Cow::Owned(Json::Object(mut m)) => match m.remove(name) {
            Some(v) => Ok(Cow::Owned(v)),
            None => Err(YaqlError::MissingKey(name.to_string())),
        },
        // What YAQL says when a property is read from a non-dict.
        _ => Err(eval_err(format!("NoFunctionRegisteredException: Unknown function \"#property#{name}\""))),
    }
}

fn index<'v>(recv: Cow<'v, Json>, idx: &Json) -> Result<Cow<'v, Json>, YaqlError> {
    match (recv, idx) {
        (recv @ (Cow::Borrowed(Json::Object(_)) | Cow::Owned(Json::Object(_))), Json::String(k)) => attr(recv, k),
        (Cow::Borrowed(Json::Array(a)), Json::Number(n)) => {
            let i = list_index(a.len(), n)?;
            Ok(Cow::Borrowed(&a[i]))
        }
        (Cow::Owned(Json::Array(mut a)), Json::Number(n)) => {
            let i = list_index(a.len(), n)?;
            Ok(Cow::Owned(a.swap_remove(i)))
        }
        (r, Json::Number(n)) if r.is_string() => {
            let s = r.as_str().unwrap_or_default();
            let chars: Vec<char> = s.chars().collect();
            let i = list_index(chars.len(), n)?;
            Ok(Cow::Owned(Json::String(chars[i].to_string())))
        }
        (r, i) => Err(eval_err(format!("cannot index {} with {}", type_name(&r), type_name(i)))),
    }
}

/// A Python-style list index (negative counts from the end), checked against `len`.
fn list_index(len: usize, n: &Number) -> Result<usize, YaqlError> {
    let i = n.as_i64().ok_or_else(|| eval_err("list indices must be integers"))?;
    let real = if i < 0 { len as i64 + i } else { i };
    if real < 0 || real >= len as i64 {
        return Err(eval_err(format!("list index {i} out of range")));
    }
    Ok(real as usize)
}

pub fn type_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(n) if n.is_f64() => "float",
        Json::Number(_) => "integer",
        Json::String(_) => "string",
        Json::Array(_) => "list",
        Json::Object(_) => "dict",
    }
}

/// Python truthiness.
pub fn truthy(v: &Json) -> bool {
    match v {
        Json::Null => false,
        Json::Bool(b) => *b,
        Json::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Json::String(s) => !s.is_empty(),
        Json::Array(a) => !a.is_empty(),
        Json::Object(m) => !m.is_empty(),
    }
}

fn float(f: f64) -> Json {
    Number::from_f64(f).map(Json::Number).unwrap_or(Json::Null)
}

/// Python equality: `1 = 1.0`, otherwise structural.
fn py_eq(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

/// Python ordering; comparing unrelated types is an error as in Python 3.
fn py_cmp(a: &Json, b: &Json) -> Result<Ordering, YaqlError> {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => Ok(i.cmp(&j)),
            _ => x.as_f64().partial_cmp(&y.as_f64()).ok_or_else(|| eval_err("cannot compare NaN")),
        },
        (Json::String(x), Json::String(y)) => Ok(x.cmp(y)),
        (Json::Bool(x), Json::Bool(y)) => Ok(x.cmp(y)),
        (Json::Array(x), Json::Array(y)) => {
            for (p, q) in x.iter().zip(y.iter()) {
                match py_cmp(p, q)? {
                    Ordering::Equal => continue,
                    o => return Ok(o),
                }
            }
            Ok(x.len().cmp(&y.len()))
        }
        _ => Err(eval_err(format!("cannot compare {} with {}", type_name(a), type_name(b)))),
    }
}

fn contains(coll: &Json, item: &Json) -> Result<bool, YaqlError> {
    match coll {
        Json::Array(a) => Ok(a.iter().any(|x| py_eq(x, item))),
        Json::Object(m) => Ok(match item {
            Json::String(k) => m.contains_key(k.as_str()),
            _ => false,
        }),
        Json::String(s) => match item {
            Json::String(sub) => Ok(s.contains(sub.as_str())),
            other => Err(eval_err(format!("'in <string>' requires string as left operand, not {}", type_name(other)))),
        },
        other => Err(eval_err(format!("argument of type '{}' is not iterable", type_name(other)))),
    }
}

/// Integer arithmetic stays integer (checked, floor division and modulo as in YAQL/Python);
/// anything involving a float is float.
fn arith(op: BinOp, l: &Json, r: &Json) -> Result<Json, YaqlError> {
    let (Json::Number(a), Json::Number(b)) = (l, r) else {
        let sym = match op {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            _ => "mod",
        };
        return Err(eval_err(format!(
            "unsupported operand type(s) for {sym}: '{}' and '{}'",
            type_name(l),
            type_name(r)
        )));
    };
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        let overflow = || eval_err("integer overflow");
        return Ok(Json::from(match op {
            BinOp::Add => x.checked_add(y).ok_or_else(overflow)?,
            BinOp::Sub => x.checked_sub(y).ok_or_else(overflow)?,
            BinOp::Mul => x.checked_mul(y).ok_or_else(overflow)?,
            BinOp::Div | BinOp::Mod => {
                if y == 0 {
                    return Err(eval_err("division by zero"));
                }
                let q = x.checked_div(y).ok_or_else(overflow)?;
                let rem = x - q * y;
                // Floor semantics: round the quotient down, give the remainder the divisor's sign.
                let fix = rem != 0 && ((rem < 0) != (y < 0));
                if op == BinOp::Div {
                    if fix { q - 1 } else { q }
                } else if fix {
                    rem + y
                } else {
                    rem
                }
            }
            _ => return Err(eval_err("internal: not arithmetic")),
        }));
    }
    let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
    let v = match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div if y == 0.0 => return Err(eval_err("division by zero")),
        BinOp::Div => x / y,
        BinOp::Mod if y == 0.0 => return Err(eval_err("division by zero")),
        BinOp::Mod => x - y * (x / y).floor(),
        _ => return Err(eval_err("internal: not arithmetic")),
    };
    Ok(float(v))
}

fn py_str(v: &Json) -> String {
    crate::expr::python_str(v)
}

fn arity(name: &str, args: &[Json], min: usize, max: usize) -> Result<(), YaqlError> {
    if args.len() < min || args.len() > max {
        let want = if min == max { format!("{min}") } else { format!("{min} to {max}") };
        return Err(eval_err(format!("{name}() takes {want} argument(s), {} given", args.len())));
    }
    Ok(())
}

fn want_str<'a>(name: &str, v: &'a Json) -> Result<&'a str, YaqlError> {
    v.as_str().ok_or_else(|| eval_err(format!("{name}() needs a string, got {}", type_name(v))))
}

fn want_int(name: &str, v: &Json) -> Result<i64, YaqlError> {
    v.as_i64().ok_or_else(|| eval_err(format!("{name}() needs an integer, got {}", type_name(v))))
}

fn elements(name: &str, v: Json) -> Result<Vec<Json>, YaqlError> {
    match v {
        Json::Array(a) => Ok(a),
        Json::Object(m) => Ok(m.into_iter().map(|(k, _)| Json::String(k)).collect()),
        Json::String(s) => Ok(s.chars().map(|c| Json::String(c.to_string())).collect()),
        Json::Null => Ok(Vec::new()),
        other => Err(eval_err(format!("{name}() needs a collection, got {}", type_name(&other)))),
    }
}

fn kwarg<'a>(kwargs: &'a [(String, Json)], name: &str) -> Option<&'a Json> {
    kwargs.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// The pure functions. `args` are evaluated; unknown names are an error worded as YAQL's.
fn builtin(name: &str, args: Vec<Json>, kwargs: Vec<(String, Json)>) -> Result<Json, YaqlError> {
    let unknown = || eval_err(format!("NoFunctionRegisteredException: Unknown function \"{name}\""));
    if !BUILTINS.contains(&name) {
        return Err(unknown());
    }
    if !kwargs.is_empty() && !matches!(name, "zip" | "dict") {
        return Err(eval_err(format!("{name}() takes no named arguments")));
    }
    let a0 = args.first().cloned().unwrap_or(Json::Null);
    Ok(match name {
        "len" | "length" | "count" => {
            arity(name, &args, 1, 1)?;
            Json::from(match &a0 {
                Json::Array(a) => a.len(),
                Json::Object(m) => m.len(),
                Json::String(s) => s.chars().count(),
                other => return Err(eval_err(format!("object of type '{}' has no len()", type_name(other)))),
            })
        }
        "str" => {
            arity(name, &args, 1, 1)?;
            Json::String(py_str(&a0))
        }
        "int" => {
            arity(name, &args, 1, 1)?;
            match &a0 {
                Json::Number(n) => match n.as_i64() {
                    Some(i) => Json::from(i),
                    None => {
                        let f = n.as_f64().unwrap_or(0.0).trunc();
                        if f.abs() > 9.2e18 {
                            return Err(eval_err("int() value out of range"));
                        }
                        Json::from(f as i64)
                    }
                },
                Json::Bool(b) => Json::from(*b as i64),
                Json::String(s) => Json::from(
                    s.trim()
                        .parse::<i64>()
                        .map_err(|_| eval_err(format!("invalid literal for int() with base 10: '{s}'")))?,
                ),
                Json::Null => Json::from(0),
                other => return Err(eval_err(format!("int() can't convert {}", type_name(other)))),
            }
        }
        "float" => {
            arity(name, &args, 1, 1)?;
            match &a0 {
                Json::Number(n) => float(n.as_f64().unwrap_or(0.0)),
                Json::Bool(b) => float(*b as i64 as f64),
                Json::String(s) => float(
                    s.trim()
                        .parse::<f64>()
                        .map_err(|_| eval_err(format!("could not convert string to float: '{s}'")))?,
                ),
                other => return Err(eval_err(format!("float() can't convert {}", type_name(other)))),
            }
        }
        "bool" => {
            arity(name, &args, 1, 1)?;
            Json::Bool(truthy(&a0))
        }
        "list" => {
            check_list(args.len())?;
            Json::Array(args)
        }
        "toList" => {
            arity(name, &args, 1, 1)?;
            Json::Array(elements(name, a0)?)
        }
        "dict" => {
            let mut m = Map::new();
            for a in args {
                let pairs = match a {
                    Json::Object(o) => o.into_iter().collect::<Vec<_>>(),
                    Json::Array(items) => {
                        let mut v = Vec::new();
                        for p in items {
                            match p {
                                Json::Array(kv) if kv.len() == 2 => {
                                    let mut it = kv.into_iter();
                                    let k = it.next().unwrap_or(Json::Null);
                                    let val = it.next().unwrap_or(Json::Null);
                                    v.push((k.as_str().map(str::to_string).unwrap_or_else(|| py_str(&k)), val));
                                }
                                other => {
                                    return Err(eval_err(format!(
                                        "dict() needs [key, value] pairs, got {}",
                                        type_name(&other)
                                    )));
                                }
                            }
                        }
                        v
                    }
                    other => return Err(eval_err(format!("dict() can't convert {}", type_name(&other)))),
                };
                m.extend(pairs);
            }
            m.extend(kwargs);
            Json::Object(m)
        }
        "keys" | "values" | "items" => {
            arity(name, &args, 1, 1)?;
            let Json::Object(m) = a0 else {
                return Err(eval_err(format!("{name}() needs a dict, got {}", type_name(&a0))));
            };
            Json::Array(match name {
                "keys" => m.into_iter().map(|(k, _)| Json::String(k)).collect(),
                "values" => m.into_iter().map(|(_, v)| v).collect(),
                _ => m.into_iter().map(|(k, v)| Json::Array(vec![Json::String(k), v])).collect(),
            })
        }
        "contains" => {
            arity(name, &args, 2, 2)?;
            Json::Bool(contains(&a0, &args[1])?)
        }
        "containsKey" => {
            arity(name, &args, 2, 2)?;
            let Json::Object(m) = &a0 else {
                return Err(eval_err(format!("containsKey() needs a dict, got {}", type_name(&a0))));
            };
            Json::Bool(args[1].as_str().is_some_and(|k| m.contains_key(k)))
        }
        "containsValue" => {
            arity(name, &args, 2, 2)?;
            let Json::Object(m) = &a0 else {
                return Err(eval_err(format!("containsValue() needs a dict, got {}", type_name(&a0))));
            };
            Json::Bool(m.values().any(|v| py_eq(v, &args[1])))
        }
        "json" => {
            arity(name, &args, 1, 1)?;
            match a0 {
                Json::Object(_) => a0,
                Json::String(s) => serde_json::from_str(&s).map_err(|e| eval_err(format!("json(): {e}")))?,
                other => return Err(eval_err(format!("Given object is not typeof string ({}).", type_name(&other)))),
            }
        }
        "zip" => {
            let pad = kwarg(&kwargs, "pad").cloned().unwrap_or(Json::Null);
            if kwargs.iter().any(|(k, _)| k != "pad") {
                return Err(eval_err("zip() takes only the named argument 'pad'"));
            }
            let mut lists = Vec::new();
            for a in args {
                lists.push(elements(name, a)?);
            }
            if lists.len() == 1 {
                return Ok(Json::Array(lists.pop().unwrap_or_default()));
            }
            let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
            check_list(longest)?;
            let mut out = Vec::with_capacity(longest);
            for i in 0..longest {
                out.push(Json::Array(lists.iter().map(|l| l.get(i).cloned().unwrap_or_else(|| pad.clone())).collect()));
            }
            Json::Array(out)
        }
        "join" => {
            arity(name, &args, 2, 2)?;
            // Both `list.join(sep)` and Python's `sep.join(list)` spellings are accepted.
            let (list, sep) = match (&args[0], &args[1]) {
                (Json::String(s), l @ Json::Array(_)) => (l.clone(), s.clone()),
                (l, Json::String(s)) => (l.clone(), s.clone()),
                _ => return Err(eval_err("join() needs a list and a separator string")),
            };
            let parts: Vec<String> = elements(name, list)?.iter().map(py_str).collect();
            let total = parts.iter().map(String::len).sum::<usize>() + sep.len() * parts.len();
            check_string(total)?;
            Json::String(parts.join(&sep))
        }
        "split" => {
            arity(name, &args, 1, 3)?;
            let s = want_str(name, &a0)?;
            let max = match args.get(2) {
                Some(m) => want_int(name, m)?,
                None => -1,
            };
            let parts: Vec<Json> = match args.get(1) {
                None | Some(Json::Null) => {
                    let words = s.split_whitespace();
                    if max >= 0 {
                        // Python's maxsplit on whitespace keeps the remainder intact.
                        let mut out = Vec::new();
                        let mut rest = s.trim_start();
                        for _ in 0..max {
                            match rest.find(char::is_whitespace) {
                                Some(i) => {
                                    out.push(Json::String(rest[..i].to_string()));
                                    rest = rest[i..].trim_start();
                                }
                                None => break,
                            }
                        }
                        if !rest.is_empty() {
                            out.push(Json::String(rest.to_string()));
                        }
                        out
                    } else {
                        words.map(|w| Json::String(w.to_string())).collect()
                    }
                }
                Some(sep) => {
                    let sep = want_str(name, sep)?;
                    if sep.is_empty() {
                        return Err(eval_err("empty separator"));
                    }
                    if max >= 0 {
                        s.splitn(max as usize + 1, sep).map(|w| Json::String(w.to_string())).collect()
                    } else {
                        s.split(sep).map(|w| Json::String(w.to_string())).collect()
                    }
                }
            };
            check_list(parts.len())?;
            Json::Array(parts)
        }
        "lower" | "toLower" => {
            arity(name, &args, 1, 1)?;
            Json::String(want_str(name, &a0)?.to_lowercase())
        }
        "upper" | "toUpper" => {
            arity(name, &args, 1, 1)?;
            Json::String(want_str(name, &a0)?.to_uppercase())
        }
        "trim" | "strip" => {
            arity(name, &args, 1, 2)?;
            let s = want_str(name, &a0)?;
            Json::String(match args.get(1) {
                Some(chars) => {
                    let set: Vec<char> = want_str(name, chars)?.chars().collect();
                    s.trim_matches(|c| set.contains(&c)).to_string()
                }
                None => s.trim().to_string(),
            })
        }
        "replace" => {
            arity(name, &args, 3, 3)?;
            let s = want_str(name, &a0)?;
            let (old, new) = (want_str(name, &args[1])?, want_str(name, &args[2])?);
            let count = if old.is_empty() { s.chars().count() + 1 } else { s.matches(old).count() };
            check_string(s.len() + count.saturating_mul(new.len()))?;
            Json::String(s.replace(old, new))
        }
        "startsWith" | "endsWith" => {
            arity(name, &args, 2, 2)?;
            let s = want_str(name, &a0)?;
            let p = want_str(name, &args[1])?;
            Json::Bool(if name == "startsWith" { s.starts_with(p) } else { s.ends_with(p) })
        }
        "isList" | "isDict" | "isString" | "isInteger" | "isNumber" | "isBoolean" => {
            arity(name, &args, 1, 1)?;
            Json::Bool(match name {
                "isList" => a0.is_array(),
                "isDict" => a0.is_object(),
                "isString" => a0.is_string(),
                "isInteger" => a0.is_i64() || a0.is_u64(),
                "isNumber" => a0.is_number(),
                _ => a0.is_boolean(),
            })
        }
        "range" => {
            arity(name, &args, 1, 3)?;
            let ints: Vec<i64> = args.iter().map(|a| want_int(name, a)).collect::<Result<_, _>>()?;
            let (start, stop, step) = match ints.as_slice() {
                [stop] => (0, *stop, 1),
                [start, stop] => (*start, *stop, 1),
                [start, stop, step] => (*start, *stop, *step),
                _ => return Err(eval_err("range() takes 1 to 3 arguments")),
            };
            if step == 0 {
                return Err(eval_err("range() arg 3 must not be zero"));
            }
            let len = if (step > 0 && stop > start) || (step < 0 && stop < start) {
                ((stop as i128 - start as i128).unsigned_abs().div_ceil(step.unsigned_abs() as u128)) as usize
            } else {
                0
            };
            check_list(len)?;
            Json::Array((0..len as i64).map(|i| Json::from(start + i * step)).collect())
        }
        "abs" => {
            arity(name, &args, 1, 1)?;
            match &a0 {
                Json::Number(n) => match n.as_i64() {
                    Some(i) => Json::from(i.checked_abs().ok_or_else(|| eval_err("integer overflow"))?),
                    None => float(n.as_f64().unwrap_or(0.0).abs()),
                },
                other => return Err(eval_err(format!("bad operand type for abs(): '{}'", type_name(other)))),
            }
        }
        "min" | "max" => {
            let items = if args.len() == 1 { elements(name, a0)? } else { args };
            let mut best: Option<Json> = None;
            for i in items {
                best = Some(match best {
                    None => i,
                    Some(b) => {
                        let o = py_cmp(&i, &b)?;
                        if (name == "min" && o == Ordering::Less) || (name == "max" && o == Ordering::Greater) {
                            i
                        } else {
                            b
                        }
                    }
                });
            }
            best.ok_or_else(|| eval_err(format!("{name}() arg is an empty sequence")))?
        }
        "sum" => {
            arity(name, &args, 1, 1)?;
            let mut acc = Json::from(0);
            for i in elements(name, a0)? {
                acc = arith(BinOp::Add, &acc, &i)?;
            }
            acc
        }
        "first" | "last" => {
            arity(name, &args, 1, 2)?;
            let items = elements(name, a0)?;
            let pick = if name == "first" { items.into_iter().next() } else { items.into_iter().next_back() };
            match (pick, args.get(1)) {
                (Some(v), _) => v,
                (None, Some(default)) => default.clone(),
                (None, None) => return Err(eval_err(format!("{name}(): the collection is empty"))),
            }
        }
        "distinct" => {
            arity(name, &args, 1, 1)?;
            let mut out: Vec<Json> = Vec::new();
            for i in elements(name, a0)? {
                if !out.iter().any(|o| py_eq(o, &i)) {
                    out.push(i);
                }
            }
            Json::Array(out)
        }
        "flatten" => {
            arity(name, &args, 1, 1)?;
            let mut out = Vec::new();
            for i in elements(name, a0)? {
                match i {
                    Json::Array(inner) => out.extend(inner),
                    other => out.push(other),
                }
            }
            check_list(out.len())?;
            Json::Array(out)
        }
        // The lambda forms are handled before argument evaluation; reaching here means the
        // call had the wrong shape.
        _ => return Err(eval_err(format!("{name}() takes a collection and an expression"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};
    use serde_json::json;

    /// A host without workflow functions.
    struct DataHost(Json);

    impl Host for DataHost {
        fn root(&self) -> &Json {
            &self.0
        }
        fn call(&self, _: &str, _: &[Json], _: &[(String, Json)]) -> Option<Result<Cow<'_, Json>, YaqlError>> {
            None
        }
    }

    /// A host with a data root and two workflow functions, so the delegation path is covered.
    struct TestHost(Json);

    impl Host for TestHost {
        fn root(&self) -> &Json {
            &self.0
        }
        fn call(&self, name: &str, args: &[Json], _: &[(String, Json)]) -> Option<Result<Cow<'_, Json>, YaqlError>> {
            match name {
                "result" => Some(Ok(Cow::Borrowed(&self.0["res"]))),
                "twice" => Some(Ok(Cow::Owned(json!([args.first(), args.first()])))),
                _ => None,
            }
        }
    }

    fn data() -> Json {
        json!({
            "name": "Thanos", "n": 7, "f": 2.5, "flag": true, "none": null, "empty": "",
            "list": [1, 2, 3], "words": ["a", "b"], "d": {"k": "v", "x.y": 1, "nested": {"deep": [10, 20]}},
            "res": {"stdout": "hi", "items": [{"result": {"stdout": "one"}}, {"result": {"stdout": "two"}}]},
        })
    }

    fn check(src: &str, expect: Expect) {
        let host = TestHost(data());
        let out = match parse(src) {
            Ok(e) => match evaluate(&e, &host) {
                Ok(v) => serde_json::to_string(&v).unwrap_or_default(),
                Err(e) => format!("ERROR {e:?}"),
            },
            Err(e) => format!("PARSE {e}"),
        };
        expect.assert_eq(&out);
    }

    #[test]
    fn literals_and_access() {
        check("1", expect!["1"]);
        check("-2.5", expect!["-2.5"]);
        check("1e3", expect!["1000.0"]);
        check("'it''s'", expect![[r#"PARSE Parse error: unexpected string 's' at position 4"#]]);
        check(r#""a\"b\n""#, expect![[r#""a\"b\n""#]]);
        check(r"'\w+'", expect![[r#""\\w+""#]]);
        check("true", expect!["true"]);
        check("null", expect!["null"]);
        check("keyword", expect![[r#""keyword""#]]);
        check("[1, 'a', [null]]", expect![[r#"[1,"a",[null]]"#]]);
        check("{a => 1, 'b': 2}", expect![[r#"{"a":1,"b":2}"#]]);
        check("[]", expect!["[]"]);
        check("{}", expect!["{}"]);
        check("$.name", expect![[r#""Thanos""#]]);
        check(
            "$",
            expect![[
                r#"{"name":"Thanos","n":7,"f":2.5,"flag":true,"none":null,"empty":"","list":[1,2,3],"words":["a","b"],"d":{"k":"v","x.y":1,"nested":{"deep":[10,20]}},"res":{"stdout":"hi","items":[{"result":{"stdout":"one"}},{"result":{"stdout":"two"}}]}}"#
            ]],
        );
        check("ctx().d.nested.deep[1]", expect!["20"]);
        check("ctx(name)", expect![[r#""Thanos""#]]);
        check("ctx('name')", expect![[r#""Thanos""#]]);
        check("ctx().d['x.y']", expect!["1"]);
        check("$.list[-1]", expect!["3"]);
        check("$.name[0]", expect![[r#""T""#]]);
        check("[1, 2][0]", expect!["1"]);
        check("{a => {b => 5}}.a.b", expect!["5"]);
        check("$.missing", expect![[r#"ERROR MissingKey("missing")"#]]);
        check("ctx(missing)", expect![[r#"ERROR MissingKey("missing")"#]]);
        check(
            "$.name.value",
            expect![[r##"ERROR Eval("NoFunctionRegisteredException: Unknown function \"#property#value\"")"##]],
        );
        check("$.list[5]", expect![[r#"ERROR Eval("list index 5 out of range")"#]]);
        check("$.list['a']", expect![[r#"ERROR Eval("cannot index list with string")"#]]);
        check("$x", expect![[r#"ERROR Eval("Unknown variable \"$x\"")"#]]);
    }

    #[test]
    fn operators() {
        check("1 + 2 * 3", expect!["7"]);
        check("(1 + 2) * 3", expect!["9"]);
        check("7 / 2", expect!["3"]);
        check("-7 / 2", expect!["-4"]);
        check("7 mod 3", expect!["1"]);
        check("-7 mod 3", expect!["2"]);
        check("7.0 / 2", expect!["3.5"]);
        check("1 / 0", expect![[r#"ERROR Eval("division by zero")"#]]);
        check("9223372036854775807 + 1", expect![[r#"ERROR Eval("integer overflow")"#]]);
        check("'a' + 'b'", expect![[r#""ab""#]]);
        check("'ab' * 2", expect![[r#""abab""#]]);
        check("[1] + [2]", expect!["[1,2]"]);
        check("{a => 1} + {b => 2}", expect![[r#"{"a":1,"b":2}"#]]);
        check("'a' + 1", expect![[r#"ERROR Eval("unsupported operand type(s) for +: 'string' and 'integer'")"#]]);
        check("5 - 7", expect!["-2"]);
        check("-$.n", expect!["-7"]);
        check("-'x'", expect![[r#"ERROR Eval("bad operand type for unary -: 'string'")"#]]);
        check("1 = 1.0", expect!["true"]);
        check("$.name = 'Thanos'", expect!["true"]);
        check("$.name == 'Thanos'", expect!["true"]);
        check("$.n != 7", expect!["false"]);
        check("$.n < 8 and $.n > 6 and $.n <= 7 and $.n >= 7", expect!["true"]);
        check("'a' < 'b'", expect!["true"]);
        check("[1, 2] < [1, 3]", expect!["true"]);
        check("1 < 'a'", expect![[r#"ERROR Eval("cannot compare integer with string")"#]]);
        check("not $.flag", expect!["false"]);
        check("not 1 = 2", expect!["true"]);
        check("not $.d.containsKey(k) and true", expect!["false"]);
        check("$.empty or 'default'", expect![[r#""default""#]]);
        check("$.n and $.name", expect![[r#""Thanos""#]]);
        check("$.none and $.missing", expect!["null"]);
        check("true or $.missing", expect!["true"]);
        check("2 in $.list", expect!["true"]);
        check("k in $.d", expect!["true"]);
        check("'han' in $.name", expect!["true"]);
        check("1 in $.name", expect![[r#"ERROR Eval("'in <string>' requires string as left operand, not integer")"#]]);
        check("1 in 5", expect![[r#"ERROR Eval("argument of type 'integer' is not iterable")"#]]);
    }

    #[test]
    fn functions() {
        check("len($.list)", expect!["3"]);
        check("$.words.len()", expect!["2"]);
        check("length('héllo')", expect!["5"]);
        check("count($.d)", expect!["3"]);
        check("len(1)", expect![[r#"ERROR Eval("object of type 'integer' has no len()")"#]]);
        check("str(5) + str(true) + str(null)", expect![[r#""5TrueNone""#]]);
        check("str($.d.nested)", expect![[r#""{'deep': [10, 20]}""#]]);
        check("int('42') + int(2.9) + int(true)", expect!["45"]);
        check("int('x')", expect![[r#"ERROR Eval("invalid literal for int() with base 10: 'x'")"#]]);
        check("float('1.5')", expect!["1.5"]);
        check("bool('') or bool([1])", expect!["true"]);
        check("list(1, 'a')", expect![[r#"[1,"a"]"#]]);
        check("toList($.d)", expect![[r#"["k","x.y","nested"]"#]]);
        check("dict(a => 1, b => [2])", expect![[r#"{"a":1,"b":[2]}"#]]);
        check("dict([['a', 1], ['b', 2]])", expect![[r#"{"a":1,"b":2}"#]]);
        check("keys($.d)", expect![[r#"["k","x.y","nested"]"#]]);
        check("$.d.values()", expect![[r#"["v",1,{"deep":[10,20]}]"#]]);
        check("items({a => 1})", expect![[r#"[["a",1]]"#]]);
        check("keys([1])", expect![[r#"ERROR Eval("keys() needs a dict, got list")"#]]);
        check("$.list.contains(2)", expect!["true"]);
        check("$.d.containsKey('k') and not $.d.containsKey(z)", expect!["true"]);
        check("$.d.containsValue('v')", expect!["true"]);
        check(r#"json('{"a": [1]}')"#, expect![[r#"{"a":[1]}"#]]);
        check("json('nope')", expect![[r#"ERROR Eval("json(): expected ident at line 1 column 2")"#]]);
        check("zip([1, 2], ['a', 'b'])", expect![[r#"[[1,"a"],[2,"b"]]"#]]);
        check("zip([1, 2], ['a'], pad => 0)", expect![[r#"[[1,"a"],[2,0]]"#]]);
        check("zip([1, 2])", expect!["[1,2]"]);
        check("$.words.join(', ')", expect![[r#""a, b""#]]);
        check("join('-', [1, 2])", expect![[r#""1-2""#]]);
        check("'a,b,,c'.split(',')", expect![[r#"["a","b","","c"]"#]]);
        check("'a b  c'.split()", expect![[r#"["a","b","c"]"#]]);
        check("'a b  c'.split(null, 1)", expect![[r#"["a","b  c"]"#]]);
        check("'a,b,c'.split(',', 1)", expect![[r#"["a","b,c"]"#]]);
        check("$.name.toLower() + lower('X') + upper('y') + 'z'.toUpper()", expect![[r#""thanosxYZ""#]]);
        check("'  x '.trim() + strip('--y--', '-')", expect![[r#""xy""#]]);
        check("replace('aXbX', 'X', '-')", expect![[r#""a-b-""#]]);
        check("$.name.startsWith('Tha') and $.name.endsWith('os')", expect!["true"]);
        check(
            "[isList($.list), isDict($.d), isString(1), isInteger(1), isNumber(1.5), isBoolean(null)]",
            expect!["[true,true,false,true,true,false]"],
        );
        check("range(3)", expect!["[0,1,2]"]);
        check("range(0, 4)", expect!["[0,1,2,3]"]);
        check("range(5, 0, -2)", expect!["[5,3,1]"]);
        check("range(1, 2, 0)", expect![[r#"ERROR Eval("range() arg 3 must not be zero")"#]]);
        check("abs(-3) + abs(8)", expect!["11"]);
        check("min($.list) + max(4, 9) + sum($.list)", expect!["16"]);
        check("max([])", expect![[r#"ERROR Eval("max() arg is an empty sequence")"#]]);
        check("first($.list) + last($.list)", expect!["4"]);
        check("first([], 'd')", expect![[r#""d""#]]);
        check("distinct([1, 1, 2])", expect!["[1,2]"]);
        check("flatten([[1], 2, [3, 4]])", expect!["[1,2,3,4]"]);
        check("$.res.items.select($.result.stdout)", expect![[r#"["one","two"]"#]]);
        check("$.list.where($ > 1)", expect!["[2,3]"]);
        check("$.list.select($ * 10).where($ != 20)", expect!["[10,30]"]);
        check("$.list.any($ = 3) and $.list.all($ > 0)", expect!["true"]);
        check("select(5, $)", expect![[r#"ERROR Eval("select() needs a collection, got integer")"#]]);
        check("select($.list)", expect![[r#"ERROR Eval("select() takes a collection and an expression")"#]]);
        check("result().stdout", expect![[r#""hi""#]]);
        check("twice(1)", expect!["[1,1]"]);
        check("random(1, 2)", expect![[r#"ERROR Eval("NoFunctionRegisteredException: Unknown function \"random\"")"#]]);
        check("len(x => 1)", expect![[r#"ERROR Eval("len() takes no named arguments")"#]]);
        check("len(1, 2)", expect![[r#"ERROR Eval("len() takes 1 argument(s), 2 given")"#]]);
    }

    #[test]
    fn parse_errors() {
        check("", expect!["PARSE Parse error: empty expression at position 0"]);
        check("<% succeeded()", expect!["PARSE Parse error: unexpected '<' at position 0"]);
        check("1 +", expect!["PARSE Parse error: unexpected end of expression at position 3"]);
        check("f(1", expect!["PARSE Parse error: expected ',' or ')', found end of expression at position 3"]);
        check("f(a => 1, 2)", expect!["PARSE Parse error: positional argument after a named argument at position 10"]);
        check("[1, 2", expect!["PARSE Parse error: expected ']', found end of expression at position 5"]);
        check("{a 1}", expect!["PARSE Parse error: expected '=>' in dict, found number 1 at position 3"]);
        check("'open", expect!["PARSE Parse error: unterminated string at position 0"]);
        check("a.1", expect!["PARSE Parse error: expected a name after '.', found number 1 at position 2"]);
        check("1 2", expect!["PARSE Parse error: unexpected number 2 at position 2"]);
        check(
            "99999999999999999999",
            expect!["PARSE Parse error: integer '99999999999999999999' is too large at position 0"],
        );
        check("a # b", expect!["PARSE Parse error: unexpected '#' at position 2"]);
    }

    #[test]
    fn limits() {
        let deep = format!("{}1{}", "(".repeat(YAQL_MAX_DEPTH + 1), ")".repeat(YAQL_MAX_DEPTH + 1));
        assert_eq!(parse(&deep), Err(YaqlError::TooDeep));
        let ok = format!("{}1{}", "(".repeat(YAQL_MAX_DEPTH / 2), ")".repeat(YAQL_MAX_DEPTH / 2));
        assert!(parse(&ok).is_ok());
        // A long attribute chain nests the tree too.
        let chain = format!("${}", ".a".repeat(YAQL_MAX_DEPTH + 1));
        assert_eq!(parse(&chain), Err(YaqlError::TooDeep));
        let sum = format!("1{}", " + 1".repeat(YAQL_MAX_DEPTH + 1));
        assert_eq!(parse(&sum), Err(YaqlError::TooDeep));
        let big = "1".repeat(MAX_YAQL_BYTES + 1);
        assert!(matches!(parse(&big), Err(YaqlError::TooLarge(_))));
        let host = DataHost(json!({}));
        // Fuel: 500 × 500 lambda evaluations.
        let e = parse("range(500).select(range(500).select($ * 2))").unwrap();
        assert_eq!(evaluate(&e, &host), Err(YaqlError::OutOfFuel));
        let e = parse("range(100).select($ * 2).len()").unwrap();
        assert_eq!(evaluate(&e, &host), Ok(json!(100)));
        let e = parse("range(0, 200000)").unwrap();
        assert!(matches!(evaluate(&e, &host), Err(YaqlError::TooLarge(_))));
        let e = parse("'ab' * 1000000").unwrap();
        assert!(matches!(evaluate(&e, &host), Err(YaqlError::TooLarge(_))));
        let e = parse("replace('aaaa', 'a', 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx')")
            .unwrap();
        assert!(evaluate(&e, &host).is_ok());
        assert_eq!(parse("ctx().a.f(1)").unwrap().functions(), vec!["f", "ctx"]);
    }
}
