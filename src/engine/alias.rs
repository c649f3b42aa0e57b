//! Action aliases: turning a chat-style command ("greet Yo", "st2 list 5 actions from core")
//! into an action and its parameters, as StackStorm matches them: trailing `key=value` pairs
//! are taken off first, each format becomes a regular expression (the text around placeholders
//! *is* a regex, as users write `(run|execute) {{cmd}}`), `{{ name }}` is required and
//! `{{ name = default }}` optional, and exactly one enabled alias must match. Pure.

use regex::Regex;
use serde_json::{Map, Value};

use crate::pack::{Alias, AliasFormat};

/// Longest command accepted: aliases come from chat messages and scripts, not files.
pub const MAX_COMMAND_BYTES: usize = 4096;

#[derive(Debug, PartialEq)]
pub struct Match {
    pub alias: String,
    pub action: String,
    pub format: String,
    /// Every value is a string; the action's types cast them when the execution is created.
    pub params: Map<String, Value>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AliasError {
    #[error("command is over {MAX_COMMAND_BYTES} bytes")]
    TooLong,
    #[error("command {0:?} matched no patterns")]
    NoMatch(String),
    #[error("command {command:?} matched more than 1 pattern: {candidates:?}")]
    Ambiguous { command: String, candidates: Vec<String> },
}

fn kv_regex() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r#"(?s)(?:^|\s+)(\S+?)=(""|''|"(.*?)"|'(.*?)'|(\{.*?\})|(\S+))\s*$"#).expect("static regex")
    })
}

/// Take trailing `key=value` pairs off the command.
fn split_kv(command: &str) -> (String, Vec<(String, String)>) {
    let mut rest = command.trim_end().to_string();
    let mut pairs = Vec::new();
    while let Some(c) = kv_regex().captures(&rest) {
        let whole = c.get(0).map(|m| m.start()).unwrap_or(0);
        let key = c[1].to_string();
        let value = c.get(3).or(c.get(4)).or(c.get(5)).or(c.get(6)).map(|m| m.as_str().to_string()).unwrap_or_default();
        pairs.push((key, value));
        rest.truncate(whole);
        rest = rest.trim_end().to_string();
    }
    pairs.reverse();
    (rest, pairs)
}

fn placeholder() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| Regex::new(r"(\s*)\{\{\s*(\w+)\s*(?:=\s*(.*?))?\s*\}\}").expect("static regex"))
}

/// The regex of one representation, or `None` if it is not a valid regex.
fn compile(representation: &str) -> Option<Regex> {
    let mut pattern = String::new();
    let mut last = 0;
    for c in placeholder().captures_iter(representation) {
        let m = c.get(0)?;
        pattern.push_str(&representation[last..m.start()]);
        let name = &c[2];
        let value = r#"(?:"[^"]*"|'[^']*'|\{.*?\}|.+?)"#;
        if c.get(3).is_some() {
            pattern.push_str(&format!(r"(?:\s+(?P<{name}>{value}))?"));
        } else {
            let ws = if c[1].is_empty() { "" } else { r"\s+" };
            pattern.push_str(&format!("{ws}(?P<{name}>{value})"));
        }
        last = m.end();
    }
    pattern.push_str(&representation[last..]);
    let anchored = format!(r"(?s)^\s*{}\s*$", pattern.trim_start_matches('^').trim_end_matches('$'));
    Regex::new(&anchored).ok()
}

fn unquote(s: &str) -> String {
    let t = s.trim();
    if t.len() >= 2 && ((t.starts_with('"') && t.ends_with('"')) || (t.starts_with('\'') && t.ends_with('\''))) {
        t[1..t.len() - 1].to_string()
    } else {
        t.to_string()
    }
}

fn try_format(f: &AliasFormat, stream: &str) -> Option<(String, Map<String, Value>)> {
    for rep in &f.representations {
        let Some(re) = compile(rep) else { continue };
        let Some(c) = re.captures(stream) else { continue };
        let mut params = Map::new();
        for p in &f.params {
            match c.name(&p.name) {
                Some(m) => {
                    params.insert(p.name.clone(), Value::String(unquote(m.as_str())));
                }
                None => {
                    if let Some(d) = &p.default {
                        params.insert(p.name.clone(), Value::String(d.clone()));
                    }
                }
            }
        }
        return Some((rep.clone(), params));
    }
    None
}

