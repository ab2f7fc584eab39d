//! Layer tars hashed ahead of time: predicted layers.
//!
//! A build step's layer is named by its diff id, the sha256 of its tar, and that tar holds
//! every byte of the files the step added. For a cold `COPY` of a large build context that
//! hash is a second pass over all the data, after the context has arrived and the files
//! are in the layer. But when the context arrives as a tar stream, whoever unpacks it
//! already sees every byte once, in order, and can hash the layer tar the step *will*
//! make, if it knows what that tar will start with.
//!
//! A [`TarPredictor`] is told the regular files a layer is expected to start with, in the
//! layer's order (name, mode, owner, mtime, size, then the data, then the inode it was
//! written to); it hashes the tar entries [`write_diff`](super::write_diff) would write
//! for them. The [`PredictedTar`] it gives records, per file entry, the entry's header
//! bytes, its data's inode and length, and the sha256 state before the entry.
//!
//! [`seal_diff_predicted`] then seals the upper dir as [`seal_diff`](super::seal_diff)
//! does, walking the same entries in the same order. For each regular file whose header
//! bytes, inode and size are those of the next predicted entry, it does not read the data:
//! the hash state after the entry is known. At the first byte that differs from the
//! prediction (another entry, another header, a file not predicted), or where the
//! prediction ends (the directories' entries, which follow their contents, and the end of
//! the archive), hashing goes on from the state saved at that point, reading the rest as
//! usual on a second thread. The digest is therefore always that of the tar actually
//! walked: a wrong prediction costs only the time it would have saved.
//!
//! What makes skipping a file's data sound is the inode: the caller predicts only files
//! it wrote itself into a private directory (the build's unpacked context), hashed from
//! the very bytes it wrote, and never changed afterwards; a step's layer links those
//! inodes instead of copying them.

use std::io::{self, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender};

use sha2::{Digest as _, Sha256};

use super::{seal_with, DiffSink, LayerError, Result, SealResult};
use crate::digest::{Algorithm, Digest};

/// At most this many file entries are predicted (each keeps its header and a hash state,
/// ~700 bytes): past it the prediction ends and the rest is hashed after the copy.
const MAX_ENTRIES: usize = 50_000;

/// The size of a tar block.
const BLOCK: u64 = 512;

const ZEROS: [u8; BLOCK as usize] = [0; BLOCK as usize];

/// Zero bytes after `len` bytes of entry data, up to the next block.
fn padding(len: u64) -> usize {
    ((BLOCK - len % BLOCK) % BLOCK) as usize
}

/// One predicted regular-file entry.
#[derive(Clone)]
struct Entry {
    /// The bytes before its data: a GNU long-name entry when the name does not fit, then
    /// the header.
    header: Vec<u8>,
    /// The hash state before `header`.
    state: Sha256,
    /// The tar offset of `header`.
    offset: u64,
    /// The inode holding the data, and its length.
    dev: u64,
    ino: u64,
    len: u64,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("offset", &self.offset)
            .field("ino", &self.ino)
            .field("len", &self.len)
            .finish()
    }
}

/// The start of a layer tar, hashed ahead of time (see the module docs).
#[derive(Clone)]
pub struct PredictedTar {
    entries: Vec<Entry>,
    /// The hash state after the last entry, and its offset.
    end: Sha256,
    end_offset: u64,
}

impl std::fmt::Debug for PredictedTar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PredictedTar")
            .field("files", &self.entries.len())
            .field("bytes", &self.end_offset)
            .finish()
    }
}

impl PredictedTar {
    /// The number of file entries predicted.
    pub fn files(&self) -> usize {
        self.entries.len()
    }

    /// The bytes of tar predicted.
    pub fn bytes(&self) -> u64 {
        self.end_offset
    }

    /// Whether the file at (`dev`, `ino`) is one of the predicted entries' data.
    pub fn holds(&self, dev: u64, ino: u64) -> bool {
        self.entries.iter().any(|e| e.dev == dev && e.ino == ino)
    }
}

/// A file entry being predicted.
struct Open {
    entry: Entry,
    written: u64,
}

/// Hashes the file entries a layer tar is expected to start with (see the module docs).
pub struct TarPredictor {
    h: Sha256,
    n: u64,
    entries: Vec<Entry>,
    open: Option<Open>,
    stopped: bool,
}

impl Default for TarPredictor {
    fn default() -> Self {
        Self::new()
    }
}

impl TarPredictor {
    /// An empty prediction.
    pub fn new() -> Self {
        TarPredictor {
            h: Sha256::new(),
            n: 0,
            entries: Vec::new(),
            open: None,
            stopped: false,
        }
    }

