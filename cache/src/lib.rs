//! The sled store of aevis: typed, versioned, content-addressed records.
//!
//! Each kind of record lives in its own sled tree ([`Kind`]). Keys are content
//! hashes ([`key_of`]) of what the record was computed from (model fingerprint,
//! request bytes, parameters), so an identical request finds its answer and a
//! changed model never does. Each value is an envelope:
//!
//! ```text
//! magic "aevc" | format u8 | kind tag u8 | schema version u32 LE | blake3(payload)[..8] | payload (bincode)
//! ```
//!
//! A value that is truncated, corrupted, of another kind or written by another
//! schema version reads as a miss (logged with `tracing`), never as data and
//! never as a panic: the daemon recomputes it.
//!
//! ```
//! use aevis_cache::{Cache, Kind, Record, key_of};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! struct Note(String);
//! impl Record for Note {
//!     const KIND: Kind = Kind::Session;
//!     const VERSION: u32 = 1;
//! }
//!
//! let dir = tempfile::tempdir().unwrap();
//! let cache = Cache::open(dir.path()).unwrap();
//! let key = key_of(&[b"model fingerprint", b"request bytes"]);
//! assert_eq!(cache.get::<Note>(&key), None);
//! cache.put_flushed(&key, &Note("hello".into())).unwrap();
//! assert_eq!(cache.get::<Note>(&key), Some(Note("hello".into())));
//! assert_eq!((cache.stats().hits, cache.stats().misses), (1, 1));
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use aevis_shared::codec;
use aevis_shared::protocol::{AttackReport, CandidateList, ContributionResult, SessionResult};
use serde::{Serialize, de::DeserializeOwned};

const MAGIC: &[u8; 4] = b"aevc";
/// Layout version of the envelope itself (not of the payloads).
const FORMAT: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + 1 + 4 + 8;

/// The kinds of records, one sled tree each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A session's request and summary (keyed by session id).
    Session,
    /// A computed [`SessionResult`] (keyed by session id).
    SessionResult,
    /// A job's state and what it computes (keyed by job id).
    Job,
    /// An attack's answer (keyed by fingerprint + request).
    Adversarial,
    /// Learned features of a model (keyed by fingerprint).
    LearnedFeatures,
    /// A contribution answer (keyed by session + request).
    Contribution,
    /// A candidate list (keyed by fingerprint + request, and a "latest" key per model).
    CandidateList,
}

impl Kind {
    /// Every kind, in tag order.
    pub const ALL: [Kind; 7] = [
        Kind::Session,
        Kind::SessionResult,
        Kind::Job,
        Kind::Adversarial,
        Kind::LearnedFeatures,
        Kind::Contribution,
        Kind::CandidateList,
    ];

    /// Name of the sled tree.
    pub fn tree_name(self) -> &'static str {
        match self {
            Kind::Session => "sessions",
            Kind::SessionResult => "session_results",
            Kind::Job => "jobs",
            Kind::Adversarial => "adversarials",
            Kind::LearnedFeatures => "learned_features",
            Kind::Contribution => "contributions",
            Kind::CandidateList => "candidate_lists",
        }
    }

    /// The tag written into every value of this kind.
    pub fn tag(self) -> u8 {
        match self {
            Kind::Session => 1,
            Kind::SessionResult => 2,
            Kind::Job => 3,
            Kind::Adversarial => 4,
            Kind::LearnedFeatures => 5,
            Kind::Contribution => 6,
            Kind::CandidateList => 7,
        }
    }
}

/// A type that can be stored: its kind (tree) and its schema version.
///
/// Bump `VERSION` whenever the serialized shape changes: old records then
/// read as misses and are recomputed.
pub trait Record: Serialize + DeserializeOwned {
    /// Tree and tag.
    const KIND: Kind;
    /// Schema version of the payload.
    const VERSION: u32;
}

