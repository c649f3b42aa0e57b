//! Python `re` patterns on the Rust `regex` engine, for the regex criteria operators and the
//! `regex_*` filters.
//!
//! Translates the few spellings that differ (`\Z`, Python's `$` that also matches before a final
//! newline, `\1`/`\g<name>` in replacements) and bounds compile size. Lookaround and
//! backreferences inside patterns are not supported by the engine and fail to compile with a
//! clear error. No caching: compiling is cheap next to everything around a rule match.

use regex::{Regex, RegexBuilder};

/// Compiled-program size cap for one pattern. Patterns come from packs and rendered templates;
/// `a{1000}{1000}` style patterns would otherwise take a lot of memory to compile.
pub const MAX_REGEX_SIZE: usize = 1 << 20;

/// How a Python pattern is used.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Flags {
    pub ignore_case: bool,
    /// `re.DOTALL`.
    pub dot_all: bool,
    /// `re.match`: anchored at the start (not the end).
    pub anchored: bool,
    /// Only whether it matches is used, so Python's `$` may consume a final `\n`.
    pub bool_only: bool,
}

/// Compiles a Python pattern. The error names the pattern and the engine's reason.
pub(super) fn compile(pattern: &str, flags: Flags) -> Result<Regex, String> {
    let translated = translate(pattern, flags.bool_only);
    let source = if flags.anchored { format!(r"\A(?:{translated})") } else { translated };
    RegexBuilder::new(&source)
        .case_insensitive(flags.ignore_case)
        .dot_matches_new_line(flags.dot_all)
        .size_limit(MAX_REGEX_SIZE)
        .dfa_size_limit(MAX_REGEX_SIZE)
        .build()
        .map_err(|e| {
            let reason = match e {
                regex::Error::CompiledTooBig(_) => {
                    format!("pattern too large (over {MAX_REGEX_SIZE} bytes compiled)")
                }
                other => other.to_string(),
            };
            format!("invalid regular expression {pattern:?}: {reason}")
        })
}

/// Rewrites Python-only spellings outside character classes.
fn translate(pattern: &str, bool_only: bool) -> String {
    // Python's `$` (without MULTILINE) also matches before a trailing newline; Rust's is `\z`.
    // Only rewritten when just the match/no-match answer is used, since the rewrite consumes it.
    let multiline = inline_flags(pattern).contains('m');
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut chars = pattern.chars().peekable();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('Z') if !in_class => out.push_str(r"\z"),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            },
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                // A `]` right after `[` or `[^` is a literal in both dialects.
                if chars.peek() == Some(&'^') {
                    out.push('^');
                    chars.next();
                }
                if chars.peek() == Some(&']') {
                    out.push_str(r"\]");
                    chars.next();
                }
            }
            // Rust reads `[`, `&&` and `~~` inside a class as nesting/set operators; Python
            // reads them as literals.
            '[' | '&' | '~' if in_class => {
                out.push('\\');
                out.push(c);
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            '$' if !in_class && bool_only && !multiline => out.push_str(r"(?:\n?\z)"),
            c => out.push(c),
        }
    }
    out
}

/// The flags of a leading `(?imsx)` group.
fn inline_flags(pattern: &str) -> &str {
    pattern
        .strip_prefix("(?")
        .and_then(|rest| rest.split_once(')'))
        .map(|(flags, _)| flags)
        .filter(|f| f.chars().all(|c| c.is_ascii_alphabetic()))
        .unwrap_or("")
}

/// Translates a Python `re.sub` replacement (`\1`, `\g<1>`, `\g<name>`, `\n`, `\\`) into the
/// `regex` crate's syntax (`${1}`, `${name}`, literal `$$`).
pub(super) fn translate_replacement(repl: &str) -> Result<String, String> {
    let mut out = String::with_capacity(repl.len() + 8);
    let mut chars = repl.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.next() {
                Some('0') => {
                    // `\0` is an octal escape in Python replacements, not group 0.
                    let mut n = 0u32;
                    for _ in 0..2 {
                        match chars.peek().and_then(|d| d.to_digit(8)) {
                            Some(d) => {
                                n = n * 8 + d;
                                chars.next();
                            }
                            None => break,
                        }
                    }
                    out.push(char::from_u32(n).unwrap_or('\0'));
                }
                Some(d @ '1'..='9') => {
                    let mut num = String::from(d);
                    if let Some(&e) = chars.peek()
                        && e.is_ascii_digit()
                    {
                        num.push(e);
                        chars.next();
                    }
                    out.push_str(&format!("${{{num}}}"));
                }
                Some('g') => {
                    if chars.next() != Some('<') {
                        return Err("missing '<' after \\g in replacement".into());
                    }
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('>') => break,
                            Some(ch) => name.push(ch),
                            None => return Err("missing '>' in \\g<...> replacement".into()),
                        }
                    }
                    if name.is_empty() {
                        return Err("empty group name in replacement".into());
                    }
                    out.push_str(&format!("${{{name}}}"));
                }
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('f') => out.push('\u{c}'),
                Some('v') => out.push('\u{b}'),
                Some('a') => out.push('\u{7}'),
                Some('b') => out.push('\u{8}'),
                Some('\\') => out.push('\\'),
                Some(ch) if ch.is_ascii_alphabetic() => {
                    return Err(format!("bad escape \\{ch} in replacement"));
                }
                Some(ch) => {
                    out.push('\\');
                    if ch == '$' {
                        out.push_str("$$");
                    } else {
                        out.push(ch);
                    }
                }
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_spellings() {
        let f = Flags { bool_only: true, ..Flags::default() };
        assert!(compile("abc$", f).unwrap().is_match("abc\n"));
        assert!(!compile("abc$", Flags::default()).unwrap().is_match("abc\n"));
        assert!(compile(r"abc\Z", f).unwrap().is_match("xabc"));
        assert!(compile("(?m)^b$", f).unwrap().is_match("a\nb\nc"));
        assert!(compile("[$]", f).unwrap().is_match("$"));
        assert!(compile("[]a]", f).unwrap().is_match("]"));
        let anchored = Flags { anchored: true, ..f };
        assert!(!compile("b", anchored).unwrap().is_match("ab"));
        assert!(compile("a|b", anchored).unwrap().is_match("bc"));
        assert!(compile("(?<=a)b", f).unwrap_err().contains("invalid regular expression"));
    }

    #[test]
    fn regex_size_limit() {
        let err = compile("(a{1000}){1000}", Flags::default()).unwrap_err();
        assert!(err.contains("too large"), "{err}");
    }

    #[test]
    fn replacements() {
        assert_eq!(translate_replacement(r"\2-\1").unwrap(), "${2}-${1}");
        assert_eq!(translate_replacement(r"\g<name>\g<10>").unwrap(), "${name}${10}");
        assert_eq!(translate_replacement(r"cost $5\n").unwrap(), "cost $$5\n");
        assert_eq!(translate_replacement(r"a\\b").unwrap(), r"a\b");
        assert!(translate_replacement(r"\q").is_err());
    }
}
