//! Reading one YAML file into a `serde_json::Value` plus a map from JSON pointer to source
//! position, under an explicit budget.
//!
//! Pack metadata comes from a drop directory and from uploaded archives, so every file is
//! untrusted: this module caps the size, depth, node count and alias use of a document
//! (serde-saphyr's `Budget`) and never panics. It follows PyYAML where StackStorm packs rely on
//! it: `yes`/`no`/`on`/`off` are booleans, and a duplicate key keeps the last value (reported as a
//! warning by the caller). It knows nothing about packs; callers turn its errors into
//! diagnostics.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::{Budget, DuplicateKeyPolicy, Options, Spanned};

/// Largest metadata file accepted. The biggest file in the 18-pack corpus is 23 KB; 1 MiB leaves
/// room for generated action files while keeping a hostile file from costing real memory.
pub const MAX_YAML_BYTES: usize = 1024 * 1024;
/// Deepest nesting accepted. Real pack files stay under 12 levels; deep nesting is the classic
/// stack/CPU attack on YAML parsers.
pub const MAX_YAML_DEPTH: usize = 64;
/// Most nodes one document may expand to (aliases included): stops "billion laughs".
pub const MAX_YAML_NODES: usize = 200_000;
/// Most alias references in one document. Pack files use a handful at most.
pub const MAX_YAML_ALIASES: usize = 1_000;

/// 1-based position in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

/// A parsed document: the data, and where each JSON pointer (`/parameters/cmd/type`) starts.
#[derive(Debug, Default)]
pub struct Doc {
    pub value: Value,
    text: String,
    /// Positions are only needed when something is reported, so they are computed on first
    /// use by a second, span-aware parse (the first pass proved the document within budget).
    spans: std::sync::OnceLock<HashMap<String, Pos>>,
    /// Keys that appeared twice in one mapping (the last value was kept, as PyYAML does).
    pub duplicate_keys: Vec<(String, Pos)>,
}

impl Doc {
    /// Position of the node at `pointer` (RFC 6901), or of its nearest ancestor that has one.
    pub fn pos(&self, pointer: &str) -> Option<Pos> {
        let spans = self.spans.get_or_init(|| {
            let mut spans = HashMap::new();
            if let Ok(root) = parse_spanned(&self.text, DuplicateKeyPolicy::LastWins) {
                lower(root, String::new(), &mut spans);
            }
            spans
        });
        let mut p = pointer;
        loop {
            if let Some(pos) = spans.get(p) {
                return Some(*pos);
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return None,
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    #[error("file is {size} bytes, over the {max}-byte limit for metadata files")]
    TooLarge { size: usize, max: usize },
    #[error("file is not valid UTF-8 (byte {offset})")]
    NotUtf8 { offset: usize },
    #[error("{message}")]
    Syntax { message: String, pos: Option<Pos> },
    #[error("document is empty")]
    Empty,
}

impl YamlError {
    pub fn pos(&self) -> Option<Pos> {
        match self {
            YamlError::Syntax { pos, .. } => *pos,
            _ => None,
        }
    }
}

/// Parse `bytes` as one YAML document.
pub fn parse(bytes: &[u8]) -> Result<Doc, YamlError> {
    if bytes.len() > MAX_YAML_BYTES {
        return Err(YamlError::TooLarge { size: bytes.len(), max: MAX_YAML_BYTES });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| YamlError::NotUtf8 { offset: e.valid_up_to() })?;
    if text.trim().is_empty()
        || text.lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#') || t == "---"
        })
    {
        return Err(YamlError::Empty);
    }
    // First pass refuses duplicate keys so we can report them; the second keeps the last value
    // like PyYAML. Files without duplicates (nearly all) are parsed once.
    let doc = |value, duplicate_keys| Doc { value, text: text.to_string(), spans: Default::default(), duplicate_keys };
    match parse_value(text, DuplicateKeyPolicy::Error) {
        Ok(value) => Ok(doc(value, Vec::new())),
        Err(first) => {
            let message = first.to_string();
            if !message.to_ascii_lowercase().contains("duplicate") {
                return Err(syntax(first));
            }
            let pos = first.location().map(loc_pos);
            let key = duplicate_key_name(&message);
            let value = parse_value(text, DuplicateKeyPolicy::LastWins).map_err(syntax)?;
            Ok(doc(value, vec![(key, pos.unwrap_or_default())]))
        }
    }
}

fn duplicate_key_name(message: &str) -> String {
    // serde-saphyr says e.g. "duplicate mapping key: name"; keep what follows the colon.
    let first_line = message.lines().next().unwrap_or(message);
    match first_line.split_once(':') {
        Some((_, rest)) if !rest.trim().is_empty() => rest.trim().trim_matches('`').to_string(),
        _ => first_line.to_string(),
    }
}

fn options(dups: DuplicateKeyPolicy) -> Options {
    let mut budget = Budget::default();
    budget.max_depth = MAX_YAML_DEPTH;
    budget.max_nodes = MAX_YAML_NODES;
    budget.max_aliases = MAX_YAML_ALIASES;
    budget.max_anchors = MAX_YAML_ALIASES;
    budget.max_documents = 1;
    budget.max_total_scalar_bytes = MAX_YAML_BYTES * 4;
    budget.max_reader_input_bytes = Some(MAX_YAML_BYTES);
    budget.flow_nesting_limit = MAX_YAML_DEPTH;
    let mut o = Options::default();
    o.budget = Some(budget);
    o.duplicate_keys = dups;
    // PyYAML (YAML 1.1) reads `0755` as octal; StackStorm packs are written for it.
    o.legacy_octal_numbers = true;
    o.strict_booleans = false;
    o.with_snippet = false;
    o
}

/// The budget-checked pass. Deserializing straight into `Value` lets serde-saphyr stop at the
/// depth limit before anything recurses; the span-aware `Node` visitor recursed far enough on
/// `- - - …` to overflow a 2 MiB thread stack first, so it only ever runs on documents that
/// already passed here.
fn parse_value(text: &str, dups: DuplicateKeyPolicy) -> Result<Value, serde_saphyr::Error> {
    serde_saphyr::from_str_with_options::<Value>(text, options(dups))
}

fn parse_spanned(text: &str, dups: DuplicateKeyPolicy) -> Result<Spanned<Node>, serde_saphyr::Error> {
    serde_saphyr::from_str_with_options::<Spanned<Node>>(text, options(dups))
}

fn syntax(e: serde_saphyr::Error) -> YamlError {
    let pos = e.location().map(loc_pos).filter(|p| p.line > 0);
    let message = e.to_string();
    // Keep the first line: the rest is a source snippet we print ourselves.
    let message = message.lines().next().unwrap_or("invalid YAML").trim().to_string();
    YamlError::Syntax { message, pos }
}

fn loc_pos(l: serde_saphyr::Location) -> Pos {
    Pos { line: l.line() as u32, col: l.column() as u32 }
}

fn lower(n: Spanned<Node>, path: String, spans: &mut HashMap<String, Pos>) -> Value {
    spans.insert(path.clone(), loc_pos(n.referenced));
    match n.value {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(b),
        Node::Int(i) => Value::Number(i.into()),
        Node::UInt(u) => Value::Number(u.into()),
        Node::Float(f) => Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null),
        Node::Str(s) => Value::String(s),
        Node::Seq(items) => Value::Array(
            items.into_iter().enumerate().map(|(i, item)| lower(item, format!("{path}/{i}"), spans)).collect(),
        ),
        Node::Map(entries) => {
            let mut map = Map::new();
            for (k, v) in entries {
                let key = k.value.0;
                let child = format!("{path}/{}", escape_pointer(&key));
                let v = lower(v, child.clone(), spans);
                // The key's own position is more useful than the value's for "unknown key".
                spans.insert(child, loc_pos(k.referenced));
                map.insert(key, v);
            }
            Value::Object(map)
        }
    }
}

