//! The board package: `scripts/package-deb.sh` builds a `.deb` from the `edgeray` binary, it
//! installs into a clean root (`dpkg --root`, maintainer scripts honouring `DPKG_ROOT`: the
//! `edgeray` system user, the state folder), the installed binary runs, its systemd unit passes
//! `systemd-analyze verify`, and a purge leaves nothing behind.
//!
//! Needs `dpkg` and `systemd-analyze` / `systemd-sysusers` (Debian's `systemd` package; the
//! setup script installs it); without them the test prints SKIP and passes, except under
//! `CI=true`, where it fails.

use std::path::Path;
use std::process::Command;

use edgeray_tests::{edgeray_bin, workspace_root};

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("command starts");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn dpkg(root: &Path) -> Command {
    let mut c = Command::new("dpkg");
    c.arg(format!("--root={}", root.display())).args([
        "--force-script-chrootless",
        "--force-not-root",
        "--force-depends",
        "--log=/dev/null",
    ]);
    c
}

#[test]
fn the_deb_installs_into_a_clean_root_and_its_unit_verifies() {
    let tools = ["dpkg", "dpkg-deb", "systemd-analyze", "systemd-sysusers"];
    if let Some(t) = tools.iter().find(|t| !have(t)) {
        assert!(std::env::var("CI").is_err(), "{t} is missing under CI");
        eprintln!("SKIP: {t} is not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let script = workspace_root().join("scripts/package-deb.sh");
    // Bad input: a clear error, no package.
    let bad = Command::new(&script)
        .args([
            edgeray_bin().to_str().unwrap(),
            "sparc",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown Debian architecture"));

    // No compression: the debug binary is ~190 MB and xz would take minutes.
    let deb = run(Command::new(&script)
        .env("EDGERAY_DEB_COMPRESSION", "none")
        .args([
            edgeray_bin().to_str().unwrap(),
            "amd64",
            out.to_str().unwrap(),
        ]));
    let deb = deb.trim();
    assert!(deb.ends_with("_amd64.deb"), "{deb}");
    let info = run(Command::new("dpkg-deb").args(["--info", deb]));
    assert!(info.contains("Package: edgeray") && info.contains("Architecture: amd64"));

    // A clean root: an empty dpkg database and nothing else.
    let root = tmp.path().join("root");
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    run(dpkg(&root).args(["-i", deb]));

    let bin = root.join("usr/bin/edgeray");
    let version = run(Command::new(&bin).arg("--version"));
    assert!(version.starts_with("edgeray "), "{version}");
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("edgeray:") && l.contains(":/var/lib/edgeray:")),
        "the system user: {passwd}"
    );
    assert!(root.join("var/lib/edgeray").is_dir());
    assert!(root.join("etc/edgeray").is_dir());

    // The unit as installed, its ExecStart pointed at the installed binary (verify checks
    // that the executable exists).
    let unit =
        std::fs::read_to_string(root.join("lib/systemd/system/edgeray-node.service")).unwrap();
    for want in [
        "ExecStart=/usr/bin/edgeray node --config /etc/edgeray/cluster.toml --state-dir /var/lib/edgeray",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "User=edgeray",
        "StateDirectory=edgeray",
    ] {
        assert!(unit.contains(want), "the unit lacks {want:?}");
    }
    let units = tmp.path().join("units");
    std::fs::create_dir_all(&units).unwrap();
    let checked = units.join("edgeray-node.service");
    std::fs::write(
        &checked,
        unit.replace("/usr/bin/edgeray", bin.to_str().unwrap()),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&checked)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );

    // Purge: files, state and the package are gone.
    run(dpkg(&root).args(["--purge", "edgeray"]));
    assert!(!bin.exists() && !root.join("var/lib/edgeray").exists());
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    assert!(!status.contains("Status: install ok installed"), "{status}");
}
