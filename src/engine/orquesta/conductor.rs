//! One workflow run: the state machine between `Conductor::start` and a terminal status.
//!
//! Model (Orquesta's, simplified): the run keeps the *root* context (`st2`, inputs, vars) and
//! every task execution carries a *delta* (what was published on the way to it). A task's
//! `ctx()` is root ⊕ delta (deep merge, as Orquesta's `merge_dicts`). Completing a task
//! evaluates its transitions in order; each satisfied one publishes (sequentially, each value
//! seeing the previous ones) and stages its targets with delta ⊕ published. A `join` task is
//! staged once and collects the deltas of its inbound branches (last writer wins) until enough
//! distinct inbound tasks have arrived. Engine commands: `continue` (default) and `noop` end a
//! branch, `noop` also counts as remediation of a failure, `fail` fails the run (tasks staged
//! by the same completion still run), `retry` re-runs the task (up to `ENGINE_RETRY_COUNT`).
//! The output is rendered over the terminal context: root ⊕ the deltas of the branches that
//! ended, in task start order.
//!
//! This module decides; it executes nothing. Requests carry delays instead of sleeping.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value as Json, json};

use super::jinja::Flavor;
use super::spec::{Backoff, Join, Target, Workflow};
use super::tpl::{Current, Runtime, Scope, Tasks};
use super::yaql::truthy;
use super::{RunStatus, TaskRequest, TaskStatus, WorkflowError};
use crate::expr::{DEFAULT_KV_USER, KvSource, MAX_VALUE_DEPTH, TemplateEnv};

/// Most task executions (not counting items) one run may start. Workflows may loop through
/// transitions (retry-until-ready patterns); a loop that never ends must still stop.
pub const MAX_TASK_RUNS: usize = 10_000;

/// Most items one `with` task may iterate over: every item becomes an action execution.
pub const MAX_ITEMS: usize = 10_000;

/// Most action executions (items included) one run may request.
pub const MAX_ACTION_EXECUTIONS: usize = 100_000;

/// Longest task or retry delay accepted (one day): longer waits belong to a timer, not to a
/// workflow holding its state in memory.
pub const MAX_DELAY_SECS: u64 = 86_400;

/// Most entries kept in the run's error list; a loop that fails on every turn must not grow
/// the result without bound.
pub const MAX_ERRORS: usize = 100;

/// How often the `retry` engine command re-runs a task (Orquesta: 3, no delay).
pub const ENGINE_RETRY_COUNT: u32 = 3;

const EXECUTION_FAILED: &str = "Execution failed. See result for details.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Succeeded,
    Failed,
    Canceled,
}

#[derive(Debug, Clone, Copy)]
struct RetryState {
    count: u64,
    tally: u64,
    delay: u64,
}

/// A task waiting to start.
struct Staged {
    task: usize,
    delta: Map<String, Json>,
    /// Join tasks: the distinct inbound tasks that arrived.
    arrived: Vec<usize>,
    ready: bool,
    join: bool,
    /// The execution whose completion staged it (non-join targets of one completion merge).
    source: Option<usize>,
    /// Staged next to a `fail` command: runs although the workflow has failed.
    run_on_fail: bool,
    retry: Option<RetryState>,
    delay: Option<u64>,
    engine_retries: u32,
}

impl Staged {
    fn new(task: usize, delta: Map<String, Json>) -> Staged {
        Staged {
            task,
            delta,
            arrived: Vec::new(),
            ready: true,
            join: false,
            source: None,
            run_on_fail: false,
            retry: None,
            delay: None,
            engine_retries: 0,
        }
    }
}

struct Items {
    reqs: Vec<(String, Map<String, Json>)>,
    results: Vec<Option<(TaskStatus, Json)>>,
    next: usize,
    running: usize,
    /// `None`: all at once.
    concurrency: Option<usize>,
    delay: Option<u64>,
}

/// One execution of a task.
struct Instance {
    task: usize,
    seq: u64,
    delta: Map<String, Json>,
    /// `None` while running.
    status: Option<TaskStatus>,
    result: Json,
    items: Option<Items>,
    retry: Option<RetryState>,
    engine_retries: u32,
}

/// What starting a staged task amounts to, rendered before anything changes.
enum Work {
    Nothing,
    One(String, Map<String, Json>),
    Items(Vec<(String, Map<String, Json>)>, Option<usize>),
}

struct Launch {
    work: Work,
    delay: Option<u64>,
    retry: Option<RetryState>,
}

/// One run of a workflow. Not serializable: a restarted agent starts runs anew.
pub struct Conductor {
    wf: Arc<Workflow>,
    rt: Runtime,
    root: Map<String, Json>,
    state: State,
    done: bool,
    /// False when input or vars failed to render: the output is then `null`, as in Orquesta.
    started: bool,
    staged: Vec<Staged>,
    instances: Vec<Instance>,
    latest: HashMap<usize, usize>,
    /// Join tasks that started: the inbound tasks whose arrival they consumed. A branch that
    /// arrives after a `join: N` barrier already ran belongs to that barrier, not a new one.
    joined: HashMap<usize, Vec<usize>>,
    /// Request id → (execution, item index).
    active: HashMap<u64, (usize, Option<usize>)>,
    /// Requests created but not yet returned by `ready()`.
    pending: Vec<TaskRequest>,
    /// (start order, delta) of every branch end.
    terminal: Vec<(u64, Map<String, Json>)>,
    errors: Vec<Json>,
    output: Option<Json>,
    next_id: u64,
    seq: u64,
    executions: usize,
}

/// Deep merge as Orquesta's `merge_dicts(overwrite=True)`: nested dicts merge, anything else
/// is replaced. Below `MAX_VALUE_DEPTH` levels values are replaced whole (bounded recursion).
fn deep_merge(into: &mut Map<String, Json>, from: &Map<String, Json>, depth: usize) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(Json::Object(a)), Json::Object(b)) if depth < MAX_VALUE_DEPTH => deep_merge(a, b, depth + 1),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

/// A delay or count value: a non-negative integer.
fn as_u64(v: &Json, what: &str) -> Result<u64, String> {
    v.as_u64().ok_or_else(|| format!("The value of {what} is not type of integer ({v})."))
}

fn error(message: impl Into<String>, task: Option<&str>) -> Json {
    let mut e = json!({"type": "error", "message": message.into()});
    if let (Some(t), Json::Object(m)) = (task, &mut e) {
        m.insert("task_id".into(), Json::String(t.to_string()));
    }
    e
}

struct Records<'a>(&'a Conductor);

impl Tasks for Records<'_> {
    fn record(&self, name: &str) -> Option<Json> {
        let t = self.0.wf.tasks.iter().position(|t| t.name == name)?;
        let &i = self.0.latest.get(&t)?;
        Some(self.0.record_of(i))
    }

    fn names(&self) -> Vec<String> {
        let mut ids: Vec<usize> = self.0.latest.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter().filter_map(|t| self.0.wf.tasks.get(t).map(|s| s.name.clone())).collect()
    }
}

impl Conductor {
    /// Starts a run: renders `input` (the action parameters; declared inputs missing from it
    /// get their default) and `vars`, and stages the start tasks. `st2_ctx` becomes `ctx().st2`
    /// (its `user` selects the datastore user scope; for Attune its `config` is `config`).
    /// Runtime input values are taken as data, never evaluated as expressions. A rendering
    /// error gives a run that has already failed (see `output()`); `Err` only for a malformed
    /// `st2_ctx`.
    pub fn start(
        wf: Arc<Workflow>,
        input: Map<String, Json>,
        st2_ctx: Json,
        env: Arc<TemplateEnv>,
        kv: Option<Arc<dyn KvSource>>,
    ) -> Result<Conductor, WorkflowError> {
        if !st2_ctx.is_null() && !st2_ctx.is_object() {
            return Err(WorkflowError::Start("the st2 context must be a dict".into()));
        }
        let user = st2_ctx.get("user").and_then(Json::as_str).unwrap_or(DEFAULT_KV_USER).to_string();
        let config = st2_ctx.get("config").cloned().unwrap_or_else(|| Json::Object(Map::new()));
        let rt = Runtime { env, kv, user, flavor: wf.flavor, params: Json::Object(Map::new()), config };
        let mut c = Conductor {
            wf,
            rt,
            root: Map::new(),
            state: State::Running,
            done: false,
            started: false,
            staged: Vec::new(),
            instances: Vec::new(),
            latest: HashMap::new(),
            joined: HashMap::new(),
            active: HashMap::new(),
            pending: Vec::new(),
            terminal: Vec::new(),
            errors: Vec::new(),
            output: None,
            next_id: 1,
            seq: 0,
            executions: 0,
        };
        c.init(input, st2_ctx);
        c.advance();
        Ok(c)
    }

