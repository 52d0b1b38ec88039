//! `pgward demo` as a newcomer runs it: the identities act as their own
//! least-privilege roles, masking applies, and `pgward doctor` on the
//! demo's config passes. Ctrl-C (SIGINT) stops it and cleans up.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_pgward");

/// Kills the demo if the test fails part-way.
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn psql(port: u16, user: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .arg(format!(
            "postgresql://{user}@127.0.0.1:{port}/shop?sslmode=disable"
        ))
        .args(["-X", "-At", "-c", sql])
        .env("PGPASSWORD", format!("{user}-demo"))
        .output()
        .expect("psql")
}

#[test]
fn the_demo_maps_identities_to_least_privilege_roles_and_the_doctor_agrees() {
    let port = pgward::cluster::free_port().expect("port");
    let mut demo = Demo(
        Command::new(BIN)
            .args(["demo", "--port", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the demo"),
    );
    let stdout = demo.0.stdout.take().expect("stdout");
    let mut config = None;
    let mut printed = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        printed.push_str(&line);
        printed.push('\n');
        if let Some(path) = line.trim().strip_prefix("pgward doctor --config ") {
            config = Some(path.to_owned());
        }
        if line.starts_with("Config: ") {
            break;
        }
    }
    let config = config.unwrap_or_else(|| panic!("no doctor line in:\n{printed}"));
    // The approve command as printed: the binary, --url and --user.
    let approve = printed
        .lines()
        .find_map(|l| l.trim().split_once(" approvals approve <ID> "))
        .map(|(bin, rest)| (bin.to_owned(), rest.to_owned()))
        .unwrap_or_else(|| panic!("no approve command in:\n{printed}"));
    assert!(printed.contains("/approvals (log in as dora"), "{printed}");
    assert!(printed.contains(&format!("127.0.0.1:{port}")), "{printed}");

    let out = psql(
        port,
        "alice",
        "SELECT current_user, ssn FROM customers WHERE id = 1",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "shop_support|*******6789\n"
    );
    let out = psql(
        port,
        "dora",
        "SELECT current_user, ssn FROM customers WHERE id = 1",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "shop_owner|123-45-6789\n"
    );
    let out = psql(port, "bob", "SELECT current_user");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "shop_app\n");

    let doctor = Command::new(BIN)
        .args(["doctor", "--config", &config])
        .output()
        .expect("doctor");
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(doctor.status.success(), "{report}");
    assert!(
        report.contains(
            "identity alice [support] on database shop -> role shop_support, masked columns: ok"
        ),
        "{report}"
    );
    assert!(report.contains("verdict: pass"), "{report}");

    // alice's UPDATE of customers is held; dora approves it with the
    // printed CLI command and alice's psql gets its result.
    let held = Command::new("psql")
        .arg(format!(
            "postgresql://alice@127.0.0.1:{port}/shop?sslmode=disable"
        ))
        .args([
            "-X",
            "-c",
            "UPDATE customers SET email = 'ada@new.example' WHERE id = 1",
        ])
        .env("PGPASSWORD", "alice-demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql");
    let (bin, rest) = approve;
    let args: Vec<&str> = rest.split_whitespace().collect();
    let cli = |verb: &[&str]| {
        Command::new(&bin)
            .args(verb)
            .args(&args)
            .env("PGWARD_PASSWORD", "dora-demo")
            .output()
            .expect("pgward approvals")
    };
    let id = loop {
        let out = cli(&["approvals", "list", "--json"]);
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let pending = v["tickets"].as_array().cloned().unwrap_or_default();
        if let Some(t) = pending.first() {
            assert_eq!(t["requester"]["user"], "alice", "{t}");
            assert!(t["statement"]
                .as_str()
                .unwrap_or("")
                .starts_with("UPDATE customers"));
            break t["id"].as_str().expect("id").to_owned();
        }
        std::thread::yield_now();
    };
    let out = cli(&["approvals", "approve", &id]);
    assert!(out.status.success(), "{out:?}");
    let out = held.wait_with_output().expect("psql ends");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "UPDATE 1\n");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("statement held for approval: ticket {id}")),
        "{out:?}"
    );
    let out = psql(port, "dora", "SELECT email FROM customers WHERE id = 1");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ada@new.example\n");

    // Ctrl-C: the demo stops and removes its cluster.
    let pid = demo.0.id().to_string();
    let signalled = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(signalled.success());
    let status = demo.0.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    let dir = std::path::Path::new(&config).parent().expect("dir");
    assert!(!dir.exists(), "{} left behind", dir.display());
}
