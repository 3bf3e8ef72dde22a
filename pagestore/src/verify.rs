//! Verify: reads every object in every tier and checks every page against its id.

use serde::Serialize;

use crate::codec::{decode_verified, PageDecoder};
use crate::error::{Error, Result};
use crate::pack::{self, PackId};
use crate::progress::Progress;
use crate::store::PageStore;
use crate::tier::Tier;

#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    pub packs: u64,
    pub pages: u64,
    pub manifests: u64,
    pub locality_packs: u64,
    pub local_pages: u64,
    /// One line per problem found; empty when all is well.
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl PageStore {
    pub async fn verify(&self) -> Result<VerifyReport> {
        self.verify_with(&crate::progress::SILENT).await
    }

    /// [`Self::verify`], telling `progress` of each pack (stage `packs`) and each checkpoint
    /// (stage `checkpoints`).
    pub async fn verify_with(&self, progress: &dyn Progress) -> Result<VerifyReport> {
        let mut r = VerifyReport::default();
        let packs: Vec<_> = self
            .cold()
            .list("packs/")
            .await?
            .into_iter()
            .filter(|o| PackId::from_object_key(&o.key).is_some())
            .collect();
        progress.stage(
            "packs",
            packs.len() as u64,
            packs.iter().map(|o| o.size).sum(),
        );
        for obj in packs {
            progress.advance(1, obj.size);
            let data = match self.cold().get(&obj.key).await {
                Ok(data) => data,
                // Replaced by a recompression since the listing (its pages are in the new pack,
                // which a later listing shows).
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            r.packs += 1;
            let entries = match pack::parse_pack(&obj.key, &data) {
                Ok(e) => e,
                Err(e) => {
                    r.problems.push(e.to_string());
                    continue;
                }
            };
            let mut decoder = PageDecoder::default();
            for e in entries {
                r.pages += 1;
                let raw = &data[e.offset as usize..(e.offset + u64::from(e.len)) as usize];
                if let Err(err) =
                    decoder.decode(&e.id, e.codec, e.slot, e.offset, raw, Tier::Cold, &obj.key)
                {
                    r.problems.push(err.to_string());
                }
            }
        }
        // Packs that appeared since open must be in the catalog before manifests are checked.
        if let Err(e) = self.refresh_catalog().await {
            r.problems.push(e.to_string());
        }
        let checkpoints = self.checkpoints().await?;
        // Only a tenant's newest checkpoint keeps its locality pack (`crate::locality`).
        let mut newest: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
        for c in &checkpoints {
            let g = newest.entry(c.tenant.as_str()).or_default();
            *g = (*g).max(c.generation);
        }
        progress.stage("checkpoints", checkpoints.len() as u64, 0);
        for checkpoint in &checkpoints {
            progress.advance(1, 0);
            r.manifests += 1;
            // The cold tier's copy: the one kept on this machine would hide a damaged object.
            let manifest = match self.manifest_in_cold(checkpoint).await {
                Ok(m) => m,
                Err(e) => {
                    r.problems
                        .push(format!("checkpoint {}: {e}", checkpoint.id));
                    continue;
                }
            };
            if let Some(source) = crate::locality::LocalitySource::of(&manifest) {
                let is_newest =
                    newest.get(checkpoint.tenant.as_str()) == Some(&checkpoint.generation);
                match self.verify_locality(&source).await {
                    Ok(_) => r.locality_packs += 1,
                    Err(Error::ObjectNotFound(_)) if !is_newest => {}
                    Err(e) => r
                        .problems
                        .push(format!("checkpoint {}: {e}", checkpoint.id)),
                }
            }
            for f in &manifest.files {
                if let Some(missing) = f
                    .pages()
                    .iter()
                    .find(|p| !p.is_zero() && !self.catalog().contains(p))
                {
                    r.problems.push(format!(
                        "checkpoint {} file {}: page {missing} is in no pack",
                        checkpoint.id, f.name
                    ));
                }
            }
        }
        for obj in self.cold().list("meta/").await? {
            let bytes = self.cold().get(&obj.key).await?;
            if let Err(e) = crate::meta::decode(&obj.key, &bytes) {
                r.problems.push(e.to_string());
            }
        }
        if let Some(local) = self.local() {
            let mut bad = Vec::new();
            let read = local.for_each(&mut |id, codec, data| {
                r.local_pages += 1;
                if let Err(e) = decode_verified(&id, codec, data, Tier::Local, "local") {
                    bad.push(e.to_string());
                }
            });
            r.problems.extend(bad);
            if let Err(e) = read {
                r.problems.push(format!("local tier unreadable: {e}"));
            }
        }
        Ok(r)
    }
}
