//! Wall-clock time in milliseconds since the epoch: the one clock that stamps manifests, metadata
//! keys, locks and usage records (0 if the clock is before 1970, which only a broken host has).

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
