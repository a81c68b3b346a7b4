//! The journal: one hash-chained JSON Lines file per run, plus a
//! content-addressed store of before-images. The format is documented in
//! `docs/JOURNAL.md` so another tool can verify it.
//!
//! Every record carries `seq` (0, 1, 2, ...), `prev` (the previous record's
//! `hash`; 64 zeros for the first) and `hash` = the digest (blake3, or
//! SHA-256 when the header's `hash_alg` says so) over the record's
//! canonical bytes without `hash`: compact JSON, keys sorted, UTF-8.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::digest::Alg;

/// The journal format this build writes (and the newest it reads). 2: the
/// header names `hash_alg`; a file state's digest is `digest` (was
/// `blake3`).
pub const FORMAT: u64 = 2;
/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The bytes after a record's canonical body: `,"hash":"<64 hex>"}`.
const HASH_SUFFIX: usize = 9 + 64 + 2;

/// A record as a journal line: its canonical body (without `hash`) with
/// `,"hash":"<digest of the body>"` put before the closing brace, and `\n`.
pub fn encode(record: &Value) -> String {
    let mut body = Vec::with_capacity(512);
    canonical(record, Some("hash"), &mut body);
    let hash = crate::digest::current().hex(&body);
    body.pop(); // the closing brace
    body.extend_from_slice(b",\"hash\":\"");
    body.extend_from_slice(hash.as_bytes());
    body.extend_from_slice(b"\"}\n");
    String::from_utf8(body).expect("JSON is UTF-8")
}

/// Checks one line (without its newline) against the chain: its hash, its
/// `seq` and its `prev`. Returns its hash, or what is wrong.
pub fn check_line(line: &[u8], seq: u64, prev: &str, alg: Alg) -> Result<String, String> {
    let facts = line_facts(line, alg)?;
    chain(&facts, seq, prev.as_bytes())?;
    Ok(String::from_utf8_lossy(facts.hash).into_owned())
}

/// What one line says about itself, checked on its own: its hash is right.
struct Facts<'a> {
    hash: &'a [u8],
    seq: Option<u64>,
    prev: Option<&'a [u8]>,
}

fn line_facts(line: &[u8], alg: Alg) -> Result<Facts<'_>, String> {
    let n = line.len();
    if n < HASH_SUFFIX + 2
        || &line[n - HASH_SUFFIX..n - HASH_SUFFIX + 9] != b",\"hash\":\""
        || &line[n - 2..] != b"\"}"
    {
        return Err("the record does not end with its hash".into());
    }
    let body = &line[..n - HASH_SUFFIX];
    let claimed = &line[n - 66..n - 2];
    let fields = top_level(body);
    if !alg.matches_hex(&[body, b"}"], claimed) {
        // A wrong seq is the better explanation when there is one.
        return match fields.seq {
            Some(_) => Err("the hash does not match the record's content".into()),
            None => Err("the record has no seq".into()),
        };
    }
    Ok(Facts {
        hash: claimed,
        seq: fields.seq,
        prev: fields.prev,
    })
}

/// Checks a line's place in the chain.
fn chain(facts: &Facts<'_>, seq: u64, prev: &[u8]) -> Result<(), String> {
    match facts.seq {
        None => return Err("the record has no seq".into()),
        Some(found) if found > seq => {
            return Err(format!(
                "seq {found} where {seq} was expected: records are missing (a gap)"
            ));
        }
        Some(found) if found < seq => {
            return Err(format!(
                "seq {found} where {seq} was expected: records are out of order"
            ));
        }
        Some(_) => {}
    }
    if facts.prev != Some(prev) {
        return Err("prev does not match the previous record's hash (a broken link)".into());
    }
    Ok(())
}

struct TopLevel<'a> {
    seq: Option<u64>,
    prev: Option<&'a [u8]>,
}

