//! The pixel formats that frame producers and consumers (the `mmf` command, the camera
//! example, ffmpeg pipelines) agree on for [`FrameMeta::pixel_format`](super::FrameMeta).
//!
//! A code is a FourCC read as a little-endian `u32` (`u32::from_le_bytes(*b"RGB3")`), the
//! same codes as Video4Linux's `V4L2_PIX_FMT_*` where one exists, so a V4L2 capture can pass
//! its format through unchanged; the names are ffmpeg's `-pix_fmt` names, so a channel's
//! format can be handed to `ffmpeg -f rawvideo -pix_fmt NAME` as it is. The channel itself
//! never interprets the code; 0 means "not given".
//!
//! | name | FourCC | bytes per pixel | layout |
//! |------|--------|----------------:|--------|
//! | `rgb24` | `RGB3` | 3 | R, G, B |
//! | `bgr24` | `BGR3` | 3 | B, G, R |
//! | `rgba` | `AB24` | 4 | R, G, B, A |
//! | `bgra` | `AR24` | 4 | B, G, R, A |
//! | `gray` | `GREY` | 1 | Y |
//! | `gray16le` | `Y16 ` | 2 | Y, little-endian |
//! | `yuyv422` | `YUYV` | 2 (per pixel, in pairs) | Y0, U, Y1, V |
//! | `nv12` | `NV12` | 1.5 (planar: Y plane, then interleaved U/V at half resolution) | |
//! | `yuv420p` | `YU12` | 1.5 (planar: Y, U, V; U and V at half resolution) | |

use std::fmt;
use std::str::FromStr;

/// A pixel format code for [`FrameMeta::pixel_format`](super::FrameMeta) (see the
/// [module table](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PixelFormat {
    /// 8-bit R, G, B.
    Rgb24,
    /// 8-bit B, G, R.
    Bgr24,
    /// 8-bit R, G, B, A.
    Rgba,
    /// 8-bit B, G, R, A.
    Bgra,
    /// 8-bit luma.
    Gray,
    /// 16-bit little-endian luma.
    Gray16le,
    /// Packed 4:2:2 Y, U, Y, V.
    Yuyv422,
    /// Planar Y, then interleaved U/V at half resolution.
    Nv12,
    /// Planar Y, U, V, the chroma planes at half resolution.
    Yuv420p,
}

const ALL: [PixelFormat; 9] = [
    PixelFormat::Rgb24,
    PixelFormat::Bgr24,
    PixelFormat::Rgba,
    PixelFormat::Bgra,
    PixelFormat::Gray,
    PixelFormat::Gray16le,
    PixelFormat::Yuyv422,
    PixelFormat::Nv12,
    PixelFormat::Yuv420p,
];

impl PixelFormat {
    /// Every format, in table order.
    pub const ALL: &'static [PixelFormat] = &ALL;

