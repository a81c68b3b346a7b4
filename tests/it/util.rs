//! A temporary tree and a way to run the real binary against it.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// The workspace's target directory, with every fix and test guest built.
fn artifacts() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf();
        let status = Command::new(root.join("scripts/build-fixes"))
            .current_dir(&root)
            .env("DEFOPS_WASM", env!("CARGO_BIN_EXE_defops-wasm"))
            .status()
            .expect("run scripts/build-fixes");
        assert!(status.success(), "scripts/build-fixes failed");
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_defops-wasm"));
        // target/<profile>/defops-wasm -> target
        exe.parent().unwrap().parent().unwrap().to_path_buf()
    })
}

/// An example fix from fixes/.
pub fn fix(name: &str) -> PathBuf {
    let p = artifacts().join("fixes").join(format!("{name}.wasm"));
    assert!(p.exists(), "{} missing", p.display());
    p
}

/// A Python example fix, fixes/python/NAME.py: a script, run as it is.
pub fn python_fix(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let p = root.join("fixes/python").join(format!("{name}.py"));
    assert!(p.is_file(), "{} missing", p.display());
    p
}

/// The Python runtime, where the binary finds it: next to its target
/// directory (target/<profile>/defops-wasm -> target/python/python.wasm),
/// built by scripts/build-fixes.
pub fn python_runtime() -> PathBuf {
    let p = artifacts().join("python").join("python.wasm");
    assert!(p.is_file(), "{} missing", p.display());
    p
}

/// A test guest from tests/guests/.
pub fn guest(name: &str) -> PathBuf {
    let p = artifacts().join("test-guests").join(format!("{name}.wasm"));
    assert!(p.exists(), "{} missing", p.display());
    p
}

/// A Python test guest from tests/python-guests/ (a script: nothing to
/// build but the runtime, which `artifacts` builds).
pub fn python_guest(name: &str) -> PathBuf {
    artifacts();
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("tests/python-guests")
        .join(format!("{name}.py"));
    assert!(p.exists(), "{} missing", p.display());
    p
}

/// A compile cache holding the Python runtime (`defops-wasm warm`):
/// compiling it takes tens of seconds, so every test shares one, kept
/// between test runs (a rebuilt runtime has another digest, hence another
/// cache file).
fn warm_python_cache() -> &'static Path {
    static WARM: OnceLock<PathBuf> = OnceLock::new();
    WARM.get_or_init(|| {
        artifacts();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-warm");
        let status = Command::new(env!("CARGO_BIN_EXE_defops-wasm"))
            .args(["warm", "--state-dir"])
            .arg(&dir)
            .env_remove("DEFOPS_PYTHON_RUNTIME")
            .status()
            .expect("run defops-wasm warm");
        assert!(status.success(), "defops-wasm warm failed");
        dir.join("cache")
    })
}

/// A run still going, and the rest of its stdout.
pub type Running = (
    std::process::Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
);

