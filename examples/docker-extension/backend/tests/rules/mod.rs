//! Docker's rules for an extension image (docs.docker.com, extensions-sdk: labels, metadata,
//! distribution), and what the checks need to read from the Dockerfile. Shared by
//! `packaging.rs`, which judges the Dockerfile without an engine, and by the latchkey
//! repository's `tests/tests/docker_extension_image.rs`, which judges the image podman built
//! from it. Only `std` and `serde_json`, so that it compiles in both places.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// The labels without which Docker Desktop considers an extension invalid, and
/// `com.docker.extension.categories`, which Marketplace validation requires.
pub const REQUIRED_LABELS: [&str; 10] = [
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.vendor",
    "com.docker.desktop.extension.api.version",
    "com.docker.desktop.extension.icon",
    "com.docker.extension.screenshots",
    "com.docker.extension.detailed-description",
    "com.docker.extension.publisher-url",
    "com.docker.extension.changelog",
    "com.docker.extension.categories",
];

/// The categories an extension may name.
const CATEGORIES: [&str; 12] = [
    "ci-cd",
    "container-orchestration",
    "cloud-deployment",
    "cloud-development",
    "database",
    "kubernetes",
    "networking",
    "image-registry",
    "security",
    "testing-tools",
    "utility-tools",
    "volumes",
];

/// Where the extension's folder is served from: the icon and screenshot URLs point here.
const RAW_FOLDER: &str =
    "https://raw.githubusercontent.com/latchkey-rs/latchkey/main/examples/docker-extension/";

/// The extension SDK the UI needs at least: the deep link back to the extension's tab came
/// in 0.3.3 (the host binary's streamed `exec` with `close()` in 0.2.3).
const MINIMUM_API: (u64, u64, u64) = (0, 3, 3);

/// The screenshot size Docker recommends.
const SCREENSHOT_SIZE: (u32, u32) = (2400, 1600);

/// What the checks read from a Dockerfile.
#[derive(Debug)]
pub struct Dockerfile {
    /// Every `FROM` line, in order.
    pub stages: Vec<String>,
    /// The final stage's labels, unquoted as Docker does.
    pub labels: BTreeMap<String, String>,
    /// The final stage's files and directories, from its `COPY` destinations.
    pub copies: Vec<Copied>,
    /// The final stage's `ENTRYPOINT` (exec form).
    pub entrypoint: Vec<String>,
}

/// A path the final stage's `COPY` instructions create.
#[derive(Debug, PartialEq, Eq)]
pub struct Copied {
    /// Absolute, without a trailing slash; a one-character class (`client_secre[t]`) is
    /// read as that character.
    pub path: String,
    /// Copied from a pattern, which may match nothing (an optional file).
    pub optional: bool,
}

impl Dockerfile {
    /// Reads the instructions that matter here. Comment lines (also inside a continued
    /// instruction) are dropped, as Docker drops them; variables are not expanded.
    pub fn parse(text: &str) -> Dockerfile {
        let mut dockerfile = Dockerfile {
            stages: Vec::new(),
            labels: BTreeMap::new(),
            copies: Vec::new(),
            entrypoint: Vec::new(),
        };
        for instruction in instructions(text) {
            let (keyword, rest) = instruction
                .split_once(char::is_whitespace)
                .unwrap_or((&instruction, ""));
            let rest = rest.trim();
            match keyword.to_ascii_uppercase().as_str() {
                "FROM" => {
                    dockerfile.stages.push(instruction.clone());
                    dockerfile.labels.clear();
                    dockerfile.copies.clear();
                    dockerfile.entrypoint.clear();
                }
                "LABEL" => {
                    for word in words(rest) {
                        let (key, value) = word.split_once('=').unwrap_or((&word, ""));
                        dockerfile.labels.insert(key.to_owned(), value.to_owned());
                    }
                }
                "COPY" | "ADD" => dockerfile.copies.extend(copied(rest)),
                "ENTRYPOINT" => {
                    dockerfile.entrypoint = serde_json::from_str(rest).unwrap_or_else(|e| {
                        panic!("ENTRYPOINT is not the exec form (a JSON list): {e}: {rest}")
                    });
                }
                _ => {}
            }
        }
        dockerfile
    }
}

/// The instructions, each on one line: continuations joined, comments dropped.
fn instructions(text: &str) -> Vec<String> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        match line.trim_end().strip_suffix('\\') {
            Some(continued) => {
                current.push_str(continued);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    instructions.push(current.trim().to_owned());
                }
                current.clear();
            }
        }
    }
    instructions
}

