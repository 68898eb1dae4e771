//! `openpgp4fpr:` URIs and their QR codes, for meeting in person.
//!
//! The URI is `OPENPGP4FPR:<40 hex digits>#a=<percent-encoded address>`, the form Delta Chat
//! reads (OpenKeychain's `openpgp4fpr:` plus the address in the fragment). The scheme is
//! case-insensitive (RFC 3986 §3.1); writing it and the fingerprint in upper case lets the QR
//! code carry that run in alphanumeric mode, which makes the code smaller. Parsing accepts any
//! case and ignores fragment parameters other than `a` (Delta Chat's `n`, `i`, `s`).

use std::io::Cursor;

use qrcode::render::svg;
use qrcode::{Color, EcLevel, QrCode};
use sequoia_openpgp::Fingerprint;

use crate::wkd::percent_encode;
use crate::{Address, KeysError};

const SCHEME: &str = "OPENPGP4FPR:";
/// Light modules around the code, as ISO/IEC 18004 asks.
const QUIET_ZONE_MODULES: usize = 4;

/// The URI for an identity's (or contact's) key and address.
pub fn openpgp4fpr_uri(fingerprint: &Fingerprint, address: &Address) -> String {
    format!(
        "{SCHEME}{}#a={}",
        fingerprint.to_hex(),
        percent_encode(&address.to_string())
    )
}

/// Reads an `openpgp4fpr:` URI: the fingerprint, and the address if it names one.
pub fn parse_openpgp4fpr(uri: &str) -> Result<(Fingerprint, Option<Address>), KeysError> {
    let malformed = |why: &str| KeysError::MalformedUri(why.to_owned());
    let uri = uri.trim();
    let scheme_len = SCHEME.len();
    if uri.len() < scheme_len || !uri[..scheme_len].eq_ignore_ascii_case(SCHEME) {
        return Err(malformed("scheme is not openpgp4fpr"));
    }
    let rest = &uri[scheme_len..];
    let (hex, fragment) = rest.split_once('#').unwrap_or((rest, ""));
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("fingerprint is not 40 hex digits"));
    }
    let fingerprint = Fingerprint::from_hex(hex).map_err(|error| malformed(&error.to_string()))?;
    let mut address = None;
    for parameter in fragment.split('&') {
        if let Some(value) = parameter.strip_prefix("a=") {
            let decoded = percent_decode(value).ok_or_else(|| malformed("bad percent-encoding"))?;
            address = Some(Address::parse(&decoded)?);
        }
    }
    Ok((fingerprint, address))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn qr_code(text: &str) -> Result<QrCode, KeysError> {
    QrCode::with_error_correction_level(text, EcLevel::M)
        .map_err(|error| KeysError::Qr(error.to_string()))
}

/// The QR code of `text` as an SVG document, at least 256 pixels wide.
pub fn qr_svg(text: &str) -> Result<String, KeysError> {
    Ok(qr_code(text)?
        .render::<svg::Color>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build())
}

/// The QR code of `text` as an 8-bit grayscale PNG, `module_pixels` pixels per module.
pub fn qr_png(text: &str, module_pixels: u32) -> Result<Vec<u8>, KeysError> {
    let code = qr_code(text)?;
    let modules = code.width();
    let colors = code.to_colors();
    let scale = usize::try_from(module_pixels.max(1)).expect("u32 fits in usize");
    let side_modules = modules + 2 * QUIET_ZONE_MODULES;
    let side = side_modules * scale;
    let mut pixels = vec![255u8; side * side];
    for (index, color) in colors.iter().enumerate() {
        if *color != Color::Dark {
            continue;
        }
        let x0 = (index % modules + QUIET_ZONE_MODULES) * scale;
        let y0 = (index / modules + QUIET_ZONE_MODULES) * scale;
        for y in y0..y0 + scale {
            pixels[y * side + x0..y * side + x0 + scale].fill(0);
        }
    }
    let side_u32 = u32::try_from(side).map_err(|_| KeysError::Qr("image too large".into()))?;
    let mut png_bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(Cursor::new(&mut png_bytes), side_u32, side_u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder
            .write_header()
            .map_err(|error| KeysError::Qr(error.to_string()))?;
        writer
            .write_image_data(&pixels)
            .map_err(|error| KeysError::Qr(error.to_string()))?;
    }
    Ok(png_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity_key::tests::alice;

    #[test]
    fn uri_round_trip() {
        let uri = openpgp4fpr_uri(&alice().fingerprint(), alice().address());
        assert!(uri.starts_with("OPENPGP4FPR:"));
        assert!(uri.contains(&format!("#a=alice%40{}", alice().address().onion_host())));
        let (fingerprint, address) = parse_openpgp4fpr(&uri).unwrap();
        assert_eq!(fingerprint, alice().fingerprint());
        assert_eq!(address.as_ref(), Some(alice().address()));

        let lower = format!(
            "openpgp4fpr:{}",
            alice().fingerprint().to_hex().to_lowercase()
        );
        let (fingerprint, address) = parse_openpgp4fpr(&lower).unwrap();
        assert_eq!(fingerprint, alice().fingerprint());
        assert!(address.is_none());

        let delta_style = format!("{uri}&n=Alice&i=abc&s=def");
        assert!(parse_openpgp4fpr(&delta_style).unwrap().1.is_some());
    }

    #[test]
    fn bad_uris() {
        for uri in [
            "https://example.org",
            "OPENPGP4FPR:1234",
            "OPENPGP4FPR:ZZZZ567890123456789012345678901234567890",
            "OPENPGP4FPR:1234567890123456789012345678901234567890#a=%zz",
        ] {
            assert!(
                matches!(parse_openpgp4fpr(uri), Err(KeysError::MalformedUri(_))),
                "{uri}"
            );
        }
        let wrong_address =
            "OPENPGP4FPR:1234567890123456789012345678901234567890#a=bob%40example.org";
        assert!(matches!(
            parse_openpgp4fpr(wrong_address),
            Err(KeysError::MalformedAddress(_))
        ));
    }

    #[test]
    fn qr_images() {
        let uri = openpgp4fpr_uri(&alice().fingerprint(), alice().address());
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.starts_with("<?xml"));
        assert!(svg.contains("<svg"));

        let png_bytes = qr_png(&uri, 4).unwrap();
        assert_eq!(&png_bytes[..8], b"\x89PNG\r\n\x1a\n");
        let decoder = png::Decoder::new(Cursor::new(&png_bytes));
        let reader = decoder.read_info().unwrap();
        let info = reader.info();
        let modules = qr_code(&uri).unwrap().width();
        assert_eq!(info.width as usize, (modules + 8) * 4);
        assert_eq!(info.width, info.height);

        assert!(matches!(qr_svg(&"x".repeat(5000)), Err(KeysError::Qr(_))));
    }
}
