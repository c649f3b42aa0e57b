//! The pack model and everything that reads packs from disk.
//!
//! Pure: no database, no processes, no network. `load_dirs` walks one or more packs
//! directories and returns every pack it could read plus diagnostics; one bad file skips that
//! item, one bad manifest skips that pack, and nothing here stops the others. Every path a pack
//! names is resolved and checked to stay inside the pack before it enters the model.

pub mod attune;
pub mod diag;
pub mod model;
pub mod schema;
pub mod st2;
pub mod yaml;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

pub use diag::{Diagnostic, Severity};
pub use model::*;

use diag::FileDiags;
use yaml::Doc;

/// Most metadata files read from one resource directory. The largest real pack (aws) has 3,500
/// action files; the cap stops a hostile or runaway directory from costing unbounded time.
pub const MAX_FILES_PER_DIR: usize = 10_000;

/// Code files (action and sensor entry points) larger than this are fingerprinted by size and
/// modification time instead of content, so a reload never reads a large binary.
pub const MAX_HASHED_CODE_BYTES: u64 = 4 * 1024 * 1024;

/// Where packs are read from, and where StackStorm pack configs live.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Directories holding `configs/<pack>.yaml` files. When empty, `<packs dir>/../configs`
    /// is used for each packs directory, the StackStorm layout (`/opt/stackstorm/configs`).
    pub config_dirs: Vec<PathBuf>,
}

/// The outcome of reading one pack directory.
#[derive(Debug)]
pub struct LoadedPack {
    pub dir: PathBuf,
    /// `None` when the manifest itself was unusable.
    pub pack: Option<Pack>,
    pub diagnostics: Vec<Diagnostic>,
}

impl LoadedPack {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Error).count()
    }
}

/// Read every pack directory (a directory with `pack.yaml`) directly under each of `dirs`.
/// A directory that is itself a pack (has `pack.yaml`) is read as one pack. When two packs
/// share a ref, the first one found wins and the other is reported, as StackStorm does.
pub fn load_dirs(dirs: &[PathBuf], opts: &LoadOptions) -> Vec<LoadedPack> {
    let mut out: Vec<LoadedPack> = Vec::new();
    for dir in dirs {
        let config_dirs =
            if opts.config_dirs.is_empty() { vec![dir.join("..").join("configs")] } else { opts.config_dirs.clone() };
        for pack_dir in pack_dirs(dir, &mut out) {
            let mut loaded = load_pack(&pack_dir, &config_dirs);
            if let Some(p) = &loaded.pack
                && let Some(first) = out.iter().find(|o| o.pack.as_ref().is_some_and(|q| q.ref_ == p.ref_))
            {
                loaded.diagnostics.push(Diagnostic {
                    severity: Severity::Error,
                    file: pack_dir.join("pack.yaml"),
                    line: None,
                    column: None,
                    field: Some("ref".into()),
                    message: format!(
                        "pack {:?} is already loaded from {}; this copy is skipped",
                        p.ref_,
                        first.dir.display()
                    ),
                });
                loaded.pack = None;
            }
            out.push(loaded);
        }
    }
    out
}

/// Pack directories under `dir` (sorted), or `dir` itself when it holds a `pack.yaml`.
pub fn pack_dirs(dir: &Path, problems: &mut Vec<LoadedPack>) -> Vec<PathBuf> {
    if dir.join("pack.yaml").is_file() {
        return vec![dir.to_path_buf()];
    }
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(LoadedPack {
                dir: dir.to_path_buf(),
                pack: None,
                diagnostics: vec![Diagnostic {
                    severity: Severity::Error,
                    file: dir.to_path_buf(),
                    line: None,
                    column: None,
                    field: None,
                    message: format!("cannot read packs directory: {e}"),
                }],
            });
            return Vec::new();
        }
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(OsStr::to_str).unwrap_or("");
            !name.starts_with('.') && name != "__pycache__" && p.join("pack.yaml").is_file()
        })
        .collect();
    dirs.sort();
    dirs
}

/// Read one pack directory.
pub fn load_pack(dir: &Path, config_dirs: &[PathBuf]) -> LoadedPack {
    let mut cx = Cx::new(dir);
    let pack = match cx.read(&dir.join("pack.yaml")) {
        None => None,
        Some(doc) => {
            if attune::is_attune_manifest(&doc.value) {
                attune::load(&mut cx, doc)
            } else {
                st2::load(&mut cx, doc, config_dirs)
            }
        }
    };
    let pack = pack.map(|mut p| {
        // Code files count too: editing a sensor or action script must look like a change.
        let code: Vec<PathBuf> = p
            .actions
            .iter()
            .filter_map(|a| a.entry_point.clone())
            .chain(p.sensors.iter().map(|s| s.entry_point.clone()))
            .collect();
        for f in code {
            cx.hash_code_file(&f);
        }
        p.digest = cx.digest();
        p
    });
    LoadedPack { dir: dir.to_path_buf(), pack, diagnostics: cx.diags }
}

