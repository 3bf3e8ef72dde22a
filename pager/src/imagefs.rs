//! A checkpoint as a read-only FUSE directory, served lazily from the page store.
//!
//! The mount serves a manifest's files and knows no image format (its reader is CRIU, restoring
//! from a checkpoint of its image directory): inline files come from the manifest, paged files
//! page by page from the store's tiers, each page fetched only when read. Paged files are opened
//! with direct I/O so that the kernel neither reads ahead (which would fetch pages nobody asked
//! for) nor merges requests: the access log then sees exactly what the reader asked for.
//!
//! FUSE callbacks are synchronous; a read whose pages are all in memory is answered on the FUSE
//! thread, any other is moved onto the tokio runtime and answered when its pages arrive, so a
//! slow cold-tier fetch never blocks other readers. A tenant's fault that no tier of this host
//! can serve also fetches the pages around it, when asked to ([`MountOptions`],
//! [`crate::readahead`]). Reads are logged in the span current where the checkpoint was mounted
//! (the worker's tenant and swap-in), though FUSE threads serve them.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, LockOwner, MountOption,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, Request,
};
use pagestore::tally::TierTally;
use pagestore::{FileContent, Manifest, PageSpan, PageStore, PAGE_SIZE};
use tracing::{info, trace, warn, Instrument};

use crate::access::AccessLog;
use crate::error::{Error, Result};
use crate::readahead::FaultReadAhead;
use crate::reads::{MountReads, RestorePhase};

/// Choices of one mount beyond what it serves.
#[derive(Clone, Copy, Debug, Default)]
pub struct MountOptions {
    /// A fault (a read while the tenant runs, [`RestorePhase::Faults`]) of a page that no tier
    /// of this host holds also fetches the file's pages around it, nearest first, up to this
    /// many bytes as stored, each further such fault twice as many as the one before, up to
    /// eight times ([`crate::readahead`]); 0: none.
    pub fault_readahead_bytes: u64,
}

/// Attributes never change: the checkpoint is immutable.
const TTL: Duration = Duration::from_secs(3600);
const ROOT: u64 = 1;

struct ImageFs {
    store: Arc<PageStore>,
    manifest: Arc<Manifest>,
    runtime: tokio::runtime::Handle,
    access: Arc<AccessLog>,
    reads: Arc<MountReads>,
    /// The read-ahead of its faults (`MountOptions::fault_readahead_bytes`).
    readahead: Arc<FaultReadAhead>,
    /// The span current at the mount: what the mount's reads are logged in.
    span: tracing::Span,
}

impl ImageFs {
    /// Inode of the `i`-th file of the manifest.
    fn ino(i: usize) -> u64 {
        i as u64 + 2
    }

    fn file_index(ino: INodeNo) -> Option<usize> {
        u64::from(ino).checked_sub(2).map(|i| i as usize)
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, size, perm, nlink) = if ino == ROOT {
            (FileType::Directory, 0, 0o555, 2)
        } else {
            let f = self.manifest.files.get(ino.checked_sub(2)? as usize)?;
            (FileType::RegularFile, f.size, 0o444, 1)
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            flags: 0,
            blksize: PAGE_SIZE as u32,
        })
    }
}