/// Escape one JSON-pointer segment.
pub fn escape_pointer(seg: &str) -> String {
    seg.replace('~', "~0").replace('/', "~1")
}

/// The raw parse tree with positions; lowered to `Value` right away.
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Key>, Spanned<Node>)>),
}

/// A mapping key, stringified the way PyYAML-loaded dicts end up being used (`1` → "1").
struct Key(String);

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::UInt(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Float(v as f64))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        Ok(Node::Float(v as f64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Node, E> {
        Ok(Node::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries: Vec<(Spanned<Key>, Spanned<Node>)> = Vec::new();
        while let Some(k) = map.next_key::<Spanned<Key>>()? {
            let v = map.next_value::<Spanned<Node>>()?;
            // LastWins may still forward repeats for some key shapes: keep the last.
            if let Some(slot) = entries.iter_mut().find(|(old, _)| old.value.0 == k.value.0) {
                *slot = (k, v);
            } else {
                entries.push((k, v));
            }
        }
        Ok(Node::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let node = Node::deserialize(d)?;
        Ok(Key(match node {
            Node::Null => "null".into(),
            Node::Bool(b) => if b { "True" } else { "False" }.into(),
            Node::Int(i) => i.to_string(),
            Node::UInt(u) => u.to_string(),
            Node::Float(f) => f.to_string(),
            Node::Str(s) => s,
            Node::Seq(_) | Node::Map(_) => {
                return Err(de::Error::custom("mapping keys must be scalars"));
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_pyyaml_booleans() {
        let doc = parse(b"name: x\nenabled: yes\nparameters:\n  cmd:\n    type: string\n").unwrap();
        assert_eq!(doc.value["enabled"], Value::Bool(true));
        assert_eq!(doc.pos("/parameters/cmd/type"), Some(Pos { line: 5, col: 5 }));
        assert_eq!(doc.pos("/parameters/cmd/nothing").map(|p| p.line), Some(4));
    }

    #[test]
    fn duplicate_key_last_wins_and_is_reported() {
        let doc = parse(b"name: a\nname: b\n").unwrap();
        assert_eq!(doc.value["name"], "b");
        assert_eq!(doc.duplicate_keys.len(), 1, "{:?}", doc.duplicate_keys);
    }

    #[test]
    fn limits() {
        let big = vec![b'a'; MAX_YAML_BYTES + 1];
        assert!(matches!(parse(&big), Err(YamlError::TooLarge { .. })));
        let deep = "- ".repeat(100_000) + "x\n";
        assert!(matches!(parse(deep.as_bytes()), Err(YamlError::Syntax { .. })));
        let flow = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(matches!(parse(flow.as_bytes()), Err(YamlError::Syntax { .. })));
        assert!(matches!(parse(b"\xff\xfe"), Err(YamlError::NotUtf8 { .. })));
    }

    #[test]
    fn billion_laughs_is_refused() {
        let mut s = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        for (prev, cur) in ["a", "b", "c", "d", "e", "f", "g", "h"].iter().zip(["b", "c", "d", "e", "f", "g", "h", "i"])
        {
            let refs = vec![format!("*{prev}"); 9].join(",");
            s.push_str(&format!("{cur}: &{cur} [{refs}]\n"));
        }
        let t = std::time::Instant::now();
        assert!(parse(s.as_bytes()).is_err());
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
    }
}
