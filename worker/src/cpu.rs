//! The CPU a tenant may rely on travels with it: a process that used an instruction set
//! extension (AVX-512, say) crashes on a CPU without it. CRIU records the CPU of the machine it
//! runs on (`criu cpuinfo dump`) and checks another machine's against such a record (`criu
//! cpuinfo check`). Before a tenant moves, the hub has the destination check the source's record,
//! so a mismatch is reported before the source stops the tenant.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::host::Worker;

/// CRIU's name for the record in its directory.
const IMAGE: &str = "cpuinfo.img";

impl Worker {
    /// This machine's CPU as CRIU records it (the bytes of its `cpuinfo.img`).
    pub(crate) async fn cpu_record(&self) -> Result<Vec<u8>> {
        let dir = self.cpu_dir()?;
        let recorded = self.criu.cpuinfo("dump", &dir).await;
        let image = recorded.and_then(|()| {
            let path = dir.join(IMAGE);
            std::fs::read(&path).map_err(|e| Error::io(&path, e))
        });
        let _ = std::fs::remove_dir_all(&dir);
        image
    }

    /// Fails, with CRIU's reason, unless a tenant dumped on the CPU `record` describes may run
    /// on this machine's.
    pub(crate) async fn cpu_check(&self, record: &[u8]) -> Result<()> {
        let dir = self.cpu_dir()?;
        let path = dir.join(IMAGE);
        let checked = match std::fs::write(&path, record) {
            Ok(()) => self
                .criu
                .cpuinfo("check", &dir)
                .await
                .map_err(|e| Error::CpuMismatch(e.to_string())),
            Err(e) => Err(Error::io(&path, e)),
        };
        let _ = std::fs::remove_dir_all(&dir);
        checked
    }

    /// A fresh directory for one CPU record.
    fn cpu_dir(&self) -> Result<PathBuf> {
        let dir = self
            .config
            .staging_dir
            .join(format!(".cpuinfo-{}", pagestore::clock::now_ms()));
        crate::tenant::fresh_dir(&dir)?;
        Ok(dir)
    }
}
