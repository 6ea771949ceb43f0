//! `--format mkv`: [`mkv::Muxer`] behind the [`Encoder`] seam.

use std::io;

use mkv::{Event, Muxer};

use super::{Contents, Encoder, Options, Out, Refusal, invalid, replay};

pub(super) fn options(opts: &Options) -> mkv::Options {
    mkv::Options {
        seekable: opts.seekable,
        app: opts.app.clone(),
        stream_tag: opts.stream_tag.clone(),
    }
}

pub(super) fn recover(
    opts: &Options,
    part: &mut dyn io::Read,
    bytes: u64,
    contents: Contents,
) -> io::Result<Muxer> {
    let mut recovery = mkv::Recovery::new(options(opts));
    replay(part, |data| recovery.push(data))?;
    let (Some(first), Some(last)) = (contents.first, contents.last) else {
        return Err(invalid("the state records no fragment in the file"));
    };
    recovery
        .finish(bytes, first, last, contents.fragments)
        .map_err(invalid)
}

impl Encoder for Muxer {
    fn body(&mut self, _: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn event(&mut self, event: &Event<'_>) -> io::Result<()> {
        Muxer::event(self, event).map_err(|r| invalid(format!("cannot remux: {r:?}")))
    }

    fn accepts(&self) -> Result<(), Refusal> {
        match Muxer::accepts(self, self.chunk_tracks()) {
            Ok(()) => Ok(()),
            Err(mkv::Refusal::TracksChanged) => Err(Refusal::TracksChanged),
            Err(mkv::Refusal::BadTracks(why)) => {
                Err(Refusal::Unwritable(format!("unreadable Tracks: {why}")))
            }
        }
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
}
