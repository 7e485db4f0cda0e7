//! zstd for rotated segments, with `ruzstd` (pure Rust).
//!
//! Why `ruzstd` and not the `zstd` crate: it needs no C toolchain and adds no C code to the
//! daemon, and its output is ordinary zstd, so operators read segments with `zstdcat` as
//! well as with `keel logs`. The price: its only encoder level ("fastest", about zstd -1)
//! makes files roughly twice the size C zstd -1 would on event logs (about 7x smaller than
//! the plain text instead of 14x) at a quarter of the speed (~190 MB/s on this project's
//! machine, so a 256 MB segment takes about 1.4 s of one core, on the archiver thread). If
//! disk for old logs ever matters more than the build, swapping in the `zstd` crate touches
//! only this file.
//!
//! `ruzstd`'s encoder unwraps I/O results, so it would panic on a full disk. It is only ever
//! given the adapters below, which never return an error to it: they remember the first one
//! and report end-of-input (reader) or swallow the output (writer), and [`compress_file`]
//! then returns that error.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;

use ruzstd::decoding::StreamingDecoder;
use ruzstd::encoding::{CompressionLevel, compress};

/// Compresses `src` into a new file `dst` (one zstd frame, with a content checksum) and
/// fsyncs it. On error `dst` may hold partial output; the caller removes it.
pub fn compress_file(src: &Path, dst: &Path) -> io::Result<u64> {
    let input = File::open(src)?;
    let output = File::options().write(true).create_new(true).open(dst)?;
    let mut reader = Checked::new(BufReader::with_capacity(256 * 1024, input));
    let mut writer = Checked::new(BufWriter::with_capacity(256 * 1024, output));
    compress(&mut reader, &mut writer, CompressionLevel::Fastest);
    reader.result()?;
    let mut writer = writer.result()?;
    writer.flush()?;
    let file = writer
        .into_inner()
        .map_err(io::IntoInnerError::into_error)?;
    file.sync_all()?;
    file.metadata().map(|m| m.len())
}

/// An I/O adapter that never fails towards its user: see the module docs.
struct Checked<T> {
    inner: T,
    error: Option<io::Error>,
}

impl<T> Checked<T> {
    fn new(inner: T) -> Self {
        Checked { inner, error: None }
    }

    fn result(self) -> io::Result<T> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.inner),
        }
    }
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.error.is_some() {
            return Ok(0);
        }
        loop {
            match self.inner.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.error = Some(e);
                    return Ok(0);
                }
            }
        }
    }
}

impl<W: Write> Write for Checked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.error.is_none()
            && let Err(e) = self.inner.write_all(buf)
        {
            self.error = Some(e);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.error.is_none()
            && let Err(e) = self.inner.flush()
        {
            self.error = Some(e);
        }
        Ok(())
    }
}

/// Reads the decompressed content of a zstd stream of one or more frames (a file
/// recompressed or concatenated by other tools still reads whole).
pub struct Decoder<R: BufRead> {
    /// The source between frames; `None` while a frame is being decoded.
    idle: Option<R>,
    frame: Option<StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>,
}

impl<R: BufRead> Decoder<R> {
    pub fn new(source: R) -> Self {
        Decoder {
            idle: Some(source),
            frame: None,
        }
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(frame) = &mut self.frame {
                let n = frame.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                // Frame done: go back to the source for the next one.
                self.idle = self.frame.take().map(StreamingDecoder::into_inner);
                continue;
            }
            let Some(mut source) = self.idle.take() else {
                return Ok(0);
            };
            if source.fill_buf()?.is_empty() {
                self.idle = Some(source);
                return Ok(0);
            }
            let frame = StreamingDecoder::new(source)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}")))?;
            self.frame = Some(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut data = Vec::new();
        for i in 0..20_000u32 {
            data.extend_from_slice(
                format!(
                    "{{\"type\":\"Delivery\",\"id\":\"{i:016x}\",\"recipient\":\"u{i}@example.net\"}}\n"
                )
                .as_bytes(),
            );
        }
        data
    }

    #[test]
    fn round_trips_and_actually_compresses() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in.jsonl");
        let dst = dir.path().join("in.jsonl.zst");
        let data = sample();
        std::fs::write(&src, &data).unwrap();
        let size = compress_file(&src, &dst).unwrap();
        assert_eq!(size, std::fs::metadata(&dst).unwrap().len());
        assert!(size * 4 < data.len() as u64, "{size} of {}", data.len());
        let mut back = Vec::new();
        Decoder::new(BufReader::new(File::open(&dst).unwrap()))
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // An existing destination is never overwritten.
        assert!(compress_file(&src, &dst).is_err());
    }

    #[test]
    fn reads_concatenated_frames_and_empty_input() {
        let dir = tempfile::tempdir().unwrap();
        let mut joined = Vec::new();
        for (i, part) in [&b"first line\n"[..], b"", b"second line\n"]
            .iter()
            .enumerate()
        {
            let src = dir.path().join(format!("p{i}"));
            let dst = dir.path().join(format!("p{i}.zst"));
            std::fs::write(&src, part).unwrap();
            compress_file(&src, &dst).unwrap();
            joined.extend(std::fs::read(&dst).unwrap());
        }
        let mut back = String::new();
        Decoder::new(&joined[..]).read_to_string(&mut back).unwrap();
        assert_eq!(back, "first line\nsecond line\n");
        let mut nothing = Vec::new();
        Decoder::new(&b""[..]).read_to_end(&mut nothing).unwrap();
        assert!(nothing.is_empty());
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        let r = Decoder::new(&b"this is not zstd at all"[..]).read_to_end(&mut out);
        assert!(r.is_err());
    }

    #[test]
    fn write_errors_are_reported_not_panicked() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("no space left on device"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let data = sample();
        let mut w = Checked::new(Full);
        compress(&data[..], &mut w, CompressionLevel::Fastest);
        let err = w.result().err().expect("the write error");
        assert!(err.to_string().contains("no space"));
    }
}
