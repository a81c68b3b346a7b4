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
                let mut f = crate::regular_file::create_fresh(&tmp, 0o600)?;
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
        let bytes = crate::regular_file::read_in_state(&self.path(hash)).map_err(|e| {
            JournalError::Object {
                hash: hash.to_string(),
                why: e.to_string(),
            }
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
/// The file is cut into byte ranges of about 1 MiB (`CHUNK`), each
/// starting after a newline, that the cores take in turn; each reads its
/// range by offset, through a buffer of its own, and checks its lines:
/// each line's hash on its raw bytes (the body is the line up to
/// `,"hash":`), `seq` and `prev` found by a scan from the end of the body,
/// each line against the one before it in the range. Only the first line
/// of each range is then checked against the last of the range before. No
/// JSON tree is built but the header's.
pub fn verify_file(path: &Path, expect_head: Option<&str>) -> Result<Verdict, JournalError> {
    let read_error = |e: io::Error| JournalError::Read {
        path: path.to_path_buf(),
        why: e.to_string(),
    };
    let file = crate::regular_file::open(path).map_err(read_error)?;
    let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::Sequential);
    let size = file.metadata().map_err(read_error)?.len();
    verify_from(path, &file, size, expect_head)
}

/// Where a verifier reads from: a file, by offset, or bytes already read.
trait ReadAt: Sync {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let from = usize::try_from(offset).map_or(self.len(), |o| o.min(self.len()));
        let n = buf.len().min(self.len() - from);
        buf[..n].copy_from_slice(&self[from..from + n]);
        Ok(n)
    }
}

/// A range's buffer: 256 KiB (it stays in the core's cache between the
/// kernel's copy and the hash), grown for a longer line.
const BUF: usize = 256 << 10;

/// Journals smaller than this are checked on one core.
const SPLIT_FROM: u64 = 1 << 20;

