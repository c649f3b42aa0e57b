//! Expressions: everything packd evaluates inside pack content — Jinja templates with
//! StackStorm's filters and datastore access (`template`), parameter casting and Python
//! literals (`cast`), the JSONPath subset of criteria keys (`jsonpath`), and rule matching for
//! StackStorm criteria and Attune conditions (`criteria`).
//!
//! Pure computation over `serde_json::Value`: no files, no database, no processes. The only way
//! out is the `KvSource` a caller lends to a render. Inputs are untrusted (payloads, pack files),
//! so every entry point is bounded (see the `MAX_*` and `TEMPLATE_*` constants) and returns
//! errors instead of panicking.

pub mod cast;
pub mod criteria;
pub mod filters;
pub mod jsonpath;
mod kv;
mod pyre;
pub mod template;
mod value;

pub use cast::{
    CastError, MAX_LITERAL_DEPTH, MAX_REPR_DEPTH, NONE_MAGIC_VALUE, cast_param, cli_cast, literal_eval,
    python_float_repr, python_repr, python_str,
};
pub use criteria::{
    CriteriaError, MAX_SEARCH_DEPTH, OPERATORS, evaluate, evaluate_at, evaluate_attune, fnmatch, is_operator,
    parse_timestamp,
};
pub use filters::{MAX_INDENT, YAML_MAX_DEPTH, YAML_MAX_NODES};
pub use jsonpath::{JsonPath, JsonPathError, MAX_PATH_LEN, all_matches, first_match};
pub use kv::{DEFAULT_KV_USER, KvScope, KvSource};
pub use pyre::MAX_REGEX_SIZE;
pub use template::{
    MAX_RENDER_BYTES, MAX_TEMPLATE_BYTES, TEMPLATE_FUEL, TEMPLATE_RECURSION_LIMIT, TemplateEnv, TemplateError,
    TemplateErrorKind, is_template, referenced_names,
};
pub use value::MAX_VALUE_DEPTH;
