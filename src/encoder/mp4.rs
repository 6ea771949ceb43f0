//! `--format mp4`: [`mp4::Muxer`] behind the [`Encoder`] seam. With `--faststart` the finished
//! fragmented file is rewritten as a progressive one, described by [`mp4::Muxer::faststart`].

use std::io;

use mkv::Event;
use mp4::Muxer;

use super::{Contents, Encoder, Options, Out, Refusal, Rewrite, invalid, replay};

fn options(opts: &Options) -> mp4::Options {
    mp4::Options {
        seekable: opts.seekable,
        faststart: opts.faststart,
        app: opts.app.clone(),
        stream_tag: opts.stream_tag.clone(),
    }
}

pub(super) fn new(opts: &Options) -> Muxer {
    Muxer::new(options(opts))
}

pub(super) fn recover(
    opts: &Options,
    part: &mut dyn io::Read,
    bytes: u64,
    contents: Contents,
) -> io::Result<Muxer> {
    let mut recovery = mp4::Recovery::new(options(opts));
    replay(part, |data| recovery.push(data))?;
    let (Some(first), Some(last)) = (contents.first, contents.last) else {
        return Err(invalid("the state records no fragment in the file"));
    };
    recovery
        .finish(bytes, first, last, contents.fragments)
        .map_err(invalid)
}

fn refusal(r: mp4::Refusal) -> Refusal {
    match r {
        mp4::Refusal::TracksChanged => Refusal::TracksChanged,
        other => Refusal::Unwritable(other.to_string()),
    }
}

impl Encoder for Muxer {
    fn body(&mut self, _: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn event(&mut self, event: &Event<'_>) -> io::Result<()> {
        Muxer::event(self, event).map_err(invalid)
    }

    fn accepts(&self) -> Result<(), Refusal> {
        Muxer::accepts(self, self.chunk_tracks()).map_err(refusal)
    }

    fn skip_fragment(&mut self) {}

    fn discard(&mut self) {
        Muxer::discard(self)
    }

    fn drain(&mut self, out: &mut Out<'_>) -> io::Result<()> {
        Muxer::drain(self, |bytes, patches| out(bytes, patches))
    }

    fn finish(&mut self) -> bool {
        Muxer::finish(self)
    }

    fn next_file(&self) -> Box<dyn Encoder> {
        Box::new(Muxer::next_file(self))
    }

    fn contents(&self) -> Contents {
        let (first, last) = self.first_last();
        Contents {
            fragments: self.fragments(),
            duration_ms: self.duration_ms(),
            first: first.cloned(),
            last: last.cloned(),
            non_monotonic: self.non_monotonic(),
        }
    }

    fn rewrite(&self) -> Option<Rewrite> {
        self.faststart()
    }

    fn held_frames(&self) -> usize {
        Muxer::held_frames(self)
    }
}
