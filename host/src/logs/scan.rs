//! The scanner. A scan cuts the files a glob names into parts — a plain
//! file of at least [`SPLIT_MIN`] into byte ranges (at least one per
//! thread, at most [`RANGE`] each), a `.gz` file whole — and two threads
//! take the parts in order, each streaming its part through a buffer of
//! its own (`pread`, so they share no file position; `.gz` through
//! `flate2`). Both cores copy and search: copying the pages out of the
//! page cache is most of a scan's work, since no file is mapped. A range
//! owns the lines that start in it: it skips the piece of a line the range
//! before it owns, and reads past its end to finish its last line. The
//! results are put back in order: counts summed, line numbers shifted by
//! the lines of the file's earlier ranges, the kept lines the first ones.
//!
//! The regular expression runs over whole buffers, as ripgrep does; only
//! around a match are line boundaries found.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use regex::bytes::Regex;

use super::{Found, LINE_SHOWN, Scan, Until};
use crate::grants::VPath;
use crate::overlay::FsError;
use crate::progress::{Progress, Unit};

/// The buffer a scan reads into (one per thread): small enough that what
/// `read` copied is still in the core's cache when it is searched.
pub(super) const CHUNK: usize = 256 << 10;
/// A line longer than this is cut into pieces of this size.
pub(super) const MAX_LINE: usize = 16 << 20;
/// The most threads one scan uses.
const THREADS: usize = 2;
/// A plain file at least this large is cut into ranges, at least one per
/// thread.
const SPLIT_MIN: u64 = 8 << 20;
/// The largest range: the threads take ranges in turn, so one slowed down
/// (by another process on its core) holds the scan up by one range at most.
const RANGE: u64 = 32 << 20;

/// One opened log.
pub(super) struct Log {
    /// The name the glob matched (for the fix and for errors).
    pub path: VPath,
    pub file: File,
    pub size: u64,
    pub gz: bool,
}

/// The lines of a file one part owns: those that start at `start` or
/// after, before `end` (or the end of the file).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Span {
    pub start: u64,
    pub end: Option<u64>,
}

impl Span {
    pub const ALL: Span = Span {
        start: 0,
        end: None,
    };
}

/// What the scan of one span counted.
#[derive(Default, Debug, PartialEq)]
pub(super) struct Counts {
    /// Matching lines.
    pub matches: u64,
    /// The bytes of the lines the span owns.
    pub bytes: u64,
    /// Newlines in them (counted only when line numbers are wanted).
    pub lines: u64,
}

/// The bytes read by every thread of a scan, shown as progress.
pub(super) struct Meter {
    read: AtomicU64,
    progress: Mutex<Progress>,
}

impl Meter {
    pub fn new(total: u64) -> Meter {
        Meter {
            read: AtomicU64::new(0),
            progress: Mutex::new(Progress::new("scanning logs", total, Unit::Bytes)),
        }
    }

    fn add(&self, n: usize) {
        let done = self.read.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if let Ok(mut p) = self.progress.try_lock() {
            p.set(done);
        }
    }
}

/// A plain file read from `pos` on with `pread`.
struct At<'a> {
    file: &'a File,
    pos: u64,
    meter: &'a Meter,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        self.meter.add(n);
        Ok(n)
    }
}

/// A compressed file's bytes, counted as they are read.
struct Metered<'a> {
    file: &'a File,
    meter: &'a Meter,
}

impl Read for Metered<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.meter.add(n);
        Ok(n)
    }
}

/// The bytes of `span` of `log` (from the byte before it, which tells
/// whether a line starts at its first), decompressed.
pub(super) fn reader<'a>(log: &'a Log, span: Span, meter: &'a Meter) -> Box<dyn Read + 'a> {
    if log.gz {
        debug_assert_eq!(span, Span::ALL, "a compressed file is read whole");
        let raw = Metered {
            file: &log.file,
            meter,
        };
        return Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::with_capacity(1 << 16, raw),
        ));
    }
    Box::new(At {
        file: &log.file,
        pos: span.start.saturating_sub(1),
        meter,
    })
}