/// Fills `buf` with what `input` holds from `offset`, not past `end`; how
/// many bytes (fewer than `buf` only at `end` or the end of the input).
fn read_full(
    input: &(impl ReadAt + ?Sized),
    buf: &mut [u8],
    offset: u64,
    end: u64,
) -> io::Result<usize> {
    let want = buf
        .len()
        .min(usize::try_from(end.saturating_sub(offset)).unwrap_or(usize::MAX));
    let mut got = 0;
    while got < want {
        match input.read_at(&mut buf[got..want], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// What one range of lines says about itself, each line checked against
/// the one before it in the range.
#[derive(Default)]
struct Range {
    lines: u64,
    /// The first line's facts (its place in the chain is checked against
    /// the range before it).
    first: Option<(Option<u64>, Option<Vec<u8>>)>,
    last_hash: Vec<u8>,
    /// The first bad line (its index in the range) and why.
    bad: Option<(u64, String)>,
    /// The index of the line whose hash is the expected head.
    head_at: Option<u64>,
    /// Bytes after its last newline: a torn last line.
    torn: bool,
}

impl Range {
    /// Checks one line (without its newline).
    fn line(&mut self, line: &[u8], alg: Alg, expect_head: Option<&str>) {
        let i = self.lines;
        let facts = match line_facts(line, alg) {
            Ok(f) => f,
            Err(why) => {
                self.bad = Some((i, why));
                return;
            }
        };
        match &self.first {
            None => self.first = Some((facts.seq, facts.prev.map(<[u8]>::to_vec))),
            Some((seq, _)) => {
                let want = seq.unwrap_or(0) + i;
                if let Err(why) = chain(&facts, want, &self.last_hash) {
                    self.bad = Some((i, why));
                    return;
                }
            }
        }
        self.last_hash.clear();
        self.last_hash.extend_from_slice(facts.hash);
        if expect_head.is_some_and(|h| h.as_bytes() == facts.hash) {
            self.head_at = Some(i);
        }
        self.lines += 1;
    }
}

/// Checks the lines of `input` that start at or after the first newline at
/// or after `lo` (at 0 when `lo` is 0) and up to the first newline at or
/// after `hi` (all the rest when `hi` is the end): the ranges of
/// consecutive `lo..hi` cover every line once. `buf` is reused.
fn check_range(
    input: &(impl ReadAt + ?Sized),
    bounds: (u64, u64, u64),
    alg: Alg,
    expect_head: Option<&str>,
    buf: &mut Vec<u8>,
) -> io::Result<Range> {
    let mut range = Range::default();
    let torn = for_lines(input, bounds, buf, &mut |line| {
        range.line(line, alg, expect_head);
        range.bad.is_none()
    })?;
    range.torn = torn;
    Ok(range)
}

/// How far past its range's end a range reads before it knows where its
/// last line ends; a longer line is read on to its end.
#[cfg(not(test))]
const SLACK: u64 = 4 << 10;
#[cfg(test)]
const SLACK: u64 = 16;

/// Calls `each` with the lines (without their newline) of `input` that
/// start at or after the first newline at or after `lo` (at 0 when `lo` is
/// 0) and end at or before the first newline at or after `hi` (all the rest
/// when `hi` is `end`), until it says to stop: the ranges of consecutive
/// `lo..hi` cover every line once. Whether bytes without a newline follow
/// the last line (a torn line: only the range that reaches `end` has one).
/// Reads stop a little past `hi` (at `end` when the line there is longer),
/// so a range copies little more than its own bytes.
fn for_lines(
    input: &(impl ReadAt + ?Sized),
    (lo, hi, end): (u64, u64, u64),
    buf: &mut Vec<u8>,
    each: &mut dyn FnMut(&[u8]) -> bool,
) -> io::Result<bool> {
    // `buf[from..have]` holds the input from `pos + from` on.
    let (mut pos, mut have, mut from) = (lo, 0, 0);
    // Past the line cut by `lo`: it belongs to the range before.
    let mut skipping = lo > 0;
    let mut limit = match hi < end {
        true => hi.saturating_add(SLACK).min(end),
        false => end,
    };
    loop {
        if have == buf.len() {
            // One line longer than the buffer.
            buf.resize(buf.len() * 2, 0);
        }
        if pos + have as u64 >= limit {
            // The line at `hi` goes on past the slack.
            limit = end;
        }
        let want = (buf.len() - have)
            .min(usize::try_from(limit - (pos + have as u64)).unwrap_or(usize::MAX));
        let got = read_full(input, &mut buf[have..have + want], pos + have as u64, limit)?;
        have += got;
        // At the end: `end` reached, or the input is shorter.
        let at_end = pos + have as u64 >= end || got < want;
        if skipping {
            match memchr::memchr(b'\n', &buf[..have]) {
                // That newline ends the range before; at or past `hi`, it
                // is also this one's end: this one is empty.
                Some(i) if pos + i as u64 >= hi && hi < end => return Ok(false),
                Some(i) => {
                    skipping = false;
                    from = i + 1;
                }
                None if at_end => return Ok(false),
                None => {
                    pos += have as u64;
                    have = 0;
                    continue;
                }
            }
        }
        let Some(last) = memchr::memrchr(b'\n', &buf[from..have]).map(|i| from + i) else {
            if at_end {
                return Ok(have > from);
            }
            continue;
        };
        let mut start = from;
        for i in memchr::memchr_iter(b'\n', &buf[from..=last]).map(|i| from + i) {
            let go_on = each(&buf[start..i]);
            start = i + 1;
            if !go_on || (pos + i as u64 >= hi && hi < end) {
                return Ok(false);
            }
        }
        buf.copy_within(start..have, 0);
        pos += start as u64;
        have -= start;
        from = 0;
        if at_end {
            return Ok(have > 0);
        }
    }
}

/// [`verify_file`] of the `size` bytes `input` holds, the journal at `path`.
fn verify_from(
    path: &Path,
    input: &(impl ReadAt + ?Sized),
    size: u64,
    expect_head: Option<&str>,
) -> Result<Verdict, JournalError> {
    let read_error = |e: io::Error| JournalError::Read {
        path: path.to_path_buf(),
        why: e.to_string(),
    };
    // The header first: it names the algorithm.
    let mut first = vec![0u8; 64 << 10];
    let mut have = 0;
    let header_end = loop {
        let got = read_full(input, &mut first[have..], have as u64, size).map_err(read_error)?;
        have += got;
        if let Some(i) = memchr::memchr(b'\n', &first[..have]) {
            break i;
        }
        if have < first.len() {
            if have == 0 {
                return Err(JournalError::NotAJournal {
                    path: path.to_path_buf(),
                    why: "it is empty".into(),
                });
            }
            // Not even one whole line: a torn header.
            check_header(path, &first[..have])?;
            return Ok(Verdict::TornTail {
                records: 0,
                head: GENESIS.into(),
            });
        }
        first.resize(first.len() * 2, 0);
    };
    let alg = header_alg(path, &check_header(path, &first[..header_end])?)?;
    drop(first);

    let threads = match size >= SPLIT_FROM {
        true => std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 8)),
        false => 1,
    };
    // Ranges of about a megabyte, taken in turn by whichever thread is
    // free: one that starts late (a new thread may wait a while for a
    // core) does less, and none waits for it.
    let ranges = size.div_ceil(CHUNK).max(1);
    verify_ranges(path, input, size, expect_head, alg, ranges, threads)
}

/// The byte range checked as one piece, taken by one thread.
const CHUNK: u64 = 1 << 20;

/// The lines of `input` checked in `ranges` ranges, on `threads` threads.
fn verify_ranges(
    path: &Path,
    input: &(impl ReadAt + ?Sized),
    size: u64,
    expect_head: Option<&str>,
    alg: Alg,
    ranges: u64,
    threads: usize,
) -> Result<Verdict, JournalError> {
    let read_error = |e: io::Error| JournalError::Read {
        path: path.to_path_buf(),
        why: e.to_string(),
    };
    let bounds = |k: u64| match k {
        _ if k + 1 == ranges => (size * k / ranges, size, size),
        _ => (size * k / ranges, size * (k + 1) / ranges, size),
    };
    let next = std::sync::atomic::AtomicU64::new(0);
    let spawned = std::time::Instant::now();
    let work = |thread: usize| {
        let late = spawned.elapsed();
        let mut buf = vec![0u8; BUF.min(usize::try_from(size).unwrap_or(BUF) + 1)];
        let mut done = Vec::new();
        loop {
            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if k >= ranges {
                break;
            }
            done.push((k, check_range(input, bounds(k), alg, expect_head, &mut buf)));
        }
        if thread > 0 {
            tracing::debug!(
                "verify: helper {thread} started {:.3} ms after its spawn and checked {} of {ranges} ranges",
                late.as_secs_f64() * 1e3,
                done.len()
            );
        }
        done
    };
    let mut checked: Vec<(u64, io::Result<Range>)> = crate::cores::on_cores(threads, work)
        .into_iter()
        .flatten()
        .collect();
    tracing::debug!(
        "verify: {ranges} ranges on {threads} threads in {:.3} ms",
        spawned.elapsed().as_secs_f64() * 1e3
    );
    checked.sort_by_key(|(k, _)| *k);
    let ranges = checked.into_iter().map(|(_, r)| r);

    // Each range's first line against the last line before it.
    let mut seq = 0u64;
    let mut prev = GENESIS.as_bytes().to_vec();
    let mut head_at: Option<u64> = None;
    let mut torn = false;
    for range in ranges {
        let range = range.map_err(read_error)?;
        if let Some((first_seq, first_prev)) = &range.first {
            let facts = Facts {
                hash: &[],
                seq: *first_seq,
                prev: first_prev.as_deref(),
            };
            if let Err(why) = chain(&facts, seq, &prev) {
                return Ok(Verdict::Bad { seq, why });
            }
        }
        if let Some((i, why)) = range.bad {
            return Ok(Verdict::Bad { seq: seq + i, why });
        }
        if let Some(i) = range.head_at {
            head_at = Some(seq + i);
        }
        if range.lines > 0 {
            prev = range.last_hash;
        }
        seq += range.lines;
        // Only the last range that holds anything can end torn.
        torn |= range.torn;
    }
    let head = String::from_utf8_lossy(&prev).into_owned();
    tracing::debug!(path = %path.display(), records = seq, alg = alg.name(), "chain checked");
    if torn {
        return Ok(Verdict::TornTail { records: seq, head });
    }
    Ok(head_verdict(seq, head, expect_head, |_| {
        head_at.map(|s| s as usize)
    }))
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
    let file = crate::regular_file::open(path).map_err(|e| JournalError::Read {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    load_from(path, file, expect_head, without)
}

/// [`load_without`] of the journal open as `file` (at `path`): a reader
/// that decides about the file on its descriptor reads these bytes.
pub fn load_from(
    path: &Path,
    mut file: File,
    expect_head: Option<&str>,
    without: &[&str],
) -> Result<Loaded, JournalError> {
    // Read once: the records parsed are the bytes verified. The chain
    // first (on all cores), then the intact records parsed, also on all
    // cores.
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| JournalError::Read {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    let verdict = verify_from(path, &bytes[..], bytes.len() as u64, expect_head)?;
    let intact = match &verdict {
        Verdict::Intact { records, .. } | Verdict::TornTail { records, .. } => *records,
        Verdict::Bad { seq, .. } => *seq,
    } as usize;
    let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').take(intact).collect();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let per = lines.len().div_ceil(workers).max(1);
    let parts: Vec<&[&[u8]]> = lines.chunks(per).collect();
    let parsed: Vec<Result<Value, usize>> = crate::cores::on_cores(parts.len(), |c| {
        parts[c]
            .iter()
            .enumerate()
            .map(|(i, l)| parse_without(l, without).map_err(|_| c * per + i))
            .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect();
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
                if own_journal(&e.path().join("journal.jsonl"))
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

/// The highest `sequence` (see [`crate::policy::RunLock::sequence`]) the
/// headers of the state directory's `newest` journals by run id record
/// (`usize::MAX`: all of them); 0 when none does. Only journals this user's
/// defops-wasm wrote count, as in [`list`].
pub fn highest_sequence(state: &Path, newest: usize) -> u64 {
    let Ok(entries) = fs::read_dir(state.join("runs")) else {
        return 0;
    };
    // Names first: only the newest are looked at further.
    let mut ids: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
    ids.sort();
    ids.iter()
        .rev()
        .map(|id| state.join("runs").join(id).join("journal.jsonl"))
        .filter(|j| own_journal(j))
        .take(newest)
        .filter_map(|j| first_record(&j))
        .filter_map(|h| h["sequence"].as_u64())
        .filter(|n| *n < crate::policy::MAX_SEQUENCE)
        .max()
        .unwrap_or(0)
}

/// The first record of a journal, parsed (not verified): the header.
pub fn first_record(path: &Path) -> Option<Value> {
    use std::io::BufRead;
    let mut line = String::new();
    io::BufReader::new(crate::regular_file::open(path).ok()?)
        .read_line(&mut line)
        .ok()?;
    serde_json::from_str(&line).ok()
}

/// Where the journal with `header` (run `id`) stands among a state
/// directory's runs and rollbacks, in the order they changed the disk: by
/// the `sequence` taken under the lock. A journal without one (a dry-run's,
/// or an older version's) sorts before every one with it, by id.
pub fn change_order(header: &Value, id: &str) -> (bool, u64, String) {
    let sequence = header["sequence"].as_u64();
    (sequence.is_some(), sequence.unwrap_or(0), id.to_string())
}

/// The entries under `runs/` that hold a journal but not one this user's
/// defops-wasm wrote ([`own_journal`]): [`list`] leaves them out, and a
/// reader says so rather than count fewer runs in silence.
pub fn not_own(state: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(state.join("runs")) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = entries
        .flatten()
        .filter(|e| {
            let j = e.path().join("journal.jsonl");
            fs::symlink_metadata(&j).is_ok() && !own_journal(&j)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    ids
}

/// Whether `journal` (`runs/<id>/journal.jsonl`) is one this user's
/// defops-wasm wrote: the file and its directory, neither a link, owned by
/// this user or root and writable by no one else, the file with one name.
/// Anything else under `runs/` (made while the state directory was
/// writable by others) is not a run of this host's.
pub fn own_journal(journal: &Path) -> bool {
    own_journal_as(journal).is_some()
}

/// [`own_journal`]: the journal's device and inode when it is one.
pub fn own_journal_as(journal: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    let alone = |m: &fs::Metadata| (m.uid() == me || m.uid() == 0) && m.mode() & 0o022 == 0;
    let dir = fs::symlink_metadata(journal.parent()?).ok()?;
    let file = fs::symlink_metadata(journal).ok()?;
    (dir.is_dir() && alone(&dir) && file.is_file() && alone(&file) && file.nlink() == 1)
        .then(|| (file.dev(), file.ino()))
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

    /// Generated bytes (lines from empty to longer than the buffer, often
    /// a newline right on a range's nominal start, sometimes no newline at
    /// the end) cut into 1 to 8 ranges: the ranges' lines, in order, are
    /// the lines of the whole, each once, and only the last can be torn.
    #[test]
    fn ranges_cover_every_line_once() {
        let mut rng = crate::fuzzing::Rng::new(0xC0FFEE);
        for case in 0..400 {
            let ranges = 1 + rng.below(8) as u64;
            let mut bytes = Vec::new();
            for _ in 0..rng.below(40) {
                let len = match rng.below(10) {
                    0 => rng.below(3 * 64),
                    1 if case % 50 == 0 => BUF + rng.below(BUF),
                    _ => rng.below(20),
                };
                bytes.extend((0..len).map(|i| b'a' + (i % 26) as u8));
                bytes.push(b'\n');
            }
            if rng.below(3) == 0 {
                bytes.extend_from_slice(b"torn");
            }
            // A newline right on a nominal start.
            let size = bytes.len();
            if size > 0 && rng.below(2) == 0 {
                let k = rng.below(ranges as usize) as u64;
                let at = (size as u64 * k / ranges) as usize;
                if at < size {
                    bytes[at] = b'\n';
                }
            }
            let whole: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
            let (complete, tail) = whole.split_at(whole.len() - 1);
            let size = bytes.len() as u64;
            let mut seen: Vec<Vec<u8>> = Vec::new();
            let mut torn = Vec::new();
            let mut buf = vec![0u8; 1 + rng.below(256)];
            for k in 0..ranges {
                let hi = match k + 1 == ranges {
                    true => size,
                    false => size * (k + 1) / ranges,
                };
                let t = for_lines(
                    &bytes[..],
                    (size * k / ranges, hi, size),
                    &mut buf,
                    &mut |l| {
                        seen.push(l.to_vec());
                        true
                    },
                )
                .unwrap();
                torn.push(t);
            }
            assert_eq!(seen, complete, "case {case}, {ranges} ranges: {bytes:?}");
            let want_torn = !tail[0].is_empty();
            assert_eq!(
                torn.iter().filter(|t| **t).count(),
                usize::from(want_torn),
                "case {case}"
            );
        }
    }

    /// Generated journals (lines from a few bytes to longer than a range's
    /// buffer), cut short or with a byte changed anywhere after the header,
    /// checked in 1 to 5 ranges: every verdict, reasons and heads included,
    /// is the one a line-by-line check of the same bytes gives.
    #[test]
    fn checking_in_ranges_agrees_with_a_line_by_line_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let slow = |bytes: &[u8], expect: Option<&str>| -> Verdict {
            let mut prev = GENESIS.to_string();
            let mut seq = 0;
            let mut hashes = Vec::new();
            let mut rest = bytes;
            while let Some(i) = memchr::memchr(b'\n', rest) {
                match check_line(&rest[..i], seq, &prev, Alg::Blake3) {
                    Ok(h) => prev = h,
                    Err(why) => return Verdict::Bad { seq, why },
                }
                hashes.push(prev.clone());
                seq += 1;
                rest = &rest[i + 1..];
            }
            if !rest.is_empty() {
                return Verdict::TornTail {
                    records: seq,
                    head: prev,
                };
            }
            head_verdict(seq, prev, expect, |h| hashes.iter().rposition(|x| x == h))
        };
        let mut rng = crate::fuzzing::Rng::new(0x5EED);
        for case in 0..8 {
            let mut j = Journal::create(dir.path(), &format!("r{case}")).unwrap();
            j.append(json!({"type": "header", "format": FORMAT, "hash_alg": "blake3"}))
                .unwrap();
            for n in 0..100 + rng.below(1500) {
                let len = match rng.below(40) {
                    0 if case % 6 == 0 => BUF + rng.below(BUF / 4),
                    0..4 => rng.below(64 << 10),
                    _ => rng.below(600),
                };
                j.append(json!({"type": "intent", "n": n, "pad": "p".repeat(len)}))
                    .unwrap();
            }
            let bytes = fs::read(j.path()).unwrap();
            let header_end = memchr::memchr(b'\n', &bytes).unwrap() + 1;
            let mut variants = vec![bytes.clone()];
            for _ in 0..4 {
                let cut = header_end + rng.below(bytes.len() - header_end);
                variants.push(bytes[..cut].to_vec());
                let mut changed = bytes.clone();
                let at = header_end + rng.below(bytes.len() - header_end);
                changed[at] = if changed[at] == b'x' { b'z' } else { b'x' };
                variants.push(changed);
            }
            // Where ranges meet, for 2 to 5 of them: a line missing there
            // (its neighbour's chain is checked across the join), and the
            // journal cut so that a newline falls right on a range's
            // nominal start.
            let ends: Vec<usize> = memchr::memchr_iter(b'\n', &bytes).map(|i| i + 1).collect();
            let joins = if case % 6 == 0 { 0 } else { 5 };
            for w in 2..=joins {
                for k in 1..w {
                    let at = ends.partition_point(|e| *e < bytes.len() * k / w);
                    for l in at.saturating_sub(2)..(at + 2).min(ends.len() - 1) {
                        let mut gap = bytes[..ends[l]].to_vec();
                        gap.extend_from_slice(&bytes[ends[l + 1]..]);
                        variants.push(gap);
                    }
                }
            }
            let on_newline =
                |cut: &&usize| (2..=joins).any(|w| (1..w).any(|k| bytes[**cut * k / w] == b'\n'));
            for &cut in ends.iter().rev().take(300).filter(on_newline).take(6) {
                variants.push(bytes[..cut].to_vec());
            }
            let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
            let some_hash = |k: usize| {
                let l = lines[k.min(lines.len() - 2)];
                String::from_utf8_lossy(&l[l.len() - 66..l.len() - 2]).into_owned()
            };
            let heads = [
                None,
                Some(some_hash(lines.len())),
                Some(some_hash(rng.below(lines.len()))),
            ];
            for (v, variant) in variants.iter().enumerate() {
                // The expected heads on the journal as written.
                for expect in heads.iter().take(if v == 0 { 3 } else { 1 }) {
                    let want = slow(variant, expect.as_deref());
                    for workers in 1..=5 {
                        let got = verify_ranges(
                            &path,
                            &variant[..],
                            variant.len() as u64,
                            expect.as_deref(),
                            Alg::Blake3,
                            workers,
                            1 + workers as usize % 3,
                        )
                        .unwrap();
                        assert_eq!(got, want, "case {case}, variant {v}, {workers} ranges");
                    }
                }
            }
            fs::write(&path, &bytes).unwrap();
            assert_eq!(verify_file(&path, None).unwrap(), slow(&bytes, None));
        }
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