    fn init(&mut self, input: Map<String, Json>, st2_ctx: Json) {
        let mut errors = Vec::new();
        let mut root = Map::new();
        let wf = self.wf.clone();
        match wf.flavor {
            Flavor::Orquesta => {
                if st2_ctx.is_object() {
                    root.insert("st2".into(), st2_ctx);
                }
                for (name, default) in &wf.inputs {
                    let value = match (input.get(name), default) {
                        (Some(v), _) => Ok(v.clone()),
                        (None, Some(d)) => self.render_in(d, &root),
                        (None, None) => Ok(Json::Null),
                    };
                    match value {
                        Ok(v) => {
                            root.insert(name.clone(), v);
                        }
                        Err(e) => errors.push(e),
                    }
                }
            }
            Flavor::Attune => {
                let mut params = input;
                for (name, default) in &wf.inputs {
                    if let (false, Some(d)) = (params.contains_key(name), default) {
                        match self.render_in(d, &root) {
                            Ok(v) => {
                                params.insert(name.clone(), v);
                            }
                            Err(e) => errors.push(e),
                        }
                    }
                }
                self.rt.params = Json::Object(params);
            }
        }
        for (name, tpl) in &wf.vars {
            match self.render_in(tpl, &root) {
                Ok(v) => {
                    root.insert(name.clone(), v);
                }
                Err(e) => errors.push(e),
            }
        }
        self.root = root;
        if !errors.is_empty() {
            for e in errors {
                self.log(error(e, None));
            }
            self.state = State::Failed;
            self.done = true;
            return;
        }
        self.started = true;
        for &t in &wf.starts {
            self.staged.push(Staged::new(t, Map::new()));
        }
    }

    /// Renders a value with `root` as the whole context and no current task.
    fn render_in(&self, tpl: &super::tpl::Tpl, root: &Map<String, Json>) -> Result<Json, String> {
        let ctx = Json::Object(root.clone());
        let recs = Records(self);
        let sc = Scope { rt: &self.rt, ctx: &ctx, current: None, item: None, index: None, tasks: &recs };
        tpl.render(&sc)
    }

    /// Task executions to start now. Each request's id goes back in `completed`.
    pub fn ready(&mut self) -> Vec<TaskRequest> {
        self.advance();
        std::mem::take(&mut self.pending)
    }

    /// Reports a finished action execution. Unknown ids are ignored.
    pub fn completed(&mut self, id: u64, status: TaskStatus, result: Json) {
        let Some((inst, item)) = self.active.remove(&id) else { return };
        self.pending.retain(|r| r.id != id);
        match item {
            None => {
                if let Some(i) = self.instances.get_mut(inst) {
                    i.status = Some(status);
                    i.result = result;
                }
                self.finish(inst);
            }
            Some(n) => {
                let running = self.state == State::Running;
                let Some(items) = self.instances.get_mut(inst).and_then(|i| i.items.as_mut()) else { return };
                if let Some(slot) = items.results.get_mut(n) {
                    *slot = Some((status, result));
                }
                items.running = items.running.saturating_sub(1);
                if running {
                    self.start_items(inst);
                }
                self.maybe_finish_items(inst);
            }
        }
        self.advance();
    }

    /// Cancels the run: nothing new starts, requests not yet handed out are dropped, and the
    /// run ends `Canceled` once the requests in flight (see `in_flight`) have completed.
    pub fn cancel(&mut self) {
        if self.done {
            return;
        }
        if self.state == State::Running {
            self.state = State::Canceled;
        }
        let dropped = std::mem::take(&mut self.pending);
        let mut touched = Vec::new();
        for r in dropped {
            let Some((inst, item)) = self.active.remove(&r.id) else { continue };
            match item {
                None => {
                    if let Some(i) = self.instances.get_mut(inst) {
                        i.status = Some(TaskStatus::Canceled);
                    }
                    touched.push((inst, false));
                }
                Some(_) => {
                    if let Some(items) = self.instances.get_mut(inst).and_then(|i| i.items.as_mut()) {
                        items.running = items.running.saturating_sub(1);
                    }
                    touched.push((inst, true));
                }
            }
        }
        touched.dedup();
        for (inst, items) in touched {
            if items {
                self.maybe_finish_items(inst);
            } else {
                self.finish(inst);
            }
        }
        self.advance();
    }

    /// Ids of requests handed out by `ready()` that have not completed yet.
    pub fn in_flight(&self) -> Vec<u64> {
        let mut ids: Vec<u64> =
            self.active.keys().copied().filter(|id| !self.pending.iter().any(|r| r.id == *id)).collect();
        ids.sort_unstable();
        ids
    }

    pub fn status(&self) -> RunStatus {
        if !self.done {
            return RunStatus::Running;
        }
        match self.state {
            State::Running => RunStatus::Running,
            State::Succeeded => RunStatus::Succeeded,
            State::Failed => RunStatus::Failed,
            State::Canceled => RunStatus::Canceled,
        }
    }

    /// `{"output": {...} | null}`, plus `"errors": [{type, message, task_id?, …}]` when the
    /// run failed.
    pub fn output(&self) -> Json {
        let mut m = Map::new();
        m.insert("output".into(), self.output.clone().unwrap_or(Json::Null));
        if self.status() == RunStatus::Failed {
            m.insert("errors".into(), Json::Array(self.errors.clone()));
        }
        Json::Object(m)
    }

    fn log(&mut self, e: Json) {
        if self.errors.len() < MAX_ERRORS && !self.errors.contains(&e) {
            self.errors.push(e);
        }
    }

    fn fail(&mut self) {
        if self.state == State::Running {
            self.state = State::Failed;
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn ctx_of(&self, delta: &Map<String, Json>) -> Json {
        let mut m = self.root.clone();
        deep_merge(&mut m, delta, 0);
        Json::Object(m)
    }

    fn record_of(&self, i: usize) -> Json {
        let Some(inst) = self.instances.get(i) else { return Json::Null };
        let name = self.wf.tasks.get(inst.task).map(|t| t.name.as_str()).unwrap_or_default();
        let status = inst.status.map(TaskStatus::as_str).unwrap_or("running");
        let result = match (&inst.items, self.wf.flavor) {
            // st2 keeps a with-items task's result as {"items": [{status, result}, …]}.
            (Some(items), Flavor::Orquesta) => json!({
                "items": items.results.iter().map(|r| match r {
                    Some((s, v)) => json!({"status": s.as_str(), "result": v}),
                    None => Json::Null,
                }).collect::<Vec<_>>()
            }),
            _ => inst.result.clone(),
        };
        json!({
            "task_execution_id": i.to_string(),
            "task_id": name,
            "task_name": name,
            "route": 0,
            "status": status,
            "result": result,
        })
    }

    /// Launches ready staged tasks until nothing changes, then checks for completion.
    fn advance(&mut self) {
        // Each round consumes staged entries and creates executions (bounded by
        // MAX_TASK_RUNS), so this ends; the guard is belt and braces.
        for _ in 0..=MAX_TASK_RUNS {
            if !self.launch_staged() {
                break;
            }
        }
        self.check_done();
    }

    fn runnable(&self, s: &Staged) -> bool {
        s.ready && (self.state == State::Running || (self.state == State::Failed && s.run_on_fail))
    }

    fn launch_staged(&mut self) -> bool {
        if self.done || matches!(self.state, State::Canceled | State::Succeeded) {
            return false;
        }
        let picks: Vec<usize> = (0..self.staged.len()).filter(|&i| self.runnable(&self.staged[i])).collect();
        if picks.is_empty() {
            return false;
        }
        let mut batch = Vec::with_capacity(picks.len());
        for i in picks.into_iter().rev() {
            batch.push(self.staged.remove(i));
        }
        batch.reverse();
        // Render everything first: as in Orquesta, one rendering error fails the run and
        // nothing of this batch starts (all errors are reported at once).
        let mut launches = Vec::with_capacity(batch.len());
        let mut errors = Vec::new();
        for s in batch {
            match self.render_task(&s) {
                Ok(l) => launches.push((s, l)),
                Err(e) => {
                    let name = self.wf.tasks.get(s.task).map(|t| t.name.clone()).unwrap_or_default();
                    errors.push(error(e, Some(&name)));
                }
            }
        }
        if !errors.is_empty() {
            for e in errors {
                self.log(e);
            }
            self.fail();
            return true;
        }
        for (s, l) in launches {
            self.launch(s, l);
        }
        true
    }

    fn render_task(&self, s: &Staged) -> Result<Launch, String> {
        let spec = self.wf.tasks.get(s.task).ok_or("internal: unknown task")?;
        let ctx = self.ctx_of(&s.delta);
        let recs = Records(self);
        let null = Json::Null;
        let current = || Some(Current { name: &spec.name, status: "running", result: &null });
        let sc = Scope { rt: &self.rt, ctx: &ctx, current: current(), item: None, index: None, tasks: &recs };
        let delay = match (s.delay, &spec.delay) {
            (Some(d), _) => Some(d),
            (None, Some(t)) => Some(as_u64(&t.render(&sc)?, "task delay")?),
            (None, None) => None,
        };
        if delay.is_some_and(|d| d > MAX_DELAY_SECS) {
            return Err(format!("task delay is longer than {MAX_DELAY_SECS} seconds"));
        }
        let retry = match (s.retry, &spec.retry) {
            (Some(r), _) => Some(r),
            (None, Some(r)) => {
                let count = as_u64(&r.count.render(&sc)?, "retry count")?;
                if count > super::spec::MAX_RETRY_COUNT {
                    return Err(format!(
                        "The retry count for task \"{}\" is larger than {}.",
                        spec.name,
                        super::spec::MAX_RETRY_COUNT
                    ));
                }
                let delay = match &r.delay {
                    Some(d) => as_u64(&d.render(&sc)?, "retry delay")?.min(MAX_DELAY_SECS),
                    None => 0,
                };
                Some(RetryState { count, tally: 0, delay })
            }
            (None, None) => None,
        };
        let render_action = |sc: &Scope<'_>| -> Result<(String, Map<String, Json>), String> {
            let action = match spec.action.as_ref().map(|a| a.render(sc)).transpose()? {
                Some(Json::String(a)) if !a.trim().is_empty() => a,
                Some(other) => return Err(format!("The action reference {other} is not a string.")),
                None => String::new(),
            };
            let input = match spec.input.render(sc)? {
                Json::Object(m) => m,
                Json::Null => Map::new(),
                other => return Err(format!("The task input must be a dict, not {other}.")),
            };
            Ok((action, input))
        };
        let work = match (&spec.with, &spec.action) {
            (Some(w), _) => {
                let items = match w.items.render(&sc)? {
                    Json::Array(a) => a,
                    other => return Err(format!("The value of the items is not type of list ({other}).")),
                };
                if items.len() > MAX_ITEMS {
                    return Err(format!("more than {MAX_ITEMS} items"));
                }
                let concurrency = match w.concurrency.as_ref().map(|c| c.render(&sc)).transpose()? {
                    None | Some(Json::Null) => None,
                    Some(Json::Number(n)) if n.as_i64().is_some() => Some(n.as_i64().unwrap_or(1).max(1) as usize),
                    Some(other) => return Err(format!("The value of concurrency is not type of integer ({other}).")),
                };
                let mut reqs = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    let item = match (&item, w.keys.len()) {
                        (Json::Array(vals), n) if n > 0 => {
                            Json::Object(w.keys.iter().cloned().zip(vals.iter().cloned()).collect())
                        }
                        (_, 1) => json!({ w.keys[0].clone(): item }),
                        _ => item,
                    };
                    let sc = Scope {
                        rt: &self.rt,
                        ctx: &ctx,
                        current: current(),
                        item: Some(&item),
                        index: Some(i),
                        tasks: &recs,
                    };
                    reqs.push(render_action(&sc)?);
                }
                Work::Items(reqs, concurrency)
            }
            (None, Some(_)) => {
                let (a, i) = render_action(&sc)?;
                Work::One(a, i)
            }
            (None, None) => Work::Nothing,
        };
        Ok(Launch { work, delay, retry })
    }