/// Loading context for one pack: its root, diagnostics, and the digest of what was read.
pub struct Cx {
    pub root: PathBuf,
    /// Canonical root, for containment checks through symlinks.
    canon_root: PathBuf,
    /// Absolute (not canonical) root, for normalising relative entry points.
    abs_root: PathBuf,
    pub diags: Vec<Diagnostic>,
    hashed: BTreeMap<PathBuf, [u8; 32]>,
}

impl Cx {
    fn new(root: &Path) -> Cx {
        // Absolute, so `..` in a relative packs path (`../packs/x`) is not mistaken for an
        // escape when entry points are normalised.
        // Lexically normalised too: `/x/main/../shared/p` must compare equal to the normalised
        // entry points below it even when `shared` is reached through a symlink.
        let abs_root = normalize(&std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()));
        Cx {
            root: root.to_path_buf(),
            canon_root: fs::canonicalize(&abs_root).unwrap_or_else(|_| abs_root.clone()),
            abs_root,
            diags: Vec::new(),
            hashed: BTreeMap::new(),
        }
    }

    fn digest(&self) -> String {
        let mut h = Sha256::new();
        for (p, d) in &self.hashed {
            h.update(p.to_string_lossy().as_bytes());
            h.update(d);
        }
        let d = h.finalize();
        d.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    /// Fold a code file into the digest (bounded: a huge file is hashed by size and mtime).
    fn hash_code_file(&mut self, file: &Path) {
        let Ok(meta) = fs::metadata(file) else { return };
        let rel = file.strip_prefix(&self.root).unwrap_or(file).to_path_buf();
        let digest: [u8; 32] = if meta.len() <= MAX_HASHED_CODE_BYTES {
            match fs::read(file) {
                Ok(b) => Sha256::digest(&b).into(),
                Err(_) => return,
            }
        } else {
            let mtime =
                meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
            Sha256::digest(format!("{}:{}", meta.len(), mtime.as_nanos()).as_bytes()).into()
        };
        self.hashed.insert(rel, digest);
    }

    /// A diagnostic about a whole file (no field).
    pub fn file_error(&mut self, file: &Path, severity: Severity, message: String, pos: Option<yaml::Pos>) {
        self.diags.push(Diagnostic {
            severity,
            file: file.to_path_buf(),
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.col),
            field: None,
            message,
        });
    }

    /// Diagnostics sink for fields of `file`.
    pub fn at<'a>(&'a mut self, file: &'a Path, doc: Option<&'a Doc>) -> FileDiags<'a> {
        FileDiags { file, doc, out: &mut self.diags }
    }

    /// Read and parse one metadata file, refusing symlinks that leave the pack. Problems are
    /// recorded; `None` means the file is skipped.
    pub fn read(&mut self, file: &Path) -> Option<Doc> {
        self.read_checked(file, true)
    }

    /// Read a file the operator placed outside the pack (a `configs/<pack>.yaml`): the same
    /// limits apply, but it is not required to live inside the pack.
    pub fn read_operator_file(&mut self, file: &Path) -> Option<Doc> {
        self.read_checked(file, false)
    }

    fn read_checked(&mut self, file: &Path, inside: bool) -> Option<Doc> {
        if let Err(msg) = self.check_inside(file).or_else(|e| if inside { Err(e) } else { Ok(()) }) {
            self.file_error(file, Severity::Error, msg, None);
            return None;
        }
        let meta = match fs::metadata(file) {
            Ok(m) => m,
            Err(e) => {
                self.file_error(file, Severity::Error, format!("cannot read: {e}"), None);
                return None;
            }
        };
        if meta.len() > yaml::MAX_YAML_BYTES as u64 {
            self.file_error(
                file,
                Severity::Error,
                format!(
                    "file is {} bytes, over the {}-byte limit for metadata files",
                    meta.len(),
                    yaml::MAX_YAML_BYTES
                ),
                None,
            );
            return None;
        }
        let bytes = match fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                self.file_error(file, Severity::Error, format!("cannot read: {e}"), None);
                return None;
            }
        };
        let rel = file.strip_prefix(&self.root).unwrap_or(file).to_path_buf();
        self.hashed.insert(rel, Sha256::digest(&bytes).into());
        match yaml::parse(&bytes) {
            Ok(doc) => {
                for (key, pos) in &doc.duplicate_keys {
                    self.file_error(
                        file,
                        Severity::Warning,
                        format!("duplicate key {key:?}: the last value is used, as PyYAML does"),
                        Some(*pos),
                    );
                }
                Some(doc)
            }
            Err(e) => {
                let pos = e.pos();
                self.file_error(file, Severity::Error, format!("invalid YAML: {e}"), pos);
                None
            }
        }
    }

    /// Refuse a path that is (or goes through) a symlink leading outside the pack.
    fn check_inside(&self, path: &Path) -> Result<(), String> {
        match fs::canonicalize(path) {
            Ok(c) if c.starts_with(&self.canon_root) => Ok(()),
            Ok(c) => Err(format!("refused: resolves to {} outside the pack (symlink)", c.display())),
            Err(e) => Err(format!("cannot read: {e}")),
        }
    }

    /// Resolve `rel` against `base` (a directory inside the pack) without leaving the pack:
    /// absolute paths must already point inside it, `..` may not climb above the root, and an
    /// existing file must not be a symlink out. The file need not exist (metadata-only copies of
    /// packs are valid; a missing file is reported when the action runs).
    pub fn resolve_inside(&self, base: &Path, rel: &str) -> Result<PathBuf, String> {
        if rel.is_empty() {
            return Err("is empty".into());
        }
        if rel.contains('\0') {
            return Err("contains a NUL byte".into());
        }
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
        let joined = if Path::new(rel).is_absolute() { PathBuf::from(rel) } else { base.join(rel) };
        // `..` may not climb above the filesystem root, and (checked below) not out of the pack.
        if joined.components().filter(|c| matches!(c, Component::ParentDir)).count()
            > joined.components().filter(|c| matches!(c, Component::Normal(_))).count()
        {
            return Err(format!("{rel:?} leaves the pack directory"));
        }
        let norm = normalize(&joined);
        let inside = norm.starts_with(&self.abs_root) || norm.starts_with(&self.canon_root);
        if !inside {
            return Err(format!("{rel:?} points outside the pack directory"));
        }
        if norm.exists() {
            self.check_inside(&norm).map_err(|m| format!("{rel:?}: {m}"))?;
        }
        // Spell it under the root as the user gave it, so diagnostics show familiar paths.
        Ok(match norm.strip_prefix(&self.abs_root) {
            Ok(rest) => self.root.join(rest),
            Err(_) => norm,
        })
    }

    /// `*.yaml`/`*.yml` files directly in `sub` (StackStorm globs non-recursively), sorted.
    pub fn list_yaml(&mut self, sub: &str) -> Vec<PathBuf> {
        let dir = self.root.join(sub);
        let Ok(entries) = fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                matches!(p.extension().and_then(OsStr::to_str), Some("yaml" | "yml"))
                    && !p.file_name().and_then(OsStr::to_str).unwrap_or("").starts_with('.')
                    && fs::symlink_metadata(p).map(|m| !m.is_dir()).unwrap_or(false)
            })
            .collect();
        files.sort();
        if files.len() > MAX_FILES_PER_DIR {
            self.file_error(
                &dir,
                Severity::Error,
                format!("{} metadata files, over the limit of {MAX_FILES_PER_DIR}; the rest are skipped", files.len()),
                None,
            );
            files.truncate(MAX_FILES_PER_DIR);
        }
        files
    }
}

