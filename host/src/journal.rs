//! The journal: one hash-chained JSON Lines file per run, plus a
//! content-addressed store of before-images. The format is documented in
//! `docs/JOURNAL.md` so another tool can verify it.
//!
//! Every record carries `seq` (0, 1, 2, ...), `prev` (the previous record's
//! `hash`; 64 zeros for the first) and `hash` = blake3 over the record's
//! canonical bytes without `hash`: compact JSON, keys sorted, UTF-8.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The journal format this build writes and reads.
pub const FORMAT: u64 = 1;
/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of a record: blake3 of its canonical bytes without `hash`.
pub fn record_hash(record: &Value) -> String {
    let mut r = record.clone();
    if let Some(map) = r.as_object_mut() {
        map.remove("hash");
    }
    let mut bytes = String::new();
    canonical(&r, &mut bytes);
    blake3::hash(bytes.as_bytes()).to_hex().to_string()
}

/// Compact JSON with every object's keys sorted by their UTF-8 bytes.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Appends records to a run's journal.
pub struct Journal {
    file: File,
    path: PathBuf,
    seq: u64,
    head: String,
}

impl Journal {
    /// Creates `runs/<run_id>/journal.jsonl` under `state`.
    pub fn create(state: &Path, run_id: &str) -> io::Result<Journal> {
        let dir = state.join("runs").join(run_id);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let path = dir.join("journal.jsonl");
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        Ok(Journal {
            file,
            path,
            seq: 0,
            head: GENESIS.to_string(),
        })
    }

    /// Adds `seq`, `prev` and `hash` to `record` and appends it (written,
    /// not synced). Returns its hash.
    pub fn append(&mut self, mut record: Value) -> io::Result<String> {
        record["seq"] = json!(self.seq);
        record["prev"] = json!(self.head);
        let hash = record_hash(&record);
        record["hash"] = json!(hash);
        let mut line = record.to_string();
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.seq += 1;
        self.head = hash.clone();
        Ok(hash)
    }

    /// Makes everything appended so far durable.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// The hash of the last record.
    pub fn head(&self) -> &str {
        &self.head
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The run's directory.
    pub fn dir(&self) -> &Path {
        self.path.parent().expect("journal has a directory")
    }
}

/// The content-addressed store of before-images: `objects/<blake3>`.
pub struct Objects {
    dir: PathBuf,
}

impl Objects {
    pub fn open(state: &Path) -> io::Result<Objects> {
        let dir = state.join("objects");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        Ok(Objects { dir })
    }

    fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(hash)
    }

    /// Stores `bytes` (not synced: see [`Objects::sync`]); returns its hash.
    pub fn put(&self, bytes: &[u8]) -> io::Result<String> {
        let hash = blake3::hash(bytes).to_hex().to_string();
        let dest = self.path(&hash);
        if dest.exists() {
            return Ok(hash);
        }
        let tmp = self.dir.join(format!(".tmp-{hash}-{}", std::process::id()));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        drop(f);
        fs::rename(&tmp, &dest)?;
        Ok(hash)
    }

    /// Reads an object back, checking its hash.
    pub fn get(&self, hash: &str) -> Result<Vec<u8>, JournalError> {
        let bytes = fs::read(self.path(hash)).map_err(|e| JournalError::Object {
            hash: hash.to_string(),
            why: e.to_string(),
        })?;
        if blake3::hash(&bytes).to_hex().as_str() != hash {
            return Err(JournalError::Object {
                hash: hash.to_string(),
                why: "its content does not match its hash".into(),
            });
        }
        Ok(bytes)
    }

    /// One flush of the file system that holds the store.
    pub fn sync(&self) -> io::Result<()> {
        let d = File::open(&self.dir)?;
        crate::disk::sync_fs(&d)
    }
}

/// Why a journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("no run {0} in the state directory; `defops-wasm journal list` shows the runs")]
    NoRun(String),
    #[error("cannot read {path}: {why}")]
    Read { path: PathBuf, why: String },
    #[error("{path} is not a defops-wasm journal: {why}")]
    NotAJournal { path: PathBuf, why: String },
    #[error(
        "{path} has journal format {found}; this defops-wasm reads format {FORMAT}: use a newer defops-wasm"
    )]
    NewerFormat { path: PathBuf, found: u64 },
    #[error("{path} fails verification at seq {seq}: {why}; it may have been tampered with")]
    Tampered {
        path: PathBuf,
        seq: u64,
        why: String,
    },
    #[error("the before-image {hash} is missing from the object store: {why}")]
    Object { hash: String, why: String },
}

/// Finds a run's journal: a run id under `state`, or a path to a journal.
pub fn locate(state: &Path, run: &str) -> Result<PathBuf, JournalError> {
    let as_path = Path::new(run);
    if run.contains('/') || run.ends_with(".jsonl") {
        if as_path.is_dir() {
            return Ok(as_path.join("journal.jsonl"));
        }
        return Ok(as_path.to_path_buf());
    }
    let p = state.join("runs").join(run).join("journal.jsonl");
    if p.exists() {
        Ok(p)
    } else {
        Err(JournalError::NoRun(run.to_string()))
    }
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every record checks out.
    Intact { records: u64, head: String },
    /// Intact up to `records`, then a last line cut short (a crash while
    /// writing it), not tampering.
    TornTail { records: u64, head: String },
    /// The first bad record and why.
    Bad { seq: u64, why: String },
}