/// A temporary tree: `grant/` (granted read-write), `ro/` (for read-only
/// grants), `outside/` (a canary that must never change) and `state/`.
pub struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    pub fn new() -> Tree {
        Tree::in_dir(tempfile::tempdir().unwrap())
    }

    /// A tree outside /tmp and /var/tmp, for what a service with its own
    /// private /tmp must reach (scheduled fixes).
    pub fn outside_tmp() -> Tree {
        let base = [
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"),
        ]
        .into_iter()
        .map(|b| std::fs::canonicalize(&b).unwrap_or(b))
        .find(|b| !b.starts_with("/tmp") && !b.starts_with("/var/tmp"))
        .expect("a directory outside /tmp for the tree");
        std::fs::create_dir_all(&base).unwrap();
        Tree::in_dir(tempfile::tempdir_in(base).unwrap())
    }

    fn in_dir(dir: tempfile::TempDir) -> Tree {
        let t = Tree { dir };
        for d in ["grant", "ro", "outside", "state"] {
            std::fs::create_dir(t.path(d)).unwrap();
        }
        t.write("outside/secret", "outside secret\n");
        t.write("outside/dir/file", "outside file\n");
        t.write("ro/file", "read-only file\n");
        // Most tests make real runs directly; the guard tests name their
        // own configuration.
        t.write("config.toml", "[dry-run-first]\nrequired = false\n");
        t
    }

    /// Gives this tree's state directory the compiled Python runtime (hard
    /// links to the process's warm cache), so a Python fix starts at once.
    pub fn warm_python(&self) -> &Tree {
        let cache = self.path("state/cache");
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
        for e in std::fs::read_dir(warm_python_cache()).unwrap() {
            let from = e.unwrap().path();
            let dest = cache.join(from.file_name().unwrap());
            if from
                .extension()
                .is_some_and(|x| x == "cwasm" || x == "json")
                && !dest.exists()
                && std::fs::hard_link(&from, &dest).is_err()
            {
                std::fs::copy(&from, &dest).unwrap();
            }
        }
        self
    }

    /// The journal of run `run_id`, as JSON values (`journal show --json`).
    pub fn journal(&self, run_id: &str) -> Vec<Value> {
        let out = self
            .defops()
            .args(&["journal", "show", run_id, "--json"])
            .output();
        out.assert_code(0);
        out.lines()
    }

    /// The header of run `run_id`'s journal.
    pub fn header(&self, run_id: &str) -> Value {
        self.journal(run_id).remove(0)
    }

    /// Writes a configuration file `name` and returns its path.
    pub fn config(&self, name: &str, text: &str) -> String {
        self.write(name, text);
        self.p(name)
    }

    /// The absolute path of `rel` in the tree, as a string.
    pub fn p(&self, rel: &str) -> String {
        self.path(rel).to_str().unwrap().to_string()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, content: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).symlink_metadata().is_ok()
    }

    pub fn mode(&self, rel: &str) -> u32 {
        self.path(rel)
            .symlink_metadata()
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    pub fn symlink(&self, target: &str, rel: &str) {
        std::os::unix::fs::symlink(target, self.path(rel)).unwrap();
    }

    /// Everything under `rel` (but the state directory): path -> kind,
    /// content, mode, owner, mtime, symlink target.
    pub fn snapshot(&self, rel: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        snap(&self.path(rel), "", &mut out);
        out.retain(|k, _| !k.starts_with("/state"));
        out
    }

    /// `defops-wasm ARGS` with this tree's state directory.
    pub fn defops(&self) -> Cmd {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_defops-wasm"));
        cmd.env("DEFOPS_STATE_DIR", self.path("state"));
        cmd.env("DEFOPS_CONFIG", self.path("config.toml"));
        cmd.env_remove("RUST_LOG");
        // Python fixes run on the runtime the binary finds itself.
        cmd.env_remove("DEFOPS_PYTHON_RUNTIME");
        Cmd { cmd }
    }

    /// `WRAPPER... defops-wasm ARGS`: as [`Tree::defops`], run under
    /// another program (`strace`, to inject a system call's failure).
    pub fn defops_under(&self, wrapper: &[&str]) -> Cmd {
        let inner = self.defops().into_command();
        let mut cmd = Command::new(wrapper[0]);
        cmd.args(&wrapper[1..]).arg(inner.get_program());
        for (key, value) in inner.get_envs() {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        Cmd { cmd }
    }

    /// Starts `defops-wasm ARGS` and returns once a line of its stdout
    /// contains `marker`, with the rest of its lines.
    pub fn spawn_until<S: AsRef<std::ffi::OsStr>>(&self, args: &[S], marker: &str) -> Running {
        use std::io::BufRead;
        let mut child = self
            .defops()
            .into_command()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        for line in lines.by_ref() {
            if line.unwrap().contains(marker) {
                break;
            }
        }
        (child, lines)
    }

    /// Starts a real run of the hostile guest that plans a write to
    /// `grant/f`, says "planned", and waits for `grant/go` to appear. Returns
    /// once the plan is made (the run then holds the lock), with the rest of
    /// its JSON Lines.
    pub fn start_waiting_run(&self) -> Running {
        let (file, go) = (
            format!("file={}", self.p("grant/f")),
            format!("go={}", self.p("grant/go")),
        );
        let hostile = guest("hostile");
        let args = [
            "run",
            hostile.to_str().unwrap(),
            "--allow",
            &self.p("grant"),
            "--json",
            "-p",
            "mode=write-then-wait",
            "-p",
            &file,
            "-p",
            &go,
        ];
        self.spawn_until(&args, "\"planned\"")
    }

    /// `config-set` setting `max_conn = VALUE` in `file` (a path or a `*`
    /// glob), with more arguments.
    pub fn set_max_conn(&self, file: &str, value: &str, extra: &[&str]) -> Out {
        self.set_max_conn_cmd(file, value).args(extra).output()
    }

    /// The command of [`Tree::set_max_conn`], for more environment.
    pub fn set_max_conn_cmd(&self, file: &str, value: &str) -> Cmd {
        let (file, value) = (format!("file={file}"), format!("value={value}"));
        let (fix, grant) = (fix("config-set"), self.p("grant"));
        self.defops()
            .args(&["run", fix.to_str().unwrap(), "--allow", &grant, "--json"])
            .args(&["-p", &file, "-p", "key=max_conn", "-p", &value])
    }

    /// Asserts the run's journal verifies intact and its rollback succeeds.
    #[track_caller]
    pub fn verify_and_roll_back(&self, run_id: &str) {
        self.defops()
            .args(&["journal", "verify", run_id])
            .output()
            .assert_code(0);
        self.defops()
            .args(&["rollback", run_id])
            .output()
            .assert_code(0);
    }

    /// A shell command line, with `defops-wasm` on the PATH and this
    /// tree's state directory and configuration.
    pub fn shell(&self, line: &str) -> Out {
        let exe = Path::new(env!("CARGO_BIN_EXE_defops-wasm"));
        let path = format!(
            "{}:{}",
            exe.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let cmd = self.defops().into_command();
        let envs: Vec<_> = cmd
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
            .collect();
        Cmd {
            cmd: {
                let mut sh = Command::new("sh");
                sh.arg("-c").arg(line).envs(envs).env("PATH", path);
                sh
            },
        }
        .output()
    }

    /// `defops-wasm run FIX --allow grant --json ARGS`.
    pub fn run(&self, fix: &Path, args: &[&str]) -> Out {
        self.run_in("grant", fix, args)
    }

    /// `defops-wasm run FIX --allow GRANT --json ARGS`, for a fix whose
    /// manifest declares less than all of `grant/`.
    pub fn run_in(&self, grant: &str, fix: &Path, args: &[&str]) -> Out {
        let grant = self.p(grant);
        let mut all = vec![
            "run",
            fix.to_str().unwrap(),
            "--allow",
            grant.as_str(),
            "--json",
        ];
        all.extend_from_slice(args);
        self.defops().args(&all).output()
    }
}

fn snap(path: &Path, rel: &str, out: &mut BTreeMap<String, String>) {
    let Ok(meta) = path.symlink_metadata() else {
        return;
    };
    let ft = meta.file_type();
    let what = if ft.is_symlink() {
        format!("symlink {}", std::fs::read_link(path).unwrap().display())
    } else if ft.is_dir() {
        "dir".to_string()
    } else {
        let content = std::fs::read(path).unwrap();
        format!(
            "file {:?}",
            String::from_utf8_lossy(&content[..content.len().min(200)])
        )
    };
    out.insert(
        format!("/{rel}"),
        format!(
            "{what} mode={:o} owner={}:{} mtime={}.{}",
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid(),
            meta.mtime(),
            meta.mtime_nsec()
        ),
    );
    if ft.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            // A name that is not UTF-8 is kept apart by its escaped bytes.
            let shown = format!("{:?}", n);
            let shown = n.to_str().map_or(shown, str::to_string);
            let child = if rel.is_empty() {
                shown
            } else {
                format!("{rel}/{shown}")
            };
            snap(&path.join(&n), &child, out);
        }
    }
}