    /// The ffmpeg `-pix_fmt` name.
    pub const fn as_str(self) -> &'static str {
        match self {
            PixelFormat::Rgb24 => "rgb24",
            PixelFormat::Bgr24 => "bgr24",
            PixelFormat::Rgba => "rgba",
            PixelFormat::Bgra => "bgra",
            PixelFormat::Gray => "gray",
            PixelFormat::Gray16le => "gray16le",
            PixelFormat::Yuyv422 => "yuyv422",
            PixelFormat::Nv12 => "nv12",
            PixelFormat::Yuv420p => "yuv420p",
        }
    }

    /// The FourCC, as its four bytes.
    pub const fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Rgb24 => *b"RGB3",
            PixelFormat::Bgr24 => *b"BGR3",
            PixelFormat::Rgba => *b"AB24",
            PixelFormat::Bgra => *b"AR24",
            PixelFormat::Gray => *b"GREY",
            PixelFormat::Gray16le => *b"Y16 ",
            PixelFormat::Yuyv422 => *b"YUYV",
            PixelFormat::Nv12 => *b"NV12",
            PixelFormat::Yuv420p => *b"YU12",
        }
    }

    /// The code stored in [`FrameMeta::pixel_format`](super::FrameMeta): the FourCC as a
    /// little-endian `u32`.
    pub const fn code(self) -> u32 {
        u32::from_le_bytes(self.fourcc())
    }

    /// The format whose [`code`](Self::code) this is, if any.
    pub fn from_code(code: u32) -> Option<PixelFormat> {
        ALL.into_iter().find(|f| f.code() == code)
    }

    /// Bytes of one `width` × `height` frame; `None` if it overflows, or if a format with
    /// half-resolution chroma gets an odd width or height.
    pub fn frame_len(self, width: u32, height: u32) -> Option<usize> {
        let pixels = (width as usize).checked_mul(height as usize)?;
        match self {
            PixelFormat::Nv12 | PixelFormat::Yuv420p => {
                if width % 2 != 0 || height % 2 != 0 {
                    return None;
                }
                pixels.checked_add(pixels / 2)
            }
            PixelFormat::Yuyv422 if width % 2 != 0 => None,
            _ => pixels.checked_mul(self.bytes_per_pixel()?),
        }
    }

    /// Bytes per pixel for the packed formats; `None` for planar ones (1.5 bytes per pixel:
    /// use [`frame_len`](Self::frame_len)).
    pub const fn bytes_per_pixel(self) -> Option<usize> {
        match self {
            PixelFormat::Rgb24 | PixelFormat::Bgr24 => Some(3),
            PixelFormat::Rgba | PixelFormat::Bgra => Some(4),
            PixelFormat::Gray => Some(1),
            PixelFormat::Gray16le | PixelFormat::Yuyv422 => Some(2),
            PixelFormat::Nv12 | PixelFormat::Yuv420p => None,
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no [`PixelFormat`]'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPixelFormat(pub String);

impl fmt::Display for UnknownPixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown pixel format {:?} (known: ", self.0)?;
        for (i, format) in ALL.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{format}")?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for UnknownPixelFormat {}

impl FromStr for PixelFormat {
    type Err = UnknownPixelFormat;

    /// An ffmpeg name (`rgb24`, case-insensitive), or a four-character FourCC (`RGB3`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL.into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s) || f.fourcc() == s.as_bytes())
            .ok_or_else(|| UnknownPixelFormat(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes_round_trip_and_are_distinct() {
        for &format in PixelFormat::ALL {
            assert_eq!(format.as_str().parse::<PixelFormat>(), Ok(format));
            assert_eq!(
                std::str::from_utf8(&format.fourcc())
                    .unwrap()
                    .parse::<PixelFormat>(),
                Ok(format)
            );
            assert_eq!(PixelFormat::from_code(format.code()), Some(format));
            let same_code = PixelFormat::ALL
                .iter()
                .filter(|f| f.code() == format.code());
            assert_eq!(same_code.count(), 1, "{format}");
        }
        assert_eq!(PixelFormat::from_code(0), None);
        let err = "rgb48".parse::<PixelFormat>().unwrap_err();
        assert!(err.to_string().contains("rgb24, bgr24"), "{err}");
    }

    /// The camera example has published `u32::from_le_bytes(*b"RGB3")` since before this
    /// enum: it must stay rgb24.
    #[test]
    fn rgb24_is_the_camera_demos_code() {
        assert_eq!(PixelFormat::Rgb24.code(), u32::from_le_bytes(*b"RGB3"));
    }

    #[test]
    fn frame_lengths() {
        assert_eq!(PixelFormat::Rgb24.frame_len(320, 240), Some(320 * 240 * 3));
        assert_eq!(PixelFormat::Gray.frame_len(4, 4), Some(16));
        assert_eq!(PixelFormat::Nv12.frame_len(4, 4), Some(24));
        assert_eq!(PixelFormat::Nv12.frame_len(3, 4), None);
        assert_eq!(PixelFormat::Rgba.frame_len(u32::MAX, u32::MAX), None);
    }
}