    fn launch(&mut self, s: Staged, l: Launch) {
        let name = self.wf.tasks.get(s.task).map(|t| t.name.clone()).unwrap_or_default();
        let needed = match &l.work {
            Work::Nothing => 0,
            Work::One(..) => 1,
            Work::Items(r, _) => r.len(),
        };
        if self.instances.len() >= MAX_TASK_RUNS || self.executions + needed > MAX_ACTION_EXECUTIONS {
            self.log(error(
                format!("the workflow exceeded {MAX_TASK_RUNS} task or {MAX_ACTION_EXECUTIONS} action executions"),
                Some(&name),
            ));
            self.fail();
            return;
        }
        if s.join {
            self.joined.insert(s.task, s.arrived.clone());
        }
        let seq = self.next_seq();
        let idx = self.instances.len();
        self.instances.push(Instance {
            task: s.task,
            seq,
            delta: s.delta,
            status: None,
            result: Json::Null,
            items: None,
            retry: l.retry,
            engine_retries: s.engine_retries,
        });
        self.latest.insert(s.task, idx);
        match l.work {
            Work::Nothing => {
                self.instances[idx].status = Some(TaskStatus::Succeeded);
                self.finish(idx);
            }
            Work::One(action, input) => self.request(idx, None, action, input, l.delay),
            Work::Items(reqs, _) if reqs.is_empty() => {
                self.instances[idx].status = Some(TaskStatus::Succeeded);
                self.instances[idx].result = Json::Array(Vec::new());
                self.instances[idx].items =
                    Some(Items { reqs, results: Vec::new(), next: 0, running: 0, concurrency: None, delay: None });
                self.finish(idx);
            }
            Work::Items(reqs, concurrency) => {
                let n = reqs.len();
                self.instances[idx].items =
                    Some(Items { reqs, results: vec![None; n], next: 0, running: 0, concurrency, delay: l.delay });
                self.start_items(idx);
            }
        }
    }

    fn request(
        &mut self,
        inst: usize,
        item: Option<usize>,
        action: String,
        input: Map<String, Json>,
        delay: Option<u64>,
    ) {
        let (task, timeout) = match self.instances.get(inst).and_then(|i| self.wf.tasks.get(i.task)) {
            Some(t) => (t.name.clone(), t.timeout.map(Duration::from_secs)),
            None => return,
        };
        let id = self.next_id;
        self.next_id += 1;
        self.executions += 1;
        self.active.insert(id, (inst, item));
        self.pending.push(TaskRequest {
            id,
            task,
            action,
            input,
            item_index: item,
            delay: delay.filter(|d| *d > 0).map(Duration::from_secs),
            timeout,
        });
    }

    /// Starts items up to the concurrency limit.
    fn start_items(&mut self, inst: usize) {
        loop {
            let Some(items) = self.instances.get_mut(inst).and_then(|i| i.items.as_mut()) else { return };
            let limit = items.concurrency.unwrap_or(usize::MAX);
            if items.next >= items.reqs.len() || items.running >= limit {
                return;
            }
            let n = items.next;
            items.next += 1;
            items.running += 1;
            let (action, input) = std::mem::take(&mut items.reqs[n]);
            // As in st2: the task delay holds back the first wave of items only.
            let delay = if n < limit { items.delay } else { None };
            self.request(inst, Some(n), action, input, delay);
        }
    }

    /// Completes a with-items execution once no item runs and none will start.
    fn maybe_finish_items(&mut self, inst: usize) {
        let halted = self.state != State::Running;
        let Some(i) = self.instances.get_mut(inst) else { return };
        if i.status.is_some() {
            return;
        }
        let Some(items) = i.items.as_ref() else { return };
        if items.running > 0 || (items.next < items.reqs.len() && !halted) {
            return;
        }
        let statuses: Vec<Option<TaskStatus>> = items.results.iter().map(|r| r.as_ref().map(|(s, _)| *s)).collect();
        let status = if statuses.iter().any(|s| s.is_some_and(TaskStatus::abended)) {
            TaskStatus::Failed
        } else if statuses.iter().all(|s| *s == Some(TaskStatus::Succeeded)) {
            TaskStatus::Succeeded
        } else {
            TaskStatus::Canceled
        };
        i.result = Json::Array(
            items.results.iter().map(|r| r.as_ref().map(|(_, v)| v.clone()).unwrap_or(Json::Null)).collect(),
        );
        i.status = Some(status);
        self.finish(inst);
    }