/// `seq` and `prev` of a record's top-level object. The scan runs from the
/// end of the body, skipping strings and nested values whole, and stops once
/// both are found: keys are sorted, so they sit near the end.
fn top_level(body: &[u8]) -> TopLevel<'_> {
    let mut out = TopLevel {
        seq: None,
        prev: None,
    };
    // A quote at `i` is escaped when an odd number of backslashes precede it.
    let escaped = |i: usize| body[..i].iter().rev().take_while(|b| **b == b'\\').count() % 2 == 1;
    // The opening quote of the string whose closing quote is at `close`.
    let string_start = |close: usize| {
        let mut end = close;
        loop {
            match memchr::memrchr(b'"', &body[..end]) {
                Some(k) if escaped(k) => end = k,
                Some(k) => return Some(k),
                None => return None,
            }
        }
    };
    let mut depth = 1usize;
    let mut end = body.len();
    while out.seq.is_none() || out.prev.is_none() {
        let Some(i) = memchr::memrchr3(b'"', b'{', b'}', &body[..end]) else {
            break;
        };
        match body[i] {
            b'}' => depth += 1,
            b'{' => depth = depth.saturating_sub(1),
            _ => {
                let Some(open) = string_start(i) else { break };
                if depth == 1 && body.get(i + 1) == Some(&b':') {
                    let key = &body[open + 1..i];
                    let value = i + 2;
                    if key == b"seq" {
                        let digits = body[value..]
                            .iter()
                            .take_while(|b| b.is_ascii_digit())
                            .count();
                        out.seq = std::str::from_utf8(&body[value..value + digits])
                            .ok()
                            .and_then(|d| d.parse().ok());
                    } else if key == b"prev" && body.get(value) == Some(&b'"') {
                        out.prev = memchr::memchr(b'"', &body[value + 1..])
                            .map(|k| &body[value + 1..value + 1 + k]);
                    }
                }
                end = open;
                continue;
            }
        }
        end = i;
    }
    out
}

/// `v` as canonical JSON: compact, every object's keys sorted by their
/// UTF-8 bytes (the form records are hashed in, and plans digested in).
pub fn canonical_json(v: &Value) -> String {
    let mut out = Vec::new();
    canonical(v, None, &mut out);
    String::from_utf8(out).expect("JSON is UTF-8")
}

/// Compact JSON with every object's keys sorted by their UTF-8 bytes,
/// without the top-level key `skip`. Written straight into `out`: a
/// journal has a record per change, and this is on the way to each.
fn canonical(v: &Value, skip: Option<&str>, out: &mut Vec<u8>) {
    // Writing JSON into a Vec cannot fail.
    fn write(out: &mut Vec<u8>, v: &impl serde::Serialize) {
        serde_json::to_writer(out, v).expect("JSON into memory");
    }
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map
                .iter()
                .filter(|(k, _)| Some(k.as_str()) != skip)
                .collect();
            // A map is usually in key order already.
            if !entries.is_sorted_by(|a, b| a.0 <= b.0) {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(out, k);
                out.push(b':');
                canonical(v, None, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, None, out);
            }
            out.push(b']');
        }
        other => write(out, other),
    }
}

/// Appends records to a run's journal.
pub struct Journal {
    file: File,
    path: PathBuf,
    seq: u64,
    head: String,
    /// Lines appended with [`Journal::append_batched`], not yet written.
    pending: Vec<u8>,
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
            pending: Vec::new(),
        })
    }

    /// Adds `seq`, `prev` and `hash` to `record` and appends it (written,
    /// not synced). Returns its hash.
    pub fn append(&mut self, record: Value) -> io::Result<String> {
        self.flush()?;
        let (line, hash) = self.chain(record);
        self.file.write_all(line.as_bytes())?;
        Ok(hash)
    }

    /// Like [`Journal::append`], the write left for later: lines are written
    /// in large pieces, by the next `append`, `flush` or `sync`. For runs of
    /// records that are synced together before anything depends on them
    /// (a commit's intents).
    pub fn append_batched(&mut self, record: Value) -> io::Result<String> {
        let (line, hash) = self.chain(record);
        self.pending.extend_from_slice(line.as_bytes());
        if self.pending.len() >= 256 << 10 {
            self.flush()?;
        }
        Ok(hash)
    }

    /// `record` as the next line of the chain.
    fn chain(&mut self, mut record: Value) -> (String, String) {
        record["seq"] = json!(self.seq);
        record["prev"] = json!(self.head);
        let line = encode(&record);
        let hash = line[line.len() - 67..line.len() - 3].to_string();
        self.seq += 1;
        self.head = hash.clone();
        (line, hash)
    }

    /// Writes the batched lines.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.file.write_all(&self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
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

