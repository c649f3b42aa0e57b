//! Rule enable/disable overrides set from the CLI (`packd rule enable|disable`). Pack files
//! stay untouched (they may be read-only or managed elsewhere); the agent applies these on top
//! of what the files say, and they survive restarts and reloads.

use rusqlite::{Connection, params};

use super::sql::check_name;
use super::{Env, StoreError, Work};

api! {
    write set_rule_override / set_rule_override_blocking
        (rule_ref: String, enabled: bool) -> () = set;
    write clear_rule_override / clear_rule_override_blocking
        (rule_ref: String) -> () = clear;
    read rule_overrides / rule_overrides_blocking () -> Vec<(String, bool)> = list_op;
}

fn set(env: &Env, rule_ref: String, enabled: bool) -> Result<impl Work<()>, StoreError> {
    check_name("rule_ref", &rule_ref)?;
    let now = env.now();
    Ok(move |c: &Connection| {
        c.prepare_cached(
            "INSERT INTO rule_overrides (rule_ref, enabled, updated_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT(rule_ref) DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at",
        )?
        .execute(params![rule_ref, enabled, now])?;
        Ok(())
    })
}

fn clear(_env: &Env, rule_ref: String) -> Result<impl Work<()>, StoreError> {
    Ok(move |c: &Connection| {
        c.prepare_cached("DELETE FROM rule_overrides WHERE rule_ref = ?1")?.execute(params![rule_ref])?;
        Ok(())
    })
}

fn list_op(_env: &Env) -> Result<impl Work<Vec<(String, bool)>>, StoreError> {
    Ok(|c: &Connection| {
        let mut st = c.prepare_cached("SELECT rule_ref, enabled FROM rule_overrides ORDER BY rule_ref")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    })
}
