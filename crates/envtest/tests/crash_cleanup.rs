//! A test process that dies without unwinding (killed, aborted, `exit`) leaves nothing running,
//! and what it left on disk or in the kernel is removed by the next test that starts.

// Test code: helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::eventually;
use silverback_envtest::ControlPlane;
use silverback_envtest::netns::NetNs;

const CHILD_ENV: &str = "SILVERBACK_ENVTEST_CRASH_CHILD";
const TEST_NAME: &str = "a_test_process_that_exits_abruptly_leaves_nothing_behind";

#[tokio::test]
async fn a_test_process_that_exits_abruptly_leaves_nothing_behind() {
    if std::env::var_os(CHILD_ENV).is_some() {
        // The child: start things, report them, and exit without dropping anything.
        let cp = ControlPlane::shared().await.unwrap();
        let ns = NetNs::create().unwrap();
        println!(
            "LEFT {} {} {} {}",
            cp.apiserver_pid(),
            cp.etcd_pid(),
            cp.dir().display(),
            ns.name()
        );
        std::process::exit(0);
    }

    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("LEFT ").map(|(_, rest)| rest))
        .unwrap_or_else(|| {
            panic!(
                "child printed no report:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (apiserver, etcd) = (fields[0].to_owned(), fields[1].to_owned());
    let dir = PathBuf::from(fields[2]);
    let netns = fields[3].to_owned();

    // The processes died with the child (parent-death signal).
    eventually(5, "control plane processes gone", || {
        let (a, e) = (apiserver.clone(), etcd.clone());
        async move {
            let gone = |pid: &str| !Path::new(&format!("/proc/{pid}")).exists();
            (gone(&a) && gone(&e)).then_some(())
        }
    })
    .await;

    // Its directory and network namespace are still there, until the next start sweeps them.
    assert!(dir.exists());
    assert!(Path::new("/run/netns").join(&netns).exists());
    let cp = ControlPlane::start().await.unwrap();
    assert!(!dir.exists(), "{} not swept", dir.display());
    let ns = NetNs::create().unwrap();
    assert!(
        !Path::new("/run/netns").join(&netns).exists(),
        "{netns} not swept"
    );
    drop((cp, ns));
}

#[tokio::test]
async fn a_panicking_test_stops_its_control_plane() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let cp = ControlPlane::start().await.unwrap();
        tx.send((cp.apiserver_pid(), cp.etcd_pid(), cp.dir().to_path_buf()))
            .unwrap();
        panic!("the test fails while the control plane runs");
    });
    let err = task.await.unwrap_err();
    assert!(err.is_panic());
    let (apiserver, etcd, dir) = rx.await.unwrap();
    // Unwinding dropped the control plane: processes reaped, directory removed.
    for pid in [apiserver, etcd] {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} survived"
        );
    }
    assert!(!dir.exists(), "{} survived", dir.display());
}
