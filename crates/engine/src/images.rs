//! The image service over the `store` crate: name resolution, listing, inspection,
//! tagging, removal, import, and the root filesystems (overlay snapshots) of containers.

use crate::error::{EngineError, Result};
use api::ContainerConfig;

/// An image as containers need it.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The image id (`sha256:...`).
    pub id: String,
    /// The image's run configuration in Docker's terms.
    pub config: ContainerConfig,
}

/// The image service: the `store` crate's [`store::Store`] at `<root>/image`.
pub struct Images {
    store: store::Store,
}

fn nf(name: &str) -> impl FnOnce(store::image::ImageError) -> EngineError + '_ {
    move |e| {
        if errkind::HasKind::kind(&e) == errkind::ErrorKind::NotFound {
            EngineError::NoSuchImage(name.to_string())
        } else {
            EngineError::store(e)
        }
    }
}

fn snf(name: &str) -> impl FnOnce(store::StoreError) -> EngineError + '_ {
    move |e| {
        if errkind::HasKind::kind(&e) == errkind::ErrorKind::NotFound {
            EngineError::NoSuchImage(name.to_string())
        } else {
            EngineError::store(e)
        }
    }
}

impl Images {
    /// Opens the store under `root`.
    pub fn open(root: &std::path::Path) -> Result<Images> {
        let store = store::Store::open(root.join("image")).map_err(EngineError::store)?;
        Ok(Images { store })
    }

    /// The underlying store.
    pub fn store(&self) -> &store::Store {
        &self.store
    }

    /// Resolves a name, id or id prefix to an image.
    pub fn resolve(&self, name: &str) -> Result<ResolvedImage> {
        let rec = self.store.images().lookup(name).map_err(nf(name))?;
        let cfg = self.store.images().get_config(&rec.id).map_err(nf(name))?;
        Ok(ResolvedImage {
            id: rec.id.to_string(),
            config: docker_config(cfg.config.as_ref()),
        })
    }

    /// Whether an image with this id exists.
    pub fn image_exists(&self, id: &str) -> bool {
        self.store.images().lookup(id).is_ok()
    }

    /// Creates the snapshot `key` (a container id) on the image `image_id`.
    pub fn prepare_rootfs(&self, key: &str, image_id: &str) -> Result<()> {
        let rec = self.store.images().lookup(image_id).map_err(nf(image_id))?;
        self.store
            .prepare_container(key, &rec)
            .map_err(snf(image_id))?;
        Ok(())
    }

    /// The mounts of snapshot `key`.
    pub fn rootfs_mounts(&self, key: &str) -> Result<Vec<store::Mount>> {
        self.store.snapshots().mounts(key).map_err(|e| {
            EngineError::Unavailable(format!(
                "root filesystem of container {key} is missing: {e}"
            ))
        })
    }

    /// Takes the container's rootfs snapshot `key` out of the store's view at once (its
    /// image is free to be removed from then on) and returns the directory left to
    /// delete.
    pub fn detach_rootfs(&self, key: &str) -> Result<std::path::PathBuf> {
        self.store
            .snapshots()
            .detach(key)
            .map_err(EngineError::store)
    }

    /// Deletes every leftover in the snapshotter's tmp/ (for a daemon starting on a root
    /// it holds alone; see `Snapshotter::clean_tmp`).
    pub fn clean_snapshot_leftovers(&self) {
        self.store.snapshots().clean_tmp(std::time::Duration::ZERO);
    }

    /// Removes snapshot `key`.
    pub fn remove_rootfs(&self, key: &str) -> Result<()> {
        self.store
            .snapshots()
            .remove(key)
            .map_err(EngineError::store)
    }
}

/// Converts the store's image config into Docker's container config.
pub fn docker_config(c: Option<&store::image::ContainerConfig>) -> ContainerConfig {
    let Some(c) = c else {
        return ContainerConfig::default();
    };
    ContainerConfig {
        user: c.user.clone().unwrap_or_default(),
        exposed_ports: c
            .exposed_ports
            .as_ref()
            .map(|m| m.keys().map(|k| (k.clone(), api::Empty {})).collect()),
        env: c.env.clone().unwrap_or_default(),
        cmd: c.cmd.clone(),
        volumes: c
            .volumes
            .as_ref()
            .map(|m| m.keys().map(|k| (k.clone(), api::Empty {})).collect()),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        entrypoint: c.entrypoint.clone(),
        labels: c.labels.clone().unwrap_or_default(),
        stop_signal: c.stop_signal.clone(),
        on_build: c.on_build.clone(),
        shell: c.shell.clone(),
        args_escaped: c.args_escaped,
        healthcheck: c
            .healthcheck
            .as_ref()
            .and_then(|h| serde_json::to_value(h).ok()),
        ..Default::default()
    }
}

/// Maps a store error to an engine error for `name`.
pub fn store_err<E>(e: E) -> EngineError
where
    E: std::error::Error + errkind::HasKind + Send + Sync + 'static,
{
    EngineError::store(e)
}
