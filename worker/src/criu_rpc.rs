//! The two messages of CRIU's RPC protocol (`images/rpc.proto` in CRIU's source) that a restore
//! through `criu swrk` needs: the restore request and CRIU's response, in protobuf's wire
//! format (through [`criu_image::protowire`]).
//!
//! Field numbers are those of CRIU 4.2's `rpc.proto`; a field of the response not listed here is
//! skipped, as protobuf requires.

use criu_image::protowire::{put_bool, put_bytes, put_int32, put_uint, Fields, Value};

use crate::criu::CgroupRoot;

/// `criu_req_type.RESTORE`.
const RESTORE: u64 = 2;

/// A `criu_req` of type RESTORE with the `criu_opts` a whole restore uses.
pub(crate) struct RestoreRequest<'a> {
    /// `images_dir` (68): the image directory, by path.
    pub images_dir: &'a str,
    /// `work_dir_fd` (17): a descriptor of the work directory, open in the requesting process
    /// (CRIU opens it through `/proc/PID/fd`).
    pub work_dir_fd: i32,
    /// `log_file` (10): a file name in the work directory.
    pub log_file: &'a str,
    /// `log_level` (9).
    pub log_level: u8,
    /// `tcp_established` (5).
    pub tcp_established: bool,
    /// `join_ns` (39) of `ns` "net": the restored tree joins the network namespace pinned at
    /// this path.
    pub join_netns: Option<&'a str>,
    /// `root` (13): the directory that becomes the restored tree's root (its mount view).
    pub root: Option<&'a str>,
    /// `external` (37): `mnt[KEY]:PATH` for each bind mount of that view.
    pub external: &'a [String],
    /// `cgroup_yard` (60): the directory where the cgroup hierarchies are (see `cgroup::yard`).
    pub cgroup_yard: Option<&'a str>,
    /// `cg_root` (25): for each, `ctrl` (1) and `path` (2) (see [`CgroupRoot`]).
    pub cgroup_roots: &'a [CgroupRoot],
    /// `leave_stopped` (69): the restored tasks are left stopped (`SIGSTOP`), to be continued
    /// by the caller.
    pub leave_stopped: bool,
}

/// What a `criu_resp` says about a restore.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RestoreResponse {
    /// `success` (2).
    pub success: bool,
    /// `restore.pid` (4.1): the root of the restored tree.
    pub pid: Option<i32>,
    /// `cr_errno` (7).
    pub errno: Option<i32>,
    /// `cr_errmsg` (9).
    pub errmsg: Option<String>,
}

impl RestoreRequest<'_> {
    pub fn encode(&self) -> Vec<u8> {
        let mut opts = Vec::new();
        // Required; -1 says the directory is given by path (`images_dir`).
        put_int32(&mut opts, 1, -1);
        put_bool(&mut opts, 5, self.tcp_established);
        if let Some(root) = self.root {
            put_bytes(&mut opts, 13, root.as_bytes());
        }
        put_int32(&mut opts, 9, i32::from(self.log_level));
        put_bytes(&mut opts, 10, self.log_file.as_bytes());
        put_int32(&mut opts, 17, self.work_dir_fd);
        if let Some(path) = self.join_netns {
            // `join_namespace`: ns (1), ns_file (2).
            let mut join = Vec::new();
            put_bytes(&mut join, 1, b"net");
            put_bytes(&mut join, 2, path.as_bytes());
            put_bytes(&mut opts, 39, &join);
        }
        for external in self.external {
            put_bytes(&mut opts, 37, external.as_bytes());
        }
        for root in self.cgroup_roots {
            let mut entry = Vec::new();
            put_bytes(&mut entry, 1, root.controller.as_bytes());
            put_bytes(&mut entry, 2, root.path.as_bytes());
            put_bytes(&mut opts, 25, &entry);
        }
        if let Some(yard) = self.cgroup_yard {
            put_bytes(&mut opts, 60, yard.as_bytes());
        }
        if self.leave_stopped {
            put_bool(&mut opts, 69, true);
        }
        put_bytes(&mut opts, 68, self.images_dir.as_bytes());
        let mut req = Vec::with_capacity(opts.len() + 8);
        put_uint(&mut req, 1, RESTORE);
        put_bytes(&mut req, 2, &opts);
        req
    }
}