    /// Whether files are still being predicted (false once one went wrong, or after
    /// [`MAX_ENTRIES`]).
    pub fn active(&self) -> bool {
        !self.stopped
    }

    /// The next entry is the regular file `path` (relative to the layer root) with these
    /// metadata, as the layer will record them; its data follows through [`data`](Self::data).
    pub fn begin_file(
        &mut self,
        path: &Path,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        size: u64,
    ) {
        if self.open.is_some() {
            self.abort_file();
        }
        if self.stopped {
            return;
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.stopped = true;
            return;
        }
        let mut h = super::base_header(tar::EntryType::Regular, mode, uid, gid, mtime);
        h.set_size(size);
        let Ok(header) = super::header_bytes(&mut h, path) else {
            self.stopped = true;
            return;
        };
        let entry = Entry {
            state: self.h.clone(),
            offset: self.n,
            header,
            dev: 0,
            ino: 0,
            len: size,
        };
        self.h.update(&entry.header);
        self.n += entry.header.len() as u64;
        self.open = Some(Open { entry, written: 0 });
    }

    /// The open file's next bytes.
    pub fn data(&mut self, bytes: &[u8]) {
        if let Some(o) = self.open.as_mut() {
            self.h.update(bytes);
            self.n += bytes.len() as u64;
            o.written += bytes.len() as u64;
        }
    }

    /// The open file is complete, its data in inode `ino` of device `dev`.
    pub fn end_file(&mut self, dev: u64, ino: u64) {
        let Some(mut o) = self.open.take() else {
            return;
        };
        if o.written != o.entry.len {
            self.open = Some(o);
            self.abort_file();
            return;
        }
        let pad = padding(o.entry.len);
        self.h.update(&ZEROS[..pad]);
        self.n += pad as u64;
        o.entry.dev = dev;
        o.entry.ino = ino;
        self.entries.push(o.entry);
    }

    /// The open file will not be what was announced: the prediction ends before it.
    pub fn abort_file(&mut self) {
        if let Some(o) = self.open.take() {
            self.h = o.entry.state;
            self.n = o.entry.offset;
        }
        self.stopped = true;
    }

    /// The prediction so far (an open file is left out).
    pub fn finish(mut self) -> PredictedTar {
        if self.open.is_some() {
            self.abort_file();
        }
        PredictedTar {
            entries: self.entries,
            end: self.h,
            end_offset: self.n,
        }
    }
}

/// What the verifying sink hands the hashing thread.
enum Piece {
    /// Hashing starts from this state (sent once, before any data).
    Resume(Box<Sha256>),
    /// The tar's next bytes.
    Data(Vec<u8>),
}

/// Bytes handed to the hashing thread at a time.
const CHUNK: usize = 1 << 20;

/// The sink [`seal_diff_predicted`] walks into: it checks the tar against the prediction
/// as long as it matches, then hands the rest to the hashing thread.
struct Verify<'p> {
    pred: &'p PredictedTar,
    /// The next predicted entry, and how many of its header bytes matched so far.
    next: usize,
    matched: usize,
    /// Set once the tar left the prediction (or it ended): bytes now go to `tx`.
    diverged: bool,
    tx: Option<SyncSender<Piece>>,
    buf: Vec<u8>,
    /// Tar bytes so far, and the data bytes of them taken from the prediction.
    n: u64,
    claimed: u64,
}

impl Verify<'_> {
    /// Leaves the prediction here: the hashing thread starts from the state at this point.
    fn diverge(&mut self) -> io::Result<()> {
        if self.diverged {
            return Ok(());
        }
        self.diverged = true;
        tracing::debug!(
            entry = self.next,
            of = self.pred.entries.len(),
            header_byte = self.matched,
            "the layer tar leaves its prediction"
        );
        let (state, offset) = match self.pred.entries.get(self.next) {
            Some(e) => {
                let mut s = e.state.clone();
                s.update(&e.header[..self.matched]);
                (s, e.offset + self.matched as u64)
            }
            None => (self.pred.end.clone(), self.pred.end_offset),
        };
        if offset != self.n {
            return Err(io::Error::other(format!(
                "predicted layer out of step: offset {offset}, tar at {}",
                self.n
            )));
        }
        self.send(Piece::Resume(Box::new(state)))
    }

    fn send(&mut self, p: Piece) -> io::Result<()> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| io::Error::other("layer stream already finished"))?;
        tx.send(p)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the layer hasher stopped"))
    }

    fn forward(&mut self, data: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(data);
        self.n += data.len() as u64;
        if self.buf.len() >= CHUNK {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            self.send(Piece::Data(chunk))?;
        }
        Ok(())
    }

    /// Ends the stream: hands over what is left and closes the channel.
    fn finish(&mut self) -> io::Result<()> {
        self.diverge()?;
        let chunk = std::mem::take(&mut self.buf);
        if !chunk.is_empty() {
            self.send(Piece::Data(chunk))?;
        }
        self.tx = None;
        Ok(())
    }
}

