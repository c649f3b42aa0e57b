//! One model for every pack dialect: StackStorm and Attune packs (and installed StackPacks, which
//! become one of these) are read into the same types, so the engine never asks which dialect a
//! rule came from except where the semantics really differ (criteria vs conditions, payload
//! shapes). Everything here is already validated: paths are resolved inside the pack, runner
//! names are a closed enum, parameter schemas are typed. The model holds no I/O handles.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use super::schema::ParamSchema;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    #[serde(rename = "stackstorm")]
    StackStorm,
    Attune,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::StackStorm => "stackstorm",
            Dialect::Attune => "attune",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Pack {
    #[serde(rename = "ref")]
    pub ref_: String,
    pub name: String,
    pub version: String,
    pub description: String,
    pub author: Option<String>,
    pub dialect: Dialect,
    pub path: PathBuf,
    /// The pack configuration after validation and defaults (`configs/<pack>.yaml` for
    /// StackStorm, `config:` in `pack.yaml` for Attune). Values marked secret in the schema stay
    /// here in clear: they are masked wherever they are printed or stored.
    pub config: Value,
    /// The configuration schema, as parameter definitions.
    pub config_schema: ParamSchema,
    pub actions: Vec<Action>,
    pub sensors: Vec<Sensor>,
    pub triggers: Vec<TriggerType>,
    pub rules: Vec<Rule>,
    pub aliases: Vec<Alias>,
    pub policies: Vec<Policy>,
    /// Hash of every metadata file read, for change detection on reload.
    pub digest: String,
}

impl Pack {
    pub fn action(&self, name_or_ref: &str) -> Option<&Action> {
        self.actions.iter().find(|a| a.ref_ == name_or_ref || a.name == name_or_ref)
    }
}

/// How an action runs. Closed: a runner name that packd does not know is an error at load time,
/// so the engine never meets a string it has to guess about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runner {
    LocalShellCmd,
    LocalShellScript,
    PythonScript,
    HttpRequest,
    Noop,
    ActionChain,
    Orquesta,
    Inquirer,
    Announcement,
    RemoteShellCmd,
    RemoteShellScript,
    WinrmCmd,
    WinrmPsCmd,
    WinrmPsScript,
    /// Attune: interpreter + entry file, parameters on stdin (and `ATTUNE_ACTION_*`).
    AttuneShell,
    AttunePython,
    AttuneNode,
    /// Attune: the entry file is executed directly.
    AttuneNative,
    /// Attune workflow (`workflow_file`).
    AttuneWorkflow,
}

impl Runner {
    /// The StackStorm runner name (`local-shell-cmd`); Attune runners use `attune-<runtime>`.
    pub fn name(&self) -> &'static str {
        match self {
            Runner::LocalShellCmd => "local-shell-cmd",
            Runner::LocalShellScript => "local-shell-script",
            Runner::PythonScript => "python-script",
            Runner::HttpRequest => "http-request",
            Runner::Noop => "noop",
            Runner::ActionChain => "action-chain",
            Runner::Orquesta => "orquesta",
            Runner::Inquirer => "inquirer",
            Runner::Announcement => "announcement",
            Runner::RemoteShellCmd => "remote-shell-cmd",
            Runner::RemoteShellScript => "remote-shell-script",
            Runner::WinrmCmd => "winrm-cmd",
            Runner::WinrmPsCmd => "winrm-ps-cmd",
            Runner::WinrmPsScript => "winrm-ps-script",
            Runner::AttuneShell => "attune-shell",
            Runner::AttunePython => "attune-python",
            Runner::AttuneNode => "attune-node",
            Runner::AttuneNative => "attune-native",
            Runner::AttuneWorkflow => "attune-workflow",
        }
    }

    /// StackStorm runner names, including the aliases st2 still registers (`orchestra`) and
    /// the `_` spelling it retries with.
    pub fn from_st2(name: &str) -> Option<Runner> {
        Some(match name.replace('_', "-").as_str() {
            "local-shell-cmd" => Runner::LocalShellCmd,
            "local-shell-script" => Runner::LocalShellScript,
            "python-script" => Runner::PythonScript,
            "http-request" => Runner::HttpRequest,
            "noop" => Runner::Noop,
            "action-chain" => Runner::ActionChain,
            "orquesta" | "orchestra" => Runner::Orquesta,
            "inquirer" => Runner::Inquirer,
            "announcement" => Runner::Announcement,
            "remote-shell-cmd" => Runner::RemoteShellCmd,
            "remote-shell-script" => Runner::RemoteShellScript,
            "winrm-cmd" => Runner::WinrmCmd,
            "winrm-ps-cmd" => Runner::WinrmPsCmd,
            "winrm-ps-script" => Runner::WinrmPsScript,
            _ => return None,
        })
    }

    /// Attune `runner_type` spellings (`shell|bash|sh`, `python|python3`, `node|nodejs|node.js`,
    /// `native|builtin|standalone`).
    pub fn from_attune(name: &str) -> Option<Runner> {
        Some(match name.to_ascii_lowercase().as_str() {
            "shell" | "bash" | "sh" | "core.shell" => Runner::AttuneShell,
            "python" | "python3" | "core.python" => Runner::AttunePython,
            "node" | "nodejs" | "node.js" | "core.nodejs" => Runner::AttuneNode,
            "native" | "builtin" | "standalone" | "core.native" => Runner::AttuneNative,
            _ => return None,
        })
    }

    pub fn needs_entry_point(&self) -> bool {
        !matches!(
            self,
            Runner::LocalShellCmd
                | Runner::HttpRequest
                | Runner::Noop
                | Runner::Inquirer
                | Runner::Announcement
                | Runner::RemoteShellCmd
                | Runner::WinrmCmd
                | Runner::WinrmPsCmd
        )
    }

    pub fn is_workflow(&self) -> bool {
        matches!(self, Runner::ActionChain | Runner::Orquesta | Runner::AttuneWorkflow)
    }
}