impl Record for SessionResult {
    const KIND: Kind = Kind::SessionResult;
    const VERSION: u32 = 1;
}

impl Record for AttackReport {
    const KIND: Kind = Kind::Adversarial;
    const VERSION: u32 = 1;
}

impl Record for ContributionResult {
    const KIND: Kind = Kind::Contribution;
    const VERSION: u32 = 1;
}

impl Record for CandidateList {
    const KIND: Kind = Kind::CandidateList;
    const VERSION: u32 = 1;
}

/// Why the store could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Another process holds sled's lock on the folder.
    #[error("cache folder in use by another daemon: {}", path.display())]
    InUse {
        /// The folder.
        path: PathBuf,
    },
    /// sled could not open the folder.
    #[error("could not open the cache ({source}): {}", path.display())]
    Open {
        /// The folder.
        path: PathBuf,
        /// What sled reported.
        source: sled::Error,
    },
    /// A read, write or flush failed.
    #[error("cache {op} failed on tree {tree}: {source}")]
    Store {
        /// What was being done.
        op: &'static str,
        /// The tree.
        tree: &'static str,
        /// What sled reported.
        source: sled::Error,
    },
    /// The value could not be encoded.
    #[error("could not encode a {kind:?} record: {source}")]
    Encode {
        /// Kind of the record.
        kind: Kind,
        /// What the codec reported.
        source: codec::CodecError,
    },
}

/// Counters, for tests and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads that returned a record.
    pub hits: u64,
    /// Reads that found nothing usable (absent or invalid).
    pub misses: u64,
    /// Of the misses: a value was present but unreadable, of another kind or version.
    pub invalid: u64,
    /// Records written.
    pub writes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    invalid: AtomicU64,
    writes: AtomicU64,
}

/// The content-hash key of a record: blake3 over the parts, each prefixed by
/// its length so that `["ab", "c"]` and `["a", "bc"]` differ. 64 hex digits.
pub fn key_of(parts: &[&[u8]]) -> String {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().to_hex().to_string()
}

/// Why a stored value was not accepted (logged, then treated as a miss).
#[derive(Debug, PartialEq, Eq)]
enum Invalid {
    Short(usize),
    Magic,
    Format(u8),
    Kind(u8),
    Version(u32),
    Checksum,
    Decode(String),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Short(n) => write!(f, "value of {n} bytes is shorter than the {HEADER_LEN}-byte header"),
            Invalid::Magic => write!(f, "not an aevis cache value (bad magic)"),
            Invalid::Format(v) => write!(f, "envelope format {v}, expected {FORMAT}"),
            Invalid::Kind(t) => write!(f, "kind tag {t} does not match the tree"),
            Invalid::Version(v) => write!(f, "schema version {v} is not the current one"),
            Invalid::Checksum => write!(f, "checksum mismatch (corrupted value)"),
            Invalid::Decode(e) => write!(f, "payload does not decode: {e}"),
        }
    }
}

fn checksum(payload: &[u8]) -> [u8; 8] {
    let h = blake3::hash(payload);
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.as_bytes()[..8]);
    out
}

fn seal(kind: Kind, version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.push(kind.tag());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&checksum(payload));
    out.extend_from_slice(payload);
    out
}

fn open_envelope<R: Record>(bytes: &[u8]) -> Result<R, Invalid> {
    if bytes.len() < HEADER_LEN {
        return Err(Invalid::Short(bytes.len()));
    }
    if &bytes[..4] != MAGIC {
        return Err(Invalid::Magic);
    }
    if bytes[4] != FORMAT {
        return Err(Invalid::Format(bytes[4]));
    }
    if bytes[5] != R::KIND.tag() {
        return Err(Invalid::Kind(bytes[5]));
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&bytes[6..10]);
    let version = u32::from_le_bytes(v);
    if version != R::VERSION {
        return Err(Invalid::Version(version));
    }
    let payload = &bytes[HEADER_LEN..];
    if bytes[10..HEADER_LEN] != checksum(payload) {
        return Err(Invalid::Checksum);
    }
    codec::decode::<R>(payload).map_err(|e| Invalid::Decode(e.to_string()))
}