impl Write for Verify<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        if !self.diverged {
            if let Some(e) = self.pred.entries.get(self.next) {
                let want = &e.header[self.matched..];
                let k = want.iter().zip(rest).take_while(|(a, b)| a == b).count();
                self.matched += k;
                self.n += k as u64;
                rest = &rest[k..];
            }
            if rest.is_empty() {
                return Ok(data.len());
            }
            self.diverge()?;
        }
        self.forward(rest)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl DiffSink for Verify<'_> {
    fn predicting(&self) -> bool {
        !self.diverged && self.matched == 0 && self.next < self.pred.entries.len()
    }

    fn claim(&mut self, header: &[u8], dev: u64, ino: u64, len: u64) -> bool {
        if !self.predicting() {
            return false;
        }
        let e = &self.pred.entries[self.next];
        if e.header != header || e.dev != dev || e.ino != ino || e.len != len {
            return false;
        }
        self.next += 1;
        self.n += header.len() as u64 + len + padding(len) as u64;
        self.claimed += len;
        true
    }
}

/// What [`seal_diff_predicted`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredictedSeal {
    /// As from [`seal_diff`](super::seal_diff).
    pub seal: SealResult,
    /// sha256 of the tar (its diff id).
    pub diff_id: Digest,
    /// File data bytes whose hash came from the prediction (not read again).
    pub predicted: u64,
}