/// A journal read and verified.
pub struct Loaded {
    pub path: PathBuf,
    pub records: Vec<Value>,
    pub verdict: Verdict,
}

impl Loaded {
    pub fn header(&self) -> &Value {
        &self.records[0]
    }

    /// Records of one type.
    pub fn of<'a>(&'a self, ty: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.records.iter().filter(move |r| r["type"] == ty)
    }
}

/// Reads and verifies a journal. With `expect_head`, a journal whose last
/// record is not that hash (cut short, or extended) is bad.
pub fn load(path: &Path, expect_head: Option<&str>) -> Result<Loaded, JournalError> {
    let file = File::open(path).map_err(|e| JournalError::Read {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    let mut reader = BufReader::new(file);
    let mut records: Vec<Value> = Vec::new();
    let mut prev = GENESIS.to_string();
    let mut buf = Vec::new();
    let mut verdict = None;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| JournalError::Read {
                path: path.to_path_buf(),
                why: e.to_string(),
            })?;
        if n == 0 {
            break;
        }
        let seq = records.len() as u64;
        let complete = buf.last() == Some(&b'\n');
        let parsed: Option<Value> = serde_json::from_slice(&buf).ok().filter(Value::is_object);
        let Some(record) = parsed else {
            let at_end = !complete || reader.fill_buf().map(|b| b.is_empty()).unwrap_or(false);
            if records.is_empty() {
                return Err(JournalError::NotAJournal {
                    path: path.to_path_buf(),
                    why: "the first line is not a JSON object".into(),
                });
            }
            verdict = Some(if at_end && !complete {
                Verdict::TornTail {
                    records: seq,
                    head: prev.clone(),
                }
            } else {
                Verdict::Bad {
                    seq,
                    why: "the record is not valid JSON".into(),
                }
            });
            break;
        };
        if seq == 0 {
            if record["type"] != "header" {
                return Err(JournalError::NotAJournal {
                    path: path.to_path_buf(),
                    why: "the first record is not a header".into(),
                });
            }
            let format = record["format"].as_u64().unwrap_or(0);
            if format > FORMAT {
                return Err(JournalError::NewerFormat {
                    path: path.to_path_buf(),
                    found: format,
                });
            }
        }
        if let Some(why) = check_record(&record, seq, &prev) {
            verdict = Some(Verdict::Bad { seq, why });
            break;
        }
        prev = record["hash"].as_str().unwrap_or_default().to_string();
        records.push(record);
    }
    if records.is_empty() {
        return Err(JournalError::NotAJournal {
            path: path.to_path_buf(),
            why: "it is empty".into(),
        });
    }
    let count = records.len() as u64;
    let verdict = match verdict {
        Some(v) => v,
        None => match expect_head {
            Some(h) if h != prev => {
                let known = records.iter().position(|r| r["hash"] == h);
                Verdict::Bad {
                    seq: count,
                    why: match known {
                        Some(i) => format!(
                            "the head should be record {i}, but {} more records follow it",
                            count - 1 - i as u64
                        ),
                        None => format!(
                            "the head is {prev}, not the expected {h}: the journal was cut short or replaced"
                        ),
                    },
                }
            }
            _ => Verdict::Intact {
                records: count,
                head: prev,
            },
        },
    };
    Ok(Loaded {
        path: path.to_path_buf(),
        records,
        verdict,
    })
}

/// What is wrong with record `seq`, if anything.
fn check_record(record: &Value, seq: u64, prev: &str) -> Option<String> {
    let Some(found) = record["seq"].as_u64() else {
        return Some("the record has no seq".into());
    };
    if found != seq {
        return Some(if found > seq {
            format!("seq {found} where {seq} was expected: records are missing (a gap)")
        } else {
            format!("seq {found} where {seq} was expected: records are out of order")
        });
    }
    let hash = record["hash"].as_str().unwrap_or_default();
    if hash != record_hash(record) {
        return Some("the hash does not match the record's content".into());
    }
    if record["prev"].as_str() != Some(prev) {
        return Some("prev does not match the previous record's hash (a broken link)".into());
    }
    None
}

/// The run ids under `state`, oldest first.
pub fn list(state: &Path) -> io::Result<Vec<String>> {
    let dir = state.join("runs");
    let mut ids = Vec::new();
    match fs::read_dir(&dir) {
        Ok(entries) => {
            for e in entries {
                let e = e?;
                if e.path().join("journal.jsonl").exists()
                    && let Ok(name) = e.file_name().into_string()
                {
                    ids.push(name);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    ids.sort();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_over_sorted_compact_json_without_hash() {
        let r = json!({"b": 1, "a": "x", "hash": "ignored"});
        assert_eq!(
            record_hash(&r),
            blake3::hash(br#"{"a":"x","b":1}"#).to_hex().to_string()
        );
    }
}
