//! helm/onionpost: rendered, linted and validated by tests/helm/test_chart.py (pytest), with
//! Helm's own library (PyPI helm-python-sdk, which binds Helm's Go SDK: no helm binary) and
//! the Kubernetes schemas (PyPI kubernetes-validate). This test runs that suite.
//!
//! The Python interpreter is `ONIONPOST_TEST_PYTHON` (tests/run.sh points it at a virtualenv
//! it fills with those packages), else `python3`. Without the packages the suite cannot run:
//! the test says so plainly, and fails under `CI=true`.

use std::path::Path;
use std::process::Command;

#[test]
fn helm_chart_renders_lints_and_validates() {
    let python = std::env::var("ONIONPOST_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent");
    let probe = Command::new(&python)
        .args([
            "-c",
            "import helm_python, kubernetes_validate, pytest, yaml",
        ])
        .output();
    let missing = match probe {
        Err(error) => Some(format!("cannot run {python}: {error}")),
        Ok(output) if !output.status.success() => Some(format!(
            "{python} lacks helm-python-sdk, kubernetes-validate, pytest or pyyaml (tests/run.sh installs them): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Ok(_) => None,
    };
    if let Some(why) = missing {
        let ci = std::env::var("CI").is_ok_and(|value| value == "true");
        assert!(!ci, "CI=true but the helm chart tests cannot run: {why}");
        println!("helm: the helm chart tests did NOT run: {why}");
        eprintln!("helm: the helm chart tests did NOT run: {why}");
        return;
    }
    let output = Command::new(&python)
        .current_dir(repo)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/helm"])
        .output()
        .expect("running pytest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{text}");
    assert!(output.status.success(), "tests/helm failed:\n{text}");
}
