//! The guest-side unit tests of plugins/ (SDK escaping, the example plugins), run
//! natively so `cargo nextest run --workspace` covers them too.

use std::process::Command;

use herald_plugins::build;

#[test]
fn plugin_workspace_unit_tests_pass() {
    let root = build::repo_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(root.join("plugins"))
        .args(["test", "--locked", "--workspace", "--target-dir"])
        .arg(build::target_dir())
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "guest unit tests failed:\n{stdout}\n{stderr}"
    );
    let passed: usize = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split(' ').next()?.parse::<usize>().ok())
        .sum();
    assert!(
        passed >= 15,
        "expected the SDK and example tests to run:\n{stdout}"
    );
}
