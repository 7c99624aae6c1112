//! A builder around the real `dagstart` binary: a temp dir per test with its services.toml.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// A project directory with a services.toml, and a way to run dagstart in it.
pub(crate) struct Project {
    dir: tempfile::TempDir,
    envs: Vec<(String, String)>,
}

impl Project {
    pub(crate) fn new(services_toml: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("services.toml"), services_toml).expect("write config");
        Self {
            dir,
            envs: Vec::new(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn file(&self, name: &str, contents: &str) -> &Self {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, contents).expect("write file");
        self
    }

    pub(crate) fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// `dagstart ARGS...` run in the project directory, with a clean dagstart environment.
    pub(crate) fn dagstart(&self, args: &[&str]) -> Command {
        let mut cmd = Command::cargo_bin("dagstart").expect("dagstart binary");
        cmd.current_dir(self.dir.path()).args(args);
        for var in [
            "STARTUP_MAX_WORKERS",
            "STARTUP_TIMEOUT",
            "USE_PARALLEL_STARTUP",
            "PARALLEL_HEALTH_CHECKS",
            "DAGSTART_FILE",
            "NO_COLOR",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd
    }
}

/// The stdout of a finished command as text.
pub(crate) fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Path of a fixture file in tests/fixtures.
pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}
