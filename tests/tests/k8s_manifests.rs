//! `make k8s-validate` checks what operators apply (scripts/k8s-validate.sh): the
//! manifests and kustomize builds against the Kubernetes schemas, the Dockerfile with
//! hadolint. These tests prove the shipped files pass and that the check has teeth: a
//! copy with a typo'd field fails it. When the validators cannot be installed (no PyPI),
//! the tests say so loudly on stderr and skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Hard bound on one run of the script (pip install included).
const VALIDATE_TIMEOUT: Duration = Duration::from_secs(300);
/// The script's exit code when the validators cannot be installed.
const TOOLS_MISSING: i32 = 3;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// Runs scripts/k8s-validate.sh with `args`, killed after [`VALIDATE_TIMEOUT`].
fn validate(args: &[&str]) -> Output {
    let script = repo_root().join("scripts/k8s-validate.sh");
    let mut child = Command::new("bash")
        .arg(script)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run scripts/k8s-validate.sh");
    let deadline = Instant::now() + VALIDATE_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().expect("collect output"),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                panic!("k8s-validate.sh {args:?} still running after {VALIDATE_TIMEOUT:?}");
            }
        }
    }
}

/// True when the validators are (or could be made) available; else prints why and skips.
fn tools_available() -> bool {
    let out = validate(&["--install-tools"]);
    if out.status.code() == Some(TOOLS_MISSING) || !out.status.success() {
        eprintln!(
            "SKIPPED: the manifest validators (kubernetes-validate, hadolint) cannot be installed here:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return false;
    }
    true
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn shipped_manifests_and_dockerfile_pass_the_check() {
    if !tools_available() {
        return;
    }
    let out = validate(&[]);
    assert!(
        out.status.success(),
        "the shipped deploy/ fails k8s-validate:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_typo_in_a_manifest_field_fails_the_check() {
    if !tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("deploy");
    copy_dir(&repo_root().join("deploy"), &copy);
    let sts = copy.join("k8s/base/statefulset.yaml");
    let text = std::fs::read_to_string(&sts).unwrap();
    assert!(text.contains("readOnlyRootFilesystem: true"));
    std::fs::write(
        &sts,
        text.replace(
            "readOnlyRootFilesystem: true",
            "readOnlyRootFileSystem: true",
        ),
    )
    .unwrap();
    let out = validate(&[copy.to_str().unwrap()]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "a typo'd field passed:\n{all}");
    assert!(
        all.contains("readOnlyRootFileSystem"),
        "the error does not name the field:\n{all}"
    );
}

#[test]
fn a_bad_dockerfile_fails_the_check() {
    if !tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("deploy");
    copy_dir(&repo_root().join("deploy"), &copy);
    let file = copy.join("docker/Dockerfile");
    let text = std::fs::read_to_string(&file).unwrap();
    // Unpinned apt installs and a root runtime are what hadolint exists to catch.
    std::fs::write(
        &file,
        text.replace("libclang-dev=1:14.0-55.7~deb12u1", "libclang-dev")
            .replace("USER 10001:10001\n", ""),
    )
    .unwrap();
    let out = validate(&[copy.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a Dockerfile with unpinned packages passed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
