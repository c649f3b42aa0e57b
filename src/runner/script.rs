//! How a script file from a pack is started: directly when it is executable, else through the
//! interpreter named on its `#!` line, else through a fallback interpreter (`/bin/sh`).
//!
//! It only reads the first line of the file; it never changes the file (StackStorm runs
//! `chmod +x` on pack scripts, which fails on read-only pack directories and silently changes
//! installed files — reading the shebang ourselves gives the same result without either).

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Bytes of a script read to find its `#!` line: Linux reads 256 (`BINPRM_BUF_SIZE`), so a
/// longer line would not work when executed directly either.
pub const MAX_SHEBANG_LINE: usize = 256;

/// A program and the arguments that precede the caller's own arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// The interpreter and its optional single argument from a `#!` line, as the kernel splits it:
/// the interpreter ends at the first blank, the rest of the line (trimmed) is one argument.
/// A trailing `\r` (a file saved with CRLF line ends) is ignored, unlike the kernel, which would
/// look for an interpreter called `bash\r`.
pub fn parse_shebang(head: &[u8]) -> Option<(PathBuf, Option<OsString>)> {
    let rest = head.strip_prefix(b"#!")?;
    let line = rest.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = trim_blanks(line);
    let end = line.iter().position(|b| *b == b' ' || *b == b'\t').unwrap_or(line.len());
    let (interp, arg) = line.split_at(end);
    if interp.is_empty() {
        return None;
    }
    let arg = trim_blanks(arg);
    let arg = (!arg.is_empty()).then(|| OsStr::from_bytes(arg).to_os_string());
    Some((PathBuf::from(OsStr::from_bytes(interp)), arg))
}

fn trim_blanks(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Read the `#!` line of `script`, if it has one.
pub fn read_shebang(script: &Path) -> io::Result<Option<(PathBuf, Option<OsString>)>> {
    let mut head = Vec::with_capacity(MAX_SHEBANG_LINE);
    std::fs::File::open(script)?.take(MAX_SHEBANG_LINE as u64).read_to_end(&mut head)?;
    Ok(parse_shebang(&head))
}

/// How to start `script` through an interpreter: its shebang's, else `fallback`. The script path
/// is the last of the returned arguments, as Attune does (`sh file`, `python3 file`).
pub fn via_interpreter(script: &Path, fallback: &Path) -> io::Result<Launch> {
    let (program, mut args) = match read_shebang(script)? {
        Some((interp, arg)) => (interp, arg.into_iter().collect()),
        None => (fallback.to_path_buf(), Vec::new()),
    };
    args.push(script.as_os_str().to_os_string());
    Ok(Launch { program, args })
}

/// How StackStorm's `local-shell-script` starts `script`: executed directly (the shebang decides),
/// or, when the file lacks the executable bit, as [`via_interpreter`] would.
pub fn direct_or_interpreter(script: &Path, fallback: &Path) -> io::Result<Launch> {
    let mode = std::fs::metadata(script)?.permissions().mode();
    if mode & 0o111 != 0 {
        return Ok(Launch { program: script.to_path_buf(), args: Vec::new() });
    }
    via_interpreter(script, fallback)
}

/// `prefix` followed by an OS string (`PATH=` + a path that need not be UTF-8).
pub fn os_concat(prefix: &str, value: &std::ffi::OsStr) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(value);
    s
}

/// Parts joined with `:`, as `PATH` and `PYTHONPATH` want them.
pub fn join_paths(parts: &[OsString]) -> OsString {
    let mut joined = OsString::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            joined.push(":");
        }
        joined.push(part);
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};

    fn check(head: &str, expect: Expect) {
        expect.assert_eq(&format!("{:?}", parse_shebang(head.as_bytes())));
    }

    #[test]
    fn shebang_table() {
        check("#!/bin/sh\necho", expect![[r#"Some(("/bin/sh", None))"#]]);
        check("#! /usr/bin/env  python3 \n", expect![[r#"Some(("/usr/bin/env", Some("python3")))"#]]);
        check("#!/bin/bash -e -u\n", expect![[r#"Some(("/bin/bash", Some("-e -u")))"#]]);
        check("#!/bin/bash\r\nx", expect![[r#"Some(("/bin/bash", None))"#]]);
        check("#!\n", expect!["None"]);
        check("#!   \t\n", expect!["None"]);
        check("echo hi\n", expect!["None"]);
        check("", expect!["None"]);
        check("#!/bin/sh", expect![[r#"Some(("/bin/sh", None))"#]]);
    }

    #[test]
    fn shebang_beyond_the_kernel_limit_is_cut() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("long.sh");
        let long = format!("#!/{}\n", "x".repeat(MAX_SHEBANG_LINE + 50));
        std::fs::write(&path, long).unwrap_or_else(|e| panic!("{e}"));
        let (interp, _) = read_shebang(&path).unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("no shebang"));
        assert_eq!(interp.as_os_str().len(), MAX_SHEBANG_LINE - 2);
    }

    #[test]
    fn launch_choices() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let write = |name: &str, body: &str, mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, body).unwrap_or_else(|e| panic!("{e}"));
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap_or_else(|e| panic!("{e}"));
            path
        };
        let exec = write("a.sh", "#!/bin/bash\n", 0o755);
        let plain = write("b.sh", "#!/usr/bin/env python3\n", 0o644);
        let bare = write("c.sh", "echo hi\n", 0o644);
        let sh = Path::new("/bin/sh");
        let l = direct_or_interpreter(&exec, sh).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((l.program, l.args.len()), (exec.clone(), 0));
        let l = direct_or_interpreter(&plain, sh).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.program, PathBuf::from("/usr/bin/env"));
        assert_eq!(l.args, vec![OsString::from("python3"), plain.into_os_string()]);
        let l = via_interpreter(&bare, sh).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((l.program, l.args), (sh.to_path_buf(), vec![bare.into_os_string()]));
        let l = via_interpreter(&exec, sh).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.program, PathBuf::from("/bin/bash"));
        assert!(direct_or_interpreter(&dir.path().join("missing"), sh).is_err());
    }
}
