//! `docker commit` and `docker export`: a container's changes as a new image, and its
//! whole root filesystem as a tar.
//!
//! Commit takes the container's writes — the upper dir of its active snapshot, whose key is
//! the container id (see [`crate::images::Images::prepare_rootfs`]) — and hands them to
//! [`store::Store::commit`], which turns them into a layer on top of the container's image.
//! The new image's run configuration is the container's own (as docker does: the command
//! the container ran becomes the image's `CMD`), overridden by the fields a request's
//! config sets, then by `--change` instructions. A running container is frozen for the
//! diff unless `pause` is false (docker's default is to pause), and thawed afterwards even
//! when the commit fails.
//!
//! Export writes the merged root filesystem (image layers + the container's writes, as the
//! container sees it without its volumes and kernel filesystems) as a plain tar with
//! relative names, like `docker export`. A stopped container's rootfs is mounted for the
//! duration (see [`Engine::with_rootfs`]).

use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use crate::containers::ContainerRecord;
use crate::error::{EngineError, Result};
use crate::Engine;

/// What `POST /commit` asks for.
#[derive(Debug, Clone, Default)]
pub struct CommitRequest {
    /// `repo[:tag]` to name the new image; `None` leaves it untagged.
    pub reference: Option<String>,
    /// History comment (`-m`).
    pub comment: Option<String>,
    /// Author (`-a`).
    pub author: Option<String>,
    /// Dockerfile instructions applied to the config (`--change`).
    pub changes: Vec<String>,
    /// Freeze a running container during the commit (docker's default: true).
    pub pause: bool,
    /// Config fields from the request body that override the container's.
    pub config: Option<api::ContainerConfig>,
}

/// The image config fields docker keeps from a container's config.
fn image_config_of(c: &api::ContainerConfig) -> store::image::ContainerConfig {
    let keys = |m: &Option<std::collections::BTreeMap<String, api::Empty>>| {
        m.as_ref().filter(|m| !m.is_empty()).map(|m| {
            m.keys()
                .map(|k| (k.clone(), serde_json::json!({})))
                .collect()
        })
    };
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    store::image::ContainerConfig {
        user: nonempty(&c.user),
        exposed_ports: keys(&c.exposed_ports),
        env: (!c.env.is_empty()).then(|| c.env.clone()),
        entrypoint: c.entrypoint.clone().filter(|e| !e.is_empty()),
        cmd: c.cmd.clone().filter(|e| !e.is_empty()),
        volumes: keys(&c.volumes),
        working_dir: nonempty(&c.working_dir),
        labels: (!c.labels.is_empty()).then(|| c.labels.clone().into_iter().collect()),
        stop_signal: c.stop_signal.clone().filter(|s| !s.is_empty()),
        args_escaped: c.args_escaped,
        on_build: c.on_build.clone().filter(|o| !o.is_empty()),
        shell: c.shell.clone().filter(|s| !s.is_empty()),
        ..Default::default()
    }
}

/// `base` with every field `over` sets replacing it (docker's merge of a commit request's
/// config over the container's).
fn merge(
    mut base: store::image::ContainerConfig,
    over: store::image::ContainerConfig,
) -> store::image::ContainerConfig {
    macro_rules! take {
        ($($f:ident),*) => {$(if over.$f.is_some() { base.$f = over.$f; })*};
    }
    take!(
        user,
        exposed_ports,
        env,
        entrypoint,
        cmd,
        volumes,
        working_dir,
        labels,
        stop_signal,
        args_escaped,
        on_build,
        shell
    );
    base
}

impl Engine {
    /// Commits container `name`'s changes as a new image (`POST /commit`); returns the new
    /// image id. See the module docs.
    pub async fn commit(&self, name: &str, req: CommitRequest) -> Result<String> {
        let rec = self.record(name)?;
        let paused_here = if req.pause && rec.state.status.is_running() {
            match self.pause(&rec.id).await {
                Ok(()) => true,
                // Already paused (by the user): commit as it is, leave it paused.
                Err(EngineError::Conflict(_)) => false,
                Err(e) => return Err(e),
            }
        } else {
            false
        };
        let images = self.images().store().clone();
        let r = {
            let rec = rec.clone();
            tokio::task::spawn_blocking(move || commit_blocking(&images, &rec, &req))
                .await
                .map_err(|e| EngineError::Runtime(format!("commit task: {e}")))?
        };
        // Docker's order of events: pause, commit, unpause.
        if let Ok(id) = &r {
            let mut attrs = api::StringMap::new();
            attrs.insert("name".into(), rec.name.clone());
            attrs.insert("imageID".into(), id.clone());
            self.events().publish("container", "commit", &rec.id, attrs);
        }
        if paused_here {
            if let Err(e) = self.unpause(&rec.id).await {
                tracing::warn!(container = %rec.id, error = %e, "unpause after commit");
            }
        }
        r
    }