/// Find the one enabled alias matching `command`.
pub fn find<'a>(aliases: impl IntoIterator<Item = &'a Alias>, command: &str) -> Result<Match, AliasError> {
    if command.len() > MAX_COMMAND_BYTES {
        return Err(AliasError::TooLong);
    }
    let (stream, pairs) = split_kv(command);
    let aliases: Vec<&Alias> = aliases.into_iter().filter(|a| a.enabled).collect();
    for multiple in [false, true] {
        let mut hits: Vec<Match> = Vec::new();
        for a in &aliases {
            for f in a.formats.iter().filter(|f| f.match_multiple == multiple) {
                if let Some((format, mut params)) = try_format(f, &stream) {
                    for (k, v) in &pairs {
                        params.insert(k.clone(), Value::String(v.clone()));
                    }
                    hits.push(Match { alias: a.ref_.clone(), action: a.action.clone(), format, params });
                    break;
                }
            }
        }
        match hits.len() {
            0 => continue,
            1 => return Ok(hits.remove(0)),
            _ => {
                return Err(AliasError::Ambiguous {
                    command: command.to_string(),
                    candidates: hits.iter().map(|h| format!("{}: {}", h.alias, h.format)).collect(),
                });
            }
        }
    }
    Err(AliasError::NoMatch(command.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::st2::alias_params;
    use expect_test::{Expect, expect};

    fn alias(name: &str, formats: &[&str]) -> Alias {
        Alias {
            ref_: format!("p.{name}"),
            pack: "p".into(),
            name: name.into(),
            description: String::new(),
            enabled: true,
            action: format!("p.{name}_action"),
            formats: formats
                .iter()
                .map(|f| AliasFormat {
                    display: f.to_string(),
                    representations: vec![f.to_string()],
                    match_multiple: false,
                    params: alias_params(f),
                })
                .collect(),
            ack: Value::Null,
            result: Value::Null,
            immutable_parameters: Value::Null,
            metadata_file: Default::default(),
        }
    }

    fn check(command: &str, expect: Expect) {
        let aliases = [
            alias("greet", &["greet {{greeting}}"]),
            alias("list", &["st2 list {{ limit=10 }} actions", "st2 list {{ limit=10 }} actions from {{ pack }}"]),
            alias("run", &["(run|execute) {{cmd}}( on {{hosts}})?[!.]?"]),
        ];
        let got = match find(aliases.iter(), command) {
            Ok(m) => format!("{} {} {}", m.alias, m.format, Value::Object(m.params)),
            Err(e) => format!("error: {e}"),
        };
        expect.assert_eq(&got);
    }

    #[test]
    fn matching() {
        check("greet Yo", expect![[r#"p.greet greet {{greeting}} {"greeting":"Yo"}"#]]);
        check("greet \"Good morning\"", expect![[r#"p.greet greet {{greeting}} {"greeting":"Good morning"}"#]]);
        check("st2 list actions", expect![[r#"p.list st2 list {{ limit=10 }} actions {"limit":"10"}"#]]);
        check("st2 list 5 actions", expect![[r#"p.list st2 list {{ limit=10 }} actions {"limit":"5"}"#]]);
        check(
            "st2 list 5 actions from core",
            expect![[r#"p.list st2 list {{ limit=10 }} actions from {{ pack }} {"limit":"5","pack":"core"}"#]],
        );
        check(
            "run date -u on web1!",
            expect![[r#"p.run (run|execute) {{cmd}}( on {{hosts}})?[!.]? {"cmd":"date -u","hosts":"web1"}"#]],
        );
        check(
            "greet Yo extra=1 quoted=\"a b\"",
            expect![[r#"p.greet greet {{greeting}} {"greeting":"Yo","extra":"1","quoted":"a b"}"#]],
        );
        check("hello there", expect![[r#"error: command "hello there" matched no patterns"#]]);
    }

    #[test]
    fn ambiguity_and_limits() {
        let aliases = [alias("a", &["do {{x}}"]), alias("b", &["do {{y}}"])];
        assert!(matches!(find(aliases.iter(), "do it"), Err(AliasError::Ambiguous { .. })));
        let long = "x".repeat(MAX_COMMAND_BYTES + 1);
        assert_eq!(find(aliases.iter(), &long), Err(AliasError::TooLong));
    }
}