/// [`seal_diff`](super::seal_diff) of `upper`, also hashing the tar, with the files that
/// `pred` already hashed taken from it (see the module docs).
pub fn seal_diff_predicted(upper: &Path, pred: &PredictedTar) -> Result<PredictedSeal> {
    std::thread::scope(|sc| {
        let (tx, rx) = sync_channel::<Piece>(4);
        let hasher = sc.spawn(move || -> Option<[u8; 32]> {
            let mut h: Option<Sha256> = None;
            for p in rx {
                match p {
                    Piece::Resume(s) => h = Some(*s),
                    Piece::Data(d) => h.as_mut()?.update(&d),
                }
            }
            h.map(|h| h.finalize().into())
        });
        let mut sink = Verify {
            pred,
            next: 0,
            matched: 0,
            diverged: false,
            tx: Some(tx),
            buf: Vec::with_capacity(CHUNK),
            n: 0,
            claimed: 0,
        };
        let sealed = seal_with(upper, &mut sink).map(|(exact, _)| exact);
        let finished = sink.finish();
        let (n, claimed) = (sink.n, sink.claimed);
        drop(sink);
        let hashed = hasher.join().ok().flatten();
        let seal = SealResult {
            size: n,
            exact: sealed?,
        };
        finished.map_err(super::ioe("hash layer", upper))?;
        let hash = hashed.ok_or_else(|| LayerError::Io {
            op: "hash layer",
            path: upper.to_path_buf(),
            source: io::Error::other("the layer hasher failed"),
        })?;
        let diff_id =
            Digest::from_hex(Algorithm::Sha256, &hex::encode(hash)).expect("a sha256 is 32 bytes");
        Ok(PredictedSeal {
            seal,
            diff_id,
            predicted: claimed,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;

    /// An upper dir with `big/` holding files of these sizes (`a`, `b`, ...) and a nested
    /// `big/sub/z`.
    fn upper(sizes: &[usize]) -> (tempfile::TempDir, Vec<PathBuf>) {
        let t = tempfile::tempdir().unwrap();
        let big = t.path().join("big");
        fs::create_dir(&big).unwrap();
        let mut files = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            let p = big.join(((b'a' + i as u8) as char).to_string());
            let data: Vec<u8> = (0..*n).map(|k| (k * 7 + i) as u8).collect();
            fs::write(&p, data).unwrap();
            files.push(p);
        }
        fs::create_dir(big.join("sub")).unwrap();
        fs::write(big.join("sub/z"), b"nested").unwrap();
        (t, files)
    }

    /// Predicts `files` (under `root`) as the layer's first entries, as their metadata
    /// says, with `mtime_of` choosing each one's time.
    fn predict(
        root: &Path,
        files: &[PathBuf],
        mtime_of: impl Fn(usize, i64) -> i64,
    ) -> PredictedTar {
        let mut p = TarPredictor::new();
        for (i, f) in files.iter().enumerate() {
            let m = fs::metadata(f).unwrap();
            let rel = f.strip_prefix(root).unwrap();
            p.begin_file(
                rel,
                m.mode(),
                m.uid() as u64,
                m.gid() as u64,
                mtime_of(i, m.mtime()) as u64,
                m.len(),
            );
            let data = fs::read(f).unwrap();
            for piece in data.chunks(1000) {
                p.data(piece);
            }
            p.end_file(m.dev(), m.ino());
        }
        p.finish()
    }

    /// Seals `root` with `pred`; checks the digest against `write_diff` of the sealed dir
    /// (the same tar, hashed from the files); returns the predicted bytes.
    fn seal_checked(root: &Path, pred: &PredictedTar) -> u64 {
        let got = seal_diff_predicted(root, pred).unwrap();
        let again = super::super::write_diff(root, io::sink()).unwrap();
        assert_eq!(got.diff_id, again.diff_id);
        assert_eq!(got.seal.size, again.size);
        assert!(got.seal.exact);
        got.predicted
    }

    #[test]
    fn a_right_prediction_is_taken_whole_and_gives_the_tar_digest() {
        let (t, files) = upper(&[0, 1, 511, 512, 513, 70_000]);
        let pred = predict(t.path(), &files, |_, m| m);
        assert_eq!(pred.files(), 6);
        assert_eq!(seal_checked(t.path(), &pred), 1 + 511 + 512 + 513 + 70_000);
    }

    #[test]
    fn the_tar_leaves_a_wrong_prediction_where_it_differs() {
        // The third file's time is mispredicted: the first two are taken, the rest read.
        let (t, files) = upper(&[100, 2000, 3000, 4000]);
        let pred = predict(t.path(), &files, |i, m| if i == 2 { m + 1 } else { m });
        assert_eq!(seal_checked(t.path(), &pred), 2100);
        // A file in another inode than predicted (same name, size and metadata).
        let (t, files) = upper(&[100, 2000]);
        let pred = predict(t.path(), &files, |_, m| m);
        let b = &files[1];
        let m = fs::metadata(b).unwrap();
        let data = fs::read(b).unwrap();
        // Made beside it while the old one exists, so that it cannot reuse its inode.
        let tmp = b.with_extension("new");
        fs::write(&tmp, &data).unwrap();
        let f = fs::File::options().write(true).open(&tmp).unwrap();
        f.set_modified(m.modified().unwrap()).unwrap();
        fs::rename(&tmp, b).unwrap();
        assert_ne!(fs::metadata(b).unwrap().ino(), m.ino());
        assert_eq!(seal_checked(t.path(), &pred), 100);
    }

    #[test]
    fn an_empty_or_out_of_order_prediction_reads_everything() {
        let (t, files) = upper(&[100, 200]);
        assert_eq!(seal_checked(t.path(), &TarPredictor::new().finish()), 0);
        let (t2, files2) = upper(&[100, 200]);
        let swapped = vec![files2[1].clone(), files2[0].clone()];
        assert_eq!(
            seal_checked(t2.path(), &predict(t2.path(), &swapped, |_, m| m)),
            0
        );
        drop((t, files));
    }

    #[test]
    fn a_file_shorter_than_announced_ends_the_prediction_before_it() {
        let (t, files) = upper(&[100, 200, 300]);
        let mut p = TarPredictor::new();
        for (i, f) in files.iter().enumerate() {
            let m = fs::metadata(f).unwrap();
            let rel = f.strip_prefix(t.path()).unwrap();
            p.begin_file(rel, m.mode(), 0, 0, m.mtime() as u64, m.len());
            let data = fs::read(f).unwrap();
            p.data(if i == 1 { &data[..10] } else { &data });
            p.end_file(m.dev(), m.ino());
        }
        assert!(!p.active());
        let pred = p.finish();
        assert_eq!(pred.files(), 1);
        assert_eq!(seal_checked(t.path(), &pred), 100);
    }

    #[test]
    fn long_names_are_predicted() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("d".repeat(90));
        fs::create_dir(&dir).unwrap();
        let f = dir.join("f".repeat(60));
        fs::write(&f, vec![7u8; 5000]).unwrap();
        let pred = predict(t.path(), std::slice::from_ref(&f), |_, m| m);
        assert_eq!(seal_checked(t.path(), &pred), 5000);
    }
}
