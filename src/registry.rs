//! An immutable snapshot of every loaded pack, with the lookup indexes the engine needs
//! (actions by ref, rules by trigger ref, webhook routes, timers, sensors).
//!
//! A snapshot is never modified: a reload builds a new one and swaps it in atomically, so an
//! execution that started keeps the definitions it started with while new events see the new
//! snapshot. This module reads no files and starts nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::pack::{Action, Pack, Rule, Sensor, TriggerType};

/// The trigger type StackStorm webhooks fire, whose rules carry `parameters.url`.
pub const WEBHOOK_TRIGGER: &str = "core.st2.webhook";

#[derive(Default)]
pub struct Registry {
    /// Packs by ref.
    pub packs: BTreeMap<String, Arc<Pack>>,
    actions: HashMap<String, (String, usize)>,
    triggers: HashMap<String, (String, usize)>,
    /// Enabled rules by trigger ref: (pack ref, index into `pack.rules`).
    rules_by_trigger: HashMap<String, Vec<(String, usize)>>,
    /// Webhook url (without leading/trailing slashes) → enabled rules on it.
    webhooks: BTreeMap<String, Vec<(String, usize)>>,
    /// Rule enable/disable overrides set from the CLI, applied over what the files say.
    overrides: HashMap<String, bool>,
    /// Bumped on every swap, for logs and metrics.
    pub generation: u64,
}

/// Webhook names are compared without surrounding slashes, as StackStorm strips them.
pub fn normalize_hook(url: &str) -> String {
    url.trim_matches('/').to_string()
}

impl Registry {
    pub fn new(packs: impl IntoIterator<Item = Pack>, generation: u64, overrides: HashMap<String, bool>) -> Registry {
        Registry::from_arcs(packs.into_iter().map(Arc::new), generation, overrides)
    }

    pub fn from_arcs(
        packs: impl IntoIterator<Item = Arc<Pack>>,
        generation: u64,
        overrides: HashMap<String, bool>,
    ) -> Registry {
        let mut r = Registry { generation, overrides, ..Registry::default() };
        for p in packs {
            let pr = p.ref_.clone();
            for (i, a) in p.actions.iter().enumerate() {
                r.actions.entry(a.ref_.clone()).or_insert((pr.clone(), i));
            }
            for (i, t) in p.triggers.iter().enumerate() {
                r.triggers.entry(t.ref_.clone()).or_insert((pr.clone(), i));
            }
            for (i, rule) in p.rules.iter().enumerate() {
                if !r.rule_enabled(rule) {
                    continue;
                }
                r.rules_by_trigger.entry(rule.trigger.clone()).or_default().push((pr.clone(), i));
                if rule.trigger == WEBHOOK_TRIGGER
                    && let Some(url) = rule.trigger_parameters.get("url").and_then(|u| u.as_str())
                {
                    r.webhooks.entry(normalize_hook(url)).or_default().push((pr.clone(), i));
                }
            }
            r.packs.insert(pr, p);
        }
        r
    }

    /// Whether a rule is enabled: its file, unless `packd rule enable|disable` said otherwise.
    pub fn rule_enabled(&self, rule: &Rule) -> bool {
        self.overrides.get(&rule.ref_).copied().unwrap_or(rule.enabled)
    }

    /// A new snapshot of the same packs with other overrides.
    pub fn with_overrides(&self, overrides: HashMap<String, bool>) -> Registry {
        Registry::from_arcs(self.packs.values().cloned(), self.generation + 1, overrides)
    }

    pub fn overrides(&self) -> &HashMap<String, bool> {
        &self.overrides
    }

    pub fn pack(&self, r: &str) -> Option<&Arc<Pack>> {
        self.packs.get(r)
    }

    pub fn action(&self, r: &str) -> Option<(&Arc<Pack>, &Action)> {
        let (p, i) = self.actions.get(r)?;
        let pack = self.packs.get(p)?;
        Some((pack, pack.actions.get(*i)?))
    }

    pub fn actions(&self) -> impl Iterator<Item = (&Arc<Pack>, &Action)> {
        self.packs.values().flat_map(|p| p.actions.iter().map(move |a| (p, a)))
    }

    pub fn trigger_type(&self, r: &str) -> Option<&TriggerType> {
        let (p, i) = self.triggers.get(r)?;
        self.packs.get(p)?.triggers.get(*i)
    }

    pub fn trigger_types(&self) -> impl Iterator<Item = &TriggerType> {
        self.packs.values().flat_map(|p| p.triggers.iter())
    }

    fn resolve<'a>(&'a self, keys: &'a [(String, usize)]) -> impl Iterator<Item = (&'a Arc<Pack>, &'a Rule)> + 'a {
        keys.iter().filter_map(|(p, i)| {
            let pack = self.packs.get(p)?;
            Some((pack, pack.rules.get(*i)?))
        })
    }

    /// Enabled rules listening on `trigger`.
    pub fn rules_for(&self, trigger: &str) -> impl Iterator<Item = (&Arc<Pack>, &Rule)> {
        self.resolve(self.rules_by_trigger.get(trigger).map(Vec::as_slice).unwrap_or(&[]))
    }

    /// Every rule, enabled or not.
    pub fn rules(&self) -> impl Iterator<Item = (&Arc<Pack>, &Rule)> {
        self.packs.values().flat_map(|p| p.rules.iter().map(move |r| (p, r)))
    }

    pub fn rule(&self, r: &str) -> Option<(&Arc<Pack>, &Rule)> {
        self.rules().find(|(_, x)| x.ref_ == r)
    }

    /// Enabled rules on the webhook `url`.
    pub fn webhook_rules(&self, url: &str) -> impl Iterator<Item = (&Arc<Pack>, &Rule)> {
        self.resolve(self.webhooks.get(&normalize_hook(url)).map(Vec::as_slice).unwrap_or(&[]))
    }

    pub fn webhook_urls(&self) -> impl Iterator<Item = &String> {
        self.webhooks.keys()
    }

    pub fn has_webhook(&self, url: &str) -> bool {
        self.webhooks.contains_key(&normalize_hook(url))
    }

    /// Enabled policies that apply to `action`: those naming it, and Attune pack-scope
    /// policies (no action) of its pack.
    pub fn policies_for<'a>(
        &'a self,
        action: &'a str,
    ) -> impl Iterator<Item = (&'a Arc<Pack>, &'a crate::pack::Policy)> + 'a {
        let pack = action.split_once('.').map(|x| x.0).unwrap_or("");
        self.packs.values().flat_map(|p| p.policies.iter().map(move |x| (p, x))).filter(move |(p, x)| {
            x.enabled && (x.resource.as_deref() == Some(action) || (x.resource.is_none() && p.ref_ == pack))
        })
    }

    pub fn sensors(&self) -> impl Iterator<Item = (&Arc<Pack>, &Sensor)> {
        self.packs.values().flat_map(|p| p.sensors.iter().map(move |s| (p, s)))
    }
}
