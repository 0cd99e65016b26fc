//! The extension's packaging, checked without a Docker engine: the image's labels by Docker's
//! documented rules, `metadata.json`'s shape, that the Dockerfile puts every path
//! `metadata.json` names into the image, the compose file, what `.dockerignore` keeps out of
//! the build context, and the example settings. The image podman builds from the same
//! Dockerfile is checked by the latchkey repository's `tests/tests/docker_extension_image.rs`,
//! with the same rules (`rules/mod.rs`).

mod rules;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use rules::{Dockerfile, label_problems, metadata_paths};

fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(folder().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn json(name: &str) -> Value {
    serde_json::from_str(&read(name)).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
}

fn dockerfile() -> Dockerfile {
    Dockerfile::parse(&read("Dockerfile"))
}

#[test]
fn the_labels_are_every_one_docker_requires_and_each_is_valid() {
    let dockerfile = dockerfile();
    let problems = label_problems(&dockerfile.labels, &folder());
    assert!(problems.is_empty(), "{problems:#?}");
    // The final image holds nothing but what the Dockerfile copies into it.
    assert_eq!(
        dockerfile.stages.last().map(String::as_str),
        Some("FROM scratch")
    );
}

#[test]
fn the_metadata_has_the_shape_docker_desktop_reads() {
    let metadata = json("metadata.json");
    let socket = metadata["vm"]["exposes"]["socket"]
        .as_str()
        .expect("vm.exposes.socket");
    assert!(metadata["vm"]["composefile"].is_string(), "vm.composefile");
    assert!(metadata["icon"].is_string(), "icon");
    let tab = &metadata["ui"]["dashboard-tab"];
    assert!(tab["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(tab["root"].as_str().is_some_and(|r| r.starts_with('/')));
    assert!(tab["src"].is_string());
    assert_eq!(
        tab["backend"]["socket"], socket,
        "the tab talks to the exposed socket"
    );
    // One entry per operating system, paths in the image: each image variant holds the
    // binaries for its own architecture, so there are no per-architecture entries.
    assert_eq!(
        metadata["host"],
        json!({"binaries": [{
            "darwin": [{"path": "/darwin/latchkey-callback"}],
            "windows": [{"path": "/windows/latchkey-callback.exe"}],
            "linux": [{"path": "/linux/latchkey-callback"}],
        }]}),
    );

    // The backend listens where Docker Desktop looks for the socket.
    let settings = json("config.example.json");
    assert_eq!(
        settings["socket"],
        format!("/run/guest-services/{socket}"),
        "config.example.json"
    );
}

#[test]
fn the_dockerfile_puts_every_path_the_metadata_names_into_the_image() {
    let dockerfile = dockerfile();
    let copied: Vec<&str> = dockerfile
        .copies
        .iter()
        .filter(|copied| !copied.optional)
        .map(|copied| copied.path.as_str())
        .collect();
    let in_image = |path: &str| {
        copied
            .iter()
            .any(|c| path == *c || path.starts_with(&format!("{c}/")))
    };
    let metadata = json("metadata.json");
    let paths = metadata_paths(&metadata);
    assert_eq!(
        paths.len(),
        6,
        "icon, compose file, tab, three host binaries: {paths:?}"
    );
    for path in &paths {
        assert!(
            in_image(path),
            "{path} is not copied into the image: {copied:?}"
        );
    }
    // What the build context supplies must be in this folder (config.json and client_secret
    // are the developer's; the binaries come from the build stage).
    for from_context in [
        "/metadata.json",
        "/docker-compose.yaml",
        "/latchkey.svg",
        "/ui/index.html",
    ] {
        assert!(in_image(from_context), "{from_context}");
        assert!(
            folder().join(&from_context[1..]).is_file(),
            "{from_context}"
        );
    }
    assert!(in_image("/data"), "the volume's mount point");
    assert!(in_image("/etc/latchkey/config.json"), "the settings");
    assert!(
        dockerfile
            .copies
            .iter()
            .any(|c| c.path == "/etc/latchkey/client_secret" && c.optional),
        "the client secret, optional: {:?}",
        dockerfile.copies
    );
    assert_eq!(
        dockerfile.entrypoint,
        [
            "/latchkey-extension",
            "--config",
            "/etc/latchkey/config.json"
        ]
    );
    assert!(in_image(&dockerfile.entrypoint[0]));
}

/// The recipe's shape: one Dockerfile whose final stage takes its binaries either from the
/// cross-compiling build stage or from `prebuilt/`, and a build stage that makes every
/// binary the final stage copies, for both architectures Docker Desktop runs on.
#[test]
fn the_build_stage_makes_every_binary_the_final_stage_copies() {
    let text = read("Dockerfile");
    let dockerfile = dockerfile();
    for stage in [
        "FROM scratch AS latchkey",
        "FROM --platform=$BUILDPLATFORM rust:1.95-bookworm AS build",
        "FROM scratch AS prebuilt",
        "FROM ${BINARIES} AS binaries",
    ] {
        assert!(
            dockerfile.stages.iter().any(|s| s == stage),
            "{stage}: {:?}",
            dockerfile.stages
        );
    }
    assert!(
        text.contains("\nARG BINARIES=build\n"),
        "the build stage by default"
    );
    for target in [
        "x86_64-unknown-linux-musl",
        "aarch64-unknown-linux-musl",
        "universal2-apple-darwin",
        "x86_64-pc-windows-gnu",
    ] {
        assert!(text.contains(target), "{target}");
    }
    for binary in [
        "/out/latchkey-extension",
        "/out/linux/latchkey-callback",
        "/out/darwin/latchkey-callback",
        "/out/windows/latchkey-callback.exe",
    ] {
        assert!(
            text.contains(&format!(" {binary};")) || text.contains(&format!(" {binary}\n")),
            "the build stage writes {binary}"
        );
        assert!(
            text.contains(&format!("--from=binaries --chmod=0755 {binary} ")),
            "the final stage copies {binary}"
        );
    }
    assert!(
        !text.contains("\nENV "),
        "no settings or secrets in the environment"
    );
}

#[test]
fn the_compose_file_publishes_no_port_and_carries_no_secret() {
    let compose = read("docker-compose.yaml");
    let lines: Vec<&str> = compose
        .lines()
        .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
        .collect();
    let trimmed: Vec<&str> = lines.iter().map(|line| line.trim()).collect();
    // One service: Docker Desktop connects the tab to the first only.
    let services: Vec<&str> = lines
        .iter()
        .skip_while(|line| **line != "services:")
        .skip(1)
        .take_while(|line| line.starts_with(' '))
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .copied()
        .collect();
    assert_eq!(services, ["  latchkey:"], "{compose}");
    assert!(
        trimmed.contains(&"image: ${DESKTOP_PLUGIN_IMAGE}"),
        "{compose}"
    );
    assert!(
        trimmed.contains(&"- latchkey-tokens:/data"),
        "tokens on a named volume"
    );
    assert!(trimmed.contains(&"restart: unless-stopped"), "{compose}");
    assert!(
        trimmed.iter().any(|l| l.starts_with("stop_grace_period:")),
        "{compose}"
    );
    for forbidden in [
        "ports:",
        "expose:",
        "network_mode:",
        "environment:",
        "env_file:",
        "secrets:",
        "privileged:",
        "SECRET",
        "TOKEN",
    ] {
        assert!(
            !lines.iter().any(|line| line.contains(forbidden)),
            "{forbidden} in the compose file"
        );
    }
    let settings = json("config.example.json");
    assert_eq!(settings["token_file"], "/data/tokens.json", "on the volume");
}

/// `.dockerignore` by Docker's rules: patterns relative to the context, `*` and `?` within a
/// name, `**` across directories, a match on a directory excludes what is in it, `!`
/// re-includes, the last matching line decides.
fn excluded(dockerignore: &str, path: &str) -> bool {
    fn glob(pattern: &[u8], name: &[u8]) -> bool {
        match (pattern.first(), name.first()) {
            (None, None) => true,
            (Some(b'*'), _) => {
                glob(&pattern[1..], name) || (!name.is_empty() && glob(pattern, &name[1..]))
            }
            (Some(b'?'), Some(_)) => glob(&pattern[1..], &name[1..]),
            (Some(p), Some(n)) if p == n => glob(&pattern[1..], &name[1..]),
            _ => false,
        }
    }
    fn segments(pattern: &[&str], path: &[&str]) -> bool {
        match (pattern.first(), path.first()) {
            (None, None) => true,
            (Some(&"**"), _) => {
                segments(&pattern[1..], path) || (!path.is_empty() && segments(pattern, &path[1..]))
            }
            (Some(p), Some(n)) => {
                glob(p.as_bytes(), n.as_bytes()) && segments(&pattern[1..], &path[1..])
            }
            _ => false,
        }
    }
    let path: Vec<&str> = path.split('/').collect();
    let mut excluded = false;
    for line in dockerignore.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (include, pattern) = match line.strip_prefix('!') {
            Some(pattern) => (true, pattern),
            None => (false, line),
        };
        let pattern: Vec<&str> = pattern.trim_matches('/').split('/').collect();
        if (1..=path.len()).any(|n| segments(&pattern, &path[..n])) {
            excluded = !include;
        }
    }
    excluded
}

#[test]
fn the_dockerignore_keeps_builds_and_credentials_out_but_not_the_settings() {
    assert!(
        !folder().join("Dockerfile.dockerignore").exists(),
        "it would take precedence over .dockerignore"
    );
    let dockerignore = read(".dockerignore");
    for out in [
        "target/release/latchkey-extension",
        "backend/target/debug/x",
        ".cargo/config.toml",
        ".git/config",
        "tokens.json",
        "backend/tokens.json",
        "tls.key",
        ".env",
        "ui/.env.local",
        "screenshots/signed-in-light.png",
    ] {
        assert!(
            excluded(&dockerignore, out),
            "{out} is in the build context"
        );
    }
    // config.json and client_secret are copied into the image on purpose; the rest is what
    // the build stage compiles and the final stage ships; prebuilt/ is the tests' binaries.
    for kept in [
        "config.json",
        "client_secret",
        "Dockerfile",
        "metadata.json",
        "docker-compose.yaml",
        "latchkey.svg",
        "ui/index.html",
        "ui/app.js",
        "Cargo.toml",
        "Cargo.lock",
        "backend/Cargo.toml",
        "backend/src/main.rs",
        "host/src/main.rs",
        "prebuilt/latchkey-extension",
    ] {
        assert!(
            !excluded(&dockerignore, kept),
            "{kept} is left out of the build context"
        );
    }
}

#[test]
fn the_example_settings_are_valid_and_redirect_to_the_host_binary() {
    let settings = json("config.example.json");
    assert!(
        settings.get("listen").is_none(),
        "the backend listens on no port"
    );
    assert_eq!(
        settings["redirect_uri"], "http://127.0.0.1/callback",
        "any free port"
    );
    // The secret file the settings name is the image's; --check reads it, so a stand-in.
    let scratch = tempfile::tempdir().expect("temporary directory");
    let secret = scratch.path().join("client_secret");
    std::fs::write(&secret, "not-a-real-client-secret").expect("write the secret");
    let mut settings = settings;
    settings["client_secret_file"] = secret.to_str().expect("UTF-8 path").into();
    let config = scratch.path().join("config.json");
    std::fs::write(&config, settings.to_string()).expect("write the settings");
    let output = Command::new(env!("CARGO_BIN_EXE_latchkey-extension"))
        .arg("--check")
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run the backend");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The rules are not a rubber stamp: each breakage Docker refuses is reported.
#[test]
fn the_label_rules_refuse_what_docker_refuses() {
    let good = dockerfile().labels;
    let broken = [
        ("org.opencontainers.image.vendor", None),
        ("com.docker.desktop.extension.api.version", Some("latest")),
        ("com.docker.desktop.extension.api.version", Some(">= 0.2.0")),
        (
            "com.docker.desktop.extension.icon",
            Some("http://example.com/icon.svg"),
        ),
        (
            "com.docker.desktop.extension.icon",
            Some("https://example.com/icon.gif"),
        ),
        (
            "com.docker.extension.screenshots",
            Some("https://example.com/a.png"),
        ),
        (
            "com.docker.extension.screenshots",
            Some(r#"[{"url": "https://example.com/a.png"}]"#),
        ),
        (
            "com.docker.extension.screenshots",
            Some(
                r#"[{"alt": "gone", "url": "https://raw.githubusercontent.com/latchkey-rs/latchkey/main/examples/docker-extension/screenshots/missing.png"}]"#,
            ),
        ),
        ("com.docker.extension.detailed-description", Some("<p>open")),
        ("com.docker.extension.changelog", Some("")),
        (
            "com.docker.extension.publisher-url",
            Some("github.com/latchkey-rs"),
        ),
        (
            "com.docker.extension.additional-urls",
            Some(r#"[{"title": "x"}]"#),
        ),
        ("com.docker.extension.account-info", Some("maybe")),
        ("com.docker.extension.categories", Some("security,fun")),
    ];
    for (label, value) in broken {
        let mut labels = good.clone();
        match value {
            Some(value) => labels.insert(label.to_owned(), value.to_owned()),
            None => labels.remove(label),
        };
        let problems = label_problems(&labels, &folder());
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(&format!("{label}: "))),
            "{label} = {value:?} passed: {problems:?}"
        );
    }
}
