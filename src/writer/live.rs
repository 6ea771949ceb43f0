//! Live viewing on standard output: a frame goes out as soon as its last byte has arrived, not
//! when its whole fragment has, so `kvs-dl -o - | ffplay -` is not a fragment (2–10 s) behind.
//! A pipe cannot take bytes back, so when a connection drops inside a fragment the frames
//! already sent stay sent; when the service sends that fragment again, they are recognised by
//! track and timestamp and not sent twice. The viewer sees no frame twice and no hole beyond
//! what the service lost. Files keep the whole-fragment guarantee; this is for pipes only.
//!
//! Sans-IO: parser events in, a verdict per event out.

use mkv::Event;

/// What to do with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Hand it to the encoder.
    Pass,
    /// Hand it to the encoder, then send what is pending: a frame is whole.
    Release,
    /// A frame already sent before a reconnect: leave it out.
    Drop,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Live {
    /// The fragment being read.
    fragment: Option<String>,
    cluster: i64,
    /// The block being read: its track, its time, the bytes still to come, and whether it was
    /// sent before.
    block: Option<(u64, i64, u64, bool)>,
    /// Frames whole but maybe still held by the encoder (an MP4 fragment is written once its
    /// frames' decode times are known), in order.
    whole: Vec<(u64, i64)>,
    /// Per track, the latest frame time sent in this fragment.
    sent: Vec<(u64, i64)>,
    /// A fragment cut off after these frames were sent.
    resend: Option<(String, Vec<(u64, i64)>)>,
}

impl Live {
    pub fn event(&mut self, event: &Event<'_>) -> Step {
        match event {
            Event::FragmentStart(f) => {
                self.fragment = Some(f.number.clone());
                self.sent = match &self.resend {
                    Some((number, sent)) if *number == f.number => sent.clone(),
                    _ => Vec::new(),
                };
                Step::Pass
            }
            Event::Cluster { timecode } => {
                self.cluster = i64::try_from(*timecode).unwrap_or(i64::MAX);
                Step::Pass
            }
            Event::BlockStart(b) => {
                let at = self.cluster.saturating_add(i64::from(b.timecode));
                let sent = self
                    .sent
                    .iter()
                    .any(|&(track, t)| track == b.track && at <= t);
                self.block = Some((b.track, at, b.size, sent));
                match (sent, b.size) {
                    (true, _) => Step::Drop,
                    (false, 0) => self.whole(),
                    (false, _) => Step::Pass,
                }
            }
            Event::BlockData(data) => match self.block.as_mut() {
                Some((_, _, _, true)) => Step::Drop,
                Some((_, _, left, false)) => {
                    *left = left.saturating_sub(data.len() as u64);
                    match *left {
                        0 => self.whole(),
                        _ => Step::Pass,
                    }
                }
                None => Step::Pass,
            },
            Event::FragmentEnd(_) => {
                self.fragment = None;
                self.whole.clear();
                self.sent.clear();
                self.resend = None;
                self.block = None;
                Step::Release
            }
            _ => Step::Pass,
        }
    }

    /// The current block is whole: once the encoder has written it out, it is sent.
    fn whole(&mut self) -> Step {
        if let Some((track, at, _, _)) = self.block.take() {
            self.whole.push((track, at));
        }
        Step::Release
    }

    /// What was written has been sent; the encoder still holds its `held` latest frames.
    pub fn sent(&mut self, held: usize) {
        let out = self.whole.len().saturating_sub(held);
        for (track, at) in self.whole.drain(..out) {
            match self.sent.iter_mut().find(|(t, _)| *t == track) {
                Some((_, latest)) => *latest = (*latest).max(at),
                None => self.sent.push((track, at)),
            }
        }
    }

    /// The connection dropped inside the fragment being read.
    pub fn discard(&mut self) {
        self.block = None;
        self.whole.clear();
        if let Some(number) = self.fragment.take()
            && !self.sent.is_empty()
        {
            self.resend = Some((number, std::mem::take(&mut self.sent)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mkv::{Block, BlockKind, Fragment};

    fn start(n: &str) -> Event<'static> {
        Event::FragmentStart(Fragment {
            number: n.into(),
            ..Fragment::default()
        })
    }

    fn block(track: u64, timecode: i16, size: u64) -> Event<'static> {
        Event::BlockStart(Block {
            track,
            timecode,
            keyframe: false,
            kind: BlockKind::Simple,
            header: &[],
            size,
        })
    }

    /// Steps for a fragment of blocks (track, time), each 2 bytes sent in two pieces.
    fn frames(live: &mut Live, n: &str, blocks: &[(u64, i16)]) -> Vec<Step> {
        let mut steps = vec![
            live.event(&start(n)),
            live.event(&Event::Cluster { timecode: 1000 }),
        ];
        for &(track, t) in blocks {
            steps.push(live.event(&block(track, t, 2)));
            steps.push(live.event(&Event::BlockData(b"a")));
            steps.push(live.event(&Event::BlockData(b"b")));
            live.sent(0);
        }
        steps
    }

    #[test]
    fn a_frame_is_released_when_its_last_byte_arrives() {
        let mut live = Live::default();
        let steps = frames(&mut live, "1", &[(1, 0)]);
        assert_eq!(steps[2..], [Step::Pass, Step::Pass, Step::Release]);
    }

    #[test]
    fn frames_sent_before_a_reconnect_are_not_sent_again() {
        let mut live = Live::default();
        frames(&mut live, "7", &[(1, 0), (2, 0), (1, 40)]);
        // Cut off in the middle of the next frame.
        live.event(&block(2, 21, 2));
        live.event(&Event::BlockData(b"a"));
        live.discard();
        let steps = frames(&mut live, "7", &[(1, 0), (2, 0), (1, 40), (2, 21), (1, 80)]);
        let per_block: Vec<Step> = steps[2..].chunks(3).map(|c| c[0]).collect();
        assert_eq!(
            per_block,
            [Step::Drop, Step::Drop, Step::Drop, Step::Pass, Step::Pass]
        );
        // Another fragment with the same times is a new fragment.
        live.event(&Event::FragmentEnd(Fragment::default()));
        let steps = frames(&mut live, "8", &[(1, 0)]);
        assert_eq!(steps[2], Step::Pass);
    }

    #[test]
    fn frames_the_encoder_still_holds_are_sent_again() {
        let mut live = Live::default();
        live.event(&start("7"));
        live.event(&Event::Cluster { timecode: 1000 });
        for t in [0, 40, 80] {
            live.event(&block(1, t, 1));
            live.event(&Event::BlockData(b"a"));
        }
        // The encoder wrote out the first frame and holds the other two.
        live.sent(2);
        live.discard();
        let steps = frames(&mut live, "7", &[(1, 0), (1, 40), (1, 80)]);
        let per_block: Vec<Step> = steps[2..].chunks(3).map(|c| c[0]).collect();
        assert_eq!(per_block, [Step::Drop, Step::Pass, Step::Pass]);
    }

    #[test]
    fn a_second_cut_keeps_what_the_first_sent() {
        let mut live = Live::default();
        frames(&mut live, "7", &[(1, 0), (1, 40)]);
        live.discard();
        frames(&mut live, "7", &[(1, 0), (1, 40), (1, 80)]);
        live.discard();
        let steps = frames(&mut live, "7", &[(1, 0), (1, 40), (1, 80), (1, 120)]);
        let per_block: Vec<Step> = steps[2..].chunks(3).map(|c| c[0]).collect();
        assert_eq!(per_block, [Step::Drop, Step::Drop, Step::Drop, Step::Pass]);
    }
}
