//! One GetMedia body as it streams: fragments are sent as they become available, in pieces small
//! enough that faults can strike at any byte, and the body ends the way the service ends it.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream as FutureStream;
use tokio::time::{Instant, sleep, sleep_until};

use crate::faults::{self, Api, CallFault};
use crate::pace::Pace;
use crate::requests::BodyEnd;
use crate::selector::Start;
use crate::server::Shared;
use crate::tags;

/// Largest piece handed to the connection at once.
pub const PIECE: usize = 64 * 1024;
/// Pause before a scripted cut, so the connection flushes what was sent before it drops.
const FLUSH: Duration = Duration::from_millis(20);
/// ERROR_ID and ERROR_CODE of the service's "requested fragment is not found".
const FRAGMENT_NOT_FOUND: (u64, &str) = (4000, "FRAGMENT_NOT_FOUND");

pub struct Session {
    shared: Arc<Shared>,
    stream: usize,
    /// This call's entry in the request log.
    entry: usize,
    fault: CallFault,
    /// The next fragment to send.
    next: usize,
    /// Fragments of this body queued so far (numbering for fault positions).
    queued_fragments: usize,
    queue: VecDeque<Bytes>,
    /// Body offset where the fragment in the queue ends.
    fragment_end: Option<u64>,
    sent: u64,
    fragments_sent: usize,
    /// Body offset of a scripted cut.
    cut_at: Option<u64>,
    /// Body offset and length of a scripted pause.
    stall: Option<(u64, Duration)>,
    /// A pause to take before the next piece.
    pause: Option<Duration>,
    /// The cut point was reached: drop the connection next.
    cutting: bool,
    /// How the body ends once the queue is drained.
    end_when_drained: Option<BodyEnd>,
    /// The stream's `max_session`, from the call.
    deadline: Option<Instant>,
    /// The call, or the end of the last fragment sent: the idle timer's start.
    idle_since: Instant,
    /// The stream's bandwidth cap, if it has one.
    pace: Option<Pace>,
    /// Frame-paced live streams: body bytes from offset `.0` on go out no sooner than `.1`.
    schedule: VecDeque<(u64, Instant)>,
    /// Body offsets where the frames queued so far end, for the frame log.
    frame_ends: VecDeque<u64>,
    ended: bool,
}

impl Session {
    /// The body of a GetMedia call on stream `stream`, admitted at `now`, starting at `start`.
    pub fn new(
        shared: Arc<Shared>,
        stream: usize,
        entry: usize,
        start: Start,
        fault: CallFault,
        now: Instant,
    ) -> Self {
        let spec = &shared.streams[stream].spec;
        let deadline = spec.max_session.map(|max| now + max);
        let mut queue = VecDeque::new();
        if let Some(number) = &start.expired {
            let (id, code) = FRAGMENT_NOT_FOUND;
            queue.push_back(Bytes::from(tags::error_chunk(code, id, Some(number))));
        }
        let cut_at = match fault {
            CallFault::Cut { after_bytes } => Some(after_bytes),
            _ => None,
        };
        let pace = spec.bandwidth.map(Pace::new);
        shared.streams[stream].calls(Api::GetMedia).open();
        Session {
            stream,
            entry,
            fault,
            next: start.index,
            queued_fragments: 0,
            queue,
            fragment_end: None,
            sent: 0,
            fragments_sent: 0,
            cut_at,
            stall: None,
            pause: None,
            cutting: false,
            end_when_drained: None,
            deadline,
            idle_since: now,
            pace,
            schedule: VecDeque::new(),
            frame_ends: VecDeque::new(),
            ended: false,
            shared,
        }
    }

