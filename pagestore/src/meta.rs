//! Small metadata objects kept in the cold tier next to the manifests (a tenant's ActiveSet),
//! with the same integrity checks: a magic, a version and a BLAKE3 checksum of the body.
//!
//! Like everything in the cold tier they are never overwritten: each put writes a new object
//! under `meta/<kind>/<owner>/<time>.meta`, readers take the newest, and only the newest few are
//! kept.

use crate::error::{Error, Result};
use crate::manifest::valid_tenant_name;
use crate::store::PageStore;

const META_MAGIC: &[u8; 8] = b"PICOMETA";
/// The version of the frame (a body's own format is its writer's: the ActiveSet's and the hub's
/// record are JSON with a `format` field, [`crate::format`]).
const META_VERSION: u32 = 1;
/// How many generations of one metadata object are kept.
const KEEP: usize = 3;

fn prefix(kind: &str, owner: &str) -> Result<String> {
    if !valid_tenant_name(kind) || !valid_tenant_name(owner) {
        return Err(Error::InvalidMetaName {
            kind: kind.to_string(),
            owner: owner.to_string(),
        });
    }
    Ok(format!("meta/{kind}/{owner}/"))
}

pub fn encode(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 52);
    out.extend_from_slice(META_MAGIC);
    out.extend_from_slice(&META_VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(blake3::hash(body).as_bytes());
    out
}

pub fn decode(object: &str, bytes: &[u8]) -> Result<Vec<u8>> {
    let bad = |reason: &str| Error::CorruptObject {
        what: "metadata object",
        object: object.to_string(),
        reason: reason.to_string(),
    };
    if bytes.len() < 52 || &bytes[..8] != META_MAGIC {
        return Err(bad("bad magic or truncated"));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    crate::format::check("metadata object", object, version, META_VERSION)?;
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[12..20]);
    let len = u64::from_le_bytes(len) as usize;
    if bytes.len() != 20 + len + 32 {
        return Err(bad("length mismatch"));
    }
    let body = &bytes[20..20 + len];
    if blake3::hash(body).as_bytes() != &bytes[20 + len..] {
        return Err(bad("checksum mismatch"));
    }
    Ok(body.to_vec())
}

impl PageStore {
    /// Stores a new version of metadata object `kind`/`owner`.
    pub async fn put_meta(&self, kind: &str, owner: &str, body: &[u8]) -> Result<()> {
        let prefix = prefix(kind, owner)?;
        let ms = crate::clock::now_ms();
        let key = format!("{prefix}{ms:016}.meta");
        self.cold().put(&key, encode(body)).await?;
        let old = self.cold().list(&prefix).await?;
        for stale in old.iter().rev().skip(KEEP) {
            self.cold().delete(&stale.key).await?;
        }
        Ok(())
    }

    /// The newest version of metadata object `kind`/`owner`, checked; `None` if there is none.
    pub async fn latest_meta(&self, kind: &str, owner: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .latest_meta_object(kind, owner)
            .await?
            .map(|(_, body)| body))
    }

    /// [`Self::latest_meta`] with the key of the object it read (for a reader's errors).
    pub async fn latest_meta_object(
        &self,
        kind: &str,
        owner: &str,
    ) -> Result<Option<(String, Vec<u8>)>> {
        let prefix = prefix(kind, owner)?;
        let Some(newest) = self.cold().list(&prefix).await?.pop() else {
            return Ok(None);
        };
        let bytes = self.cold().get(&newest.key).await?;
        let body = decode(&newest.key, &bytes)?;
        Ok(Some((newest.key, body)))
    }

    /// Removes every version of metadata object `kind`/`owner`.
    pub async fn delete_meta(&self, kind: &str, owner: &str) -> Result<()> {
        for obj in self.cold().list(&prefix(kind, owner)?).await? {
            self.cold().delete(&obj.key).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let b = encode(b"hello");
        assert_eq!(decode("k", &b).unwrap(), b"hello");
        for n in 0..b.len() {
            assert!(decode("k", &b[..n]).is_err());
        }
        let mut bad = b.clone();
        bad[21] ^= 1;
        assert!(decode("k", &bad).is_err());
        let mut newer = b;
        newer[8] = 2;
        let err = decode("meta/activeset/t/1.meta", &newer).unwrap_err();
        assert!(
            matches!(&err, Error::UnsupportedVersion { object, found: 2, supported: 1, .. }
                if object == "meta/activeset/t/1.meta"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn newest_wins_and_old_versions_are_pruned() {
        let home = tempfile::tempdir().unwrap();
        let store = PageStore::open(&crate::StoreConfig::embedded(home.path()))
            .await
            .unwrap();
        assert_eq!(store.latest_meta("activeset", "t").await.unwrap(), None);
        for i in 0..5u8 {
            store.put_meta("activeset", "t", &[i]).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        assert_eq!(
            store.latest_meta("activeset", "t").await.unwrap(),
            Some(vec![4])
        );
        assert_eq!(
            store.cold().list("meta/activeset/t/").await.unwrap().len(),
            KEEP
        );
        store.delete_meta("activeset", "t").await.unwrap();
        assert_eq!(store.latest_meta("activeset", "t").await.unwrap(), None);
    }
}
