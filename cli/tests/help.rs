//! The command's generated help and completions: every command answers `--help` and
//! `latchkey help COMMAND` on stdout with exit 0 and lists its options; `--runtime` stays
//! out of it; a wrong argument is exit 2 with the reason on stderr.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::{Finished, Guard, Running};

const GUARD: Guard = Guard {
    limit: Duration::from_secs(30),
    stdout_grace: None,
    stderr_wait: None,
};

fn latchkey(args: &[&str]) -> Finished {
    let mut command = Command::new(env!("CARGO_BIN_EXE_latchkey"));
    command.args(args);
    Running::spawn("latchkey", GUARD, command).finish()
}

/// Each command and options its help must list.
const COMMANDS: [(&str, &[&str]); 8] = [
    (
        "login",
        &[
            "--client-id",
            "--authorization-endpoint",
            "--token-endpoint",
            "--issuer",
            "--provider",
            "--tenant",
            "--client-secret-env",
            "--client-secret-file",
            "--auth-method",
            "--scope",
            "--redirect-uri",
            "--device",
            "--no-browser",
            "--timeout",
            "--store",
            "--json",
            "--verbose",
        ],
    ),
    (
        "refresh",
        &[
            "--store",
            "--client-secret-env",
            "--client-secret-file",
            "--json",
        ],
    ),
    (
        "logout",
        &[
            "--store",
            "--client-secret-env",
            "--client-secret-file",
            "--json",
        ],
    ),
    (
        "token",
        &["--store", "--reveal", "--fresh", "--margin", "--json"],
    ),
    ("profiles", &["--store", "--json"]),
    ("completions", &["bash", "zsh", "fish", "powershell"]),
    (
        "dev-idp",
        &[
            "--port",
            "--client-id",
            "--auth-method",
            "--client-key",
            "--dpop-nonce",
            "--require-par",
            "--quirk",
            "--forge",
            "--id-token-alg",
        ],
    ),
    ("demo", &["--verbose"]),
];

fn assert_help(finished: &Finished, command: &str, options: &[&str]) {
    finished.assert_code(0);
    assert!(finished.stderr.is_empty(), "{}", finished.describe());
    let usage = format!("Usage: latchkey {command}");
    assert!(
        finished.stdout_text().contains(&usage),
        "{}",
        finished.describe()
    );
    for option in options {
        assert!(
            finished.stdout_text().contains(option),
            "{command} help lacks {option}: {}",
            finished.describe()
        );
    }
    assert!(
        !finished.stdout_text().contains("--runtime"),
        "{}",
        finished.describe()
    );
}

#[test]
fn every_command_answers_help_on_stdout_with_its_options() {
    for (command, options) in COMMANDS {
        assert_help(&latchkey(&[command, "--help"]), command, options);
        assert_help(&latchkey(&[command, "-h"]), command, options);
        assert_help(&latchkey(&["help", command]), command, options);
    }
}

#[test]
fn the_commands_help_lists_every_command_without_the_runtime() {
    for args in [&["--help"][..], &["help"], &[]] {
        let finished = latchkey(args);
        finished.assert_code(0);
        for (command, _) in COMMANDS {
            assert!(
                finished.stdout_text().contains(command),
                "{command}: {}",
                finished.describe()
            );
        }
        assert!(
            !finished.stdout_text().contains("--runtime"),
            "{}",
            finished.describe()
        );
    }
}

#[test]
fn version_is_printed_on_stdout() {
    let finished = latchkey(&["--version"]);
    finished.assert_code(0);
    assert!(
        finished.stdout_text().contains(env!("CARGO_PKG_VERSION")),
        "{}",
        finished.describe()
    );
}

#[test]
fn completions_print_a_script_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _latchkey"),
        ("zsh", "#compdef latchkey"),
        ("fish", "complete -c latchkey"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let finished = latchkey(&["completions", shell]);
        finished.assert_code(0);
        assert!(
            finished.stdout_text().contains(marker) && finished.stdout_text().contains("client-id"),
            "{shell}: {}",
            finished.describe()
        );
        // Fish names options without their dashes.
        assert!(
            !finished.stdout_text().contains("runtime"),
            "{shell}: {}",
            finished.describe()
        );
    }
}

#[test]
fn a_wrong_argument_exits_2_with_the_reason_and_the_commands_usage() {
    for (args, says) in [
        (&["login", "--bogus"][..], "'--bogus'"),
        (
            &["completions", "tcsh"],
            "takes bash, elvish, fish, powershell or zsh, not \"tcsh\"",
        ),
        (&["token", "--margin", "5"], "--fresh"),
        (&["login", "--client-id", "c"], "--provider <NAME>"),
        (&["dev-idp", "--quirk", "yahoo"], "--quirk takes github"),
    ] {
        let finished = latchkey(args);
        finished.assert_code(2);
        assert!(finished.stdout.is_empty(), "{}", finished.describe());
        let usage = format!("USAGE: latchkey {}", args[0]);
        assert!(
            finished.stderr.contains(says) && finished.stderr.contains(&usage),
            "{args:?}: {}",
            finished.describe()
        );
        let help = format!("'latchkey help {}'", args[0]);
        assert!(finished.stderr.contains(&help), "{}", finished.describe());
    }
}

/// The long options a command's `--help` lists (`--help` itself left out).
fn options_in_help(help: &str) -> BTreeSet<String> {
    help.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let line = match line.strip_prefix('-') {
                // "-v, --verbose..."
                Some(rest) if !rest.starts_with('-') => rest.split_once(", ")?.1,
                _ => line,
            };
            let option = line.strip_prefix("--")?;
            let name: String = option
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            Some(format!("--{name}"))
        })
        .filter(|option| option != "--help")
        .collect()
}

/// The long options a piece of the README names.
fn options_in_text(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|word| word.starts_with("--") && word.len() > 2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_readmes_command_reference_matches_each_commands_help() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let start = readme
        .find("<!-- command reference")
        .expect("the README's command reference");
    let end = readme
        .find("<!-- end of the command reference -->")
        .expect("the end of the command reference");
    let reference = &readme[start..end];
    let top = latchkey(&["--help"]);
    top.assert_code(0);
    let commands: Vec<String> = top
        .stdout_text()
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .filter(|command| command != "help")
        .collect();
    assert!(commands.len() >= 8, "{}", top.describe());
    let sections: Vec<&str> = reference.split("\n### `latchkey ").skip(1).collect();
    let documented: Vec<&str> = sections
        .iter()
        .filter_map(|section| section.split('`').next())
        .collect();
    assert_eq!(
        documented, commands,
        "the README documents the commands of `latchkey --help`, in its order"
    );
    for section in sections {
        let (command, body) = section.split_once("`\n").expect("a heading");
        let help = latchkey(&[command, "--help"]);
        help.assert_code(0);
        let about = help
            .stdout_text()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            body.lines().next(),
            Some(about.as_str()),
            "the README's line under `latchkey {command}` is its help's first line"
        );
        assert_eq!(
            options_in_text(body),
            options_in_help(&help.stdout_text()),
            "the README's options of `latchkey {command}` are its help's"
        );
    }
}