    /// A task execution ended: log its failure, retry it, or follow its transitions.
    fn finish(&mut self, inst: usize) {
        let Some(i) = self.instances.get(inst) else { return };
        let Some(status) = i.status else { return };
        let task = i.task;
        let wf = self.wf.clone();
        let Some(spec) = wf.tasks.get(task) else { return };
        let name = spec.name.clone();

        if status.abended() {
            let failures: Vec<Json> = match &i.items {
                Some(items) => items
                    .results
                    .iter()
                    .filter_map(|r| r.as_ref())
                    .filter(|(s, _)| s.abended())
                    .map(|(_, v)| v.clone())
                    .collect(),
                None => vec![i.result.clone()],
            };
            for r in failures {
                let mut e = error(EXECUTION_FAILED, Some(&name));
                if let Json::Object(m) = &mut e {
                    m.insert("result".into(), r);
                }
                self.log(e);
            }
        }

        // Retry: only while the run is active, evaluated over the finished execution.
        if let (Some(r), Some(rs), State::Running) = (&spec.retry, self.instances[inst].retry, self.state)
            && rs.tally < rs.count
        {
            let decision = match &r.when {
                None => Ok(status.abended()),
                Some(w) => self.eval_in(inst, |sc| w.render(sc)).map(|v| truthy(&v)),
            };
            match decision {
                Ok(true) => {
                    let tally = rs.tally + 1;
                    let factor = match r.backoff {
                        Backoff::Constant => 1,
                        Backoff::Linear => tally,
                        Backoff::Exponential => 1u64.checked_shl(tally.saturating_sub(1).min(32) as u32).unwrap_or(1),
                    };
                    let mut delay = rs.delay.saturating_mul(factor).min(MAX_DELAY_SECS);
                    if let Some(max) = r.max_delay {
                        delay = delay.min(max);
                    }
                    let mut s = Staged::new(task, self.instances[inst].delta.clone());
                    s.retry = Some(RetryState { tally, ..rs });
                    s.delay = Some(delay);
                    s.engine_retries = self.instances[inst].engine_retries;
                    self.staged.push(s);
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    self.log(error(e, Some(&name)));
                    self.fail();
                }
            }
        }

        // Transitions, evaluated in order over the finished execution's context.
        let mut has_next = false;
        let mut manual_fail = false;
        let mut ends: Vec<Map<String, Json>> = Vec::new();
        let mut staged_here: Vec<usize> = Vec::new();
        for (ti, tr) in spec.next.iter().enumerate() {
            let first = tr.targets.first().map(|t| match t {
                Target::Task(j) => wf.tasks.get(*j).map(|s| s.name.clone()).unwrap_or_default(),
                Target::Continue => "continue".into(),
                Target::Fail => "fail".into(),
                Target::Noop => "noop".into(),
                Target::Retry => "retry".into(),
            });
            let transition_id = format!("{}__t{ti}", first.unwrap_or_else(|| "continue".into()));
            let outcome = self.eval_in(inst, |sc| {
                if let Some(w) = &tr.when
                    && !truthy(&w.render(sc)?)
                {
                    return Ok(None);
                }
                let mut rolling = sc.ctx.clone();
                let mut new = Map::new();
                for (k, p) in &tr.publish {
                    let v = {
                        let psc =
                            Scope { ctx: &rolling, current: sc.current.as_ref().map(|c| Current { ..*c }), ..*sc };
                        p.render(&psc)?
                    };
                    if let Json::Object(m) = &mut rolling {
                        m.insert(k.clone(), v.clone());
                    }
                    new.insert(k.clone(), v);
                }
                Ok(Some(new))
            });
            let new = match outcome {
                Ok(Some(new)) => new,
                Ok(None) => continue,
                Err(e) => {
                    let mut err = error(e, Some(&name));
                    if let Json::Object(m) = &mut err {
                        m.insert("task_transition_id".into(), Json::String(transition_id));
                    }
                    self.log(err);
                    self.fail();
                    continue;
                }
            };
            let mut out = self.instances[inst].delta.clone();
            deep_merge(&mut out, &new, 0);
            let targets = if tr.targets.is_empty() { vec![Target::Continue] } else { tr.targets.clone() };
            for t in targets {
                match t {
                    Target::Task(j) => {
                        has_next = true;
                        match self.stage(j, out.clone(), task, inst) {
                            Some(si) => staged_here.push(si),
                            // Arrived at a barrier that already ran: the branch ends here.
                            None => ends.push(out.clone()),
                        }
                    }
                    Target::Continue => ends.push(out.clone()),
                    Target::Noop => {
                        has_next = true;
                        ends.push(out.clone());
                    }
                    Target::Fail => {
                        has_next = true;
                        manual_fail = true;
                        ends.push(out.clone());
                    }
                    Target::Retry => {
                        // Only a retry that happens remediates; once exhausted the failure
                        // stands.
                        let tries = self.instances[inst].engine_retries;
                        if tries < ENGINE_RETRY_COUNT {
                            has_next = true;
                            let mut s = Staged::new(task, self.instances[inst].delta.clone());
                            s.engine_retries = tries + 1;
                            s.retry = self.instances[inst].retry;
                            self.staged.push(s);
                        }
                    }
                }
            }
        }
        if manual_fail {
            self.log(error(EXECUTION_FAILED, Some("fail")));
            for si in staged_here {
                if let Some(s) = self.staged.get_mut(si)
                    && s.ready
                {
                    s.run_on_fail = true;
                }
            }
            self.fail();
        }
        if status.abended() && !has_next {
            self.fail();
        }
        if status == TaskStatus::Canceled && self.state == State::Running {
            self.state = State::Canceled;
        }

        let seq = self.instances[inst].seq;
        // A task without transitions ends its branch with its own context; so does the task
        // whose completion ends the run (Orquesta marks both terminal).
        let last = self.state != State::Running
            || (self.active.is_empty() && !self.staged.iter().any(|s| s.ready && self.runnable(s)));
        if spec.next.is_empty() || last {
            self.terminal.push((seq, self.instances[inst].delta.clone()));
        }
        for e in ends {
            let s = self.next_seq();
            self.terminal.push((s, e));
        }
    }

