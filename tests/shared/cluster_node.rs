//! Shared by the cluster tests that run nodes as processes (`tests/cluster_processes.rs`,
//! `tests/cluster_review.rs`): the `examples/cluster_node.rs` binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `cluster_node` example, built if needed: `cargo test` builds the package's examples,
/// but `cargo test --test cluster_processes` does not, so this runs `cargo build --example
/// cluster_node` once (a no-op when it is fresh) with this test binary's target directory,
/// profile and target.
pub fn node_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        // This binary is <target dir>[/<triple>]/<profile>/deps/<test>-<hash>.
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary is in <target>/<profile>/deps");
        let binary = profile_dir
            .join("examples")
            .join(format!("cluster_node{}", std::env::consts::EXE_SUFFIX));
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("debug")
            .to_string();
        let above = profile_dir.parent().expect("a target directory");
        // Cargo marks the target directory's root with CACHEDIR.TAG; one level more is a
        // `--target <triple>` build.
        let (target_dir, triple) = if above.join("CACHEDIR.TAG").exists() {
            (above.to_path_buf(), None)
        } else {
            (
                above.parent().unwrap_or(above).to_path_buf(),
                above
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_string),
            )
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(&cargo);
        // What cargo set for this test binary must not reach the build: build scripts watch
        // some of it (ring's reruns when CARGO_PKG_NAME changes), and everything depending on
        // them would be rebuilt, here and again by the next `cargo test`.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_MANIFEST_")
                || matches!(
                    &*key,
                    "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR"
                )
            {
                build.env_remove(&*key);
            }
        }
        // Cargo prepends the target directory and the toolchain's libraries to the library
        // path: take them out again.
        if let Some(paths) = std::env::var_os("LD_LIBRARY_PATH") {
            let toolchain = Path::new(&cargo).parent().and_then(Path::parent);
            let kept: Vec<PathBuf> = std::env::split_paths(&paths)
                .filter(|p| {
                    !p.starts_with(&target_dir) && !toolchain.is_some_and(|t| p.starts_with(t))
                })
                .collect();
            match std::env::join_paths(&kept) {
                Ok(joined) if !kept.is_empty() => build.env("LD_LIBRARY_PATH", joined),
                _ => build.env_remove("LD_LIBRARY_PATH"),
            };
        }
        build
            .args([
                "build",
                "--quiet",
                "--example",
                "cluster_node",
                "--manifest-path",
            ])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir);
        match profile.as_str() {
            "debug" => {}
            "release" => {
                build.arg("--release");
            }
            other => {
                build.args(["--profile", other]);
            }
        }
        if let Some(triple) = triple {
            build.args(["--target", &triple]);
        }
        match build.output() {
            Ok(out) if out.status.success() => {}
            Ok(out) if binary.is_file() => eprintln!(
                "warning: `cargo build --example cluster_node` failed ({}); using the existing \
                 {}:\n{}",
                out.status,
                binary.display(),
                String::from_utf8_lossy(&out.stderr)
            ),
            Ok(out) => panic!(
                "`cargo build --example cluster_node` failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) if binary.is_file() => eprintln!(
                "warning: cannot run cargo ({e}); using the existing {}",
                binary.display()
            ),
            Err(e) => panic!("cannot run cargo to build the cluster_node example: {e}"),
        }
        assert!(binary.is_file(), "{} is missing", binary.display());
        binary
    })
}