/// The store: one sled database in a folder, one tree per [`Kind`].
#[derive(Debug)]
pub struct Cache {
    db: sled::Db,
    path: PathBuf,
    counters: Counters,
}

impl Cache {
    /// Opens (or creates) the store in `dir`.
    ///
    /// A folder held by another process fails with [`CacheError::InUse`].
    pub fn open(dir: &Path) -> Result<Cache, CacheError> {
        let path = dir.to_path_buf();
        let db = sled::Config::new().path(&path).open().map_err(|source| {
            if is_lock_error(&source) {
                CacheError::InUse { path: path.clone() }
            } else {
                CacheError::Open { path: path.clone(), source }
            }
        })?;
        tracing::info!(path = %path.display(), recovered = db.was_recovered(), "cache opened");
        Ok(Cache { db, path, counters: Counters::default() })
    }

    /// The folder of the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn tree(&self, kind: Kind, op: &'static str) -> Result<sled::Tree, CacheError> {
        self.db
            .open_tree(kind.tree_name())
            .map_err(|source| CacheError::Store { op, tree: kind.tree_name(), source })
    }

    /// The record under `key`, or `None` when absent or not readable as `R`
    /// (corrupted, another kind, another schema version); the latter is logged.
    pub fn get<R: Record>(&self, key: &str) -> Option<R> {
        let found = match self.tree(R::KIND, "read").and_then(|t| {
            t.get(key.as_bytes())
                .map_err(|source| CacheError::Store { op: "read", tree: R::KIND.tree_name(), source })
        }) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, key, "cache read failed; treating as a miss");
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        match found {
            None => {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            Some(bytes) => match open_envelope::<R>(&bytes) {
                Ok(r) => {
                    self.counters.hits.fetch_add(1, Ordering::Relaxed);
                    Some(r)
                }
                Err(why) => {
                    tracing::warn!(kind = ?R::KIND, key, reason = %why, "ignoring unreadable cache record");
                    self.counters.misses.fetch_add(1, Ordering::Relaxed);
                    self.counters.invalid.fetch_add(1, Ordering::Relaxed);
                    None
                }
            },
        }
    }

    /// True when a readable record of type `R` is stored under `key`
    /// (does not count as a hit or miss).
    pub fn contains<R: Record>(&self, key: &str) -> bool {
        match self.tree(R::KIND, "read").ok().and_then(|t| t.get(key.as_bytes()).ok().flatten()) {
            Some(bytes) => open_envelope::<R>(&bytes).is_ok(),
            None => false,
        }
    }

    /// Stores a record (buffered: call [`Cache::flush`] or use
    /// [`Cache::put_flushed`] for records that must survive a crash).
    pub fn put<R: Record>(&self, key: &str, value: &R) -> Result<(), CacheError> {
        let payload = codec::encode(value).map_err(|source| CacheError::Encode { kind: R::KIND, source })?;
        let tree = self.tree(R::KIND, "write")?;
        tree.insert(key.as_bytes(), seal(R::KIND, R::VERSION, &payload))
            .map_err(|source| CacheError::Store { op: "write", tree: R::KIND.tree_name(), source })?;
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Stores a record and flushes the store to disk.
    pub fn put_flushed<R: Record>(&self, key: &str, value: &R) -> Result<(), CacheError> {
        self.put(key, value)?;
        self.flush()
    }

    /// Removes the record of kind `R::KIND` under `key`.
    pub fn remove<R: Record>(&self, key: &str) -> Result<(), CacheError> {
        let tree = self.tree(R::KIND, "remove")?;
        tree.remove(key.as_bytes())
            .map_err(|source| CacheError::Store { op: "remove", tree: R::KIND.tree_name(), source })?;
        Ok(())
    }

    /// Every readable record of type `R`, by key order. Unreadable ones are
    /// logged and skipped.
    pub fn all<R: Record>(&self) -> Vec<(String, R)> {
        let tree = match self.tree(R::KIND, "scan") {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cache scan failed");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for item in tree.iter() {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    tracing::warn!(kind = ?R::KIND, error = %e, "cache scan stopped early");
                    break;
                }
            };
            let key = String::from_utf8_lossy(&k).into_owned();
            match open_envelope::<R>(&v) {
                Ok(r) => out.push((key, r)),
                Err(why) => tracing::warn!(kind = ?R::KIND, key, reason = %why, "skipping unreadable cache record"),
            }
        }
        out
    }

    /// Writes everything buffered to disk.
    pub fn flush(&self) -> Result<(), CacheError> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|source| CacheError::Store { op: "flush", tree: "*", source })
    }

    /// The counters so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.counters.hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
            invalid: self.counters.invalid.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
        }
    }

    /// Writes raw bytes as the value of `key` in the tree of `kind`, bypassing
    /// the envelope. Only for tests that need a corrupted or foreign value.
    #[doc(hidden)]
    pub fn put_raw(&self, kind: Kind, key: &str, bytes: &[u8]) -> Result<(), CacheError> {
        let tree = self.tree(kind, "write")?;
        tree.insert(key.as_bytes(), bytes)
            .map_err(|source| CacheError::Store { op: "write", tree: kind.tree_name(), source })?;
        Ok(())
    }

    /// The raw stored bytes of `key` in the tree of `kind` (tests).
    #[doc(hidden)]
    pub fn get_raw(&self, kind: Kind, key: &str) -> Option<Vec<u8>> {
        self.tree(kind, "read").ok()?.get(key.as_bytes()).ok()?.map(|v| v.to_vec())
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        if let Err(e) = self.db.flush() {
            tracing::warn!(error = %e, path = %self.path.display(), "cache flush on close failed");
        }
    }
}

