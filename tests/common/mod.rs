//! Shared helpers for integration tests: run the real `packd` binary against fixture
//! directories made in temporary directories.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test. When a cross test run sets `CARGO_TARGET_<TRIPLE>_RUNNER` (qemu),
/// the binary is started through that runner, since there is no binfmt on the build machine.
pub fn packd() -> Command {
    let bin = env!("CARGO_BIN_EXE_packd");
    let runner = std::env::vars()
        .find(|(k, v)| {
            k.starts_with("CARGO_TARGET_") && k.ends_with("_RUNNER") && !v.trim().is_empty()
        })
        .map(|(_, v)| v);
    match runner {
        Some(r) => {
            let mut parts = r.split_whitespace();
            let mut c = Command::new(parts.next().unwrap_or("qemu"));
            c.args(parts);
            c.arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

pub fn run(args: &[&str]) -> Output {
    packd().args(args).output().expect("spawn packd")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A temporary directory with helpers to write fixture files.
pub struct Dir {
    pub tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        Dir {
            tmp: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    pub fn write(&self, p: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, contents).expect("write");
        path
    }

    pub fn s(&self, p: &str) -> String {
        self.join(p).to_string_lossy().into_owned()
    }
}

/// The StackStorm corpus shipped beside the project (or `$PACKD_CORPUS`).
pub fn corpus() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("PACKD_CORPUS") {
        return Some(PathBuf::from(p));
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    p.is_dir().then_some(p)
}