/// Shell-like words: double quotes with backslash escapes, single quotes literal.
fn words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            }
            '\'' => {
                in_word = true;
                word.extend(chars.by_ref().take_while(|&c| c != '\''));
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The paths one `COPY` creates: the destination itself for a single source copied to a
/// name or a directory's contents copied to a directory, else each source's name in the
/// destination directory.
fn copied(arguments: &str) -> Vec<Copied> {
    let paths: Vec<&str> = arguments
        .split_whitespace()
        .filter(|word| !word.starts_with("--"))
        .collect();
    let Some((destination, sources)) = paths.split_last() else {
        return Vec::new();
    };
    let into_directory = destination.ends_with('/') || sources.len() > 1;
    sources
        .iter()
        .map(|source| {
            let optional = source.contains(['*', '?', '[']);
            let path = if into_directory && !source.ends_with('/') {
                let name = source
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or("");
                format!("{}/{}", destination.trim_end_matches('/'), name)
            } else {
                destination.trim_end_matches('/').to_owned()
            };
            Copied {
                path: one_character_classes(&path),
                optional,
            }
        })
        .collect()
}

/// `client_secre[t]` → `client_secret`.
fn one_character_classes(pattern: &str) -> String {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let class = &rest[open..];
        let mut chars = class.chars();
        match (chars.next(), chars.next(), chars.next()) {
            (Some('['), Some(c), Some(']')) => {
                out.push(c);
                rest = &class[2 + c.len_utf8()..];
            }
            _ => {
                out.push('[');
                rest = &class[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The image paths `metadata.json` names: the icon, the compose file, each UI's entry page
/// and every host binary. Absolute, as in the image.
pub fn metadata_paths(metadata: &Value) -> Vec<String> {
    let absolute = |path: &str| format!("/{}", path.trim_start_matches('/'));
    let mut paths = Vec::new();
    paths.extend(metadata["icon"].as_str().map(absolute));
    paths.extend(metadata["vm"]["composefile"].as_str().map(absolute));
    if let Some(uis) = metadata["ui"].as_object() {
        for ui in uis.values() {
            if let (Some(root), Some(src)) = (ui["root"].as_str(), ui["src"].as_str()) {
                paths.push(absolute(&format!("{}/{src}", root.trim_end_matches('/'))));
            }
        }
    }
    for entry in metadata["host"]["binaries"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for binaries in entry.as_object().into_iter().flat_map(|e| e.values()) {
            for binary in binaries.as_array().into_iter().flatten() {
                paths.extend(binary["path"].as_str().map(absolute));
            }
        }
    }
    paths
}

/// Everything wrong with an image's labels by Docker's documented rules; empty when they
/// pass. `folder` is the extension's folder, where the icon and the screenshots the labels
/// point at must exist.
pub fn label_problems(labels: &BTreeMap<String, String>, folder: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut problem = |label: &str, message: String| problems.push(format!("{label}: {message}"));
    for label in REQUIRED_LABELS {
        if labels
            .get(label)
            .is_none_or(|value| value.trim().is_empty())
        {
            problem(label, "missing or empty".into());
        }
    }
    let label = |name: &str| labels.get(name).map(String::as_str).unwrap_or("");

    if let Err(message) = api_version(label("com.docker.desktop.extension.api.version")) {
        problem("com.docker.desktop.extension.api.version", message);
    }

    let icon = label("com.docker.desktop.extension.icon");
    let icon_file = icon.strip_prefix(RAW_FOLDER).unwrap_or("");
    if !https(icon) || ![".svg", ".png", ".jpg"].iter().any(|e| icon.ends_with(e)) {
        problem(
            "com.docker.desktop.extension.icon",
            format!("not an https URL of an .svg, .png or .jpg: {icon}"),
        );
    } else if icon_file != "latchkey.svg" {
        problem(
            "com.docker.desktop.extension.icon",
            format!("not {RAW_FOLDER}latchkey.svg: {icon}"),
        );
    } else if !folder.join(icon_file).is_file() {
        problem(
            "com.docker.desktop.extension.icon",
            format!("{icon_file} does not exist"),
        );
    }

    match json_objects(label("com.docker.extension.screenshots"), &["alt", "url"]) {
        Err(message) => problem("com.docker.extension.screenshots", message),
        Ok(screenshots) if screenshots.is_empty() => {
            problem("com.docker.extension.screenshots", "no screenshot".into());
        }
        Ok(screenshots) => {
            for screenshot in screenshots {
                if let Err(message) = screenshot_file(&screenshot["url"], folder) {
                    problem("com.docker.extension.screenshots", message);
                }
            }
        }
    }

    for name in [
        "com.docker.extension.detailed-description",
        "com.docker.extension.changelog",
    ] {
        if let Err(message) = balanced_html(label(name)) {
            problem(name, message);
        }
    }

    let publisher = label("com.docker.extension.publisher-url");
    if !https(publisher) {
        problem(
            "com.docker.extension.publisher-url",
            format!("not an https URL: {publisher}"),
        );
    }

    if let Some(Err(message)) = labels
        .get("com.docker.extension.additional-urls")
        .map(|urls| json_objects(urls, &["title", "url"]))
    {
        problem("com.docker.extension.additional-urls", message);
    }

    if let Some(account) = labels
        .get("com.docker.extension.account-info")
        .filter(|account| !["", "required"].contains(&account.as_str()))
    {
        problem(
            "com.docker.extension.account-info",
            format!("neither `required` nor empty: {account}"),
        );
    }

    let categories: Vec<&str> = label("com.docker.extension.categories")
        .split(',')
        .map(str::trim)
        .collect();
    for (i, category) in categories.iter().enumerate() {
        if !CATEGORIES.contains(category) || categories[..i].contains(category) {
            problem(
                "com.docker.extension.categories",
                format!("{category:?} is unknown or repeated (allowed: {CATEGORIES:?})"),
            );
        }
    }
    problems
}

fn https(url: &str) -> bool {
    url.strip_prefix("https://")
        .is_some_and(|rest| !rest.starts_with('/') && !rest.is_empty())
        && !url.contains(char::is_whitespace)
}

/// A semantic version (`0.3.4`) or a constraint (`>= 0.3.4`, `>= 1.4.7, < 2.0`) with a
/// lower bound of at least [`MINIMUM_API`].
fn api_version(value: &str) -> Result<(), String> {
    const OPERATORS: [&str; 8] = [">=", "<=", "!=", ">", "<", "=", "~", "^"];
    let mut lower = None;
    for clause in value.split(',').map(str::trim) {
        let operator = OPERATORS
            .iter()
            .find(|operator| clause.starts_with(**operator))
            .copied()
            .unwrap_or("");
        let version = clause[operator.len()..].trim();
        let numbers: Vec<u64> = version
            .split('.')
            .map(|n| {
                n.parse()
                    .map_err(|_| format!("{version:?} is not a version"))
            })
            .collect::<Result<_, _>>()?;
        if numbers.is_empty() || numbers.len() > 3 {
            return Err(format!("{version:?} is not a version"));
        }
        let at = |i: usize| numbers.get(i).copied().unwrap_or(0);
        if ["", ">=", "=", "~", "^"].contains(&operator) {
            lower = Some((at(0), at(1), at(2)));
        }
    }
    match lower {
        Some(lower) if lower >= MINIMUM_API => Ok(()),
        _ => Err(format!(
            "{value:?} does not require at least {}.{}.{}",
            MINIMUM_API.0, MINIMUM_API.1, MINIMUM_API.2
        )),
    }
}

/// A JSON array of objects with exactly `keys`, each a non-empty string, `url` an https URL.
fn json_objects(value: &str, keys: &[&str]) -> Result<Vec<Value>, String> {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(value) else {
        return Err(format!("not a JSON array: {value}"));
    };
    for item in &items {
        let fields = item.as_object().ok_or(format!("not an object: {item}"))?;
        let mut names: Vec<&str> = fields.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut expected = keys.to_vec();
        expected.sort_unstable();
        if names != expected
            || fields
                .values()
                .any(|v| v.as_str().is_none_or(|s| s.trim().is_empty()))
        {
            return Err(format!("not {{{}}} strings: {item}", keys.join(", ")));
        }
        if item["url"].as_str().is_some_and(|url| !https(url)) {
            return Err(format!("not an https URL: {item}"));
        }
    }
    Ok(items)
}

/// A screenshot URL points at a 2400×1600 PNG in the folder's `screenshots/`.
fn screenshot_file(url: &Value, folder: &Path) -> Result<(), String> {
    let url = url.as_str().unwrap_or("");
    let name = url
        .strip_prefix(RAW_FOLDER)
        .and_then(|path| path.strip_prefix("screenshots/"))
        .filter(|name| name.ends_with(".png") && !name.contains('/'))
        .ok_or(format!("not {RAW_FOLDER}screenshots/<name>.png: {url}"))?;
    let path = folder.join("screenshots").join(name);
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    match png_size(&bytes) {
        Some(size) if size == SCREENSHOT_SIZE => Ok(()),
        Some((width, height)) => Err(format!(
            "{name} is {width}x{height}, not {}x{}",
            SCREENSHOT_SIZE.0, SCREENSHOT_SIZE.1
        )),
        None => Err(format!("{name} is not a PNG")),
    }
}

/// A PNG's width and height, from its IHDR chunk (the first one, by the PNG spec).
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    let rest = bytes.strip_prefix(SIGNATURE)?;
    if rest.get(4..8)? != b"IHDR" {
        return None;
    }
    let number = |at: usize| Some(u32::from_be_bytes(rest.get(at..at + 4)?.try_into().ok()?));
    Some((number(8)?, number(12)?))
}

/// Plain text, or HTML whose tags are closed in order (`<br>` and the like need no end).
fn balanced_html(text: &str) -> Result<(), String> {
    const VOID: [&str; 4] = ["br", "hr", "img", "wbr"];
    let mut open: Vec<&str> = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        let end = rest[start..]
            .find('>')
            .ok_or(format!("an unclosed `<` in {text:?}"))?;
        let tag = &rest[start + 1..start + end];
        rest = &rest[start + end + 1..];
        let name = tag
            .trim_start_matches('/')
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("");
        if tag.starts_with('/') {
            if open.pop() != Some(name) {
                return Err(format!("</{name}> closes nothing open in {text:?}"));
            }
        } else if !VOID.contains(&name) && !tag.ends_with('/') {
            open.push(name);
        }
    }
    match open.last() {
        Some(name) => Err(format!("<{name}> is never closed in {text:?}")),
        None => Ok(()),
    }
}
