//! The `.part` a killed run leaves, for every format. A real seekable file is written from a
//! GetMedia body (one of the captures, read in place, or a small body built from the input) by
//! the format's own writer, cut anywhere, garbage appended, and recovered:
//!
//! * recovery never panics, whatever the cut and the garbage;
//! * a file cut right after a whole fragment, with nothing after it, is recovered, and
//!   `finish()` gives exactly the bytes (and for MP4 the duration and the faststart rewrite)
//!   of an uninterrupted run that stopped after that fragment;
//! * raw output is recovered by truncation to the recorded bytes: the truncated file reads to
//!   `Finish::Clean` with exactly the recorded fragments, and a cut file never reads as clean
//!   with a fragment begun and not ended.
//!
//! The input: `[body, format, cut kind, k, offset ×4, piece ×2, seed ×8, garbage…]`. Missing
//! bytes read as 0. `KVS_FIXTURES` names the captures directory (default:
//! `../shared/fixtures/kvs-getmedia` beside the repository); without it only built bodies run.
#![no_main]

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use mkv::ebml::{self, id};
use mkv::{Event, Finish, Fragment, Parser, Patch};

const APP: &str = "kvs-dl fuzz";

fn stream_tag() -> (String, String) {
    (
        "KVS_STREAM_ARN".into(),
        "arn:aws:kinesisvideo:us-west-2:123456789012:stream/fuzz/1700000000000".into(),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Format {
    Raw,
    Mkv,
    Mp4 { faststart: bool },
}

impl Format {
    fn from_byte(b: u8) -> Format {
        match b % 4 {
            0 => Format::Raw,
            1 => Format::Mkv,
            2 => Format::Mp4 { faststart: false },
            _ => Format::Mp4 { faststart: true },
        }
    }
}

/// The format's writer, as the download loop drives it.
enum Writer {
    Mkv(mkv::Muxer),
    Mp4(mp4::Muxer),
}

fn mkv_options() -> mkv::Options {
    mkv::Options {
        seekable: true,
        app: APP.into(),
        stream_tag: stream_tag(),
    }
}

fn mp4_options(faststart: bool) -> mp4::Options {
    mp4::Options {
        seekable: true,
        faststart,
        app: APP.into(),
        stream_tag: stream_tag(),
    }
}

/// Appends the new bytes and applies the patches, like a seekable sink.
fn apply(file: &mut Vec<u8>, bytes: &[u8], patches: &[Patch]) {
    file.extend_from_slice(bytes);
    for p in patches {
        let at = p.offset as usize;
        assert!(
            at + p.bytes.len() <= file.len(),
            "a patch at {at} of {} bytes past the end {}",
            p.bytes.len(),
            file.len()
        );
        file[at..at + p.bytes.len()].copy_from_slice(&p.bytes);
    }
}

impl Writer {
    fn new(format: Format) -> Option<Writer> {
        match format {
            Format::Raw => None,
            Format::Mkv => Some(Writer::Mkv(mkv::Muxer::new(mkv_options()))),
            Format::Mp4 { faststart } => Some(Writer::Mp4(mp4::Muxer::new(mp4_options(faststart)))),
        }
    }

    /// Feeds one event; false when the fragment is refused (a new file would begin).
    fn event(&mut self, e: &Event<'_>) -> bool {
        match self {
            Writer::Mkv(m) => m.event(e).is_ok(),
            Writer::Mp4(m) => m.event(e).is_ok(),
        }
    }

    fn take(&mut self, file: &mut Vec<u8>) {
        match self {
            Writer::Mkv(m) => m.drain(|b, p| apply(file, b, p)),
            Writer::Mp4(m) => m.drain(|b, p| apply(file, b, p)),
        }
    }

    /// Finishes `file`; returns the MP4 faststart file when there is one, and the duration.
    fn finish(&mut self, file: &mut Vec<u8>) -> (bool, Option<Vec<u8>>, u64) {
        let done = match self {
            Writer::Mkv(m) => m.finish(),
            Writer::Mp4(m) => m.finish(),
        };
        self.take(file);
        match self {
            Writer::Mkv(m) => (done, None, m.duration_ms()),
            Writer::Mp4(m) => {
                let fast = m.faststart().map(|r| {
                    let mut out = r.head.clone();
                    for range in &r.ranges {
                        let range = range.start as usize..range.end as usize;
                        assert!(range.end <= file.len(), "a faststart range past the end");
                        out.extend_from_slice(&file[range]);
                    }
                    out
                });
                (done, fast, m.duration_ms())
            }
        }
    }
}

/// A run stopped after `limit` whole fragments (or at the end of the body, a parse error or a
/// refused fragment): the file as its `.part` holds it (what followed the last whole fragment
/// rolled back, as the sink does), the fragments in it, and the writer.
struct Run {
    file: Vec<u8>,
    fragments: Vec<Fragment>,
    /// The file length after each whole fragment.
    ends: Vec<usize>,
    writer: Option<Writer>,
}

fn write(body: &[u8], format: Format, limit: Option<usize>) -> Run {
    let mut parser = Parser::new();
    parser.push(body);
    let mut run = Run {
        file: Vec::new(),
        fragments: Vec::new(),
        ends: Vec::new(),
        writer: Writer::new(format),
    };
    // Raw keeps, of each whole fragment, its chunk from the EBML header (or from the end of the
    // fragment before, when no header came since) to the end of its closing tags.
    let mut kept_from = 0u64;
    while limit.is_none_or(|l| run.fragments.len() < l) {
        let Ok(Some((event, at))) = parser.next_event_at() else {
            break;
        };
        match &event {
            Event::EbmlHeader(h) => kept_from = at - h.len() as u64,
            Event::FragmentEnd(f) if run.writer.is_none() => {
                run.file
                    .extend_from_slice(&body[kept_from as usize..at as usize]);
                kept_from = at;
                run.fragments.push(f.clone());
                run.ends.push(run.file.len());
            }
            _ => {}
        }
        if let Some(w) = run.writer.as_mut() {
            if !w.event(&event) {
                break;
            }
            w.take(&mut run.file);
            if let Event::FragmentEnd(f) = &event {
                run.fragments.push(f.clone());
                run.ends.push(run.file.len());
            }
        }
    }
    run.file.truncate(run.ends.last().copied().unwrap_or(0));
    run
}

/// Length and hash: the finished files of a capture are too big to keep for every cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Print(usize, u64);

fn print(bytes: &[u8]) -> Print {
    let mut h = DefaultHasher::new();
    h.write(bytes);
    Print(bytes.len(), h.finish())
}

/// An uninterrupted run over the first k fragments, finished.
struct Finished {
    /// The `.part` after fragment k when it is not a prefix of [`Recorded::part`].
    own: Option<Vec<u8>>,
    file: Print,
    fast: Option<Print>,
    duration_ms: u64,
}

/// A body written in one format: the longest `.part`, and per k the uninterrupted run over
/// the first k fragments.
struct Recorded {
    part: Vec<u8>,
    fragments: Vec<Fragment>,
    ends: Vec<usize>,
    finished: Vec<Finished>,
}

fn record(body: &[u8], format: Format) -> Recorded {
    let all = write(body, format, None);
    let mut finished = Vec::new();
    if format != Format::Raw {
        for k in 1..=all.fragments.len() {
            let mut run = write(body, format, Some(k));
            assert_eq!(run.fragments, all.fragments[..k]);
            let own = (run.file[..] != all.file[..run.file.len().min(all.file.len())])
                .then(|| run.file.clone());
            let (done, fast, duration_ms) = run.writer.as_mut().unwrap().finish(&mut run.file);
            assert!(done);
            finished.push(Finished {
                own,
                file: print(&run.file),
                fast: fast.as_deref().map(print),
                duration_ms,
            });
        }
    }
    Recorded {
        part: all.file,
        fragments: all.fragments,
        ends: all.ends,
        finished,
    }
}

/// The captures, read in place, sorted by name.
fn captures() -> &'static [Vec<u8>] {
    static CAPTURES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    CAPTURES.get_or_init(|| {
        let dir = std::env::var_os("KVS_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/kvs-getmedia")
            });
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!("no captures at {}: built bodies only", dir.display());
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "mkv"))
            .collect();
        paths.sort();
        paths.iter().filter_map(|p| std::fs::read(p).ok()).collect()
    })
}

