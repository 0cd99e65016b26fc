//! The extension's packaging, checked without a Docker engine: what Docker Desktop requires of
//! `metadata.json`, the compose file and the image's labels, and that the pieces agree with
//! one another (socket name, port, paths) and with the example settings.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(example().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn json(name: &str) -> Value {
    serde_json::from_str(&read(name)).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
}

/// A path from metadata.json (image-absolute or relative) within the example's folder.
fn in_image(path: &str) -> PathBuf {
    example().join(path.trim_start_matches('/'))
}

#[test]
fn metadata_names_the_compose_file_the_socket_the_ui_and_the_icon() {
    let metadata = json("metadata.json");
    let compose = metadata["vm"]["composefile"]
        .as_str()
        .expect("vm.composefile");
    assert!(in_image(compose).is_file(), "{compose}");
    let socket = metadata["vm"]["exposes"]["socket"]
        .as_str()
        .expect("vm.exposes.socket");
    let tab = &metadata["ui"]["dashboard-tab"];
    assert!(tab["title"].as_str().is_some_and(|t| !t.is_empty()));
    let root = tab["root"].as_str().expect("ui root");
    let src = tab["src"].as_str().expect("ui src");
    assert!(in_image(root).join(src).is_file(), "{root}/{src}");
    assert_eq!(
        tab["backend"]["socket"], socket,
        "the UI talks to the exposed socket"
    );
    let icon = metadata["icon"].as_str().expect("icon");
    assert!(in_image(icon).is_file(), "{icon}");

    // The backend listens where Docker Desktop looks for the socket.
    let settings = json("config.example.json");
    assert_eq!(
        settings["socket"],
        format!("/run/guest-services/{socket}"),
        "config.example.json"
    );
}

#[test]
fn the_compose_file_publishes_the_callback_on_the_hosts_loopback_only_and_has_no_secret() {
    let compose = read("docker-compose.yaml");
    let lines: Vec<&str> = compose
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .collect();
    assert!(
        lines.contains(&"image: ${DESKTOP_PLUGIN_IMAGE}"),
        "{compose}"
    );
    // Every port mapping, and there is exactly one, binds 127.0.0.1.
    let ports: Vec<&str> = lines
        .iter()
        .skip_while(|line| **line != "ports:")
        .skip(1)
        .take_while(|line| line.starts_with("- "))
        .copied()
        .collect();
    assert_eq!(ports, ["- \"127.0.0.1:8080:8080\""], "{compose}");
    assert_eq!(compose.matches("ports:").count(), 1);
    assert!(
        lines.contains(&"- latchkey-tokens:/data"),
        "tokens on a named volume"
    );
    for forbidden in [
        "environment:",
        "env_file:",
        "SECRET",
        "privileged",
        "network_mode",
    ] {
        assert!(
            !compose.contains(forbidden),
            "{forbidden} in the compose file"
        );
    }

    // The settings listen inside the container on the published port, and the redirect URI
    // names the host side of it.
    let settings = json("config.example.json");
    assert_eq!(settings["listen"], "0.0.0.0:8080");
    assert_eq!(settings["redirect_uri"], "http://localhost:8080/callback");
    assert_eq!(settings["token_file"], "/data/tokens.json");
}

#[test]
fn the_dockerfile_is_multi_stage_and_labels_the_image_as_docker_desktop_requires() {
    let dockerfile = read("Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|line| line.starts_with("FROM "))
        .collect();
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    assert_eq!(stages.last(), Some(&"FROM scratch"), "a small final image");
    for label in [
        "org.opencontainers.image.title",
        "org.opencontainers.image.description",
        "org.opencontainers.image.vendor",
        "com.docker.desktop.extension.api.version",
        "com.docker.desktop.extension.icon",
        "com.docker.extension.screenshots",
        "com.docker.extension.detailed-description",
        "com.docker.extension.publisher-url",
        "com.docker.extension.additional-urls",
        "com.docker.extension.changelog",
    ] {
        assert!(dockerfile.contains(&format!("{label}=")), "label {label}");
    }
    for shipped in [
        "metadata.json",
        "docker-compose.yaml",
        "latchkey.svg",
        "/ui",
    ] {
        assert!(dockerfile.contains(shipped), "the image holds {shipped}");
    }
    assert!(
        !dockerfile.contains("ENV "),
        "no settings or secrets in the environment"
    );
    let additional: Value = dockerfile
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("com.docker.extension.additional-urls=")
        })
        .map(|value| {
            value
                .trim_end_matches(" \\")
                .trim_matches('"')
                .replace("\\\"", "\"")
        })
        .and_then(|value| serde_json::from_str(&value).ok())
        .expect("additional-urls is a JSON list");
    assert!(additional.is_array());
}

#[test]
fn the_example_settings_are_valid() {
    let output = Command::new(env!("CARGO_BIN_EXE_latchkey-extension"))
        .arg("--check")
        .arg("--config")
        .arg(example().join("config.example.json"))
        .output()
        .expect("run the backend");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