pub struct Cmd {
    cmd: Command,
}

impl Cmd {
    pub fn env(mut self, key: &str, value: &str) -> Cmd {
        self.cmd.env(key, value);
        self
    }

    pub fn args<S: AsRef<std::ffi::OsStr>>(mut self, args: &[S]) -> Cmd {
        self.cmd.args(args);
        self
    }

    pub fn into_command(self) -> Command {
        self.cmd
    }

    pub fn output(mut self) -> Out {
        let o = self.cmd.output().expect("run defops-wasm");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// What a run printed.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// The JSON Lines on stdout.
    pub fn lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect()
    }

    /// The `summary` line (always the last).
    pub fn summary(&self) -> Value {
        let last = self
            .lines()
            .pop()
            .unwrap_or_else(|| panic!("no output: {self:?}"));
        assert_eq!(last["type"], "summary", "{self:?}");
        last
    }

    /// The last line of one type.
    pub fn summary_of(&self, ty: &str) -> Value {
        self.of(ty)
            .pop()
            .unwrap_or_else(|| panic!("no {ty} line: {self:?}"))
    }

    /// Lines of one type.
    pub fn of(&self, ty: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| l["type"] == ty)
            .collect()
    }

    /// The texts of the fix's messages.
    pub fn messages(&self) -> Vec<String> {
        self.of("message")
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_string())
            .collect()
    }

    /// Asserts stderr says `needle`.
    #[track_caller]
    pub fn assert_stderr(&self, needle: &str) -> &Out {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {}",
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Out {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Whether `strace` is there and can trace (ptrace may be refused in a
/// container): tests inject system calls' failures with it.
pub fn strace_can_trace() -> bool {
    Command::new("strace")
        .args(["-f", "-o", "/dev/null", "true"])
        .status()
        .is_ok_and(|s| s.success())
}