/// Recorded captures, made on first use.
fn recorded(capture: usize, format: Format) -> Arc<Recorded> {
    type Cache = Mutex<HashMap<(usize, Format), Arc<Recorded>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(r) = cache.lock().unwrap().get(&(capture, format)) {
        return r.clone();
    }
    let r = Arc::new(record(&captures()[capture], format));
    eprintln!(
        "capture {capture} as {format:?}: {} whole fragments, {} bytes",
        r.fragments.len(),
        r.part.len()
    );
    cache.lock().unwrap().insert((capture, format), r.clone());
    r
}

/// The fuzz input, read front to back; missing bytes are 0.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }
}

/// What recovering a cut file gave: the finished file, its faststart rewrite and duration.
type Recovered = Result<(Vec<u8>, Option<Vec<u8>>, u64), String>;

/// Recovers `data` as the product does: pushed in pieces, then finished with what the state
/// records (`bytes` is the `.part`'s length, which the product cuts the file to).
fn recover(format: Format, data: &[u8], piece: usize, recorded: &[Fragment]) -> Recovered {
    let first = recorded.first().cloned().unwrap_or_default();
    let last = recorded.last().cloned().unwrap_or_default();
    let (bytes, n) = (data.len() as u64, recorded.len() as u64);
    let mut writer = match format {
        Format::Raw => unreachable!(),
        Format::Mkv => {
            let mut r = mkv::Recovery::new(mkv_options());
            for p in data.chunks(piece) {
                r.push(p).map_err(|e| e.to_string())?;
            }
            Writer::Mkv(r.finish(bytes, first, last, n).map_err(|e| e.to_string())?)
        }
        Format::Mp4 { faststart } => {
            let mut r = mp4::Recovery::new(mp4_options(faststart));
            for p in data.chunks(piece) {
                r.push(p).map_err(|e| e.to_string())?;
            }
            Writer::Mp4(r.finish(bytes, first, last, n).map_err(|e| e.to_string())?)
        }
    };
    let mut file = data.to_vec();
    let (_, fast, duration) = writer.finish(&mut file);
    Ok((file, fast, duration))
}