impl Filesystem for ImageFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if u64::from(parent) != ROOT {
            return reply.error(Errno::ENOENT);
        }
        let found = name.to_str().and_then(|name| {
            self.manifest
                .files
                .iter()
                .position(|f| f.name == name)
                .and_then(|i| self.attr(Self::ino(i)))
        });
        match found {
            Some(attr) => reply.entry(&TTL, &attr, fuser::Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(u64::from(ino)) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(file) = Self::file_index(ino).and_then(|i| self.manifest.files.get(i)) else {
            return reply.error(Errno::ENOENT);
        };
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let open_flags = match file.content {
            FileContent::Paged(_) => FopenFlags::FOPEN_DIRECT_IO,
            FileContent::Inline(_) => FopenFlags::FOPEN_KEEP_CACHE,
        };
        reply.opened(FileHandle(0), open_flags);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _in_span = self.span.enter();
        let Some(index) = Self::file_index(ino).filter(|&i| i < self.manifest.files.len()) else {
            return reply.error(Errno::ENOENT);
        };
        // Record on the FUSE thread, before the read is handed off, so that the log keeps the
        // order in which reads arrived.
        let file = &self.manifest.files[index];
        if let FileContent::Paged(pages) = &file.content {
            if let Some(span) = PageSpan::within(offset, u64::from(size), file.size) {
                if let Some(ids) = pages.get(span.pages()) {
                    self.access.record(&file.name, span.first_page(), ids, size);
                }
            }
        }
        let phase = self.reads.phase();
        // Pages already in memory are answered here, on the FUSE thread: no hop through the
        // runtime for the hundreds of small reads a restore makes of prefetched pages.
        if let Some(data) = self.store.read_file_at_memory(
            file,
            offset,
            size as usize,
            Some(self.reads.tally(phase)),
        ) {
            return reply.data(&data);
        }
        let store = self.store.clone();
        let manifest = self.manifest.clone();
        let reads = self.reads.clone();
        let readahead = (phase == RestorePhase::Faults).then(|| self.readahead.clone());
        let read = async move {
            let file = &manifest.files[index];
            if let Some(readahead) = readahead {
                readahead.of_fault(&store, file, offset, size);
            }
            // Its own tally first: whether it sent a GET of its own is what its wait counts as.
            let tally = TierTally::default();
            // The restore and the tenant's faults wait for their reads; the background copy
            // does not hold the tenant up.
            let waiting = (phase != RestorePhase::Background)
                .then(|| store.cold().counters.read_waits.start());
            let started = std::time::Instant::now();
            let read = store
                .read_file_at_tallied(file, offset, size as usize, &tally)
                .await;
            reads.tally(phase).absorb(&tally);
            // A round trip of its own (joined to another's GET, it waited for its rest only).
            let cold = tally.own_gets() > 0;
            if let (Some(waiting), true) = (&waiting, cold) {
                waiting.sent_own_get();
            }
            drop(waiting);
            match read {
                Ok(data) => {
                    trace!(
                        file = %file.name,
                        page = offset / PAGE_SIZE as u64,
                        ?phase,
                        cold,
                        us = started.elapsed().as_micros() as u64,
                        "read missed memory"
                    );
                    reply.data(&data)
                }
                Err(e) => {
                    warn!(file = %file.name, offset, size, error = %e, "read failed");
                    reply.error(Errno::EIO);
                }
            }
        };
        self.runtime.spawn(read.instrument(self.span.clone()));
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: fuser::ReplyEmpty,
    ) {
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if u64::from(ino) != ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let fixed = [
            (ROOT, FileType::Directory, "."),
            (ROOT, FileType::Directory, ".."),
        ];
        let files = self
            .manifest
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| (Self::ino(i), FileType::RegularFile, f.name.as_str()));
        for (i, (ino, kind, name)) in fixed
            .into_iter()
            .chain(files)
            .enumerate()
            .skip(offset as usize)
        {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// A mounted checkpoint. Unmount it with [`ImageMount::unmount`]; dropping it unmounts too.
pub struct ImageMount {
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
    access: Arc<AccessLog>,
    reads: Arc<MountReads>,
}

impl Drop for ImageMount {
    /// A mount dropped without [`ImageMount::unmount`] (an aborted swap-in) is unmounted by the
    /// FUSE session; while a reader still holds files open that fails with EBUSY, so whatever is
    /// left is detached (it goes once the last reader closes).
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            drop(session);
            if let Ok(path) = std::ffi::CString::new(self.mountpoint.as_os_str().as_encoded_bytes())
            {
                // SAFETY: umount2 reads a NUL-terminated path and touches no other memory.
                unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

impl ImageMount {
    /// Mounts `manifest` read-only at `mountpoint` (which must be an existing empty directory),
    /// every file readable by everyone (`allow_other`, modes checked by the kernel): the tasks
    /// CRIU restores into a user namespace open some images themselves, some before their ids
    /// are mapped (CRIU's time namespace). Keep the mount point in a directory of root's alone.
    /// Its reads are logged in the span current here.
    pub fn mount(
        store: Arc<PageStore>,
        manifest: Manifest,
        mountpoint: &Path,
        runtime: tokio::runtime::Handle,
    ) -> Result<ImageMount> {
        Self::mount_with(
            store,
            manifest,
            mountpoint,
            runtime,
            MountOptions::default(),
        )
    }

    /// [`Self::mount`] with options.
    pub fn mount_with(
        store: Arc<PageStore>,
        manifest: Manifest,
        mountpoint: &Path,
        runtime: tokio::runtime::Handle,
        options: MountOptions,
    ) -> Result<ImageMount> {
        let access = Arc::new(AccessLog::default());
        let reads = Arc::new(MountReads::default());
        let fs = ImageFs {
            store,
            manifest: Arc::new(manifest),
            runtime,
            access: access.clone(),
            reads: reads.clone(),
            readahead: Arc::new(FaultReadAhead::new(options.fault_readahead_bytes)),
            span: tracing::Span::current(),
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            MountOption::RO,
            MountOption::FSName("pico".into()),
            MountOption::Subtype("pico".into()),
            MountOption::NoAtime,
            MountOption::DefaultPermissions,
        ];
        config.acl = fuser::SessionACL::All;
        config.n_threads = Some(4);
        config.clone_fd = true;
        let session =
            fuser::spawn_mount(fs, mountpoint, &config).map_err(|source| Error::Mount {
                path: mountpoint.to_path_buf(),
                source,
            })?;
        info!(mountpoint = %mountpoint.display(), "checkpoint mounted");
        Ok(ImageMount {
            session: Some(session),
            mountpoint: mountpoint.to_path_buf(),
            access,
            reads,
        })
    }

    pub fn access_log(&self) -> &Arc<AccessLog> {
        &self.access
    }

    /// Which tier served the mount's reads, per restore phase.
    pub fn reads(&self) -> &Arc<MountReads> {
        &self.reads
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts and waits for the FUSE threads to finish.
    pub fn unmount(mut self) -> Result<()> {
        match self.session.take() {
            Some(s) => s.umount_and_join().map_err(|source| Error::Unmount {
                path: self.mountpoint.clone(),
                source,
            }),
            None => Ok(()),
        }
    }
}
