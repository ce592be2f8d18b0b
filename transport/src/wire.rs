//! Little-endian, length-prefixed encoding shared by the metadata and the
//! notification messages. The reader never panics and never allocates more
//! than the bytes it was given: every length is checked against both a
//! per-field limit and what is left.

use crate::error::MetadataError;

/// Appends fields to a byte buffer.
#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// A u32 length, then the bytes. Callers keep lengths within the limits
    /// the reader enforces.
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.buf.extend_from_slice(v);
    }
    pub(crate) fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
}

/// Reads fields back, naming the field on any failure.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], MetadataError> {
        if self.rest.len() < n {
            return Err(MetadataError::Truncated { field });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], MetadataError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, MetadataError> {
        Ok(self.array::<1>(field)?[0])
    }
    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, MetadataError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, MetadataError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, MetadataError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// Length-prefixed bytes of at most `max` bytes.
    pub(crate) fn bytes(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<&'a [u8], MetadataError> {
        let len = self.u32(field)? as usize;
        if len > max {
            return Err(MetadataError::TooLong { field, len, max });
        }
        self.take(len, field)
    }

    /// Length-prefixed UTF-8 of at most `max` bytes.
    pub(crate) fn str(&mut self, field: &'static str, max: usize) -> Result<String, MetadataError> {
        let b = self.bytes(field, max)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| MetadataError::InvalidUtf8 { field })
    }

    /// Fails when bytes are left over: a longer message is not ours.
    pub(crate) fn finish(self) -> Result<(), MetadataError> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(MetadataError::TrailingBytes(n)),
        }
    }
}