    /// The body as a stream of byte pieces; an `Err` item drops the connection.
    pub fn into_stream(self) -> impl FutureStream<Item = io::Result<Bytes>> + Send + 'static {
        futures_util::stream::unfold(self, |mut session| async move {
            let item = session.next_piece().await?;
            Some((item, session))
        })
    }

    async fn next_piece(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            if self.ended {
                return None;
            }
            if let Some(pause) = self.pause.take() {
                sleep(pause).await;
            }
            if self.cutting || self.cut_at.is_some_and(|at| at <= self.sent) {
                sleep(FLUSH).await;
                self.finish(BodyEnd::Cut);
                return Some(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "kvs-emu: scripted connection cut",
                )));
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                self.finish(BodyEnd::MaxSession);
                return None;
            }
            if let Some(mut piece) = self.queue.pop_front() {
                if let Some(&(from, when)) = self.schedule.front() {
                    if from <= self.sent {
                        // The next frame's time: wait for it, then look at the piece again.
                        self.queue.push_front(piece);
                        if Instant::now() < when {
                            sleep_until(when).await;
                        }
                        self.schedule.pop_front();
                        continue;
                    }
                    if from < self.sent + piece.len() as u64 {
                        let rest = piece.split_off((from - self.sent) as usize);
                        self.queue.push_front(rest);
                    }
                }
                if let Some(pace) = &self.pace
                    && piece.len() > pace.piece(PIECE)
                {
                    let rest = piece.split_off(pace.piece(PIECE));
                    self.queue.push_front(rest);
                }
                let piece = self.apply_faults(piece);
                if let Some(pace) = &mut self.pace {
                    pace.wait(piece.len()).await;
                }
                self.sent += piece.len() as u64;
                self.log_frames();
                if self.fragment_end.is_some_and(|end| end <= self.sent) {
                    self.fragment_end = None;
                    self.fragments_sent += 1;
                    self.idle_since = Instant::now();
                }
                let (sent, fragments) = (self.sent, self.fragments_sent);
                self.shared.log.update(self.entry, |r| {
                    r.bytes_sent = sent;
                    r.fragments_sent = fragments;
                });
                if piece.is_empty() {
                    continue;
                }
                return Some(Ok(piece));
            }
            if let Some(end) = self.end_when_drained {
                self.finish(end);
                return None;
            }
            if let Some(end) = self.refill().await {
                self.finish(end);
                return None;
            }
        }
    }

    /// Splits a piece at a scripted cut or pause inside it; the rest goes back to the queue.
    fn apply_faults(&mut self, piece: Bytes) -> Bytes {
        let end = self.sent + piece.len() as u64;
        if let Some(at) = self.cut_at.filter(|&at| at < end) {
            self.cutting = true;
            return piece.slice(..(at - self.sent) as usize);
        }
        if let Some((at, pause)) = self.stall.filter(|&(at, _)| at < end) {
            self.stall = None;
            self.pause = Some(pause);
            let mut piece = piece;
            let rest = piece.split_off((at - self.sent) as usize);
            self.queue.push_front(rest);
            return piece;
        }
        piece
    }

    /// Queues what comes next, waiting for it if needed; or says how the body ends.
    async fn refill(&mut self) -> Option<BodyEnd> {
        let shared = Arc::clone(&self.shared);
        let stream = &shared.streams[self.stream];
        let fragments = &stream.spec.fragments;
        loop {
            let now = Instant::now();
            if let CallFault::InBandError {
                after_fragments,
                id,
                code,
            } = &self.fault
                && self.fragments_sent >= *after_fragments
            {
                let about = fragments
                    .get(self.next)
                    .or(fragments.last())
                    .map(|f| f.number());
                self.queue
                    .push_back(Bytes::from(tags::error_chunk(code, *id, about)));
                self.end_when_drained = Some(BodyEnd::InBandError);
                return None;
            }
            if self.deadline.is_some_and(|d| now >= d) {
                return Some(BodyEnd::MaxSession);
            }
            let arrival = stream
                .timeline
                .arrival(self.next)
                .map(|a| shared.started + a);
            if arrival.is_some_and(|a| a <= now) {
                self.queue_fragment(now);
                return None;
            }
            let idle_deadline = self.idle_since + stream.spec.idle_close;
            if now >= idle_deadline {
                return Some(BodyEnd::Idle);
            }
            let wake = [arrival, self.deadline]
                .into_iter()
                .flatten()
                .fold(idle_deadline, Instant::min);
            sleep_until(wake).await;
        }
    }

    /// Queues fragment `next`, with its closing tags measured against the current head.
    fn queue_fragment(&mut self, now: Instant) {
        let stream = &self.shared.streams[self.stream];
        let fragments = &stream.spec.fragments;
        let fragment = &fragments[self.next];
        let head = stream
            .timeline
            .arrived(now - self.shared.started)
            .saturating_sub(1)
            .max(self.next);
        let behind = fragments[head]
            .server_ms()
            .saturating_sub(fragment.server_ms())
            .max(0) as u64;
        let mut pieces = fragment.pieces(behind);
        if stream.spec.corrupt(self.next) {
            pieces = faults::corrupt(pieces);
        }
        let start = self.sent;
        if stream.spec.frame_paced
            && let Some(live) = stream.spec.live
        {
            self.pace_frames(&pieces, start, now, live.speed);
        }
        let mut size = 0u64;
        for mut piece in pieces {
            size += piece.len() as u64;
            while piece.len() > PIECE {
                self.queue.push_back(piece.split_to(PIECE));
            }
            self.queue.push_back(piece);
        }
        match self.fault {
            CallFault::CutInFragment { index, at_fraction } if index == self.queued_fragments => {
                let into = (size as f64 * at_fraction.clamp(0.0, 1.0)) as u64;
                self.cut_at = Some(start + into);
            }
            CallFault::Stall { ms } if self.queued_fragments == 0 => {
                self.stall = Some((start + size / 2, Duration::from_millis(ms)));
            }
            _ => {}
        }
        self.fragment_end = Some(start + size);
        self.queued_fragments += 1;
        self.next += 1;
    }

    /// Schedules the frames of a fragment queued at body offset `start` at `now`: each goes out
    /// at its own time from the fragment's first frame, `speed` times faster than real time.
    fn pace_frames(&mut self, pieces: &[Bytes], start: u64, now: Instant, speed: f64) {
        let chunk: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        let mut parser = mkv::Parser::new();
        parser.push(&chunk);
        let (mut scale, mut cluster, mut first) = (1_000_000u64, 0u64, None);
        while let Ok(Some((event, at))) = parser.next_event_at() {
            match event {
                mkv::Event::Info { timecode_scale } => scale = timecode_scale,
                mkv::Event::Cluster { timecode } => cluster = timecode,
                mkv::Event::BlockStart(b) => {
                    let ticks = i128::from(cluster) + i128::from(b.timecode);
                    let ms = ticks * i128::from(scale) / 1_000_000;
                    let since = (ms - *first.get_or_insert(ms)).max(0) as f64 / speed;
                    let begin = at - b.header.len() as u64;
                    let when = now + Duration::from_secs_f64(since / 1000.0);
                    self.schedule.push_back((start + begin, when));
                    self.frame_ends.push_back(start + at + b.size);
                }
                _ => {}
            }
        }
    }

    /// Logs the frames whose last byte has gone out (`Stream::frame_log`).
    fn log_frames(&mut self) {
        let spec = &self.shared.streams[self.stream].spec;
        while self.frame_ends.front().is_some_and(|&end| end <= self.sent) {
            self.frame_ends.pop_front();
            if let Some(path) = &spec.frame_log {
                let micros = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros());
                let line = format!("{micros}\n");
                let _ = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .and_then(|mut f| io::Write::write_all(&mut f, line.as_bytes()));
            }
        }
    }

    fn finish(&mut self, end: BodyEnd) {
        self.ended = true;
        self.shared
            .log
            .update(self.entry, |r| r.body_end = Some(end));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.ended {
            self.finish(BodyEnd::ClientGone);
        }
        self.shared.streams[self.stream]
            .calls(Api::GetMedia)
            .close();
    }
}
