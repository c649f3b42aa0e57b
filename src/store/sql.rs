//! Small helpers shared by the table files: input checks against the named limits, JSON
//! columns, and a builder for filtered listings.
//!
//! Owns nothing persistent. It must stay free of table-specific knowledge.

use rusqlite::Row;
use rusqlite::types::{Type, Value as SqlValue};
use serde_json::Value;

use super::error::StoreError;
use super::{MAX_DOC_BYTES, MAX_LIST_LIMIT, MAX_NAME_BYTES};

/// A non-empty name (ref, scope, key) within [`MAX_NAME_BYTES`].
pub(super) fn check_name(field: &'static str, name: &str) -> Result<(), StoreError> {
    if name.is_empty() {
        return Err(StoreError::Invalid { field, reason: "must not be empty".into() });
    }
    check_len(field, name, MAX_NAME_BYTES)
}

pub(super) fn check_len(what: &'static str, text: &str, limit: usize) -> Result<(), StoreError> {
    if text.len() > limit {
        return Err(StoreError::TooLarge { what, size: text.len(), limit });
    }
    Ok(())
}

/// Serialises a JSON document for storage, within [`MAX_DOC_BYTES`].
pub(super) fn to_json(what: &'static str, value: &Value) -> Result<String, StoreError> {
    // Serialising a `Value` to a String cannot fail (keys are strings, no I/O).
    let text = serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned());
    check_len(what, &text, MAX_DOC_BYTES)?;
    Ok(text)
}

/// Reads a JSON TEXT column; a value that does not parse is a conversion error naming the
/// column, not a panic.
pub(super) fn json_col<T: serde::de::DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text).map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e)))
}

pub(super) fn opt_json_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<Value>> {
    let text: Option<String> = row.get(idx)?;
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e)))
    })
    .transpose()
}

/// A requested limit clamped to `1..=MAX_LIST_LIMIT` (0 means the maximum).
pub(super) fn clamp_limit(limit: usize) -> i64 {
    let limit = if limit == 0 { MAX_LIST_LIMIT } else { limit.min(MAX_LIST_LIMIT) };
    limit as i64
}

/// `SELECT … FROM t WHERE a AND b … ORDER BY … LIMIT ?` with only the filters given, so the
/// planner can use the matching index (an `(?1 IS NULL OR col = ?1)` form defeats it).
pub(super) struct Listing {
    sql: String,
    params: Vec<SqlValue>,
    has_where: bool,
}

impl Listing {
    pub(super) fn new(select: &str) -> Self {
        Listing { sql: select.to_owned(), params: Vec::new(), has_where: false }
    }

    /// Adds `condition` if `value` is present; every `?` in it is bound to `value`.
    pub(super) fn filter(&mut self, condition: &str, value: Option<impl Into<SqlValue>>) {
        let Some(value) = value else {
            return;
        };
        self.sql.push_str(if self.has_where { " AND " } else { " WHERE " });
        self.has_where = true;
        self.sql.push_str(condition);
        let value = value.into();
        for _ in condition.matches('?') {
            self.params.push(value.clone());
        }
    }

    /// Runs the query with `order` and the clamped `limit`.
    pub(super) fn run<T>(
        mut self,
        conn: &rusqlite::Connection,
        order: &str,
        limit: usize,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        self.sql.push_str(" ORDER BY ");
        self.sql.push_str(order);
        self.sql.push_str(" LIMIT ?");
        self.params.push(SqlValue::Integer(clamp_limit(limit)));
        let mut stmt = conn.prepare_cached(&self.sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(self.params), map)?;
        Ok(rows.collect::<Result<Vec<T>, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};

    fn check_name_case(name: &str, expect: Expect) {
        let got = match check_name("name", name) {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.to_string(),
        };
        expect.assert_eq(&got);
    }

    #[test]
    fn names() {
        check_name_case("core.local", expect![["ok"]]);
        check_name_case("", expect![["invalid name: must not be empty"]]);
        check_name_case(&"x".repeat(MAX_NAME_BYTES + 1), expect![["name is 1025 bytes, over the limit of 1024 bytes"]]);
    }

    #[test]
    fn limits_clamp() {
        assert_eq!(clamp_limit(0), MAX_LIST_LIMIT as i64);
        assert_eq!(clamp_limit(5), 5);
        assert_eq!(clamp_limit(MAX_LIST_LIMIT + 1), MAX_LIST_LIMIT as i64);
    }

    #[test]
    fn documents_over_the_limit_are_refused() {
        let big = Value::String("x".repeat(MAX_DOC_BYTES));
        let err = to_json("payload", &big).unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { what: "payload", .. }), "{err}");
    }
}
