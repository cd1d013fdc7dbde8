//! The on-disk compile cache: a compiled component kept under `plugins.cache_dir`, named by the
//! component's digest and the engine's fingerprint, so a restart need not compile it again.

use std::path::Path;
use std::sync::atomic::Ordering;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// A cache file is `sha256(payload) ‖ payload`; anything that does not verify is ignored.
pub(super) fn read(engine: &Engine, path: &Path) -> Option<Component> {
    let data = std::fs::read(path).ok()?;
    if data.len() < 32 || Sha256::digest(&data[32..]).as_slice() != &data[..32] {
        tracing::warn!(cache = %path.display(), "ignoring a corrupt plugin cache entry");
        return None;
    }
    // SAFETY: `deserialize` runs native code it is handed. The payload is byte-for-byte what
    // `Component::serialize` wrote for this engine fingerprint (checked by the digest above),
    // and wasmtime itself rejects payloads from another engine version or configuration.
    #[allow(unsafe_code)]
    let component = unsafe { Component::deserialize(engine, &data[32..]) };
    match component {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(cache = %path.display(), error = %e, "ignoring an incompatible plugin cache entry");
            None
        }
    }
}

/// Writes `component` to `path` in the format [`read`] verifies.
pub(super) fn write(path: &Path, component: &Component) -> anyhow::Result<()> {
    let payload = component.serialize().map_err(anyhow::Error::from)?;
    let mut data = Vec::with_capacity(32 + payload.len());
    data.extend_from_slice(&Sha256::digest(&payload));
    data.extend_from_slice(&payload);
    write_atomically(path, &data)?;
    Ok(())
}

/// Writes a file so that readers see the old or the new content, never a mix: the bytes go to a
/// temporary file beside it (a name no plugin scan picks up), which is then renamed over it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let unique = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{unique}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Lowercase hex, for cache file names and plugin versions.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
