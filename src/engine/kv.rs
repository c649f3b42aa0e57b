//! The datastore as templates see it: `st2kv.system.*`, `st2kv.user.*` and `decrypt_kv`,
//! backed by the SQLite store. Reads are blocking, so templates that may touch the datastore
//! are rendered off the executor thread (see `params.rs`).

use crate::expr::{KvScope, KvSource};
use crate::store::Store;

pub struct StoreKv(pub Store);

/// StackStorm's datastore scope names, as the store keeps them.
pub const SCOPE_SYSTEM: &str = "system";
pub const SCOPE_USER: &str = "user";

/// A user-scoped key is stored as `<user>:<key>` in the `user` scope, as StackStorm does.
pub fn user_key(user: &str, name: &str) -> String {
    format!("{user}:{name}")
}

impl KvSource for StoreKv {
    fn get(&self, scope: KvScope, name: &str) -> Option<String> {
        let (scope, name) = match scope {
            KvScope::System => (SCOPE_SYSTEM, name.to_string()),
            KvScope::User(u) => (SCOPE_USER, user_key(&u, name)),
        };
        self.0.kv_get_blocking(scope, &name, false).ok().flatten().map(|e| e.value)
    }

    fn decrypt(&self, _scope: KvScope, ciphertext: &str) -> Result<String, String> {
        self.0.decrypt(ciphertext).map_err(|e| e.to_string())
    }
}