/// Tells the kernel a plain file is read in order (a larger readahead).
pub(super) fn advise_sequential(log: &Log) {
    if !log.gz {
        let _ = rustix::fs::fadvise(&log.file, 0, None, rustix::fs::Advice::Sequential);
    }
}

/// Streams `reader` (which starts at the byte before `span`, or at 0) and
/// calls `on_line(line_number, offset, line)` for each line of the span
/// matching `re` (line numbers count from the span's first line, and only
/// when `with_lines`; a `false` from `on_line` stops the calls but not the
/// count). `check` runs before every buffer; its error stops the scan.
pub(super) fn scan_lines(
    mut reader: impl Read,
    span: Span,
    re: &Regex,
    with_lines: bool,
    check: &dyn Fn() -> io::Result<()>,
    buf: &mut Vec<u8>,
    mut on_line: impl FnMut(u64, u64, &[u8]) -> bool,
) -> io::Result<Counts> {
    buf.resize(CHUNK, 0);
    let (mut filled, mut eof) = (0usize, false);
    let mut counts = Counts::default();
    // The file offset of buf[0]; whether the span's first line is still to
    // be found (skipping the end of a line the span before owns); whether
    // buf[0] continues a line cut at MAX_LINE; whether the span is done.
    let mut base = span.start.saturating_sub(1);
    let mut skipping = span.start > 0;
    let mut cut = false;
    let mut done = false;
    let mut calling = with_lines;
    while !done && (!eof || filled > 0) {
        check()?;
        while !eof && filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => eof = true,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if skipping {
            let skip = match memchr::memchr(b'\n', &buf[..filled]) {
                Some(i) => {
                    skipping = false;
                    i + 1
                }
                None => filled,
            };
            base += skip as u64;
            buf.copy_within(skip..filled, 0);
            filled -= skip;
            continue;
        }
        // The complete lines in the buffer (all of it at the end of input,
        // or a piece of an over-long line).
        let mut end = match memchr::memrchr(b'\n', &buf[..filled]) {
            Some(i) => i + 1,
            None if eof || filled >= MAX_LINE => filled,
            None => {
                buf.resize(buf.len() * 2, 0);
                continue;
            }
        };
        // Past the span's end, only the line that started before it.
        if let Some(stop) = span.end {
            if !cut && base >= stop {
                break;
            }
            let from = stop.saturating_sub(base).saturating_sub(1);
            if from < end as u64
                && let Some(i) = memchr::memchr(b'\n', &buf[from as usize..end])
            {
                end = from as usize + i + 1;
                done = true;
            }
        }
        let region = &buf[..end];
        let (mut pos, mut line_no, mut line_no_at) = (0usize, counts.lines + 1, 0usize);
        while pos < region.len() {
            let Some(m) = re.find_at(region, pos) else {
                break;
            };
            // An empty match after the last newline is on no line.
            if m.start() == region.len() && region.ends_with(b"\n") {
                break;
            }
            let start = memchr::memrchr(b'\n', &region[..m.start()]).map_or(0, |i| i + 1);
            let start = start.max(pos);
            let stop = memchr::memchr(b'\n', &region[start..]).map_or(region.len(), |i| start + i);
            let line = &region[start..stop];
            // A match that runs past the line's end is checked on the line
            // alone: lines never match across a newline. A pattern that
            // does match across them would make searching on from the next
            // line quadratic: this line and the rest of the region are
            // taken line by line (each line searched once, the deadline
            // checked every MiB).
            if m.end() > stop {
                let mut at = start;
                let mut since_check = 0usize;
                while at < region.len() {
                    let stop =
                        memchr::memchr(b'\n', &region[at..]).map_or(region.len(), |i| at + i);
                    let line = &region[at..stop];
                    if re.is_match(line) {
                        counts.matches += 1;
                        if calling {
                            line_no +=
                                memchr::memchr_iter(b'\n', &region[line_no_at..at]).count() as u64;
                            line_no_at = at;
                            calling = on_line(line_no, base + at as u64, line);
                        }
                    }
                    since_check += stop + 1 - at;
                    if since_check >= 1 << 20 {
                        check()?;
                        since_check = 0;
                    }
                    at = stop + 1;
                }
                break;
            }
            counts.matches += 1;
            if calling {
                line_no += memchr::memchr_iter(b'\n', &region[line_no_at..start]).count() as u64;
                line_no_at = start;
                calling = on_line(line_no, base + start as u64, line);
            }
            pos = stop + 1;
        }
        if with_lines {
            counts.lines += memchr::memchr_iter(b'\n', region).count() as u64;
        }
        cut = region.last().is_some_and(|b| *b != b'\n');
        counts.bytes += end as u64;
        base += end as u64;
        buf.copy_within(end..filled, 0);
        filled -= end;
        if buf.len() > CHUNK && filled < CHUNK {
            buf.truncate(CHUNK.max(filled));
            buf.resize(CHUNK, 0);
        }
    }
    Ok(counts)
}