    /// Evaluates `f` with the scope of a finished execution (its context and result).
    fn eval_in<T>(&self, inst: usize, f: impl FnOnce(&Scope<'_>) -> Result<T, String>) -> Result<T, String> {
        let i = self.instances.get(inst).ok_or("internal: unknown execution")?;
        let spec = self.wf.tasks.get(i.task).ok_or("internal: unknown task")?;
        let ctx = self.ctx_of(&i.delta);
        let recs = Records(self);
        let status = i.status.map(TaskStatus::as_str).unwrap_or("running");
        let sc = Scope {
            rt: &self.rt,
            ctx: &ctx,
            current: Some(Current { name: &spec.name, status, result: &i.result }),
            item: None,
            index: None,
            tasks: &recs,
        };
        f(&sc)
    }

    /// Stages task `t` reached from task `from` (execution `inst`); returns the staged index,
    /// or `None` when the arrival joins a barrier that already started.
    fn stage(&mut self, t: usize, delta: Map<String, Json>, from: usize, inst: usize) -> Option<usize> {
        let spec = self.wf.tasks.get(t)?;
        match spec.join {
            Some(join) => {
                let si = match self.staged.iter().position(|s| s.task == t && s.join) {
                    Some(si) => {
                        deep_merge(&mut self.staged[si].delta, &delta, 0);
                        si
                    }
                    None => {
                        if let Some(consumed) = self.joined.get_mut(&t)
                            && !consumed.contains(&from)
                        {
                            consumed.push(from);
                            return None;
                        }
                        let mut s = Staged::new(t, delta);
                        s.join = true;
                        s.ready = false;
                        self.staged.push(s);
                        self.staged.len() - 1
                    }
                };
                let s = &mut self.staged[si];
                if !s.arrived.contains(&from) {
                    s.arrived.push(from);
                }
                let need = match join {
                    Join::All => self.wf.inbound.get(t).map(Vec::len).unwrap_or(1),
                    Join::Count(n) => n,
                };
                s.ready = s.arrived.len() >= need;
                Some(si)
            }
            None => {
                if let Some(si) = self.staged.iter().position(|s| s.task == t && !s.join && s.source == Some(inst)) {
                    deep_merge(&mut self.staged[si].delta, &delta, 0);
                    return Some(si);
                }
                let mut s = Staged::new(t, delta);
                s.source = Some(inst);
                self.staged.push(s);
                Some(self.staged.len() - 1)
            }
        }
    }

    fn check_done(&mut self) {
        if self.done || !self.active.is_empty() {
            return;
        }
        if self.state != State::Canceled && self.staged.iter().any(|s| self.runnable(s)) {
            return;
        }
        if self.state == State::Running {
            let unreachable: Vec<String> = self
                .staged
                .iter()
                .filter(|s| s.join && !s.ready)
                .filter_map(|s| self.wf.tasks.get(s.task).map(|t| t.name.clone()))
                .collect();
            if unreachable.is_empty() {
                self.state = State::Succeeded;
            } else {
                for n in unreachable {
                    self.log(error(
                        format!("UnreachableJoinError: The join task|route \"{n}|0\" is partially satisfied but unreachable."),
                        Some(&n),
                    ));
                }
                self.state = State::Failed;
            }
        }
        self.done = true;
        if self.started {
            self.render_output();
        }
    }

    fn render_output(&mut self) {
        let mut ctx = Map::new();
        if !self.terminal.is_empty() {
            let mut ends: Vec<&(u64, Map<String, Json>)> = self.terminal.iter().collect();
            ends.sort_by_key(|(seq, _)| *seq);
            ctx = self.root.clone();
            for (_, d) in ends {
                deep_merge(&mut ctx, d, 0);
            }
        }
        let mut rolling = Json::Object(ctx);
        let mut out = Map::new();
        let mut errors = Vec::new();
        let wf = self.wf.clone();
        for (k, tpl) in &wf.output {
            let r = {
                let recs = Records(self);
                let sc = Scope { rt: &self.rt, ctx: &rolling, current: None, item: None, index: None, tasks: &recs };
                tpl.render(&sc)
            };
            match r {
                Ok(v) => {
                    if let Json::Object(m) = &mut rolling {
                        m.insert(k.clone(), v.clone());
                    }
                    out.insert(k.clone(), v);
                }
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            for e in errors {
                self.log(error(e, None));
            }
            if self.state != State::Canceled {
                self.state = State::Failed;
            }
        }
        self.output = if out.is_empty() { None } else { Some(Json::Object(out)) };
    }
}

#[cfg(test)]
mod tests {
    use super::super::tpl::tests::TestKv;
    use super::*;
    use expect_test::{Expect, expect};
    use serde_json::json;

    fn corpus(path: &str) -> Option<Json> {
        let text = std::fs::read_to_string(format!("/work/shared/corpus/st2/{path}")).ok()?;
        serde_saphyr::from_str(&text).ok()
    }

    /// The fake actions: `core.echo` echoes `message`, `core.local` "runs" `cmd` (`exit N`
    /// fails with N), `core.noop`/anything else succeeds with `{}`; `fail.*` actions fail.
    fn fake(r: &TaskRequest) -> (TaskStatus, Json) {
        match r.action.as_str() {
            "core.echo" => {
                let msg = r.input.get("message").map(crate::expr::python_str).unwrap_or_default();
                (TaskStatus::Succeeded, json!({"stdout": msg, "stderr": "", "return_code": 0}))
            }
            "core.local" => {
                let cmd = r.input.get("cmd").and_then(Json::as_str).unwrap_or_default();
                match cmd.strip_prefix("exit ").and_then(|c| c.trim().parse::<i64>().ok()) {
                    Some(code) if code != 0 => (
                        TaskStatus::Failed,
                        json!({"failed": true, "return_code": code, "stderr": "", "stdout": "", "succeeded": false}),
                    ),
                    _ => (TaskStatus::Succeeded, json!({"stdout": cmd, "return_code": 0, "succeeded": true})),
                }
            }
            a if a.starts_with("fail.") => (TaskStatus::Failed, json!({"error": a})),
            _ => (TaskStatus::Succeeded, json!({})),
        }
    }

    fn start(wf: Workflow, input: Json, st2: Json) -> Conductor {
        let Json::Object(input) = input else { panic!("input must be a dict") };
        let kv: Arc<dyn KvSource> = Arc::new(TestKv::new());
        Conductor::start(Arc::new(wf), input, st2, Arc::new(TemplateEnv::new()), Some(kv)).unwrap()
    }

    /// Drives a run to the end: every round takes all ready requests (they run "in
    /// parallel") and completes them with `act`. Returns the trace and the final state.
    fn drive(c: &mut Conductor, act: &mut dyn FnMut(&TaskRequest) -> (TaskStatus, Json)) -> String {
        let mut trace = String::new();
        for _ in 0..1000 {
            let reqs = c.ready();
            if reqs.is_empty() {
                break;
            }
            for r in &reqs {
                let (status, result) = act(r);
                trace.push_str(&format!(
                    "{}{} {} {}{} -> {}\n",
                    r.task,
                    r.item_index.map(|i| format!("[{i}]")).unwrap_or_default(),
                    r.action,
                    Json::Object(r.input.clone()),
                    r.delay.map(|d| format!(" (delay {}s)", d.as_secs())).unwrap_or_default(),
                    status.as_str()
                ));
                c.completed(r.id, status, result);
            }
        }
        format!("{trace}{:?} {}", c.status(), serde_json::to_string_pretty(&c.output()).unwrap_or_default())
    }

    fn check_run(def: Option<Json>, input: Json, expect: Expect) {
        let Some(def) = def else { return eprintln!("corpus not present, skipping") };
        let wf = Workflow::parse_orquesta(&def).unwrap();
        let mut c = start(wf, input, json!({"user": "stanley"}));
        expect.assert_eq(&drive(&mut c, &mut fake));
    }

    fn check_inline(def: Json, input: Json, expect: Expect) {
        check_run(Some(def), input, expect)
    }

    #[test]
    fn sequential_publishes_greeting() {
        check_run(
            corpus("examples/actions/workflows/orquesta-sequential.yaml"),
            json!({"name": "Thanos"}),
            expect![[r#"
                task1 core.echo {"message":"Thanos"} -> succeeded
                task2 core.echo {"message":"All your base are belong to us!"} -> succeeded
                task3 core.echo {"message":"Thanos, All your base are belong to us!"} -> succeeded
                Succeeded {
                  "output": {
                    "greeting": "Thanos, All your base are belong to us!"
                  }
                }"#]],
        );
    }

    #[test]
    fn parallel_branches_join() {
        check_run(
            corpus("examples/actions/workflows/orquesta-join.yaml"),
            json!({}),
            expect![[r#"
                task1 core.noop {} -> succeeded
                task2 core.echo {"message":"Fee fi"} -> succeeded
                task4 core.echo {"message":"I smell the blood of an English man"} -> succeeded
                task6 core.noop {} -> succeeded
                task8 core.noop {} -> succeeded
                task3 core.echo {"message":"fo fum"} -> succeeded
                task5 core.noop {} -> succeeded
                task7 core.echo {"message":"Be alive, or be he dead"} -> succeeded
                task9 core.noop {} -> succeeded
                task10 core.noop {} -> succeeded
                Succeeded {
                  "output": {
                    "messages": [
                      "Fee fi fo fum",
                      "I smell the blood of an English man",
                      "Be alive, or be he dead",
                      "I'll grind his bones to make my bread"
                    ]
                  }
                }"#]],
        );
    }

    #[test]
    fn start_tasks_run_in_parallel_and_join_counts() {
        // Three start tasks; `join: 2` runs as soon as two have arrived.
        let def = json!({"version": 1.0, "tasks": {
            "a": {"action": "core.echo message='a'", "next": [{"publish": "x=<% result().stdout %>", "do": "j"}]},
            "b": {"action": "core.echo message='b'", "next": [{"publish": "y=<% result().stdout %>", "do": "j"}]},
            "c": {"action": "core.echo message='c'", "next": [{"do": "j"}]},
            "j": {"join": 2, "action": "core.echo message=\"<% ctx(x) %><% ctx(y) %>\""},
        }});
        let wf = Workflow::parse_orquesta(&def).unwrap();
        let mut c = start(wf, json!({}), Json::Null);
        let first = c.ready();
        assert_eq!(first.iter().map(|r| r.task.as_str()).collect::<Vec<_>>(), vec!["a", "b", "c"]);
        assert_eq!(c.in_flight(), vec![1, 2, 3]);
        for r in &first[..2] {
            let (s, v) = fake(r);
            c.completed(r.id, s, v);
        }
        let j = c.ready();
        assert_eq!(j.len(), 1);
        assert_eq!(j[0].input, json!({"message": "ab"}).as_object().cloned().unwrap_or_default());
        let (s, v) = fake(&first[2]);
        c.completed(first[2].id, s, v);
        c.completed(j[0].id, TaskStatus::Succeeded, json!({}));
        assert!(c.ready().is_empty());
        assert_eq!(c.status(), RunStatus::Succeeded);
    }

    #[test]
    fn unreachable_join_fails() {
        check_inline(
            json!({"version": 1.0, "tasks": {
                "a": {"action": "core.noop", "next": [{"when": "<% failed() %>", "do": "j"}]},
                "b": {"action": "core.noop", "next": [{"do": "j"}]},
                "j": {"join": "all", "action": "core.noop"},
            }}),
            json!({}),
            expect![[r#"
                a core.noop {} -> succeeded
                b core.noop {} -> succeeded
                Failed {
                  "output": null,
                  "errors": [
                    {
                      "type": "error",
                      "message": "UnreachableJoinError: The join task|route \"j|0\" is partially satisfied but unreachable.",
                      "task_id": "j"
                    }
                  ]
                }"#]],
        );
    }

    #[test]
    fn task_without_join_runs_per_arrival() {
        check_inline(
            json!({"version": 1.0, "tasks": {
                "a": {"action": "core.noop", "next": [{"do": "log"}]},
                "b": {"action": "core.noop", "next": [{"do": "log"}]},
                "log": {"action": "core.echo message='hi'"},
            }}),
            json!({}),
            expect![[r#"
                a core.noop {} -> succeeded
                b core.noop {} -> succeeded
                log core.echo {"message":"hi"} -> succeeded
                log core.echo {"message":"hi"} -> succeeded
                Succeeded {
                  "output": null
                }"#]],
        );
    }

    #[test]
    fn with_items() {
        check_run(
            corpus("examples/actions/workflows/orquesta-with-items.yaml"),
            json!({"members": ["Lakshmi", "Lindsay", "Tomaz"]}),
            expect![[r#"
                task1[0] core.echo {"message":"Lakshmi, resistance is futile!"} -> succeeded
                task1[1] core.echo {"message":"Lindsay, resistance is futile!"} -> succeeded
                task1[2] core.echo {"message":"Tomaz, resistance is futile!"} -> succeeded
                Succeeded {
                  "output": {
                    "items": [
                      "Lakshmi, resistance is futile!",
                      "Lindsay, resistance is futile!",
                      "Tomaz, resistance is futile!"
                    ]
                  }
                }"#]],
        );
        check_inline(
            json!({"version": 1.0, "input": ["hosts", "cmds"], "tasks": {
                "t": {"with": "h, c in <% zip(ctx(hosts), ctx(cmds)) %>", "action": "core.remote hosts=<% item(h) %> cmd=<% item(c) %>",
                      "next": [{"publish": [{"n": "<% len(result()) %>"}]}]},
                "empty": {"with": "<% [] %>", "action": "core.noop", "next": [{"when": "<% succeeded() %>", "publish": "e=<% result() %>"}]},
            }, "output": [{"n": "<% ctx(n) %>"}, {"e": "<% ctx(e) %>"}]}),
            json!({"hosts": ["h1", "h2"], "cmds": ["c1", "c2"]}),
            expect![[r#"
                t[0] core.remote {"hosts":"h1","cmd":"c1"} -> succeeded
                t[1] core.remote {"hosts":"h2","cmd":"c2"} -> succeeded
                Succeeded {
                  "output": {
                    "n": 2,
                    "e": []
                  }
                }"#]],
        );
    }

    #[test]
    fn with_items_concurrency() {
        let Some(def) = corpus("examples/actions/workflows/orquesta-with-items-concurrency.yaml") else { return };
        let wf = Workflow::parse_orquesta(&def).unwrap();
        let mut c = start(wf, json!({"members": ["a", "b", "c", "d", "e"]}), Json::Null);
        let mut waves = Vec::new();
        let mut queue: Vec<TaskRequest> = Vec::new();
        loop {
            queue.extend(c.ready());
            if queue.is_empty() {
                break;
            }
            waves.push(queue.iter().map(|r| r.item_index.unwrap_or(99)).collect::<Vec<_>>());
            // Complete the oldest request only: one slot frees, one new item starts.
            let r = queue.remove(0);
            let (s, v) = fake(&r);
            c.completed(r.id, s, v);
        }
        assert_eq!(waves, vec![vec![0, 1], vec![1, 2], vec![2, 3], vec![3, 4], vec![4]]);
        assert_eq!(c.status(), RunStatus::Succeeded);
        assert_eq!(c.output()["output"]["items"][4], json!("e, resistance is futile!"));
    }

    #[test]
    fn with_items_failure_fails_task() {
        check_run(
            corpus("examples/actions/workflows/tests/orquesta-test-with-items-failure.yaml"),
            json!({}),
            expect![[r#"
                task1[0] core.local {"cmd":"exit $((0 % 2))"} -> succeeded
                task1[1] core.local {"cmd":"exit $((1 % 2))"} -> succeeded
                task1[2] core.local {"cmd":"exit $((2 % 2))"} -> succeeded
                task1[3] core.local {"cmd":"exit $((3 % 2))"} -> succeeded
                task1[4] core.local {"cmd":"exit $((4 % 2))"} -> succeeded
                task1[5] core.local {"cmd":"exit $((5 % 2))"} -> succeeded
                task1[6] core.local {"cmd":"exit $((6 % 2))"} -> succeeded
                task1[7] core.local {"cmd":"exit $((7 % 2))"} -> succeeded
                task1[8] core.local {"cmd":"exit $((8 % 2))"} -> succeeded
                task1[9] core.local {"cmd":"exit $((9 % 2))"} -> succeeded
                Succeeded {
                  "output": null
                }"#]],
        );
        let def = json!({"version": 1.0, "tasks": {"t": {"with": "<% range(0, 3) %>", "action": "core.local cmd=\"exit <% item() %>\""}}});
        let wf = Workflow::parse_orquesta(&def).unwrap();
        let mut c = start(wf, json!({}), Json::Null);
        let out = drive(&mut c, &mut fake);
        expect![[r#"
            t[0] core.local {"cmd":"exit 0"} -> succeeded
            t[1] core.local {"cmd":"exit 1"} -> failed
            t[2] core.local {"cmd":"exit 2"} -> failed
            Failed {
              "output": null,
              "errors": [
                {
                  "type": "error",
                  "message": "Execution failed. See result for details.",
                  "task_id": "t",
                  "result": {
                    "failed": true,
                    "return_code": 1,
                    "stderr": "",
                    "stdout": "",
                    "succeeded": false
                  }
                },
                {
                  "type": "error",
                  "message": "Execution failed. See result for details.",
                  "task_id": "t",
                  "result": {
                    "failed": true,
                    "return_code": 2,
                    "stderr": "",
                    "stdout": "",
                    "succeeded": false
                  }
                }
              ]
            }"#]]
        .assert_eq(&out);
    }

    fn remote_fail_cmd() -> Json {
        json!({"cmd": "exit 1"})
    }

    #[test]
    fn failure_without_handler_fails_workflow() {
        check_run(
            corpus("examples/actions/workflows/orquesta-output-on-error.yaml"),
            json!({}),
            expect![[r#"
                task1 core.noop {} -> succeeded
                task2 core.local {"cmd":"exit 1"} -> failed
                Failed {
                  "output": {
                    "progress": 25
                  },
                  "errors": [
                    {
                      "type": "error",
                      "message": "Execution failed. See result for details.",
                      "task_id": "task2",
                      "result": {
                        "failed": true,
                        "return_code": 1,
                        "stderr": "",
                        "stdout": "",
                        "succeeded": false
                      }
                    }
                  ]
                }"#]],
        );
    }

    #[test]
    fn failure_waits_for_running_tasks() {
        let def = json!({"version": 1.0, "tasks": {
            "a": {"action": "core.local cmd=\"exit 1\""},
            "b": {"action": "core.noop", "next": [{"do": "c"}]},
            "c": {"action": "core.noop"},
        }});
        let wf = Workflow::parse_orquesta(&def).unwrap();
        let mut c = start(wf, json!({}), Json::Null);
        let reqs = c.ready();
        assert_eq!(reqs.len(), 2);
        c.completed(reqs[0].id, TaskStatus::Failed, json!({}));
        assert_eq!(c.status(), RunStatus::Running, "b is still in flight");
        assert_eq!(c.in_flight(), vec![reqs[1].id]);
        c.completed(reqs[1].id, TaskStatus::Succeeded, json!({}));
        assert!(c.ready().is_empty(), "no new task after the failure");
        assert_eq!(c.status(), RunStatus::Failed);
    }

    #[test]
    fn error_handling_continue_noop_fail() {
        check_run(
            corpus("examples/actions/workflows/orquesta-error-handling-continue.yaml"),
            remote_fail_cmd(),
            expect![[r#"
                task1 core.local {"cmd":"exit 1","timeout":null} -> failed
                Failed {
                  "output": {
                    "message": "$%#&@#$!!!"
                  },
                  "errors": [
                    {
                      "type": "error",
                      "message": "Execution failed. See result for details.",
                      "task_id": "task1",
                      "result": {
                        "failed": true,
                        "return_code": 1,
                        "stderr": "",
                        "stdout": "",
                        "succeeded": false
                      }
                    }
                  ]
                }"#]],
        );
        check_run(
            corpus("examples/actions/workflows/orquesta-error-handling-noop.yaml"),
            remote_fail_cmd(),
            expect![[r#"
                task1 core.local {"cmd":"exit 1","timeout":null} -> failed
                Succeeded {
                  "output": {
                    "message": "$%#&@#$!!!"
                  }
                }"#]],
        );
        check_run(
            corpus("examples/actions/workflows/orquesta-error-handling-noop.yaml"),
            json!({"cmd": "true"}),
            expect![[r#"
                task1 core.local {"cmd":"true","timeout":null} -> succeeded
                task2 core.noop {} -> succeeded
                Succeeded {
                  "output": {
                    "message": "hooray!!!"
                  }
                }"#]],
        );
        check_run(
            corpus("examples/actions/workflows/orquesta-error-handling-fail-manually.yaml"),
            remote_fail_cmd(),
            expect![[r#"
                task1 core.local {"cmd":"exit 1","timeout":null} -> failed
                task3 core.noop {} -> succeeded
                Failed {
                  "output": {
                    "message": "$%#&@#$!!!"
                  },
                  "errors": [
                    {
                      "type": "error",
                      "message": "Execution failed. See result for details.",
                      "task_id": "task1",
                      "result": {
                        "failed": true,
                        "return_code": 1,
                        "stderr": "",
                        "stdout": "",
                        "succeeded": false
                      }
                    },
                    {
                      "type": "error",
                      "message": "Execution failed. See result for details.",
                      "task_id": "fail"
                    }
                  ]
                }"#]],
        );
    }

    #[test]
    fn remediate_then_fail_still_runs_the_log_task() {
        check_run(
            corpus("examples/actions/workflows/orquesta-remediate-then-fail.yaml"),
            json!({}),
            expect![[r#"
                task1 core.local {"cmd":"exit 1"} -> failed
                log core.echo {"message":"task1 failed with exit code: "} -> succeeded
                Failed {
                  "output": null,
                  "errors": [
                    {
                      "type": "error",
                      "message": "Execution failed. See result for details.",
                      "task_id": "task1",
                      "result": {
                        "failed": true,
                        "return_code": 1,
                        "stderr": "",
                        "stdout": "",
                        "succeeded": false
                      }
                    },
                    {
                      "type": "error",
                      "message": "Execution failed. See result for details.",
                      "task_id": "fail"
                    }
                  ]
                }"#]],
        );
    }

    #[test]
    fn retry_count_and_delay() {
        let def = json!({"version": 1.0, "tasks": {
            "check": {"action": "core.local cmd=\"probe\"", "retry": {"count": 3, "delay": 2}, "next": [{"when": "<% succeeded() %>", "do": "done"}]},
            "done": {"action": "core.noop"},
        }});
        let wf = Workflow::parse_orquesta(&def).unwrap();
        // Fails twice, then succeeds.
        let mut c = start(wf.clone(), json!({}), Json::Null);
        let mut n = 0;
        let out = drive(&mut c, &mut |r| {
            if r.task == "check" {
                n += 1;
                if n < 3 {
                    return (TaskStatus::Failed, json!({"n": n}));
                }
            }
            (TaskStatus::Succeeded, json!({}))
        });
        expect![[r#"
            check core.local {"cmd":"probe"} -> failed
            check core.local {"cmd":"probe"} (delay 2s) -> failed
            check core.local {"cmd":"probe"} (delay 2s) -> succeeded
            done core.noop {} -> succeeded
            Succeeded {
              "output": null
            }"#]]
        .assert_eq(&out);
        // Always fails: 1 run + 3 retries, then the workflow fails.
        let mut c = start(wf, json!({}), Json::Null);
        let out = drive(&mut c, &mut |_| (TaskStatus::Failed, json!({})));
        assert_eq!(out.matches("check core.local").count(), 4, "{out}");
        assert!(out.contains("Failed"), "{out}");
        // `when` decides; the retry command retries three times.
        let def = json!({"version": 1.0, "tasks": {
            "t": {"action": "core.http", "retry": {"when": "<% result().code != 200 %>", "count": 5}},
            "u": {"action": "core.noop", "next": [{"when": "<% failed() %>", "do": "retry"}]},
        }});
        let wf = Workflow::parse_orquesta(&def).unwrap();
        let mut c = start(wf, json!({}), Json::Null);
        let mut codes = vec![500, 503, 200].into_iter();
        let out = drive(&mut c, &mut |r| match r.task.as_str() {
            "t" => (TaskStatus::Succeeded, json!({"code": codes.next().unwrap_or(200)})),
            _ => (TaskStatus::Failed, json!({})),
        });
        expect![[r#"
            t core.http {} -> succeeded
            u core.noop {} -> failed
            t core.http {} -> succeeded
            u core.noop {} -> failed
            t core.http {} -> succeeded
            u core.noop {} -> failed
            u core.noop {} -> failed
            Failed {
              "output": null,
              "errors": [
                {
                  "type": "error",
                  "message": "Execution failed. See result for details.",
                  "task_id": "u",
                  "result": {}
                }
              ]
            }"#]]
        .assert_eq(&out);
    }

    #[test]
    fn corpus_retry_workflow() {
        // init → (check with retry, create) → delete; check fails until "create" ran.
        let Some(def) = corpus("examples/actions/workflows/orquesta-task-retry.yaml") else { return };
        let wf = Workflow::parse_orquesta(&def).unwrap();
        assert_eq!(wf.unknown_functions(), ["random"]);
        let mut c = start(wf, json!({}), Json::Null);
        let out = drive(&mut c, &mut fake);
        expect![[r#"
            Failed {
              "output": null,
              "errors": [
                {
                  "type": "error",
                  "message": "YaqlEvaluationException: Unable to evaluate expression '<% str(random(1000000, 9999999)) %>'. NoFunctionRegisteredException: Unknown function \"random\""
                }
              ]
            }"#]]
        .assert_eq(&out);
    }

    #[test]
    fn action_less_tasks_and_data_flow() {
        check_run(
            corpus("examples/actions/workflows/tests/orquesta-test-action-less-tasks.yaml"),
            json!({"name": "Thanos"}),
            expect![[r#"
                task2 core.echo {"message":"Thanos"} -> succeeded
                task3 core.echo {"message":"All your base are belong to us!"} -> succeeded
                task6 core.echo {"message":"THANOS, ALL YOUR BASE ARE BELONG TO US!"} -> succeeded
                Succeeded {
                  "output": {
                    "greeting": "THANOS, ALL YOUR BASE ARE BELONG TO US!"
                  }
                }"#]],
        );
        check_run(
            corpus("examples/actions/workflows/orquesta-data-flow.yaml"),
            json!({"a1": "LSU Tigers"}),
            expect![[r#"
                task1 core.echo {"message":"LSU Tigers"} -> succeeded
                task2 core.echo {"message":"LSU Tigers"} -> succeeded
                task3 core.noop {} -> succeeded
                Succeeded {
                  "output": {
                    "a5": "LSU Tigers",
                    "b5": "LSU Tigers"
                  }
                }"#]],
        );
    }

    #[test]
    fn st2_context_kv_and_delay() {
        let Some(def) = corpus("examples/actions/workflows/orquesta-st2-ctx.yaml") else { return };
        let wf = Workflow::parse_orquesta(&def).unwrap();
        let mut c = start(wf, json!({}), json!({"api_url": "http://127.0.0.1:9101/v1", "action_execution_id": "abc"}));
        expect![[r#"
            task1 core.noop {} -> succeeded
            Succeeded {
              "output": {
                "callback": "http://127.0.0.1:9101/v1/executions/abc"
              }
            }"#]]
        .assert_eq(&drive(&mut c, &mut fake));
        check_run(
            corpus("examples/actions/workflows/orquesta-st2kv-default.yaml"),
            json!({"key_name": "system.nope", "decrypt": false, "default": "dflt"}),
            expect![[r#"
                task1 core.noop {} -> succeeded
                Succeeded {
                  "output": {
                    "value_from_yaql": "dflt",
                    "value_from_jinja": "dflt"
                  }
                }"#]],
        );
        check_run(
            corpus("examples/actions/workflows/orquesta-st2kv.yaml"),
            json!({"key_name": "system.secret", "decrypt": true}),
            expect![[r#"
                task1 core.local {"cmd":"echo hunter2"} -> succeeded
                Succeeded {
                  "output": {
                    "value": "echo hunter2"
                  }
                }"#]],
        );
        check_run(
            corpus("examples/actions/workflows/orquesta-delay.yaml"),
            json!({"name": "x", "delay": 3}),
            expect![[r#"
                task1 core.echo {"message":"x"} (delay 3s) -> succeeded
                task2 core.echo {"message":"All your base are belong to us!"} -> succeeded
                task3 core.echo {"message":"x, All your base are belong to us!"} -> succeeded
                Succeeded {
                  "output": {
                    "greeting": "x, All your base are belong to us!"
                  }
                }"#]],
        );
    }

    #[test]
    fn rendering_errors() {
        check_run(
            corpus("examples/actions/workflows/tests/orquesta-fail-input-rendering.yaml"),
            json!({}),
            expect![[r##"
                Failed {
                  "output": null,
                  "errors": [
                    {
                      "type": "error",
                      "message": "YaqlEvaluationException: Unable to evaluate expression '<% abs(8).value %>'. NoFunctionRegisteredException: Unknown function \"#property#value\""
                    }
                  ]
                }"##]],
        );
        check_run(
            corpus("examples/actions/workflows/tests/orquesta-fail-start-task.yaml"),
            json!({"name": "x"}),
            expect![[r##"
                Failed {
                  "output": null,
                  "errors": [
                    {
                      "type": "error",
                      "message": "YaqlEvaluationException: Unable to evaluate expression '<% ctx().name.value %>'. NoFunctionRegisteredException: Unknown function \"#property#value\"",
                      "task_id": "task1"
                    },
                    {
                      "type": "error",
                      "message": "YaqlEvaluationException: Unable to resolve key 'greeting' in expression '<% ctx().greeting %>' from context."
                    }
                  ]
                }"##]],
        );
        check_run(
            corpus("examples/actions/workflows/tests/orquesta-fail-task-transition.yaml"),
            json!({"name": "x"}),
            expect![[r#"
                task1 core.echo {"message":"x"} -> succeeded
                Failed {
                  "output": {
                    "greeting": null
                  },
                  "errors": [
                    {
                      "type": "error",
                      "message": "YaqlEvaluationException: Unable to resolve key 'value' in expression '<% succeeded() and result().value %>' from context.",
                      "task_id": "task1",
                      "task_transition_id": "task2__t0"
                    }
                  ]
                }"#]],
        );
        check_run(
            corpus("examples/actions/workflows/tests/orquesta-fail-task-publish.yaml"),
            json!({"name": "x"}),
            expect![[r#"
                task1 core.echo {"message":"x"} -> succeeded
                Failed {
                  "output": {
                    "greeting": null
                  },
                  "errors": [
                    {
                      "type": "error",
                      "message": "YaqlEvaluationException: Unable to resolve key 'value' in expression '<% result().value %>' from context.",
                      "task_id": "task1",
                      "task_transition_id": "task2__t0"
                    }
                  ]
                }"#]],
        );
        check_run(
            corpus("examples/actions/workflows/tests/orquesta-fail-output-rendering.yaml"),
            json!({"name": "x"}),
            expect![[r##"
                task1 core.echo {"message":"x"} -> succeeded
                task2 core.echo {"message":"All your base are belong to us!"} -> succeeded
                task3 core.echo {"message":"x, All your base are belong to us!"} -> succeeded
                Failed {
                  "output": null,
                  "errors": [
                    {
                      "type": "error",
                      "message": "YaqlEvaluationException: Unable to evaluate expression '<% abs(8).value %>'. NoFunctionRegisteredException: Unknown function \"#property#value\""
                    }
                  ]
                }"##]],
        );
    }

    #[test]
    fn jinja_workflows() {
        // Python actions return {"result": …}.
        let mut act = |r: &TaskRequest| -> (TaskStatus, Json) {
            match r.action.as_str() {
                "zabbix.host_get_id" => (TaskStatus::Succeeded, json!({"result": "10084"})),
                "zabbix.host_get_triggers" => (TaskStatus::Succeeded, json!({"result": [{"id": 1}]})),
                "chatops.format_execution_result" => {
                    (TaskStatus::Succeeded, json!({"result": {"enabled": true, "message": "done", "extra": {"k": 1}}}))
                }
                _ => (TaskStatus::Succeeded, json!({"result": null})),
            }
        };
        let Some(def) = corpus("zabbix/actions/workflows/host_get_active_triggers.yaml") else { return };
        let mut c = start(Workflow::parse_orquesta(&def).unwrap(), json!({"host": "web", "priority": 3}), Json::Null);
        expect![[r#"
            get_zabbix_id zabbix.host_get_id {"host":"web"} -> succeeded
            get_triggers zabbix.host_get_triggers {"filter":{"hostid":"10084","value":1,"priority":3}} -> succeeded
            Succeeded {
              "output": {
                "triggers": [
                  {
                    "id": 1
                  }
                ]
              }
            }"#]]
        .assert_eq(&drive(&mut c, &mut act));
        let Some(def) = corpus("chatops/actions/workflows/post_result.yaml") else { return };
        let input =
            json!({"execution_id": "e1", "user": "u", "channel": "c", "whisper": false, "context": {}, "route": "r"});
        let mut c = start(Workflow::parse_orquesta(&def).unwrap(), input, Json::Null);
        expect![[r#"
            format_execution_result chatops.format_execution_result {"execution_id":"e1"} -> succeeded
            post_message chatops.post_message {"user":"u","channel":"c","whisper":false,"message":"done","route":"r","context":{},"extra":"{'k': 1}"} -> succeeded
            Succeeded {
              "output": {
                "note": "Execution result has been posted."
              }
            }"#]]
        .assert_eq(&drive(&mut c, &mut act));
    }

    #[test]
    fn cancel_waits_for_in_flight() {
        let def = json!({"version": 1.0, "tasks": {
            "a": {"action": "core.noop", "next": [{"do": "b"}]},
            "b": {"action": "core.noop"},
            "c": {"with": {"items": "<% range(4) %>", "concurrency": 2}, "action": "core.noop"},
        }});
        let wf = Workflow::parse_orquesta(&def).unwrap();
        let mut c = start(wf, json!({}), Json::Null);
        let reqs = c.ready();
        assert_eq!(reqs.len(), 3);
        c.cancel();
        assert_eq!(c.status(), RunStatus::Running);
        for r in &reqs {
            c.completed(r.id, TaskStatus::Succeeded, json!({}));
        }
        assert!(c.ready().is_empty());
        assert_eq!(c.status(), RunStatus::Canceled);
        assert_eq!(c.output(), json!({"output": null}));
        // A canceled action cancels the run.
        let def = json!({"version": 1.0, "tasks": {"a": {"action": "core.noop", "next": [{"do": "b"}]}, "b": {"action": "core.noop"}}});
        let mut c = start(Workflow::parse_orquesta(&def).unwrap(), json!({}), Json::Null);
        let out = drive(&mut c, &mut |_| (TaskStatus::Canceled, json!({})));
        expect![[r#"
            a core.noop {} -> canceled
            Canceled {
              "output": null
            }"#]]
        .assert_eq(&out);
    }

    #[test]
    fn runaway_loop_hits_the_task_limit() {
        let def = json!({"version": 1.0, "tasks": {
            "s": {"next": [{"do": "a"}]},
            "a": {"next": [{"do": "b"}]},
            "b": {"next": [{"do": "a"}]},
        }});
        let mut c = start(Workflow::parse_orquesta(&def).unwrap(), json!({}), Json::Null);
        assert!(c.ready().is_empty());
        assert_eq!(c.status(), RunStatus::Failed);
        let out = c.output();
        assert_eq!(
            out["errors"][0]["message"],
            json!(format!("the workflow exceeded {MAX_TASK_RUNS} task or {MAX_ACTION_EXECUTIONS} action executions"))
        );
    }

    #[test]
    fn items_limit_and_delay_limit() {
        let def = json!({"version": 1.0, "tasks": {"t": {"with": "<% range(10001) %>", "action": "core.noop"}}});
        let mut c = start(Workflow::parse_orquesta(&def).unwrap(), json!({}), Json::Null);
        assert!(c.ready().is_empty());
        assert_eq!(c.output()["errors"][0]["message"], json!(format!("more than {MAX_ITEMS} items")));
        let def = json!({"version": 1.0, "tasks": {"t": {"delay": 86401, "action": "core.noop"}}});
        let mut c = start(Workflow::parse_orquesta(&def).unwrap(), json!({}), Json::Null);
        assert!(c.ready().is_empty());
        assert_eq!(
            c.output()["errors"][0]["message"],
            json!(format!("task delay is longer than {MAX_DELAY_SECS} seconds"))
        );
    }

    #[test]
    fn action_execution_limit() {
        // Eleven start tasks of 10,000 items each: the first ten use up the budget.
        let mut tasks = Map::new();
        for i in 0..=MAX_ACTION_EXECUTIONS / MAX_ITEMS {
            tasks.insert(format!("t{i:02}"), json!({"with": "<% range(10000) %>", "action": "core.noop"}));
        }
        let def = json!({"version": 1.0, "tasks": tasks});
        let mut c = start(Workflow::parse_orquesta(&def).unwrap(), json!({}), Json::Null);
        let reqs = c.ready();
        assert_eq!(reqs.len(), MAX_ACTION_EXECUTIONS);
        assert_eq!(c.status(), RunStatus::Running);
        for r in &reqs {
            c.completed(r.id, TaskStatus::Succeeded, Json::Null);
        }
        assert_eq!(c.status(), RunStatus::Failed);
        assert_eq!(c.output()["errors"][0]["task_id"], json!("t10"));
    }

    #[test]
    fn conductor_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Conductor>();
        check::<Workflow>();
    }

    #[test]
    fn error_list_is_capped() {
        let def = json!({"version": 1.0, "tasks": {"t": {"with": "<% range(500) %>", "action": "core.local cmd=\"exit <% item() + 1 %>\""}}});
        let mut c = start(Workflow::parse_orquesta(&def).unwrap(), json!({}), Json::Null);
        drive(&mut c, &mut fake);
        assert_eq!(c.output()["errors"].as_array().map(Vec::len), Some(MAX_ERRORS));
    }

    #[test]
    fn attune_list_workflow() {
        let def = json!({
            "version": "1.0.0",
            "parameters": {"hosts": {"type": "array"}, "greeting": {"type": "string", "default": "hello"}},
            "vars": {"seen": [], "prefix": "{{ parameters.greeting }}"},
            "tasks": [
                {"name": "each", "action": "core.echo", "with_items": "{{ parameters.hosts }}",
                 "input": {"message": "{{ workflow.prefix }} {{ item }} #{{ index }}"},
                 "next": [{"when": "{{ succeeded() }}", "publish": [{"seen": "{{ result() | map(attribute='stdout') | list }}"}], "do": ["summary"]}]},
                {"name": "summary", "action": "core.echo", "input": {"message": "{{ workflow.seen | join(', ') }}"},
                 "on_success": "cleanup", "publish": ["final"]},
                {"name": "cleanup", "action": "core.noop"},
            ],
            "output_map": {"final": "{{ workflow.final.stdout }}", "count": "{{ workflow.seen | length }}", "first": "{{ task.each.result[0].stdout }}"},
        });
        let wf = Workflow::parse_attune(&def).unwrap();
        let mut c = start(wf, json!({"hosts": ["a", "b", "c"]}), json!({"config": {"x": 1}}));
        let mut waves = Vec::new();
        let out = drive(&mut c, &mut |r| {
            waves.push(r.item_index);
            fake(r)
        });
        expect![[r#"
            each[0] core.echo {"message":"hello a #0"} -> succeeded
            each[1] core.echo {"message":"hello b #1"} -> succeeded
            each[2] core.echo {"message":"hello c #2"} -> succeeded
            summary core.echo {"message":"hello a #0, hello b #1, hello c #2"} -> succeeded
            cleanup core.noop {} -> succeeded
            Succeeded {
              "output": {
                "final": "hello a #0, hello b #1, hello c #2",
                "count": 3,
                "first": "hello a #0"
              }
            }"#]]
        .assert_eq(&out);
    }

    #[test]
    fn attune_items_run_one_at_a_time_by_default() {
        let def =
            json!({"tasks": [{"name": "each", "action": "core.noop", "with_items": "{{ [1, 2, 3] }}", "timeout": 9}]});
        let mut c = start(Workflow::parse_attune(&def).unwrap(), json!({}), Json::Null);
        let first = c.ready();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].timeout, Some(Duration::from_secs(9)));
        c.completed(first[0].id, TaskStatus::Succeeded, json!({}));
        assert_eq!(c.ready().len(), 1);
    }
}
