//! The command's generated help and completions: every command answers `--help` and
//! `latchkey help COMMAND` on stdout with exit 0 and lists its options; `--runtime` stays
//! out of it; a wrong argument is exit 2 with the reason on stderr.

mod common;

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
const COMMANDS: [(&str, &[&str]); 7] = [
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
    ("completions", &["bash", "zsh", "fish", "powershell"]),
    (
        "dev-idp",
        &[
            "--port",
            "--client-id",
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
