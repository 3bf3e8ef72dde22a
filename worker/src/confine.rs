//! What a sandboxed tenant may still do once it runs: fewer capabilities, no new privileges, and
//! a seccomp filter in front of the system calls that reach out of its namespaces.
//!
//! Tenants run as root (CRIU here cannot dump a process of another uid), so these are what
//! keep one from mounting, loading a module, making a device node, tracing a process or joining
//! another namespace. The capabilities kept are those of a container runtime's default set,
//! less `MKNOD`, `NET_RAW`, `AUDIT_WRITE`, `SETFCAP` and `SYS_CHROOT`: enough for a server that
//! starts as root and switches to its own user (nginx). CRIU dumps and restores all three
//! (capabilities and the no-new-privileges bit with the task's credentials, the filter with
//! `seccomp.img`).
//!
//! [`confine`] runs in the child between fork and exec, after the view is entered; the filter is
//! built beforehand ([`Filter::new`]): the child may not allocate.

/// Capabilities a sandboxed tenant keeps (numbers from `linux/capability.h`).
const KEPT_CAPABILITIES: &[u32] = &[
    0,  // CHOWN
    1,  // DAC_OVERRIDE
    3,  // FOWNER
    4,  // FSETID
    5,  // KILL
    6,  // SETGID
    7,  // SETUID
    8,  // SETPCAP
    10, // NET_BIND_SERVICE
];

/// The highest capability number a kernel may know; dropping an unknown one fails harmlessly.
const LAST_CAPABILITY: u32 = 63;

/// System calls refused with `EPERM`: those that leave or change the tenant's namespaces and
/// mounts, reach into other processes, or reach the kernel's own state.
const REFUSED: &[libc::c_long] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_setns,
    libc::SYS_unshare,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kcmp,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_mknod,
    libc::SYS_mknodat,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_keyctl,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    // Its operations go around this filter, and CRIU cannot dump a ring.
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
];

/// `clone` flags that make new namespaces: refused like `unshare`.
const NEW_NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u32;

// Classic BPF, as `linux/filter.h` and `linux/seccomp.h` define it.
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS (0x20)
const BPF_JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGE_K: u16 = 0x05 | 0x30; // BPF_JMP | BPF_JGE | BPF_K
const BPF_JSET_K: u16 = 0x05 | 0x40; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// System call numbers of the x32 ABI, which would go around a filter of x86-64 numbers.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
// Offsets in `struct seccomp_data`.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARG0_LOW: u32 = 16;

/// A seccomp filter program, built before the fork.
pub struct Filter {
    program: Vec<libc::sock_filter>,
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

impl Filter {
    /// The filter of every sandboxed tenant (x86-64 only: any other architecture is killed).
    pub fn new() -> Filter {
        let refuse = SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let mut p = vec![
            stmt(BPF_LD_W_ABS, OFFSET_ARCH),
            jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
            stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
            stmt(BPF_LD_W_ABS, OFFSET_NR),
            jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
            stmt(BPF_RET_K, refuse),
        ];
        for &nr in REFUSED {
            p.push(jump(BPF_JEQ_K, nr as u32, 0, 1));
            p.push(stmt(BPF_RET_K, refuse));
        }
        // clone3 passes its flags in memory a filter cannot read: ENOSYS makes the C library
        // fall back to clone, whose flags it can.
        p.push(jump(BPF_JEQ_K, libc::SYS_clone3 as u32, 0, 1));
        p.push(stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
        p.push(jump(BPF_JEQ_K, libc::SYS_clone as u32, 0, 3));
        p.push(stmt(BPF_LD_W_ABS, OFFSET_ARG0_LOW));
        p.push(jump(BPF_JSET_K, NEW_NAMESPACE_FLAGS, 0, 1));
        p.push(stmt(BPF_RET_K, refuse));
        p.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
        Filter { program: p }
    }

    /// Instructions in the program.
    pub fn len(&self) -> usize {
        self.program.len()
    }

    pub fn is_empty(&self) -> bool {
        self.program.is_empty()
    }
}

impl Default for Filter {
    fn default() -> Self {
        Filter::new()
    }
}

/// Drops every capability but [`KEPT_CAPABILITIES`] (from the bounding set too, so that exec
/// does not give them back), sets no-new-privileges and installs `filter`. Only
/// async-signal-safe calls: it runs between fork and exec.
pub fn confine(filter: &Filter) -> std::io::Result<()> {
    let kept: u64 = KEPT_CAPABILITIES.iter().fold(0, |m, &c| m | (1u64 << c));
    for cap in 0..=LAST_CAPABILITY {
        if kept & (1 << cap) == 0 {
            // EINVAL for a number this kernel does not know: nothing to drop.
            // SAFETY: prctl with integer arguments.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    set_capabilities(kept)?;
    // SAFETY: prctl with integer arguments.
    unsafe {
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        ) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let prog = libc::sock_fprog {
        len: filter.program.len() as u16,
        filter: filter.program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: the program outlives the call; the kernel copies it.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
            0,
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// capset(2) of the calling thread: `mask` effective, permitted and inheritable.
fn set_capabilities(mask: u64) -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let half = |shift: u32| {
        let m = (mask >> shift) as u32;
        Data {
            effective: m,
            permitted: m,
            inheritable: m,
        }
    };
    let data = [half(0), half(32)];
    // SAFETY: header and two data structs of capset's version 3 layout, alive for the call.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    /// Runs `script` under sh, confined, and returns its output.
    fn confined(script: &str) -> String {
        let filter = Filter::new();
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", script]);
        // SAFETY: confine is async-signal-safe and uses only the filter built above.
        unsafe {
            cmd.pre_exec(move || confine(&filter));
        }
        let out = cmd.output().expect("run sh");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    #[test]
    fn a_confined_process_keeps_few_capabilities_and_no_new_privileges() {
        let status = confined("grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status");
        let kept: u64 = KEPT_CAPABILITIES.iter().fold(0, |m, &c| m | (1u64 << c));
        assert!(
            status.contains(&format!("CapEff:\t{kept:016x}")),
            "{status}"
        );
        assert!(
            status.contains(&format!("CapBnd:\t{kept:016x}")),
            "{status}"
        );
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
        assert!(status.contains("Seccomp:\t2"), "{status}");
    }

    #[test]
    fn mounts_namespaces_and_device_nodes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("disk");
        let out = confined(&format!(
            "mount -t tmpfs none {d} && echo MOUNTED; \
             unshare -n true && echo UNSHARED; \
             mknod {n} b 254 0 && echo MKNOD; \
             echo ran",
            d = dir.path().display(),
            n = node.display()
        ));
        assert!(out.contains("ran"), "{out}");
        for done in ["MOUNTED", "UNSHARED", "MKNOD"] {
            assert!(!out.contains(done), "{done}: {out}");
        }
        assert!(!node.exists());
    }
}
