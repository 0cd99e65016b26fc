//! The Docker Desktop extension's image, built by podman from the extension's own Dockerfile
//! and judged by Docker's rules for extension images (the same rules as the extension's
//! `backend/tests/packaging.rs`, which judges the Dockerfile without an engine).
//!
//! The Dockerfile's build stage cross-compiles every binary with zig from a `rust:` base
//! image, which cannot be pulled here. The test builds the image's real final stage from
//! binaries it compiled on the host instead (`--build-arg BINARIES=prebuilt`): the backend
//! and the Linux host binary, linked statically (glibc with `+crt-static`, where the build
//! stage links musl; a dev profile without debug info, ~30 s on two cores where a release
//! build with LTO takes over a minute). The macOS and Windows host binaries cannot be built
//! here (no targets for them): their places hold marked placeholders, and the test asserts
//! that they are exactly those, so it proves where they go, not what they are. It inspects
//! the labels and ENTRYPOINT, exports a created (never started: `podman run` is not
//! available everywhere) container's file system, and checks every path `metadata.json`
//! names, the binaries, the modes of the settings and the secret, and that nothing else is in
//! the image.
//!
//! Without podman the test is skipped with a message, except where `CI` is set:
//! `scripts/test.sh` installs podman.

#[path = "../../examples/docker-extension/backend/tests/rules/mod.rs"]
mod rules;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use latchkey_tests::extension;
use serde_json::Value;

use rules::{Dockerfile, label_problems, metadata_paths};

/// What stands in for the host binaries this machine cannot build.
const PLACEHOLDER: &str = "NOT A BINARY: a placeholder from the latchkey repository's \
    tests/tests/docker_extension_image.rs. The Dockerfile's build stage cross-compiles the real \
    one with cargo zigbuild; this machine cannot.\n";

/// Runs podman, panicking with its output when it fails.
fn podman<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<S> = args.into_iter().collect();
    let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
    let output = Command::new("podman")
        .args(&args)
        .output()
        .expect("run podman");
    assert!(
        output.status.success(),
        "podman {}:\n{}{}",
        shown.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("podman prints UTF-8")
}

/// Every image podman has, intermediate ones included.
fn image_ids() -> BTreeSet<String> {
    podman(["images", "--all", "--quiet", "--no-trunc"])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Removes the test's container and image, however the test ends, and the images its build
/// left behind: the stage the final one copies from (`FROM ${BINARIES}` needs it kept as an
/// image, so the build cannot run with `--layers=false`).
struct Cleanup {
    image: String,
    container: String,
    before: BTreeSet<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for args in [
            ["rm", "--force", &self.container],
            ["rmi", "--force", &self.image],
        ] {
            let _ = Command::new("podman").args(args).output();
        }
        let Ok(output) = Command::new("podman")
            .args(["images", "--all", "--quiet", "--no-trunc"])
            .output()
        else {
            return;
        };
        for id in String::from_utf8_lossy(&output.stdout).lines() {
            if !self.before.contains(id) {
                // Not forced: an image something else uses now stays.
                let _ = Command::new("podman").args(["rmi", id]).output();
            }
        }
    }
}