/// Attune's parameter delivery options (`parameter_delivery`, `parameter_format`,
/// `output_format`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AttuneIo {
    pub delivery: String,
    pub format: String,
    pub output_format: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Action {
    #[serde(rename = "ref")]
    pub ref_: String,
    pub name: String,
    pub pack: String,
    pub description: String,
    pub enabled: bool,
    pub runner: Runner,
    /// Absolute path of the entry point, checked to lie inside the pack.
    pub entry_point: Option<PathBuf>,
    /// Runner parameters merged with the action's own, as StackStorm does.
    pub parameters: ParamSchema,
    pub output_schema: Option<Value>,
    /// Seconds; `None` = the runner's default.
    pub timeout: Option<u64>,
    pub workflow: Option<Workflow>,
    pub attune: Option<AttuneIo>,
    pub metadata_file: PathBuf,
}

/// A workflow definition referenced by an action, parsed and kept; runs come later.
#[derive(Clone, Debug, Serialize)]
pub struct Workflow {
    pub kind: WorkflowKind,
    pub file: PathBuf,
    /// The whole document, for the workflow runner.
    pub definition: Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkflowKind {
    ActionChain,
    Orquesta,
    Attune,
}

#[derive(Clone, Debug, Serialize)]
pub struct Sensor {
    #[serde(rename = "ref")]
    pub ref_: String,
    pub pack: String,
    pub class_name: Option<String>,
    pub description: String,
    pub enabled: bool,
    pub entry_point: PathBuf,
    pub kind: SensorKind,
    pub poll_interval: Option<u64>,
    /// Refs of the trigger types this sensor emits.
    pub trigger_types: Vec<String>,
    pub metadata_file: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SensorKind {
    /// A StackStorm Python class run by the embedded wrapper.
    St2Python,
    /// Any executable printing one JSON event per line (Attune/seed contract).
    JsonLines,
}

#[derive(Clone, Debug, Serialize)]
pub struct TriggerType {
    #[serde(rename = "ref")]
    pub ref_: String,
    pub pack: String,
    pub name: String,
    pub description: String,
    pub parameters_schema: Value,
    pub payload_schema: Value,
    pub metadata_file: PathBuf,
}

#[derive(Clone, Debug, Serialize)]
pub struct Rule {
    #[serde(rename = "ref")]
    pub ref_: String,
    pub pack: String,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub trigger: String,
    pub trigger_parameters: Value,
    pub matcher: Matcher,
    pub action: String,
    pub action_parameters: Value,
    /// StackStorm `type: backstop` rules fire only when no standard rule matched.
    pub backstop: bool,
    pub metadata_file: PathBuf,
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", content = "spec", rename_all = "lowercase")]
pub enum Matcher {
    /// StackStorm `criteria` (key → `{type, pattern}`), operator names already checked.
    Criteria(serde_json::Map<String, Value>),
    /// Attune `conditions` (expression object or `{field, operator, value}` list).
    Conditions(Value),
}

#[derive(Clone, Debug, Serialize)]
pub struct Alias {
    #[serde(rename = "ref")]
    pub ref_: String,
    pub pack: String,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub action: String,
    pub formats: Vec<AliasFormat>,
    pub ack: Value,
    pub result: Value,
    pub immutable_parameters: Value,
    pub metadata_file: PathBuf,
}

#[derive(Clone, Debug, Serialize)]
pub struct AliasFormat {
    pub display: String,
    pub representations: Vec<String>,
    pub match_multiple: bool,
    /// `{{ name }}` / `{{ name = default }}` placeholders found in the representations.
    pub params: Vec<AliasParam>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AliasParam {
    pub name: String,
    pub default: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Policy {
    #[serde(rename = "ref")]
    pub ref_: String,
    pub pack: String,
    pub name: String,
    pub enabled: bool,
    /// The action (or, for Attune pack-scope policies, `None`) the policy applies to.
    pub resource: Option<String>,
    /// One StackStorm policy file is one kind; an Attune policy may set several at once.
    pub kinds: Vec<PolicyKind>,
    pub metadata_file: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PolicyKind {
    Concurrency { threshold: u64, cancel: bool, attributes: Vec<String> },
    Retry { on_timeout: bool, max_retry_count: u64, delay: f64 },
    RateLimit { max_executions: u64, window_seconds: u64 },
}