impl Drop for Journal {
    /// Batched lines are written even when nothing followed them.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// The content-addressed store of before-images: `objects/<digest>` (the
/// process's algorithm).
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
        let hash = crate::digest::current().hex(bytes);
        let dest = self.path(&hash);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&dest)
        {
            Ok(mut f) => {
                if let Err(e) = f.write_all(bytes) {
                    let _ = fs::remove_file(&dest);
                    return Err(e);
                }
                Ok(hash)
            }
            // Content-addressed: the object is there already, unless a crash
            // cut it short; then it is written again, whole, by rename.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if self.get(&hash).is_ok() {
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
            Err(e) => Err(e),
        }
    }

    /// Reads an object back, checking its hash.
    pub fn get(&self, hash: &str) -> Result<Vec<u8>, JournalError> {
        let bytes = fs::read(self.path(hash)).map_err(|e| JournalError::Object {
            hash: hash.to_string(),
            why: e.to_string(),
        })?;
        if crate::digest::current().hex(&bytes) != hash {
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

/// Verifies a journal without building its records: the fast path of
/// `journal verify`. Same verdicts as [`load`].
///
/// The file is streamed through two buffers: while the lines of one are
/// hashed on every core (each core takes a byte range, split at a newline),
/// the next is read. Each line's hash is checked on its raw bytes (the body
/// is the line up to `,"hash":`), `seq` and `prev` are found by a scan from
/// the end of the body; no JSON tree is built but the header's.
pub fn verify_file(path: &Path, expect_head: Option<&str>) -> Result<Verdict, JournalError> {
    let read_error = |e: io::Error| JournalError::Read {
        path: path.to_path_buf(),
        why: e.to_string(),
    };
    let file = crate::regular_file::open(path).map_err(read_error)?;
    let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::Sequential);
    verify_from(path, file, expect_head)
}

/// [`verify_file`] of what `input` holds, the journal at `path`.
fn verify_from(
    path: &Path,
    mut input: impl Read,
    expect_head: Option<&str>,
) -> Result<Verdict, JournalError> {
    let read_error = |e: io::Error| JournalError::Read {
        path: path.to_path_buf(),
        why: e.to_string(),
    };
    // Two buffers, reused (fresh memory costs a page fault per page).
    const BUF: usize = 2 << 20;
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let mut cur: Vec<u8> = Vec::with_capacity(BUF);
    let mut spare: Vec<u8> = Vec::with_capacity(BUF);
    let mut eof = fill(&mut input, &mut cur, BUF).map_err(read_error)?;
    let mut prev = GENESIS.as_bytes().to_vec();
    let mut seq = 0u64;
    // The record where the expected head was seen, if it was.
    let mut head_at: Option<u64> = None;
    let mut alg = Alg::Blake3;
    loop {
        let end = match memchr::memrchr(b'\n', &cur) {
            Some(i) => i + 1,
            None if eof => 0,
            // A line longer than the buffer: read on.
            None => {
                let more = cur.len() + BUF;
                eof = fill(&mut input, &mut cur, more).map_err(read_error)?;
                continue;
            }
        };
        if seq == 0 {
            match memchr::memchr(b'\n', &cur[..end]) {
                Some(i) => alg = header_alg(path, &check_header(path, &cur[..i])?)?,
                None if cur.is_empty() => {
                    return Err(JournalError::NotAJournal {
                        path: path.to_path_buf(),
                        why: "it is empty".into(),
                    });
                }
                // Not even one whole line: a torn header.
                None => check_header(path, &cur).map(|_| ())?,
            }
        }
        // The rest (a line cut by the buffer) starts the next buffer.
        let mut next = std::mem::take(&mut spare);
        next.clear();
        next.extend_from_slice(&cur[end..]);
        let region = &cur[..end];
        let (parts, read) = std::thread::scope(|scope| {
            let hashing: Vec<_> = split_at_lines(region, workers)
                .into_iter()
                .map(|part| scope.spawn(move || lines_facts(part, alg)))
                .collect();
            let read = match eof {
                true => Ok(true),
                false => fill(&mut input, &mut next, BUF),
            };
            let parts: Vec<Vec<Result<Facts<'_>, String>>> = hashing
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect();
            (parts, read)
        });
        for f in parts.iter().flatten() {
            if let Err(why) = f
                .as_ref()
                .map_err(String::clone)
                .and_then(|f| chain(f, seq, &prev))
            {
                return Ok(Verdict::Bad { seq, why });
            }
            let hash = f.as_ref().map(|f| f.hash).unwrap_or_default();
            prev.clear();
            prev.extend_from_slice(hash);
            if expect_head.is_some_and(|h| h.as_bytes() == hash) {
                head_at = Some(seq);
            }
            seq += 1;
        }
        drop(parts);
        let done = eof;
        eof = read.map_err(read_error)?;
        spare = std::mem::replace(&mut cur, next);
        if done {
            break;
        }
    }
    let head = String::from_utf8_lossy(&prev).into_owned();
    tracing::debug!(path = %path.display(), records = seq, alg = alg.name(), "chain checked");
    if !cur.is_empty() {
        return Ok(Verdict::TornTail { records: seq, head });
    }
    Ok(head_verdict(seq, head, expect_head, |_| {
        head_at.map(|s| s as usize)
    }))
}

/// Reads `file` into `buf` until it holds `upto` bytes or the file ends;
/// whether it ended.
fn fill(input: &mut impl Read, buf: &mut Vec<u8>, upto: usize) -> io::Result<bool> {
    let want = upto.saturating_sub(buf.len()) as u64;
    let got = input.take(want).read_to_end(buf)? as u64;
    Ok(got < want)
}

/// `region` (whole lines) cut into at most `n` pieces of whole lines.
fn split_at_lines(region: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts = Vec::with_capacity(n);
    let mut rest = region;
    for k in (1..=n).rev() {
        if rest.is_empty() {
            break;
        }
        let cut = match k {
            1 => rest.len(),
            _ => memchr::memchr(b'\n', &rest[rest.len() / k..])
                .map_or(rest.len(), |i| rest.len() / k + i + 1),
        };
        parts.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    parts
}

/// The facts of every line (each ended by a newline) of `part`.
fn lines_facts(part: &[u8], alg: Alg) -> Vec<Result<Facts<'_>, String>> {
    let mut out = Vec::with_capacity(part.len() / 256 + 1);
    let mut rest = part;
    while let Some(i) = memchr::memchr(b'\n', rest) {
        out.push(line_facts(&rest[..i], alg));
        rest = &rest[i + 1..];
    }
    out
}

/// The digest algorithm a header names.
pub fn header_alg(path: &Path, header: &Value) -> Result<Alg, JournalError> {
    Alg::parse(header["hash_alg"].as_str()).map_err(|why| JournalError::NotAJournal {
        path: path.to_path_buf(),
        why,
    })
}

/// The first line must be a header of a format this build reads.
fn check_header(path: &Path, line: &[u8]) -> Result<Value, JournalError> {
    let not = |why: &str| JournalError::NotAJournal {
        path: path.to_path_buf(),
        why: why.into(),
    };
    let header: Value =
        serde_json::from_slice(line).map_err(|_| not("the first line is not a JSON object"))?;
    if header["type"] != "header" {
        return Err(not("the first record is not a header"));
    }
    let format = header["format"].as_u64().unwrap_or(0);
    if format > FORMAT {
        return Err(JournalError::NewerFormat {
            path: path.to_path_buf(),
            found: format,
        });
    }
    Ok(header)
}

fn head_verdict(
    count: u64,
    head: String,
    expect: Option<&str>,
    find: impl Fn(&str) -> Option<usize>,
) -> Verdict {
    match expect {
        Some(h) if h != head => Verdict::Bad {
            seq: count,
            why: match find(h) {
                Some(i) => format!(
                    "the head should be record {i}, but {} more records follow it",
                    count - 1 - i as u64
                ),
                None => format!(
                    "the head is {head}, not the expected {h}: the journal was cut short or replaced"
                ),
            },
        },
        _ => Verdict::Intact {
            records: count,
            head,
        },
    }
}

/// The header and the last record of a journal, with its verdict: all
/// `journal list` needs, without parsing every record.
pub fn brief(path: &Path) -> Result<(Value, Value, Verdict), JournalError> {
    let verdict = verify_file(path, None)?;
    let bytes = fs::read(path).map_err(|e| JournalError::Read {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    let mut lines = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let header = check_header(path, lines.next().unwrap_or_default())?;
    let last = lines
        .next_back()
        .and_then(|l| serde_json::from_slice(l).ok())
        .unwrap_or(Value::Null);
    Ok((header, last, verdict))
}

/// Reads and verifies a journal. With `expect_head`, a journal whose last
/// record is not that hash (cut short, or extended) is bad.
pub fn load(path: &Path, expect_head: Option<&str>) -> Result<Loaded, JournalError> {
    load_without(path, expect_head, &[])
}

/// [`load`], keeping of each record all but its top-level fields named in
/// `without` (a reader that needs neither the diffs nor the chain's own
/// fields, once verified, need not build them). The chain is verified over
/// the whole lines all the same.
pub fn load_without(
    path: &Path,
    expect_head: Option<&str>,
    without: &[&str],
) -> Result<Loaded, JournalError> {
    // Read once: the records parsed are the bytes verified. The chain
    // first (on all cores), then the intact records parsed, also on all
    // cores.
    let mut bytes = Vec::new();
    crate::regular_file::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| JournalError::Read {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    let verdict = verify_from(path, &bytes[..], expect_head)?;
    let intact = match &verdict {
        Verdict::Intact { records, .. } | Verdict::TornTail { records, .. } => *records,
        Verdict::Bad { seq, .. } => *seq,
    } as usize;
    let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').take(intact).collect();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let per = lines.len().div_ceil(workers).max(1);
    let parsed: Vec<Result<Value, usize>> = std::thread::scope(|scope| {
        let handles: Vec<_> = lines
            .chunks(per)
            .enumerate()
            .map(|(c, part)| {
                scope.spawn(move || {
                    part.iter()
                        .enumerate()
                        .map(|(i, l)| parse_without(l, without).map_err(|_| c * per + i))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut records = Vec::with_capacity(parsed.len());
    for r in parsed {
        match r {
            Ok(v) => records.push(v),
            // Hashed right but not JSON: only a hand-made line can be that.
            Err(seq) => {
                return Ok(Loaded {
                    path: path.to_path_buf(),
                    records,
                    verdict: Verdict::Bad {
                        seq: seq as u64,
                        why: "the record is not valid JSON".into(),
                    },
                });
            }
        }
    }
    if records.is_empty() {
        // The header itself fails its hash: tampered, not "not a journal".
        if let Verdict::Bad { seq, why } = verdict {
            return Err(JournalError::Tampered {
                path: path.to_path_buf(),
                seq,
                why,
            });
        }
        return Err(JournalError::NotAJournal {
            path: path.to_path_buf(),
            why: "it has no whole record".into(),
        });
    }
    Ok(Loaded {
        path: path.to_path_buf(),
        records,
        verdict,
    })
}

/// One record, without the top-level fields named in `without`.
fn parse_without(line: &[u8], without: &[&str]) -> serde_json::Result<Value> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
    if without.is_empty() {
        return serde_json::from_slice(line);
    }
    struct Without<'a>(&'a [&'a str]);
    impl<'de> Visitor<'de> for Without<'_> {
        type Value = Value;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<Value, A::Error> {
            let mut map = serde_json::Map::new();
            while let Some(key) = fields.next_key::<String>()? {
                if self.0.contains(&key.as_str()) {
                    fields.next_value::<IgnoredAny>()?;
                } else {
                    let value = fields.next_value()?;
                    map.insert(key, value);
                }
            }
            Ok(Value::Object(map))
        }
    }
    impl<'de> DeserializeSeed<'de> for Without<'_> {
        type Value = Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(line);
    let record = Without(without).deserialize(&mut de)?;
    de.end()?;
    Ok(record)
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
        let h = blake3::hash(br#"{"a":"x","b":1}"#).to_hex().to_string();
        assert_eq!(
            encode(&r),
            format!("{{\"a\":\"x\",\"b\":1,\"hash\":\"{h}\"}}\n")
        );
    }

    #[test]
    fn lines_check_their_chain() {
        let a = encode(
            &json!({"seq": 0, "prev": GENESIS, "type": "header", "params": {"prev": "x", "seq": 9}}),
        );
        let ha = check_line(a.trim_end().as_bytes(), 0, GENESIS, Alg::Blake3).unwrap();
        let b = encode(
            &json!({"seq": 1, "prev": ha, "text": "a \\\" quote {\"seq\":7}", "z": {"prev": "no", "seq": 8}}),
        );
        assert!(check_line(b.trim_end().as_bytes(), 1, &ha, Alg::Blake3).is_ok());
        assert!(
            check_line(b.trim_end().as_bytes(), 2, &ha, Alg::Blake3)
                .unwrap_err()
                .contains("out of order")
        );
        assert!(
            check_line(b.trim_end().as_bytes(), 1, GENESIS, Alg::Blake3)
                .unwrap_err()
                .contains("broken link")
        );
        let tampered = b.replace("quote", "QUOTE");
        assert!(
            check_line(tampered.trim_end().as_bytes(), 1, &ha, Alg::Blake3)
                .unwrap_err()
                .contains("hash")
        );
    }

    /// A journal whose lines straddle the verifier's buffers every way: many
    /// short records, then lines longer than a buffer, then short ones; what
    /// `verify_file` says must agree with a line-by-line check of the same
    /// bytes, whole, torn at every kind of place, and with one byte changed.
    #[test]
    fn streamed_verification_agrees_with_a_line_by_line_check() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(dir.path(), "r").unwrap();
        j.append(json!({"type": "header", "format": FORMAT, "hash_alg": "blake3"}))
            .unwrap();
        for i in 0..30_000u32 {
            j.append(json!({"type": "intent", "n": i, "pad": "x".repeat((i % 97) as usize * 7)}))
                .unwrap();
        }
        for size in [(2 << 20) - 40, 5 << 20, 3] {
            j.append(json!({"type": "output", "text": "y".repeat(size)}))
                .unwrap();
        }
        for i in 0..5_000u32 {
            j.append(json!({"type": "done", "n": i})).unwrap();
        }
        let path = j.path().to_path_buf();
        let bytes = fs::read(&path).unwrap();
        let slow = |bytes: &[u8]| -> (u64, Option<u64>) {
            let mut prev = GENESIS.to_string();
            let mut seq = 0;
            for line in bytes.split_inclusive(|b| *b == b'\n') {
                let Some(line) = line.strip_suffix(b"\n") else {
                    break;
                };
                match check_line(line, seq, &prev, Alg::Blake3) {
                    Ok(h) => prev = h,
                    Err(_) => return (seq, Some(seq)),
                }
                seq += 1;
            }
            (seq, None)
        };
        let fast = |bytes: &[u8]| {
            fs::write(&path, bytes).unwrap();
            match verify_file(&path, None).unwrap() {
                Verdict::Intact { records, .. } | Verdict::TornTail { records, .. } => {
                    (records, None)
                }
                Verdict::Bad { seq, .. } => (seq, Some(seq)),
            }
        };
        assert_eq!(fast(&bytes), (35_004, None));
        assert_eq!(fast(&bytes), slow(&bytes));
        // Torn: in a short line, in a long one, right after a newline.
        for cut in [bytes.len() - 10, bytes.len() / 2, bytes.len() - 200_000] {
            assert_eq!(fast(&bytes[..cut]), slow(&bytes[..cut]), "cut at {cut}");
        }
        let at_newline = memchr::memrchr(b'\n', &bytes[..bytes.len() / 3]).unwrap() + 1;
        assert_eq!(fast(&bytes[..at_newline]), slow(&bytes[..at_newline]));
        assert!(matches!(
            {
                fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
                verify_file(&path, None).unwrap()
            },
            Verdict::TornTail { .. }
        ));
        // One byte changed, across the file (buffer edges included).
        for at in [
            100,
            (2 << 20) - 1,
            2 << 20,
            (2 << 20) + 1,
            bytes.len() / 2,
            bytes.len() - 100,
        ] {
            let mut t = bytes.clone();
            t[at] = if t[at] == b'x' { b'z' } else { b'x' };
            let (seq, bad) = fast(&t);
            assert_eq!((seq, bad), slow(&t), "changed at {at}");
            assert!(bad.is_some(), "changed at {at}");
        }
    }
}