/// Builds the backend and the host binary as static Linux executables for this machine's
/// architecture, in their own target directory (the tests' debug builds stay valid).
fn static_binaries(folder: &Path) -> (PathBuf, PathBuf) {
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let target = folder.join("target").join("static");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--locked", "--bins", "--target", &triple])
        .current_dir(folder)
        .env("CARGO_TARGET_DIR", &target)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .output()
        .expect("run cargo build");
    assert!(
        output.status.success(),
        "building the static binaries failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let built = target.join(triple).join("debug");
    (
        built.join("latchkey-extension"),
        built.join("latchkey-callback"),
    )
}

/// Copies the build context, leaving out builds and the developer's own settings and secret.
fn copy_context(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the context");
    for entry in std::fs::read_dir(from).expect("read the folder") {
        let entry = entry.expect("read the folder");
        let name = entry.file_name();
        if ["target", ".git", "prebuilt", "config.json", "client_secret"]
            .iter()
            .any(|skipped| name == *skipped)
        {
            continue;
        }
        let (source, destination) = (entry.path(), to.join(&name));
        if entry.file_type().expect("file type").is_dir() {
            copy_context(&source, &destination);
        } else {
            std::fs::copy(&source, &destination)
                .unwrap_or_else(|e| panic!("copy {}: {e}", source.display()));
        }
    }
}

/// An ELF executable that the kernel runs without a dynamic loader: no `PT_INTERP` header.
/// 64-bit little-endian only (x86-64 and AArch64).
fn static_elf(bytes: &[u8]) -> Result<(), String> {
    if !bytes.starts_with(b"\x7fELF\x02\x01") {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let number = |at: usize, size: usize| -> Result<u64, String> {
        let field = bytes.get(at..at + size).ok_or("truncated")?;
        Ok(field
            .iter()
            .rev()
            .fold(0, |n, byte| (n << 8) | u64::from(*byte)))
    };
    const ET_EXEC: u64 = 2;
    const ET_DYN: u64 = 3;
    const PT_INTERP: u64 = 3;
    if ![ET_EXEC, ET_DYN].contains(&number(0x10, 2)?) {
        return Err("not an executable".into());
    }
    let (offset, size, count) = (number(0x20, 8)?, number(0x36, 2)?, number(0x38, 2)?);
    for i in 0..count {
        let header = usize::try_from(offset + i * size).map_err(|e| e.to_string())?;
        if number(header, 4)? == PT_INTERP {
            return Err("it names a dynamic loader (PT_INTERP)".into());
        }
    }
    Ok(())
}

/// Every path under `root`, relative, with `/` at the front; directories too.
fn tree(root: &Path, under: &Path, paths: &mut Vec<String>) {
    for entry in std::fs::read_dir(under).expect("read the image's files") {
        let path = entry.expect("read the image's files").path();
        let relative = path.strip_prefix(root).expect("under the root");
        paths.push(format!("/{}", relative.display()));
        if path.is_dir() {
            tree(root, &path, paths);
        }
    }
}

#[test]
fn the_image_holds_what_docker_desktop_needs_where_metadata_says_with_valid_labels() {
    if Command::new("podman").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "podman is not installed (Debian: apt-get install podman; scripts/test.sh does it)"
        );
        eprintln!("SKIPPED: podman is not installed (Debian: apt-get install podman)");
        return;
    }
    let folder = extension::folder();
    let dockerfile = Dockerfile::parse(
        &std::fs::read_to_string(folder.join("Dockerfile")).expect("read the Dockerfile"),
    );
    let metadata: Value = serde_json::from_slice(
        &std::fs::read(folder.join("metadata.json")).expect("read metadata.json"),
    )
    .expect("metadata.json is JSON");

    let whole = Instant::now();
    let started = Instant::now();
    let (backend, host) = static_binaries(&folder);
    eprintln!("static binaries: {:.1?}", started.elapsed());

    // The build context, with the binaries in prebuilt/ laid out as the build stage's /out/.
    let scratch = tempfile::tempdir().expect("temporary directory");
    let context = scratch.path().join("context");
    copy_context(&folder, &context);
    let settings = std::fs::read(folder.join("config.example.json")).expect("read the example");
    std::fs::write(context.join("config.json"), &settings).expect("write config.json");
    let secret = b"not-a-real-client-secret";
    std::fs::write(context.join("client_secret"), secret).expect("write client_secret");
    let prebuilt = context.join("prebuilt");
    for directory in ["linux", "darwin", "windows", "data"] {
        std::fs::create_dir_all(prebuilt.join(directory)).expect("create prebuilt/");
    }
    std::fs::copy(&backend, prebuilt.join("latchkey-extension")).expect("copy the backend");
    std::fs::copy(&host, prebuilt.join("linux/latchkey-callback")).expect("copy the host binary");
    for placeholder in ["darwin/latchkey-callback", "windows/latchkey-callback.exe"] {
        std::fs::write(prebuilt.join(placeholder), PLACEHOLDER).expect("write a placeholder");
    }

    let unique = format!(
        "{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos()
    );
    let cleanup = Cleanup {
        image: format!("localhost/latchkey-extension-test:{unique}"),
        container: format!("latchkey-extension-test-{unique}"),
        before: image_ids(),
    };
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no Docker Desktop runs on {other}"),
    };
    let started = Instant::now();
    podman([
        OsStr::new("build"),
        OsStr::new("--quiet"),
        OsStr::new("--build-arg"),
        OsStr::new("BINARIES=prebuilt"),
        OsStr::new("--build-arg"),
        OsStr::new(&format!("TARGETARCH={architecture}")),
        OsStr::new("--tag"),
        OsStr::new(&cleanup.image),
        context.as_os_str(),
    ]);
    eprintln!("podman build: {:.1?}", started.elapsed());

    // The labels are the Dockerfile's, and they pass Docker's rules.
    let inspected: Value = serde_json::from_str(&podman([
        "image",
        "inspect",
        "--format",
        "{{json .Config}}",
        &cleanup.image,
    ]))
    .expect("podman prints the configuration as JSON");
    let labels: BTreeMap<String, String> =
        serde_json::from_value(inspected["Labels"].clone()).expect("labels are strings");
    for (label, value) in &dockerfile.labels {
        assert_eq!(labels.get(label), Some(value), "{label}");
    }
    let problems = label_problems(&labels, &folder);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(
        inspected["Entrypoint"],
        serde_json::to_value(&dockerfile.entrypoint).expect("JSON")
    );
    assert!(
        inspected["Env"]
            .as_array()
            .is_none_or(|env| env.iter().all(|v| !v.to_string().contains("SECRET"))),
        "{inspected}"
    );
    let os_architecture = podman([
        "image",
        "inspect",
        "--format",
        "{{.Os}}/{{.Architecture}}",
        &cleanup.image,
    ]);
    assert_eq!(os_architecture.trim(), format!("linux/{architecture}"));

    // The image's files, from a container created (not started) from it.
    podman(["create", "--name", &cleanup.container, &cleanup.image]);
    let archive = scratch.path().join("image.tar");
    podman([
        OsStr::new("export"),
        OsStr::new("--output"),
        archive.as_os_str(),
        OsStr::new(&cleanup.container),
    ]);
    let root = scratch.path().join("root");
    std::fs::create_dir(&root).expect("create the root");
    let untar = Command::new("tar")
        .arg("-xpf")
        .arg(&archive)
        .arg("-C")
        .arg(&root)
        .output()
        .expect("run tar");
    assert!(
        untar.status.success(),
        "{}",
        String::from_utf8_lossy(&untar.stderr)
    );
    let in_image = |path: &str| root.join(path.trim_start_matches('/'));

    for path in metadata_paths(&metadata) {
        assert!(in_image(&path).is_file(), "{path}, named by metadata.json");
    }
    for copied in &dockerfile.copies {
        assert!(
            copied.optional || in_image(&copied.path).exists(),
            "{}, copied by the Dockerfile",
            copied.path
        );
    }
    // The final stage starts from scratch: nothing but what it copies is in the image.
    assert_eq!(
        dockerfile.stages.last().map(String::as_str),
        Some("FROM scratch")
    );
    let mut paths = Vec::new();
    tree(&root, &root, &mut paths);
    for path in &paths {
        assert!(
            dockerfile.copies.iter().any(|c| {
                *path == c.path
                    || path.starts_with(&format!("{}/", c.path))
                    || c.path.starts_with(&format!("{path}/"))
            }),
            "{path} is in the image, and the Dockerfile does not put it there"
        );
    }
    for (name, expected) in [
        ("metadata.json", std::fs::read(folder.join("metadata.json"))),
        (
            "docker-compose.yaml",
            std::fs::read(folder.join("docker-compose.yaml")),
        ),
        ("latchkey.svg", std::fs::read(folder.join("latchkey.svg"))),
        ("ui/index.html", std::fs::read(folder.join("ui/index.html"))),
        ("etc/latchkey/config.json", Ok(settings.clone())),
        ("etc/latchkey/client_secret", Ok(secret.to_vec())),
    ] {
        assert_eq!(
            std::fs::read(in_image(name)).ok(),
            expected.ok(),
            "{name} in the image"
        );
    }
    let ui: Vec<_> = std::fs::read_dir(folder.join("ui")).expect("ui/").collect();
    assert_eq!(
        std::fs::read_dir(in_image("ui")).expect("/ui").count(),
        ui.len(),
        "the UI's files, and only those"
    );
    assert_eq!(
        std::fs::read_dir(in_image("data"))
            .map(Iterator::count)
            .ok(),
        Some(0),
        "/data, an empty directory for the volume"
    );
    let mode = |path: &str| {
        std::fs::metadata(in_image(path))
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    assert_eq!(
        mode("/etc/latchkey/client_secret"),
        0o400,
        "the secret: root only"
    );
    assert_eq!(mode("/etc/latchkey/config.json"), 0o400);

    // The binaries: the backend (the ENTRYPOINT) and the Linux host binary run with nothing
    // else in the image; the other systems' host binaries are this test's placeholders.
    for binary in [&dockerfile.entrypoint[0], "/linux/latchkey-callback"] {
        assert_eq!(mode(binary) & 0o111, 0o111, "{binary} is executable");
        let bytes = std::fs::read(in_image(binary)).expect("read the binary");
        if let Err(problem) = static_elf(&bytes) {
            panic!("{binary} is not a static executable: {problem}");
        }
    }
    for placeholder in [
        "/darwin/latchkey-callback",
        "/windows/latchkey-callback.exe",
    ] {
        assert_eq!(
            std::fs::read_to_string(in_image(placeholder))
                .ok()
                .as_deref(),
            Some(PLACEHOLDER),
            "{placeholder}: this test's placeholder, not a binary"
        );
    }
    // The image's backend accepts the image's settings (their secret file's path moved to
    // where the export put it).
    let mut image_settings: Value =
        serde_json::from_slice(&settings).expect("the settings are JSON");
    let secret_file = image_settings["client_secret_file"]
        .as_str()
        .map(|path| in_image(path).to_string_lossy().into_owned());
    image_settings["client_secret_file"] = secret_file.into();
    let config = scratch.path().join("config.json");
    std::fs::write(&config, image_settings.to_string()).expect("write the settings");
    let check = Command::new(in_image(&dockerfile.entrypoint[0]))
        .arg("--check")
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run the image's backend");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    drop(cleanup);
    eprintln!("whole test: {:.1?}", whole.elapsed());
}
