//! Datastore (`st2kv`) access from templates: the `KvSource` trait the store implements, and
//! the lazy Jinja objects behind `st2kv.system.<key>` / `st2kv.user.<key>`.
//!
//! Lookups happen during rendering, key by key, as StackStorm's `KeyValueLookup` does: every
//! attribute step extends a dotted key name (`st2kv.system.foo.bar` is the key `foo.bar`, not
//! `bar` inside `foo`) until a key with a value is reached, which yields that value as a plain
//! string; a missing key prints `""`.
//! This module must not cache or store anything between renders, and never decrypts on its own:
//! decryption is the `KvSource`'s business.
//!
//! The source is borrowed only for the duration of one render (`TemplateEnv::render_*` take
//! `Option<&dyn KvSource>`), while minijinja objects must be `'static`. The objects therefore
//! hold no reference: the source is published in a thread-local for exactly the span of the
//! render (`with_source`) and looked up there (`with_active`). See the SAFETY notes.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectRepr, Value};
use minijinja::{Error, ErrorKind, State};

/// Which datastore scope a key lives in. User-scoped keys belong to one user; the store maps
/// `(User(u), k)` to its own naming (StackStorm stores them as `"u:k"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KvScope {
    System,
    User(String),
}

/// The datastore as templates see it. Implementations must be cheap to call repeatedly (one
/// call per attribute step) and must not block for long: rendering is synchronous.
pub trait KvSource: Send + Sync {
    /// The stored value of `name` in `scope` exactly as stored: for a secret key this is the
    /// ciphertext, as in StackStorm (templates decrypt explicitly with `decrypt_kv`). `None` when
    /// the key does not exist (or has expired).
    fn get(&self, scope: KvScope, name: &str) -> Option<String>;
    /// Decrypts a stored secret. `decrypt_kv` always passes the **ciphertext** (the stored value
    /// as `get` returned it, i.e. the string the filter was applied to), never a key name.
    /// `scope` is informational only: a found key reaches the filter as a plain string, so it
    /// is `System` even for `st2kv.user.*` values. `Err` carries the reason.
    fn decrypt(&self, scope: KvScope, name_or_ciphertext: &str) -> Result<String, String>;
}

/// The user whose keys `st2kv.user.*` reads when the context has no `action_context.user`:
/// StackStorm's system user, which rule-triggered executions run as.
pub const DEFAULT_KV_USER: &str = "stanley";

thread_local! {
    /// The source of the render running on this thread, if any (see `with_source`).
    static ACTIVE: Cell<Option<&'static dyn KvSource>> = const { Cell::new(None) };
}

/// Restores the previous thread-local value when the render ends, also on unwind.
struct Restore(Option<&'static dyn KvSource>);

impl Drop for Restore {
    fn drop(&mut self) {
        ACTIVE.with(|a| a.set(self.0));
    }
}

/// Runs `f` with `kv` reachable from the `st2kv` objects and `decrypt_kv` on this thread.
pub(super) fn with_source<R>(kv: Option<&dyn KvSource>, f: impl FnOnce() -> R) -> R {
    // SAFETY: the lifetime is erased only to store the reference in the thread-local. It is
    // readable solely through `with_active`, which lends it to a closure for the duration of
    // one call and cannot let it escape (the closure's result type cannot borrow from it). The
    // `Restore` guard removes it before this function returns or unwinds, i.e. while the
    // caller's borrow of `kv` is still live, and the thread-local is never read from another
    // thread. Nested renders save and restore the outer value.
    let erased: Option<&'static dyn KvSource> =
        kv.map(|k| unsafe { std::mem::transmute::<&dyn KvSource, &'static dyn KvSource>(k) });
    let _restore = Restore(ACTIVE.with(|a| a.replace(erased)));
    f()
}

/// Calls `f` with the source of the current render; `None` when there is none.
pub(super) fn with_active<R>(f: impl FnOnce(&dyn KvSource) -> R) -> Option<R> {
    let kv = ACTIVE.with(|a| a.get())?;
    Some(f(kv))
}

/// The `st2kv` root: `system` and (when a user is known) `user`.
#[derive(Debug)]
pub(super) struct KvRoot {
    pub(super) user: Option<String>,
}

impl Object for KvRoot {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let scope = match key.as_str()? {
            "system" => KvScope::System,
            "user" => KvScope::User(self.user.clone()?),
            _ => return None,
        };
        Some(Value::from_object(KvNode { scope, key: None }))
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("")
    }
}

/// One step of a datastore lookup: `key` is the dotted key name so far (`None` at the scope
/// root, e.g. `st2kv.system` itself).
#[derive(Debug)]
pub(super) struct KvNode {
    pub(super) scope: KvScope,
    pub(super) key: Option<String>,
}

impl KvNode {
    /// The stored value of this node's key; `None` when missing or outside a render.
    pub(super) fn stored(&self) -> Option<String> {
        let key = self.key.as_deref()?;
        with_active(|kv| kv.get(self.scope.clone(), key)).flatten()
    }

    /// What the node prints and compares as: the stored value, `""` when missing.
    pub(super) fn text(&self) -> String {
        self.stored().unwrap_or_default()
    }
}

impl Object for KvNode {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        // `st2kv.system['a.b']` and `st2kv.system.a.b` both name the key "a.b"; numbers are
        // accepted so that `st2kv.system.host[1]` still forms a key name like Python would.
        let part = match key.as_str() {
            Some(s) => s.to_string(),
            None if key.is_number() => key.to_string(),
            None => return None,
        };
        let full = match &self.key {
            Some(prefix) => format!("{prefix}.{part}"),
            None => part,
        };
        let node = KvNode { scope: self.scope.clone(), key: Some(full) };
        // A key holding a non-empty value is returned as a plain string, so that every Jinja
        // filter, test and comparison treats it as one (`| int`, `== 'true'`, `| length`).
        // Missing or empty keys stay lookup nodes: they print "", extend into dotted names
        // (`st2kv.system.slack.token` is the key "slack.token"), and let `decrypt_kv` name
        // the key it could not find. Limitation: if both `a` and `a.b` exist, `st2kv.system.a.b`
        // is an attribute of the string `a` (undefined) instead of the key `a.b`.
        match node.stored() {
            Some(v) if !v.is_empty() => Some(Value::from(v)),
            _ => Some(Value::from_object(node)),
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::NonEnumerable
    }

    fn is_true(self: &Arc<Self>) -> bool {
        // Deliberate difference from st2 (whose lookup object is always truthy): a missing or
        // empty key is false, so `{% if st2kv.system.flag %}` does what it reads like.
        !self.text().is_empty()
    }

    fn call_method(self: &Arc<Self>, state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        // String methods (`.upper()`, `.split(',')`) act on the stored text.
        if self.key.is_none() {
            return Err(Error::from(ErrorKind::UnknownMethod));
        }
        Value::from(self.text()).call_method(state, method, args)
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct One;
    impl KvSource for One {
        fn get(&self, _scope: KvScope, name: &str) -> Option<String> {
            (name == "k").then(|| "v".to_string())
        }
        fn decrypt(&self, _scope: KvScope, c: &str) -> Result<String, String> {
            Ok(c.to_string())
        }
    }

    #[test]
    fn source_is_scoped_to_the_call() {
        let node = KvNode { scope: KvScope::System, key: Some("k".into()) };
        assert_eq!(node.stored(), None);
        let src = One;
        let inside = with_source(Some(&src), || {
            let nested = with_source(None, || node.stored());
            (node.stored(), nested)
        });
        assert_eq!(inside, (Some("v".to_string()), None));
        assert_eq!(node.stored(), None);
    }
}
