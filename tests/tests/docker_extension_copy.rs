//! The Docker Desktop extension's folder is copyable: copied out of the repository, it builds
//! on its own against the latchkey crates as crates.io would serve them.
//!
//! The test copies the folder's files (tracked, and new ones git does not ignore; not
//! `target/`, not `.cargo/`, whose patch points into the repository) to a directory in the
//! system's temporary directory, outside the repository, makes the crates with `cargo package` (normalized
//! manifests: workspace inheritance resolved, path dependencies replaced by versions),
//! unpacks them there, and builds the copy `--locked --offline` with `[patch.crates-io]`
//! pointing at the unpacked packages, asserting that every latchkey crate resolves to them.
//! Registry crates come from the extension's own target directory, shared with the other
//! extension tests, so only the latchkey crates and the extension compile.
//!
//! The gap: the packages are patched in rather than fetched, because the name `latchkey` on
//! crates.io belongs to an unrelated crate (versions 0.3.0-dev, 0.3.0 and 0.4.0), so the
//! extension's `latchkey = "0.1.0"` (`^0.1.0`) matches none of its versions; until that
//! changes the copy needs the patch (or a latchkey checkout) to build at all. The packages
//! are made with `--exclude-lockfile` (a library's lock file is not used by its dependents)
//! and `--no-verify` (the copy's build compiles them).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use latchkey_tests::extension;
use serde_json::Value;

/// The latchkey crates the extension depends on: package name, and where its sources are.
const CRATES: [&str; 3] = ["latchkey", "latchkey-io", "latchkey-smol"];

fn succeeded(what: &str, output: std::io::Result<Output>) -> String {
    let output = output.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // The copy's build must not pick up flags meant for the test's own build.
    command.env_remove("CARGO_ENCODED_RUSTFLAGS");
    command
}

/// The folder's files as git sees them: tracked, and untracked ones it does not ignore.
/// Relative to the folder; without `.cargo/` and `target/`.
fn folder_files(folder: &Path) -> Vec<PathBuf> {
    let listed = succeeded(
        "git ls-files",
        Command::new("git")
            .args([
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
                "--",
                ".",
            ])
            .current_dir(folder)
            .output(),
    );
    listed
        .split('\0')
        .filter(|path| !path.is_empty())
        .filter(|path| !path.starts_with(".cargo/") && !path.starts_with("target/"))
        // Deleted in the work tree, not yet in the index.
        .filter(|path| folder.join(path).is_file())
        .map(PathBuf::from)
        .collect()
}

