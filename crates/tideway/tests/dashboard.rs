//! The admin dashboard of `tideway demo` in headless Chromium (Debian's chromium,
//! chromium-driver and python3-selenium; scripts/test installs them): the page loads, lists the
//! demo's services, its numbers move under load, and a screenshot is saved to
//! `<target dir>/test-artifacts/dashboard.png`. The browser side is `tests/browser/dashboard.py`.
//!
//! When Chromium cannot run the test is skipped, except under `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tideway_testkit::Process;

const BIN: &str = env!("CARGO_BIN_EXE_tideway");
/// The browser script's exit code for "Chromium cannot be started".
const BROWSER_UNAVAILABLE: i32 = 3;
/// The whole browser run may not take longer (coreutils `timeout`).
const BROWSER_TIMEOUT_SECS: &str = "180";

/// `<target dir>/test-artifacts`: `$CARGO_TARGET_DIR`, else three levels up from this test's
/// executable (`target/debug/deps/dashboard-*`).
fn artifacts_dir() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
            .unwrap_or_else(std::env::temp_dir),
    };
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser/dashboard.py")
}

#[test]
fn dashboard_shows_the_demo_and_moves_under_load_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(BIN);
    command.args([
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let mut demo = Process::spawn("tideway-demo", command, dir.path());
    let base = demo
        .wait_for_line("Tideway gateway listening on ", Duration::from_secs(30))
        .trim()
        .to_owned();
    let admin = demo.wait_for_line("Admin: ", Duration::from_secs(10));
    let admin = admin.split("/metrics").next().unwrap().trim().to_owned();

    let screenshot = artifacts_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let python =
        std::env::var("TIDEWAY_BROWSER_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
    let out = Command::new("timeout")
        .arg(BROWSER_TIMEOUT_SECS)
        .arg(&python)
        .arg(script())
        .args(["--admin", &admin, "--base", &base, "--screenshot"])
        .arg(&screenshot)
        .current_dir(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    if out.status.code() == Some(BROWSER_UNAVAILABLE) {
        let msg = format!("headless Chromium cannot run here: {stderr}");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("SKIPPED: {msg}");
        return;
    }
    assert!(
        out.status.success(),
        "the browser check failed ({:?}):\n{stdout}\n{stderr}\n{}",
        out.status,
        demo.diagnostics()
    );
    assert!(stdout.contains("PASS"), "{stdout}");
    let png = std::fs::read(&screenshot).expect("the screenshot was saved");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "a {}-byte screenshot is blank",
        png.len()
    );
    eprintln!("dashboard screenshot: {}", screenshot.display());
}
