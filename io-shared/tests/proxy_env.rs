//! `Proxy::from_env` reads the process environment, which tests cannot change safely while
//! other tests run on threads: each case re-runs this test binary as a child process with
//! the variables set, and the child reports what it found.

use std::env;
use std::process::Command;

use latchkey_io::proxy::Proxy;

const CHILD: &str = "LATCHKEY_IO_TEST_PROXY_ENV_CHILD";
const VARIABLES: [&str; 6] = [
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// What the child sees: the proxy for `idp.example` and for `idp.internal`.
fn describe() -> String {
    match Proxy::from_env() {
        Ok(proxy) => ["idp.example", "idp.internal"]
            .map(|host| match proxy.for_host(host) {
                Some(server) => format!("{}:{}", server.host(), server.port()),
                None => "direct".to_owned(),
            })
            .join(" "),
        Err(error) => format!("error: {error}"),
    }
}

#[test]
fn from_env_prefers_https_proxy_then_all_proxy_and_honours_no_proxy() {
    if env::var_os(CHILD).is_some() {
        println!("proxy-env: {}", describe());
        return;
    }
    let exe = env::current_exe().expect("test binary");
    for (settings, expected) in [
        (&[][..], "direct direct"),
        (&[("HTTPS_PROXY", "http://upper:1")], "upper:1 upper:1"),
        (
            &[
                ("https_proxy", "lower:3"),
                ("HTTPS_PROXY", "http://upper:1"),
            ],
            "lower:3 lower:3",
        ),
        (
            &[
                ("https_proxy", " "),
                ("HTTPS_PROXY", "http://upper:1"),
                ("ALL_PROXY", "http://all:2"),
                ("NO_PROXY", "idp.internal"),
            ],
            "upper:1 direct",
        ),
        (
            &[("ALL_PROXY", "http://all:2"), ("no_proxy", ".internal")],
            "all:2 direct",
        ),
        (
            &[("HTTPS_PROXY", "socks5://proxy:1080")],
            "error: unsupported proxy scheme \"socks5\": only http:// proxies are supported",
        ),
    ] {
        let mut child = Command::new(&exe);
        child
            .args([
                "--exact",
                "from_env_prefers_https_proxy_then_all_proxy_and_honours_no_proxy",
                "--nocapture",
            ])
            .env(CHILD, "1");
        for variable in VARIABLES {
            child.env_remove(variable);
        }
        child.envs(settings.iter().copied());
        let output = child.output().expect("run the child");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}");
        assert!(
            stdout.contains(&format!("proxy-env: {expected}\n")),
            "{settings:?}: {stdout}"
        );
    }
}