#[test]
fn the_extension_builds_outside_the_repository_against_the_crates_as_packaged() {
    let started = Instant::now();
    // The folder builds in the repository first, and every crate its lock file names is
    // fetched into cargo's cache (a build fetches only this platform's, and `cargo
    // metadata` reads every platform's), so that everything below can be `--offline`.
    extension::binaries();
    let folder = extension::folder()
        .canonicalize()
        .expect("the extension's folder");
    succeeded(
        "cargo fetch",
        cargo()
            .args(["fetch", "--locked"])
            .current_dir(&folder)
            .output(),
    );
    let repository = folder.join("../..").canonicalize().expect("the repository");
    // A fixed place rather than a fresh temporary name: the unpacked packages' paths go into
    // the hashes cargo names artifacts by, so with a fixed path each run replaces the last
    // one's artifacts in the shared target directory instead of adding ~100 MB. (Two runs at
    // once would share it.) Left behind when the test fails, for a look.
    let outside = std::env::temp_dir().join("latchkey-docker-extension-copy");
    if outside.exists() {
        std::fs::remove_dir_all(&outside).expect("remove the last run's copy");
    }
    std::fs::create_dir_all(&outside).expect("create the copy's directory");
    let outside = outside.canonicalize().expect("the copy's directory");
    assert!(
        !outside.starts_with(&repository),
        "{} is inside the repository",
        outside.display()
    );

    // The copy.
    let copy = outside.join("docker-extension");
    let files = folder_files(&folder);
    assert!(
        files.iter().any(|f| f == Path::new("Cargo.lock")),
        "{files:?}"
    );
    for file in &files {
        let destination = copy.join(file);
        std::fs::create_dir_all(destination.parent().expect("a parent")).expect("mkdir");
        std::fs::copy(folder.join(file), &destination)
            .unwrap_or_else(|e| panic!("copy {}: {e}", file.display()));
    }
    assert!(!copy.join(".cargo").exists());

    // Nothing in the copy leads back into the repository, but words for a person: the
    // README and comments explaining how the folder is built inside it.
    let repository_path = repository.to_string_lossy().into_owned();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(copy.join(file)) else {
            continue; // not text: the icon or a screenshot
        };
        if file.file_name().is_some_and(|name| name == "README.md") {
            continue;
        }
        for (number, line) in text.lines().enumerate() {
            let comment = ["#", "//"].iter().any(|c| line.trim_start().starts_with(c));
            assert!(
                comment || !(line.contains("../..") || line.contains(&repository_path)),
                "{}:{}: {line}",
                file.display(),
                number + 1
            );
        }
    }

    // The crates, as `cargo package` makes them for crates.io, unpacked next to the copy.
    let packages = repository.join("target").join("docker-extension-copy");
    let mut package = cargo();
    package
        .args([
            "package",
            "--locked",
            "--offline",
            "--no-verify",
            "--allow-dirty",
        ])
        .arg("--exclude-lockfile")
        .current_dir(&repository)
        .env("CARGO_TARGET_DIR", &packages);
    for name in CRATES {
        package.args(["-p", name]);
    }
    succeeded("cargo package", package.output());
    let crates = outside.join("crates");
    std::fs::create_dir(&crates).expect("mkdir");
    let version = env!("CARGO_PKG_VERSION");
    let mut patches = Vec::new();
    for name in CRATES {
        let archive = packages
            .join("package")
            .join(format!("{name}-{version}.crate"));
        succeeded(
            "tar",
            // `-m`: the files are dated now, not as packaged (one fixed date), so that cargo
            // sees a changed crate as changed at the same unpacked path.
            Command::new("tar")
                .arg("-xmzf")
                .arg(&archive)
                .arg("-C")
                .arg(&crates)
                .output(),
        );
        let unpacked = crates.join(format!("{name}-{version}"));
        let manifest = std::fs::read_to_string(unpacked.join("Cargo.toml")).expect("manifest");
        assert!(
            !manifest.contains("path = \"..") && !manifest.contains(&repository_path),
            "{name}'s packaged manifest points outside its package:\n{manifest}"
        );
        patches.push((name, unpacked));
    }
    let patch_flags: Vec<String> = patches
        .iter()
        .flat_map(|(name, unpacked)| {
            [
                "--config".to_owned(),
                format!(
                    "patch.crates-io.{name}.path={:?}",
                    unpacked.to_string_lossy()
                ),
            ]
        })
        .collect();
    eprintln!("copied and packaged: {:.1?}", started.elapsed());

    // Every latchkey crate resolves to the unpacked packages, and nothing to the repository.
    let metadata: Value = serde_json::from_str(&succeeded(
        "cargo metadata",
        cargo()
            .args(["metadata", "--format-version", "1", "--locked", "--offline"])
            .args(&patch_flags)
            .current_dir(&copy)
            .output(),
    ))
    .expect("cargo metadata prints JSON");
    let packages = metadata["packages"].as_array().expect("packages");
    for (name, unpacked) in &patches {
        let manifest = packages
            .iter()
            .find(|p| p["name"] == *name)
            .and_then(|p| p["manifest_path"].as_str())
            .unwrap_or_else(|| panic!("{name} is not among the copy's packages"));
        assert!(
            Path::new(manifest).starts_with(unpacked),
            "{name}: {manifest}"
        );
    }
    for package in packages {
        let manifest = package["manifest_path"].as_str().unwrap_or("");
        assert!(
            !Path::new(manifest).starts_with(&repository),
            "{} comes from the repository: {manifest}",
            package["name"]
        );
    }

    let build = Instant::now();
    succeeded(
        "cargo build of the copy",
        cargo()
            .args(["build", "--locked", "--offline"])
            .args(&patch_flags)
            .current_dir(&copy)
            .env("CARGO_TARGET_DIR", folder.join("target"))
            .output(),
    );
    eprintln!(
        "the copy's build: {:.1?}; whole test: {:.1?}",
        build.elapsed(),
        started.elapsed()
    );
    std::fs::remove_dir_all(&outside).expect("remove the copy");
}
