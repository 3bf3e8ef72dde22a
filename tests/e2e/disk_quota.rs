//! A tenant's disk quota (`--disk-quota`): its writes past it fail with ENOSPC while another
//! tenant's go on, and it swaps out and in (a real CRIU dump and restore of a sandboxed tenant
//! whose working directory is a filesystem of its own) with its files and its quota intact.

use testkit::net::{free_port, http_get};

#[test]
fn a_tenant_past_its_disk_quota_fails_alone_and_keeps_its_files_across_swaps() {
    let _serial = testkit::criu_lock();
    let p = super::pico();
    let _worker = p.start_worker();
    let port = free_port();
    let args = super::counter_add_args_with("small", port, &["--disk-quota", "16M"]);
    p.ok(&super::strs(&args));
    let other = super::add_counter(&p, "other");
    let status = super::tenant(&p, "small");
    assert_eq!(status["disk_quota"], 16 << 20, "{status}");
    let cwd = p.home().join("tenants/small/cwd");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        mounts.contains(&format!(" {} ", cwd.display())),
        "its working directory is a mount of its own"
    );

    assert_eq!(http_get(port, "/write?name=a&kb=4096").unwrap(), "wrote");
    assert_eq!(http_get(port, "/write?name=b&kb=20480").unwrap(), "ENOSPC");
    // The other tenant, on the host's disk, writes as much.
    assert_eq!(http_get(other, "/write?name=b&kb=20480").unwrap(), "wrote");
    assert_eq!(http_get(port, "/inc").unwrap(), "1");

    for round in 2..=3 {
        p.ok(&["tenant", "swap-out", "small"]);
        p.ok(&["tenant", "swap-in", "small"]);
        assert_eq!(http_get(port, "/inc").unwrap(), round.to_string());
        assert_eq!(
            http_get(port, "/size?name=a").unwrap(),
            (4 << 20).to_string()
        );
        // Still its own filesystem, still full: the quota came back with it.
        assert_eq!(http_get(port, "/write?name=c&kb=20480").unwrap(), "ENOSPC");
    }
    assert_eq!(
        http_get(other, "/size?name=b").unwrap(),
        (20 << 20).to_string()
    );

    p.ok(&["tenant", "rm", "small"]);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&format!(" {} ", cwd.display())));
    assert!(!p.home().join("tenants/small").exists());
}

#[test]
fn a_disk_quota_needs_the_tenants_own_directory_and_eight_mib() {
    let _serial = testkit::criu_lock();
    let p = super::pico();
    let _worker = p.start_worker();
    let port = free_port().to_string();
    let add = |quota: &str, more: &[&str]| {
        let mut args = vec![
            "tenant",
            "add",
            "tiny",
            "--port",
            &port,
            "--disk-quota",
            quota,
        ];
        args.extend_from_slice(more);
        args.extend_from_slice(&["--", "true"]);
        p.fails(&args)
    };
    let err = add("1M", &[]);
    assert!(err.contains("under the smallest"), "{err}");
    let err = add("10M", &["--workdir", "/tmp"]);
    assert!(err.contains("cannot be used with"), "{err}");
}