/// Reads a raw file back: the fragments it holds whole, how many began, and how it ended.
fn read_raw(data: &[u8], piece: usize) -> (Vec<String>, usize, Result<Finish, String>) {
    let mut p = Parser::new();
    let (mut ends, mut starts) = (Vec::new(), 0);
    for chunk in data.chunks(piece) {
        p.push(chunk);
        loop {
            match p.next_event() {
                Ok(Some(Event::FragmentStart(_))) => starts += 1,
                Ok(Some(Event::FragmentEnd(f))) => ends.push(f.number),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return (ends, starts, Err(e.to_string())),
            }
        }
    }
    let end = p.finish().map_err(|e| e.to_string());
    (ends, starts, end)
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let body_choice = input.u8();
    let format = Format::from_byte(input.u8());
    let cut_kind = input.u8();
    let k_choice = input.u8();
    let offset = u32::from_le_bytes(input.bytes());
    let piece = usize::from(u16::from_le_bytes(input.bytes()));
    let seed = u64::from_le_bytes(input.bytes());
    let garbage = if cut_kind & 1 == 1 { input.0 } else { &[] };

    // Built bodies half the time: they are small, so the fuzzer runs fast on them.
    let captures = captures();
    let built;
    let (body, rec): (&[u8], Arc<Recorded>) = if body_choice < 128 || captures.is_empty() {
        built = body::build(seed);
        (&built, Arc::new(record(&built, format)))
    } else {
        let c = usize::from(body_choice - 128) % captures.len();
        (&captures[c], recorded(c, format))
    };
    let n = rec.fragments.len();
    let k = usize::from(k_choice) % (n + 1);
    let boundary = if k == 0 { 0 } else { rec.ends[k - 1] };
    let len = rec.part.len();
    let delta = (offset % 64) as usize + 1;
    let cut = match (cut_kind >> 1) % 4 {
        0 => boundary,
        1 => (boundary + delta).min(len),
        2 => boundary.saturating_sub(delta),
        _ => offset as usize % (len + 1),
    };
    // The `.part` as the file system holds it after fragment k: patched as the writer had it.
    let whole = rec.ends.partition_point(|&e| e <= cut);
    let own = match whole {
        0 => None,
        w => rec.finished.get(w - 1).and_then(|f| f.own.as_deref()),
    };
    let source = match own {
        Some(own) if cut == own.len() => own,
        _ => &rec.part[..],
    };
    let mut file = source[..cut].to_vec();
    file.extend_from_slice(garbage);
    let piece = if piece == 0 { file.len().max(1) } else { piece };
    let exact = garbage.is_empty() && whole > 0 && cut == rec.ends[whole - 1];
    let recorded_numbers = || -> Vec<String> {
        rec.fragments[..whole]
            .iter()
            .map(|f| f.number.clone())
            .collect()
    };

    if format == Format::Raw {
        let (ends, starts, end) = read_raw(&file, piece);
        if end == Ok(Finish::Clean) {
            assert_eq!(
                starts,
                ends.len(),
                "clean, with a fragment begun and not ended"
            );
        }
        // What lies before the cut was read whole, before anything the garbage did.
        let recorded = recorded_numbers();
        assert!(
            ends.len() >= recorded.len(),
            "lost whole fragments: {ends:?}"
        );
        assert_eq!(ends[..recorded.len()], recorded[..]);
        if exact || (garbage.is_empty() && cut == 0) {
            assert_eq!(
                end,
                Ok(Finish::Clean),
                "cut at {cut} after {whole} fragments"
            );
            assert_eq!(ends, recorded);
        }
        return;
    }

    let got = recover(format, &file, piece, &rec.fragments[..whole]);
    if let (Format::Mkv, Ok((finished, _, _))) = (format, &got) {
        // Whatever recovery accepted is finished into a file that reads to its end.
        let (_, _, end) = read_raw(finished, finished.len().max(1));
        assert!(end.is_ok(), "the finished file does not read: {end:?}");
    }
    if !exact {
        return;
    }
    let want = &rec.finished[whole - 1];
    let (finished, fast, duration) = match got {
        Ok(got) => got,
        Err(e) => panic!("a file cut after whole fragment {whole} at byte {cut} was refused: {e}"),
    };
    if print(&finished) != want.file {
        let mut again = write(body, format, Some(whole));
        again.writer.as_mut().unwrap().finish(&mut again.file);
        if let Some(dir) = std::env::var_os("KVS_FUZZ_DUMP") {
            // For a closer look: the .part, the recovered file and the reference.
            let dir = PathBuf::from(dir);
            let _ = std::fs::write(dir.join("part"), &file);
            let _ = std::fs::write(dir.join("recovered"), &finished);
            let _ = std::fs::write(dir.join("uninterrupted"), &again.file);
            let _ = std::fs::write(dir.join("body"), body);
        }
        panic!(
            "after {whole} fragments: recovered and finished {} bytes, an uninterrupted run {}; \
             first difference at byte {}",
            finished.len(),
            again.file.len(),
            first_difference(&finished, &again.file)
        );
    }
    assert_eq!(fast.as_deref().map(print), want.fast, "faststart differs");
    assert_eq!(duration, want.duration_ms, "duration differs");
});