/// One part of a scan: a span of one log.
struct Part {
    log: usize,
    span: Span,
    /// The last part of its log.
    last: bool,
}

/// One part's results: line numbers count from the part's first line.
struct PartOut {
    counts: Counts,
    found: Vec<Found>,
}

/// The parts of `logs`, in order.
fn parts(logs: &[Result<Log, FsError>], threads: usize) -> Vec<Part> {
    let mut parts = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        let n = match log {
            Ok(log) if !log.gz && log.size >= SPLIT_MIN => {
                (threads as u64).max(log.size.div_ceil(RANGE))
            }
            _ => 1,
        };
        let size = log.as_ref().map_or(0, |l| l.size);
        for k in 0..n {
            parts.push(Part {
                log: i,
                span: Span {
                    start: size * k / n,
                    end: (k + 1 < n).then(|| size * (k + 1) / n),
                },
                last: k + 1 == n,
            });
        }
    }
    parts
}

/// Counts (and, up to `keep`, returns) the lines of `logs` matching `re`:
/// the parts on up to two threads, the first error in order returned (as
/// a scan one file after another would).
pub(super) fn grep(
    logs: Vec<Result<Log, FsError>>,
    re: &Regex,
    keep: usize,
    until: &Until,
) -> Result<Scan, FsError> {
    // Asked once: it reads the cgroup's CPU quota.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let threads = cores.min(THREADS);
    let parts = parts(&logs, threads);
    let meter = Meter::new(logs.iter().flatten().map(|l| l.size).sum());
    logs.iter().flatten().for_each(advise_sequential);
    let next = AtomicUsize::new(0);
    // The first part (in order) that failed: the parts after it stop.
    let failed = AtomicUsize::new(usize::MAX);
    let results: Mutex<Vec<Option<Result<PartOut, FsError>>>> =
        Mutex::new(parts.iter().map(|_| None).collect());
    let work = || {
        let mut buf = Vec::new();
        loop {
            let j = next.fetch_add(1, Ordering::SeqCst);
            if j >= parts.len() || j > failed.load(Ordering::SeqCst) {
                return;
            }
            // At most what the parts before it (done so far) left of `keep`.
            let budget = {
                let done = results.lock().unwrap_or_else(|e| e.into_inner());
                let kept: usize = done[..j]
                    .iter()
                    .flatten()
                    .flatten()
                    .map(|p| p.found.len())
                    .sum();
                keep.saturating_sub(kept)
            };
            let part = &parts[j];
            let out = match &logs[part.log] {
                Err(e) => Err(e.clone()),
                Ok(log) => {
                    let check = || {
                        until.check()?;
                        match failed.load(Ordering::SeqCst) < j {
                            true => Err(io::Error::other("an earlier part failed")),
                            false => Ok(()),
                        }
                    };
                    scan_part(log, part.span, re, budget, &check, &meter, &mut buf)
                        .map_err(|e| super::scan_error(&log.path, e, until))
                }
            };
            if out.is_err() {
                failed.fetch_min(j, Ordering::SeqCst);
            }
            results.lock().unwrap_or_else(|e| e.into_inner())[j] = Some(out);
        }
    };
    // The helpers start on other cores (see `cores`).
    crate::cores::on_cores(threads.min(parts.len()).max(1), |_| work());
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut scan = Scan::default();
    let mut lines_before = 0;
    for (part, out) in parts.iter().zip(results) {
        let out = out.expect("every part before a failed one ran")?;
        if part.span.start == 0 {
            lines_before = 0;
        }
        for mut f in out.found {
            if scan.found.len() < keep {
                f.line_number += lines_before;
                scan.found.push(f);
            }
        }
        lines_before += out.counts.lines;
        scan.total += out.counts.matches;
        scan.bytes += out.counts.bytes;
        if part.last
            && let Ok(log) = &logs[part.log]
        {
            scan.files.push(log.path.to_string());
        }
    }
    scan.truncated = scan.total > scan.found.len() as u64 && keep > 0;
    Ok(scan)
}

