//! What depending on a crate costs: the crates in its normal dependency tree, and a clean
//! release build.
//!
//! Each crate is measured the same way, as the only dependency of a throwaway package under
//! `target/bench/footprint/`, built into a fresh target directory with the workspace's
//! `Cargo.lock` (so that shared dependencies resolve to the same versions).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A crate to measure.
#[derive(Debug, Clone, Copy)]
pub struct Subject {
    /// The name in the report.
    pub label: &'static str,
    /// Its dependency line in the throwaway package; `{root}` is the workspace root.
    pub dependency: &'static str,
}

/// The crates compared.
pub const SUBJECTS: [Subject; 5] = [
    Subject {
        label: "latchkey (core)",
        dependency: r#"latchkey = { path = "{root}/core" }"#,
    },
    Subject {
        label: "latchkey-smol",
        dependency: r#"latchkey-smol = { path = "{root}/io-smol" }"#,
    },
    Subject {
        label: "latchkey-tokio",
        dependency: r#"latchkey-tokio = { path = "{root}/io-tokio" }"#,
    },
    Subject {
        label: "oauth2 5 (default features)",
        dependency: r#"oauth2 = "=5.0.0""#,
    },
    Subject {
        label: "oauth2 5 (no default features)",
        dependency: r#"oauth2 = { version = "=5.0.0", default-features = false }"#,
    },
];

/// What one crate costs.
#[derive(Debug, Clone)]
pub struct Footprint {
    /// The crate.
    pub label: &'static str,
    /// Crates in its normal dependency tree, itself excluded.
    pub dependencies: usize,
    /// A clean release build of it and its dependencies, if measured.
    pub build: Option<Duration>,
}

/// The workspace root (this package's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the bench package lives in the workspace")
        .to_path_buf()
}

/// Measures every subject; `builds` says whether to time clean builds (minutes) too.
pub fn measure(builds: bool, progress: &mut dyn FnMut(&str)) -> std::io::Result<Vec<Footprint>> {
    let root = workspace_root();
    let base = root.join("target/bench/footprint");
    SUBJECTS
        .iter()
        .enumerate()
        .map(|(index, subject)| {
            let dir = base.join(format!("subject{index}"));
            prepare(&root, &dir, subject)?;
            let dependencies = dependency_count(&dir)?;
            let build = if builds {
                progress(&format!(
                    "footprint: clean release build of {}",
                    subject.label
                ));
                Some(clean_build(&dir)?)
            } else {
                None
            };
            Ok(Footprint {
                label: subject.label,
                dependencies,
                build,
            })
        })
        .collect()
}

/// Writes the throwaway package depending on `subject` alone.
fn prepare(root: &Path, dir: &Path, subject: &Subject) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("src"))?;
    let dependency = subject
        .dependency
        .replace("{root}", &root.display().to_string());
    // An empty `[workspace]` keeps the package out of the workspace it sits inside.
    let manifest = format!(
        "[package]\nname = \"footprint\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n\
         [dependencies]\n{dependency}\n\n[workspace]\n"
    );
    std::fs::write(dir.join("Cargo.toml"), manifest)?;
    std::fs::write(dir.join("src/lib.rs"), "")?;
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock"))?;
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Distinct crates in the normal dependency tree of the package in `dir`, minus the package
/// itself and the subject it depends on.
fn dependency_count(dir: &Path) -> std::io::Result<usize> {
    let output = cargo()
        .args([
            "tree", "-e", "normal", "--prefix", "none", "--format", "{p}",
        ])
        .current_dir(dir)
        .output()?;
    if !output.status.success() {
        return Err(std::io::Error::other(format!(
            "cargo tree failed in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let crates: BTreeSet<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.trim_end_matches(" (*)").trim().to_owned())
        .filter(|line| !line.is_empty())
        .collect();
    // The throwaway package and the subject are not its dependencies.
    Ok(crates.len().saturating_sub(2))
}

/// A release build of the package in `dir` from nothing.
fn clean_build(dir: &Path) -> std::io::Result<Duration> {
    let target = dir.join("target");
    if target.exists() {
        std::fs::remove_dir_all(&target)?;
    }
    let started = Instant::now();
    let status = cargo()
        .args(["build", "--release", "--quiet"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(dir)
        .status()?;
    let elapsed = started.elapsed();
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "the build in {} failed",
            dir.display()
        )));
    }
    // Hundreds of megabytes each; only the time was wanted.
    std::fs::remove_dir_all(&target)?;
    Ok(elapsed)
}