impl RestoreResponse {
    pub fn decode(buf: &[u8]) -> Result<RestoreResponse, String> {
        let mut r = RestoreResponse {
            success: false,
            pid: None,
            errno: None,
            errmsg: None,
        };
        let mut fields = Fields::new(buf);
        while let Some((field, value)) = fields.next_field().map_err(|e| e.to_string())? {
            match (field, value) {
                (1, Value::Varint(kind)) if kind != RESTORE => {
                    return Err(format!("a response to request type {kind}, not a restore"));
                }
                (2, Value::Varint(v)) => r.success = v != 0,
                (4, Value::Bytes(inner)) => {
                    let mut inner = Fields::new(inner);
                    while let Some((field, value)) =
                        inner.next_field().map_err(|e| e.to_string())?
                    {
                        if let (1, Value::Varint(pid)) = (field, value) {
                            r.pid = Some(pid as i32);
                        }
                    }
                }
                (7, Value::Varint(v)) => r.errno = Some(v as i32),
                (9, Value::Bytes(msg)) => r.errmsg = Some(String::from_utf8_lossy(msg).into()),
                _ => {}
            }
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_request_in_protobufs_wire_format() {
        let req = RestoreRequest {
            images_dir: "/i",
            work_dir_fd: 7,
            log_file: "r.log",
            log_level: 2,
            tcp_established: true,
            join_netns: None,
            root: None,
            external: &[],
            cgroup_roots: &[],
            cgroup_yard: None,
            leave_stopped: false,
        }
        .encode();
        // Checked against `protoc --decode=criu_req rpc.proto` (CRIU 4.2.1).
        let opts: &[u8] = &[
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x01, // images_dir_fd -1
            0x28, 0x01, // tcp_established
            0x48, 0x02, // log_level
            0x52, 0x05, b'r', b'.', b'l', b'o', b'g', // log_file
            0x88, 0x01, 0x07, // work_dir_fd
            0xa2, 0x04, 0x02, b'/', b'i', // images_dir
        ];
        let mut want = vec![0x08, 0x02, 0x12, opts.len() as u8];
        want.extend_from_slice(opts);
        assert_eq!(req, want);
    }

    #[test]
    fn a_restore_request_may_join_a_network_namespace() {
        let req = RestoreRequest {
            images_dir: "/i",
            work_dir_fd: 7,
            log_file: "r.log",
            log_level: 2,
            tcp_established: true,
            join_netns: Some("/n"),
            root: None,
            external: &[],
            cgroup_roots: &[],
            cgroup_yard: None,
            leave_stopped: false,
        }
        .encode();
        // join_ns (39, length-delimited: key 0xba 0x02) { ns "net", ns_file "/n" }.
        let join: &[u8] = &[
            0xba, 0x02, 0x09, 0x0a, 0x03, b'n', b'e', b't', 0x12, 0x02, b'/', b'n',
        ];
        assert!(req.windows(join.len()).any(|w| w == join), "{req:x?}");
    }

    #[test]
    fn a_restore_request_may_give_a_root_external_mounts_cgroups_and_leave_stopped() {
        let external = ["mnt[usr]:/usr".to_string()];
        let cgroup_roots = [
            CgroupRoot {
                controller: "memory".into(),
                path: "/p".into(),
            },
            CgroupRoot {
                controller: String::new(),
                path: "/p".into(),
            },
        ];
        let req = RestoreRequest {
            images_dir: "/i",
            work_dir_fd: 7,
            log_file: "r.log",
            log_level: 2,
            tcp_established: true,
            join_netns: None,
            root: Some("/v"),
            external: &external,
            cgroup_roots: &cgroup_roots,
            cgroup_yard: Some("/y"),
            leave_stopped: true,
        }
        .encode();
        // root (13: key 0x6a) "/v"; external (37: key 0xaa 0x02) "mnt[usr]:/usr".
        let root: &[u8] = &[0x6a, 0x02, b'/', b'v'];
        assert!(req.windows(root.len()).any(|w| w == root), "{req:x?}");
        let mut ext = vec![0xaa, 0x02, 13];
        ext.extend_from_slice(b"mnt[usr]:/usr");
        assert!(req.windows(ext.len()).any(|w| w == ext), "{req:x?}");
        // cg_root (25: key 0xca 0x01) { ctrl "memory", path "/p" }, then { ctrl "", path "/p" }
        // (v2's hierarchy: a controller named "", not none, which would rename every hierarchy).
        let mut roots = vec![0xca, 0x01, 12, 0x0a, 0x06];
        roots.extend_from_slice(b"memory");
        roots.extend_from_slice(&[0x12, 0x02, b'/', b'p', 0xca, 0x01, 6, 0x0a, 0x00]);
        roots.extend_from_slice(&[0x12, 0x02, b'/', b'p']);
        assert!(req.windows(roots.len()).any(|w| w == roots), "{req:x?}");
        // cgroup_yard (60: key 0xe2 0x03) "/y".
        let yard: &[u8] = &[0xe2, 0x03, 0x02, b'/', b'y'];
        assert!(req.windows(yard.len()).any(|w| w == yard), "{req:x?}");
        // leave_stopped (69: key 0xa8 0x04) true.
        let stopped: &[u8] = &[0xa8, 0x04, 0x01];
        assert!(req.windows(stopped.len()).any(|w| w == stopped), "{req:x?}");
    }

    #[test]
    fn responses_of_success_and_of_failure() {
        // type RESTORE, success, restore { pid 4242 }, and a field this side does not know.
        let ok = [
            0x08, 0x02, 0x10, 0x01, 0x22, 0x03, 0x08, 0x92, 0x21, 0x58, 0x00,
        ];
        assert_eq!(
            RestoreResponse::decode(&ok).unwrap(),
            RestoreResponse {
                success: true,
                pid: Some(4242),
                errno: None,
                errmsg: None
            }
        );
        let failed = [0x08, 0x02, 0x10, 0x00, 0x38, 0x11, 0x4a, 0x02, b'n', b'o'];
        let r = RestoreResponse::decode(&failed).unwrap();
        assert!(!r.success);
        assert_eq!((r.errno, r.errmsg.as_deref()), (Some(17), Some("no")));
        // Cut short, or an answer to another request: errors, not a guess.
        assert!(RestoreResponse::decode(&ok[..7]).is_err());
        assert!(RestoreResponse::decode(&[0x08, 0x01, 0x10, 0x01]).is_err());
    }
}