    /// Writes container `name`'s whole root filesystem as a tar to `out`
    /// (`GET /containers/{id}/export`). Blocking: call it off the async runtime.
    pub fn export(&self, name: &str, out: impl Write) -> Result<()> {
        let id = self.resolve(name)?;
        self.with_rootfs(&id, |root, _| {
            let mut b = tar::Builder::new(out);
            b.follow_symlinks(false);
            b.mode(tar::HeaderMode::Complete);
            append_tree(&mut b, root, root, &mut Links::new())
                .map_err(|e| EngineError::io("export", root, e))?;
            b.into_inner()
                .and_then(|mut w| w.flush())
                .map_err(|e| EngineError::io("export", root, e))?;
            Ok(())
        })?;
        let rec = self.record(&id)?;
        let mut attrs = api::StringMap::new();
        attrs.insert("name".into(), rec.name);
        self.events().publish("container", "export", &id, attrs);
        Ok(())
    }
}

fn commit_blocking(
    images: &store::Store,
    rec: &ContainerRecord,
    req: &CommitRequest,
) -> Result<String> {
    // The new layer goes on top of the image's layers: without that image (removed with
    // `rmi -f` while the container lived) there is no manifest to extend.
    let parent = images.images().lookup(&rec.image_id).map_err(|_| {
        EngineError::Conflict(format!(
            "cannot commit container {}: its image {} no longer exists",
            rec.name, rec.image_id
        ))
    })?;
    let mut config = image_config_of(&rec.config);
    if let Some(over) = &req.config {
        config = merge(config, image_config_of(over));
    }
    let mut created_by = vec![rec.path.clone()];
    created_by.extend(rec.args.iter().cloned());
    let opts = store::CommitOptions {
        config: Some(config),
        changes: req.changes.clone(),
        comment: req.comment.clone().filter(|c| !c.is_empty()),
        author: req.author.clone().filter(|a| !a.is_empty()),
        created_by: Some(created_by.join(" ")).filter(|s| !s.trim().is_empty()),
    };
    let new = images
        .commit(&rec.id, Some(&parent), &opts)
        .map_err(commit_err(&rec.id))?;
    if let Some(r) = req.reference.as_deref().filter(|r| !r.is_empty()) {
        let reference = store::Reference::parse(r)
            .map_err(|e| EngineError::Invalid(format!("invalid reference format {r:?}: {e}")))?;
        images
            .images()
            .tag(&new.id, &reference)
            .map_err(EngineError::store)?;
    }
    Ok(new.id.to_string())
}

fn commit_err(id: &str) -> impl FnOnce(store::StoreError) -> EngineError + '_ {
    move |e| {
        if errkind::HasKind::kind(&e) == errkind::ErrorKind::NotFound {
            EngineError::Unavailable(format!("root filesystem of container {id} is missing"))
        } else {
            EngineError::store(e)
        }
    }
}

/// Hard-linked files already written to an export: (device, inode) → their name.
type Links = std::collections::HashMap<(u64, u64), std::path::PathBuf>;

/// Appends everything below `dir` to `b`, named relative to `root`, in sorted order,
/// without following symlinks; a file hard-linked to one already written becomes a link
/// entry (as docker writes them), not a second copy of its content.
fn append_tree<W: Write>(
    b: &mut tar::Builder<W>,
    root: &Path,
    dir: &Path,
    links: &mut Links,
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut entries: Vec<_> = std::fs::read_dir(dir)?
        .collect::<std::io::Result<Vec<_>>>()?
        .into_iter()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        let rel = p
            .strip_prefix(root)
            .map_err(|_| std::io::Error::other("path outside the root"))?;
        let m = std::fs::symlink_metadata(&p)?;
        if m.is_dir() {
            b.append_dir(rel, &p)?;
            append_tree(b, root, &p, links)?;
        } else if m.file_type().is_socket() {
            // Sockets cannot be archived (docker's export skips them too).
            continue;
        } else if m.is_file() && m.nlink() > 1 {
            let key = (m.dev(), m.ino());
            if let Some(first) = links.get(&key) {
                let mut h = tar::Header::new_gnu();
                h.set_metadata_in_mode(&m, tar::HeaderMode::Complete);
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                b.append_link(&mut h, rel, first)?;
            } else {
                b.append_path_with_name(&p, rel)?;
                links.insert(key, rel.to_path_buf());
            }
        } else {
            b.append_path_with_name(&p, rel)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_config_becomes_image_config_with_overrides() {
        let c = api::ContainerConfig {
            cmd: Some(vec!["sh".into(), "-c".into(), "echo hi".into()]),
            env: vec!["A=1".into()],
            working_dir: "/w".into(),
            hostname: "abc".into(),
            ..Default::default()
        };
        let base = image_config_of(&c);
        assert_eq!(base.cmd.as_deref().map(|c| c.len()), Some(3));
        assert_eq!(base.working_dir.as_deref(), Some("/w"));
        assert_eq!(base.user, None);
        let over = image_config_of(&api::ContainerConfig {
            cmd: Some(vec!["true".into()]),
            ..Default::default()
        });
        let m = merge(base, over);
        assert_eq!(m.cmd, Some(vec!["true".to_string()]));
        assert_eq!(m.env, Some(vec!["A=1".to_string()]));
    }
}