/// Small GetMedia bodies built from a seed: 1 to 6 fragments of H.264, AAC and G.711 tracks
/// in a few combinations, with odd timestamp scales, producer clocks that jump back or stand
/// still, reordered video frames, BlockGroups, empty payloads and the odd error chunk.
mod body {
    use super::*;

    const FLAG_LACING: u32 = 0x9C;
    const AUDIO: u32 = 0xE1;
    const SAMPLING_FREQUENCY: u32 = 0xB5;
    const CHANNELS: u32 = 0x9F;

    /// splitmix64.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        fn chance(&mut self, one_in: u64) -> bool {
            self.below(one_in) == 0
        }
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Avc,
        Aac,
        Ulaw,
        Alaw,
    }

    /// avcC: baseline profile, 4-byte lengths, one SPS and one PPS.
    /// One SPS and one PPS (length 4: `68 CE 38 80`), so that the MP4 writer takes the track.
    const AVCC: [u8; 25] = [
        1, 0x42, 0xC0, 0x1E, 0xFF, 0xE1, 0x00, 0x0A, 0x67, 0x42, 0xC0, 0x1E, 0xD9, 0x00, 0xA0,
        0x47, 0xFE, 0xC8, 0x01, 0x00, 0x04, 0x68, 0xCE, 0x38, 0x80,
    ];

    fn track(out: &mut Vec<u8>, number: u64, kind: Kind, rng: &mut Rng) {
        let mut e = Vec::new();
        ebml::write_uint(&mut e, id::TRACK_NUMBER, number);
        ebml::write_uint(&mut e, 0x73C5, number); // TrackUID
        ebml::write_uint(&mut e, FLAG_LACING, 0);
        match kind {
            Kind::Avc => {
                ebml::write_uint(&mut e, id::TRACK_TYPE, 1);
                ebml::write_string(&mut e, id::CODEC_ID, "V_MPEG4/ISO/AVC");
                ebml::write_element(&mut e, id::CODEC_PRIVATE, &AVCC);
                if rng.chance(2) {
                    ebml::write_uint(&mut e, id::DEFAULT_DURATION, 33_333_333);
                }
                let mut v = Vec::new();
                ebml::write_uint(&mut v, id::PIXEL_WIDTH, 320);
                ebml::write_uint(&mut v, id::PIXEL_HEIGHT, 240);
                ebml::write_element(&mut e, id::VIDEO, &v);
            }
            Kind::Aac => {
                ebml::write_uint(&mut e, id::TRACK_TYPE, 2);
                ebml::write_string(&mut e, id::CODEC_ID, "A_AAC");
                ebml::write_element(&mut e, id::CODEC_PRIVATE, &[0x12, 0x10]);
                let mut a = Vec::new();
                if rng.chance(2) {
                    ebml::write_float(&mut a, SAMPLING_FREQUENCY, 44_100.0);
                }
                ebml::write_uint(&mut a, CHANNELS, 2);
                ebml::write_element(&mut e, AUDIO, &a);
            }
            Kind::Ulaw | Kind::Alaw => {
                ebml::write_uint(&mut e, id::TRACK_TYPE, 2);
                ebml::write_string(&mut e, id::CODEC_ID, "A_MS/ACM");
                let tag: u16 = if kind == Kind::Ulaw { 7 } else { 6 };
                let mut wf = Vec::new();
                wf.extend(tag.to_le_bytes());
                wf.extend(1u16.to_le_bytes()); // channels
                wf.extend(8000u32.to_le_bytes()); // rate
                wf.extend(8000u32.to_le_bytes()); // bytes per second
                wf.extend(1u16.to_le_bytes()); // block align
                wf.extend(8u16.to_le_bytes()); // bits
                wf.extend(0u16.to_le_bytes()); // cbSize
                ebml::write_element(&mut e, id::CODEC_PRIVATE, &wf);
                let mut a = Vec::new();
                ebml::write_float(&mut a, SAMPLING_FREQUENCY, 8000.0);
                ebml::write_uint(&mut a, CHANNELS, 1);
                ebml::write_element(&mut e, AUDIO, &a);
            }
        }
        ebml::write_element(out, id::TRACK_ENTRY, &e);
    }

    /// An element with a 4-byte size, as KVS writes its tags.
    fn element4(out: &mut Vec<u8>, element: u32, data: &[u8]) {
        ebml::write_id(out, element);
        ebml::write_size_fixed(out, data.len() as u64, 4);
        out.extend_from_slice(data);
    }

    fn tags(out: &mut Vec<u8>, pairs: &[(&str, &str)]) {
        let mut tag = Vec::new();
        for (name, value) in pairs {
            let mut simple = Vec::new();
            element4(&mut simple, id::TAG_NAME, name.as_bytes());
            element4(&mut simple, id::TAG_STRING, value.as_bytes());
            element4(&mut tag, id::SIMPLE_TAG, &simple);
        }
        let mut t = Vec::new();
        element4(&mut t, id::TAG, &tag);
        element4(out, id::TAGS, &t);
    }

    fn seconds(ms: i64) -> String {
        format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
    }

    const SEGMENT_UNKNOWN: [u8; 12] = [
        0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    ];

    pub fn build(seed: u64) -> Vec<u8> {
        let mut rng = Rng(seed);
        let kinds: &[Kind] = match rng.below(6) {
            0 => &[Kind::Avc],
            1 => &[Kind::Aac],
            2 => &[Kind::Avc, Kind::Aac],
            3 => &[Kind::Avc, Kind::Ulaw],
            4 => &[Kind::Alaw],
            _ => &[Kind::Aac, Kind::Avc],
        };
        let scale = [1_000_000, 1_000_000, 100_000, 10_000_000, 1_000][rng.below(5) as usize];
        let gap = rng.below(3); // track numbers 1, 2 or 1, 3…
        let numbers: Vec<u64> = (0..kinds.len() as u64).map(|i| 1 + i * (1 + gap)).collect();
        let mut tracks_body = Vec::new();
        for (&kind, &number) in kinds.iter().zip(&numbers) {
            track(&mut tracks_body, number, kind, &mut rng);
        }
        let mut tracks = Vec::new();
        ebml::write_element(&mut tracks, id::TRACKS, &tracks_body);
        let mut info_body = Vec::new();
        ebml::write_uint(&mut info_body, id::TIMESTAMP_SCALE, scale);
        let mut info = Vec::new();
        ebml::write_element(&mut info, id::INFO, &info_body);

        let absolute = rng.chance(2);
        let mut producer_ms: i64 = 1_700_000_000_000 + rng.below(1_000_000) as i64;
        let mut media_ms: i64 = 0;
        let fragments = 1 + rng.below(6);
        let mut body = Vec::new();
        for f in 0..fragments {
            if rng.chance(12) {
                // An error chunk between fragments.
                body.extend(mkv::writer::ebml_header());
                body.extend(SEGMENT_UNKNOWN);
                tags(
                    &mut body,
                    &[
                        ("AWS_KINESISVIDEO_ERROR_CODE", "INTERNAL_ERROR"),
                        ("AWS_KINESISVIDEO_ERROR_ID", "5000"),
                    ],
                );
            }
            let duration_ms = 1 + rng.below(3000) as i64;
            let number = format!("91343852333181432392682062607743920146159{:06}", f * 17 + 3);
            body.extend(mkv::writer::ebml_header());
            body.extend(SEGMENT_UNKNOWN);
            body.extend_from_slice(&info);
            body.extend_from_slice(&tracks);
            tags(
                &mut body,
                &[
                    ("AWS_KINESISVIDEO_FRAGMENT_NUMBER", &number),
                    (
                        "AWS_KINESISVIDEO_SERVER_TIMESTAMP",
                        &seconds(producer_ms + 150),
                    ),
                    ("AWS_KINESISVIDEO_PRODUCER_TIMESTAMP", &seconds(producer_ms)),
                ],
            );
            let start_ms = if absolute { producer_ms } else { media_ms };
            let ticks = (i128::from(start_ms.max(0)) * 1_000_000 / i128::from(scale)) as u64;
            ebml::write_id(&mut body, id::CLUSTER);
            body.push(0xFF);
            ebml::write_element(&mut body, id::TIMESTAMP, &ticks.to_be_bytes());
            let frames = 1 + rng.below(8) as i64;
            let mut order: Vec<i64> = (0..frames).collect();
            if rng.chance(3) && frames > 2 {
                // B-frames: a later frame before an earlier one.
                let i = 1 + rng.below(frames as u64 - 2) as usize;
                order.swap(i, i + 1);
            }
            for (j, &frame) in order.iter().enumerate() {
                for (&kind, &number) in kinds.iter().zip(&numbers) {
                    let at_ms = frame * duration_ms / frames;
                    let tc = (i128::from(at_ms) * 1_000_000 / i128::from(scale))
                        .clamp(i16::MIN.into(), i16::MAX.into())
                        as i16;
                    let size = match kind {
                        Kind::Ulaw | Kind::Alaw => rng.below(200) as usize,
                        _ => rng.below(48) as usize,
                    };
                    let payload: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
                    let key = kind != Kind::Avc || j == 0 || rng.chance(4);
                    let mut block = Vec::new();
                    block.push(0x80 | number as u8);
                    block.extend(tc.to_be_bytes());
                    if rng.chance(8) {
                        // A BlockGroup: keyframe-ness from the absence of ReferenceBlock.
                        block.push(0);
                        block.extend(&payload);
                        let mut group = Vec::new();
                        ebml::write_element(&mut group, id::BLOCK, &block);
                        if !key {
                            ebml::write_element(&mut group, 0xFB, &[0xFF]); // ReferenceBlock −1
                        }
                        ebml::write_element(&mut body, id::BLOCK_GROUP, &group);
                    } else {
                        block.push(if key { 0x80 } else { 0 });
                        block.extend(&payload);
                        ebml::write_element(&mut body, id::SIMPLE_BLOCK, &block);
                    }
                }
            }
            tags(
                &mut body,
                &[
                    ("AWS_KINESISVIDEO_MILLIS_BEHIND_NOW", "1234"),
                    ("AWS_KINESISVIDEO_CONTINUATION_TOKEN", &number),
                ],
            );
            media_ms += duration_ms;
            producer_ms += match rng.below(8) {
                0 => 0,                                      // stands still
                1 => -(rng.below(5000) as i64),              // jumps back
                2 => duration_ms + rng.below(60_000) as i64, // a gap
                _ => duration_ms,
            };
        }
        body
    }
}