/// Scans one part, keeping at most `budget` matching lines.
fn scan_part(
    log: &Log,
    span: Span,
    re: &Regex,
    budget: usize,
    check: &dyn Fn() -> io::Result<()>,
    meter: &Meter,
    buf: &mut Vec<u8>,
) -> io::Result<PartOut> {
    let file = log.path.to_string();
    let mut found: Vec<Found> = Vec::new();
    let counts = scan_lines(
        reader(log, span, meter),
        span,
        re,
        budget > 0,
        check,
        buf,
        |line_number, offset, line| {
            if found.len() >= budget {
                return false;
            }
            let captures = match re.captures(line) {
                Some(c) => c
                    .iter()
                    .skip(1)
                    // Cut like the line: a capture is never the way to hold a
                    // whole over-long line in memory.
                    .map(|g| {
                        g.map(|m| {
                            let b = m.as_bytes();
                            String::from_utf8_lossy(&b[..b.len().min(LINE_SHOWN)]).into_owned()
                        })
                    })
                    .collect(),
                None => Vec::new(),
            };
            let shown = &line[..line.len().min(LINE_SHOWN)];
            found.push(Found {
                file: file.clone(),
                line_number,
                offset,
                line: String::from_utf8_lossy(shown).into_owned(),
                captures,
            });
            true
        },
    )?;
    Ok(PartOut { counts, found })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::logs::compile;

    type Line = (u64, u64, String);

    /// Scans `span` of `text` as a part would read it.
    fn scan(text: &[u8], span: Span, pattern: &str) -> (Counts, Vec<Line>) {
        let re = compile(pattern).unwrap();
        let mut found = Vec::new();
        let from = (span.start.saturating_sub(1) as usize).min(text.len());
        let mut buf = Vec::new();
        let counts = scan_lines(
            &text[from..],
            span,
            &re,
            true,
            &|| Ok(()),
            &mut buf,
            |l, o, line| {
                found.push((l, o, String::from_utf8_lossy(line).into_owned()));
                true
            },
        )
        .unwrap();
        (counts, found)
    }

    fn whole(text: &[u8], pattern: &str) -> (Counts, Vec<Line>) {
        scan(text, Span::ALL, pattern)
    }

    /// Two spans cut at `at`, put back together as `grep` does.
    fn split(text: &[u8], at: u64, pattern: &str) -> (Counts, Vec<Line>) {
        let (a, mut found) = scan(
            text,
            Span {
                start: 0,
                end: Some(at),
            },
            pattern,
        );
        let (b, more) = scan(
            text,
            Span {
                start: at,
                end: None,
            },
            pattern,
        );
        found.extend(more.into_iter().map(|(l, o, s)| (l + a.lines, o, s)));
        let counts = Counts {
            matches: a.matches + b.matches,
            bytes: a.bytes + b.bytes,
            lines: a.lines + b.lines,
        };
        (counts, found)
    }

    #[test]
    fn matches_are_whole_lines_with_numbers_and_offsets() {
        let (n, found) = whole(b"a\nbad one\nc\nbad two", "bad");
        assert_eq!(n.matches, 2);
        assert_eq!(
            found,
            vec![(2, 2, "bad one".into()), (4, 12, "bad two".into())]
        );
    }

    #[test]
    fn a_match_never_spans_lines() {
        assert_eq!(whole(b"foo\nbar\n", r"foo\sbar").0.matches, 0);
        assert_eq!(whole(b"x foo\nfoo bar\n", r"foo\sbar").0.matches, 1);
    }

    #[test]
    fn one_count_per_line_and_binary_is_fine() {
        assert_eq!(whole(b"aaa\n\xff\xfe a \x00\n", "a").0.matches, 2);
        // An empty match at a buffer's end is no line.
        assert_eq!(whole(b"a\n", "^$").0.matches, 0);
        assert_eq!(whole(b"a\n\n", "^$").0.matches, 1);
        assert_eq!(whole(b"a", "$").0.matches, 1);
    }

    #[test]
    fn lines_longer_than_the_buffer() {
        let mut text = vec![b'x'; 3 * CHUNK];
        text.extend_from_slice(b" needle\nshort needle\n");
        let (n, found) = whole(&text, "needle");
        assert_eq!(n.matches, 2);
        assert_eq!(found[1].0, 2);
        assert_eq!(found[1].1, 3 * CHUNK as u64 + 8);
    }

    #[test]
    fn every_cut_gives_what_one_scan_gives() {
        let texts: [&[u8]; 4] = [
            b"needle one\n\nno\nneedle two needle\nx\nneedle",
            b"\n\nneedle\n\n",
            b"needleneedle\nneed\nle\nneedle\n",
            b"",
        ];
        for text in texts {
            for pattern in ["needle", r"e\s*$", "^$", r"d\nl"] {
                let one = whole(text, pattern);
                assert_eq!(one.0.bytes, text.len() as u64);
                for at in 0..=text.len() as u64 + 1 {
                    assert_eq!(
                        split(text, at, pattern),
                        one,
                        "{text:?} {pattern} cut at {at}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_line_longer_than_max_line_across_a_cut() {
        // The long line is cut in pieces of MAX_LINE from its start, by
        // whichever span owns it; a match across a piece's edge is lost in
        // both.
        let mut text = b"needle first\n".to_vec();
        let long_at = text.len();
        text.extend(std::iter::repeat_n(b'x', 2 * MAX_LINE + 100));
        text[long_at + 10..long_at + 16].copy_from_slice(b"needle");
        text[long_at + MAX_LINE + 5..long_at + MAX_LINE + 11].copy_from_slice(b"needle");
        text.extend_from_slice(b" needle\nlast needle\n");
        let one = whole(&text, "needle");
        assert_eq!(one.0.matches, 5);
        assert_eq!(one.1[2].1, (long_at + MAX_LINE) as u64);
        assert_eq!(one.1[4], (3, text.len() as u64 - 12, "last needle".into()));
        for at in [
            1,
            long_at as u64,
            long_at as u64 + 1,
            (long_at + MAX_LINE + 7) as u64,
        ] {
            assert_eq!(split(&text, at, "needle"), one, "cut at {at}");
        }
    }

    /// A log file in `dir` (compressed if the name ends in .gz).
    fn log(dir: &std::path::Path, name: &str, text: &[u8]) -> Log {
        if !name.ends_with(".gz") {
            return raw_log(dir, name, text);
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text).unwrap();
        raw_log(dir, name, &gz.finish().unwrap())
    }

    /// A log file in `dir` holding `bytes`.
    fn raw_log(dir: &std::path::Path, name: &str, bytes: &[u8]) -> Log {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let file = File::open(&path).unwrap();
        Log {
            path: VPath::parse(&format!("/logs/{name}")).unwrap(),
            size: file.metadata().unwrap().len(),
            file,
            gz: name.ends_with(".gz"),
        }
    }

    /// Numbered lines, every `every`th one a match; `bytes` in all.
    fn lines(prefix: &str, bytes: usize, every: usize) -> Vec<u8> {
        let mut text = Vec::new();
        let mut i = 0;
        while text.len() < bytes {
            let kind = if i % every == every - 1 {
                "needle"
            } else {
                "hay"
            };
            text.extend_from_slice(
                format!("{prefix} {i} {kind} {}\n", "-".repeat(i % 50)).as_bytes(),
            );
            i += 1;
        }
        text
    }

    /// What `grep` must find: (file, line number, offset, capture).
    fn expected(files: &[(&str, &[u8])]) -> Vec<(String, u64, u64, String)> {
        let mut all = Vec::new();
        for (name, text) in files {
            let mut offset = 0;
            for (i, line) in text.split(|b| *b == b'\n').enumerate() {
                let line = String::from_utf8_lossy(line);
                if let Some(at) = line.find("needle") {
                    let n = line[..at]
                        .trim_end()
                        .rsplit(' ')
                        .next()
                        .unwrap()
                        .to_string();
                    all.push((format!("/logs/{name}"), i as u64 + 1, offset, n));
                }
                offset += line.len() as u64 + 1;
            }
        }
        all
    }

    #[test]
    fn parts_on_two_threads_in_order_with_the_keep_cap() {
        let dir = tempfile::tempdir().unwrap();
        // A file cut into three ranges, two into two, a gzip one between
        // them, a small one last: the second has a match on the line across
        // its midpoint.
        let mut big = lines("a", SPLIT_MIN as usize + 1000, 997);
        let mid = big.len() / 2;
        let start = big[..mid].iter().rposition(|b| *b == b'\n').unwrap() + 1;
        big[start..start + 9].copy_from_slice(b"a 0 needl");
        big.splice(start + 9..start + 9, *b"e");
        let files: [(&str, Vec<u8>); 5] = [
            ("app.log.4", lines("e", RANGE as usize * 2 + 12345, 20011)),
            ("app.log.3", big),
            ("app.log.2.gz", lines("b", 3 << 20, 101)),
            ("app.log.1", lines("c", SPLIT_MIN as usize * 2, 1999)),
            ("app.log", lines("d", 5000, 7)),
        ];
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, t)| (*n, &t[..])).collect();
        let want = expected(&refs);
        assert!(
            want.iter().any(|w| w.2 == start as u64),
            "a match across the cut"
        );
        let re = compile(r"(\d+) needle").unwrap();
        let open = || -> Vec<Result<Log, FsError>> {
            files
                .iter()
                .map(|(n, t)| Ok(log(dir.path(), n, t)))
                .collect()
        };
        let until = Until::never();
        for keep in [0, 1, 5, want.len() / 3, want.len() - 1, want.len(), 10_000] {
            let scan = grep(open(), &re, keep, &until).unwrap();
            assert_eq!(scan.total, want.len() as u64);
            let bytes: usize = files.iter().map(|(_, t)| t.len()).sum();
            assert_eq!(scan.bytes, bytes as u64);
            let names: Vec<String> = files.iter().map(|(n, _)| format!("/logs/{n}")).collect();
            assert_eq!(scan.files, names);
            let got: Vec<_> = scan
                .found
                .iter()
                .map(|f| {
                    let n = f.captures[0].clone().unwrap();
                    (f.file.clone(), f.line_number, f.offset, n)
                })
                .collect();
            let kept = keep.min(want.len());
            assert_eq!(got, want[..kept], "keep {keep}");
            assert_eq!(scan.truncated, keep > 0 && keep < want.len(), "keep {keep}");
        }
    }

    #[test]
    fn the_first_error_in_order_and_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let big = lines("a", SPLIT_MIN as usize + 10, 3);
        let re = compile("needle").unwrap();
        let logs = vec![
            Ok(log(dir.path(), "a.log", &big)),
            Err(FsError::NotFound("/logs/b.log".into())),
            Ok(raw_log(dir.path(), "c.log.gz", b"not gzip")),
            Ok(log(dir.path(), "d.log", &big)),
        ];
        let until = Until::never();
        let err = grep(logs, &re, 10, &until).err().unwrap();
        assert_eq!(err, FsError::NotFound("/logs/b.log".into()));
        let logs = vec![
            Ok(log(dir.path(), "a.log", &big)),
            Ok(raw_log(dir.path(), "c.log.gz", b"not gzip")),
        ];
        let err = grep(logs, &re, 10, &until).err().unwrap();
        assert!(
            matches!(err, FsError::Io(ref m) if m.starts_with("/logs/c.log.gz")),
            "{err:?}"
        );
        let past = Until::new(std::time::Duration::ZERO, Default::default());
        let logs = vec![Ok(log(dir.path(), "a.log", &big))];
        let err = grep(logs, &re, 10, &past).err().unwrap();
        assert!(matches!(err, FsError::Deadline(_)), "{err:?}");
    }
}