/// sled 0.34 reports a held lock as an I/O error "could not acquire lock on …".
fn is_lock_error(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("could not acquire lock")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct JobV1 {
        name: String,
        steps: Vec<u32>,
    }
    impl Record for JobV1 {
        const KIND: Kind = Kind::Job;
        const VERSION: u32 = 1;
    }

    /// The same tree after a schema change.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct JobV2 {
        name: String,
        steps: Vec<u32>,
        extra: bool,
    }
    impl Record for JobV2 {
        const KIND: Kind = Kind::Job;
        const VERSION: u32 = 2;
    }

    /// Another kind with a payload that would decode from JobV1's bytes.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct SessionLike {
        name: String,
        steps: Vec<u32>,
    }
    impl Record for SessionLike {
        const KIND: Kind = Kind::Session;
        const VERSION: u32 = 1;
    }

    fn job() -> JobV1 {
        JobV1 { name: "layer2.3.out".into(), steps: vec![1, 2, 3] }
    }

    #[test]
    fn key_is_stable_and_length_prefixed() {
        let a = key_of(&[b"ab", b"c"]);
        let b = key_of(&[b"a", b"bc"]);
        assert_ne!(a, b);
        assert_eq!(a, key_of(&[b"ab", b"c"]));
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn round_trip_and_counters() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        assert_eq!(cache.get::<JobV1>("k"), None);
        cache.put("k", &job()).unwrap();
        assert_eq!(cache.get::<JobV1>("k"), Some(job()));
        assert!(cache.contains::<JobV1>("k"));
        assert!(!cache.contains::<JobV1>("other"));
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.invalid, s.writes), (1, 1, 0, 1));
        cache.remove::<JobV1>("k").unwrap();
        assert_eq!(cache.get::<JobV1>("k"), None);
    }

    #[test]
    fn restart_keeps_records() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cache = Cache::open(dir.path()).unwrap();
            cache.put_flushed("a", &job()).unwrap();
            cache.put("b", &JobV1 { name: "b".into(), steps: vec![] }).unwrap();
        }
        let cache = Cache::open(dir.path()).unwrap();
        assert_eq!(cache.get::<JobV1>("a"), Some(job()));
        let all = cache.all::<JobV1>();
        assert_eq!(all.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(all[1].1.name, "b");
    }

    #[test]
    fn corrupted_value_reads_as_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        cache.put("k", &job()).unwrap();
        let mut raw = cache.get_raw(Kind::Job, "k").unwrap();
        // Flip one payload bit: still decodable bincode, but the checksum catches it.
        let last = raw.len() - 1;
        raw[last] ^= 0x01;
        cache.put_raw(Kind::Job, "k", &raw).unwrap();
        assert_eq!(cache.get::<JobV1>("k"), None);
        // Truncated and garbage values.
        cache.put_raw(Kind::Job, "t", &raw[..HEADER_LEN - 2]).unwrap();
        assert_eq!(cache.get::<JobV1>("t"), None);
        cache.put_raw(Kind::Job, "g", b"definitely not a record").unwrap();
        assert_eq!(cache.get::<JobV1>("g"), None);
        // A valid envelope around a payload that does not decode.
        cache.put_raw(Kind::Job, "p", &seal(Kind::Job, 1, &[0xff, 0xff, 0xff])).unwrap();
        assert_eq!(cache.get::<JobV1>("p"), None);
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.invalid), (0, 4, 4));
        // Scans skip them too.
        cache.put("ok", &job()).unwrap();
        assert_eq!(cache.all::<JobV1>().len(), 1);
    }

    #[test]
    fn schema_bump_reads_as_miss() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cache = Cache::open(dir.path()).unwrap();
            cache.put_flushed("k", &job()).unwrap();
        }
        let cache = Cache::open(dir.path()).unwrap();
        assert_eq!(cache.get::<JobV2>("k"), None);
        assert_eq!(cache.stats().invalid, 1);
        assert!(cache.all::<JobV2>().is_empty());
        // The old reader still reads it; the new writer replaces it.
        assert_eq!(cache.get::<JobV1>("k"), Some(job()));
        let v2 = JobV2 { name: "n".into(), steps: vec![9], extra: true };
        cache.put("k", &v2).unwrap();
        assert_eq!(cache.get::<JobV2>("k"), Some(v2));
        assert_eq!(cache.get::<JobV1>("k"), None);
    }

    #[test]
    fn kind_tag_mismatch_reads_as_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        cache.put("k", &job()).unwrap();
        let raw = cache.get_raw(Kind::Job, "k").unwrap();
        // A job envelope copied into the sessions tree is not a session.
        cache.put_raw(Kind::Session, "k", &raw).unwrap();
        assert_eq!(cache.get::<SessionLike>("k"), None);
        assert_eq!(cache.stats().invalid, 1);
    }

    #[test]
    fn second_open_of_the_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Cache::open(dir.path()).unwrap();
        match Cache::open(dir.path()) {
            Err(e @ CacheError::InUse { .. }) => {
                let msg = e.to_string();
                assert!(msg.starts_with("cache folder in use by another daemon: "), "{msg}");
                assert!(msg.ends_with(&dir.path().display().to_string()), "{msg}");
            }
            other => panic!("expected InUse, got {other:?}"),
        }
    }

    #[test]
    fn kinds_have_distinct_trees_and_tags() {
        let mut names: Vec<_> = Kind::ALL.iter().map(|k| k.tree_name()).collect();
        let mut tags: Vec<_> = Kind::ALL.iter().map(|k| k.tag()).collect();
        names.sort_unstable();
        names.dedup();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!((names.len(), tags.len()), (7, 7));
    }
}
