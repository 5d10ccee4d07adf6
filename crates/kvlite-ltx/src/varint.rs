//! Unsigned LEB128 varints with Go `encoding/binary` `Uvarint` semantics.

/// Maximum encoded length of a `u64`.
pub(crate) const MAX_LEN: usize = 10;

/// Appends the canonical (shortest) encoding of `v`.
pub(crate) fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarintError {
    Truncated,
    Overflow,
}

/// Reads a varint from `buf` at `*pos`, advancing `*pos`. Like Go's
/// `binary.Uvarint` it accepts non-minimal encodings and rejects values that
/// overflow 64 bits or use more than 10 bytes.
pub(crate) fn read(buf: &[u8], pos: &mut usize) -> Result<u64, VarintError> {
    let mut x: u64 = 0;
    let mut shift = 0u32;
    for i in 0..MAX_LEN {
        let b = *buf.get(*pos).ok_or(VarintError::Truncated)?;
        *pos += 1;
        if b < 0x80 {
            if i == MAX_LEN - 1 && b > 1 {
                return Err(VarintError::Overflow);
            }
            return Ok(x | (u64::from(b) << shift));
        }
        x |= u64::from(b & 0x7f) << shift;
        shift += 7;
    }
    Err(VarintError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for v in [
            0u64,
            1,
            127,
            128,
            255,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            put(&mut buf, v);
            assert!(buf.len() <= MAX_LEN);
            let mut pos = 0;
            assert_eq!(read(&buf, &mut pos), Ok(v));
            assert_eq!(pos, buf.len());
        }
    }

    #[test]
    fn known_encodings() {
        let mut buf = Vec::new();
        put(&mut buf, 300);
        assert_eq!(buf, [0xac, 0x02]);
        buf.clear();
        put(&mut buf, 4148);
        assert_eq!(buf, [0xb4, 0x20]);
    }

    #[test]
    fn errors() {
        let mut pos = 0;
        assert_eq!(read(&[], &mut pos), Err(VarintError::Truncated));
        let mut pos = 0;
        assert_eq!(read(&[0x80, 0x80], &mut pos), Err(VarintError::Truncated));
        // 10th byte > 1 overflows.
        let mut pos = 0;
        let mut b = [0xffu8; 10];
        b[9] = 0x02;
        assert_eq!(read(&b, &mut pos), Err(VarintError::Overflow));
        // 11 bytes of continuation.
        let mut pos = 0;
        assert_eq!(read(&[0x80; 11], &mut pos), Err(VarintError::Overflow));
        // Non-minimal encodings are accepted (as in Go).
        let mut pos = 0;
        assert_eq!(read(&[0x81, 0x00], &mut pos), Ok(1));
    }
}