/// Check a rule's trigger parameters where packd knows the trigger's rules: timers must parse
/// into a schedule and webhooks need a url. `field` is where the parameters are written.
pub(crate) fn check_trigger_parameters(
    trigger: &str,
    params: &serde_json::Value,
    field: &str,
    d: &mut FileDiags,
) -> bool {
    if crate::timers::is_timer_trigger(trigger) {
        if let Err(e) = crate::timers::TimerSpec::parse(trigger, params) {
            let msg = e.to_string();
            let (f, msg) = match e.field_name() {
                Some(n) => (diag::join(field, n), msg.strip_prefix(&format!("{n}: ")).unwrap_or(&msg).to_string()),
                None => (field.to_string(), msg.clone()),
            };
            d.error(&f, msg);
            return false;
        }
    } else if trigger == crate::registry::WEBHOOK_TRIGGER
        && params.get("url").and_then(serde_json::Value::as_str).is_none_or(|u| u.trim_matches('/').is_empty())
    {
        d.error(
            &diag::join(field, "url"),
            "is required for core.st2.webhook rules (the hook name under /api/v1/webhooks/)",
        );
        return false;
    }
    true
}

/// `.` and `..` resolved lexically (no filesystem access, symlinks not followed).
fn normalize(path: &Path) -> PathBuf {
    let mut norm = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                norm.pop();
            }
            Component::CurDir => {}
            other => norm.push(other),
        }
    }
    norm
}

/// Trim a `serde_json` string field, treating non-strings as absent.
pub(crate) fn str_field<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(serde_json::Value::as_str)
}
