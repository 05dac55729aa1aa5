//! Every colour, size and font of the client, in one place: the views,
//! the export and the iced screens all read from here.

use aevis_shared::layout::colour::Rgb;
use aevis_shared::protocol::Role;

/// Page background.
pub const BACKGROUND: Rgb = Rgb::from_u8(255, 255, 255);
/// Main text.
pub const TEXT: Rgb = Rgb::from_u8(33, 37, 41);
/// Secondary text (axes, captions).
pub const MUTED: Rgb = Rgb::from_u8(108, 117, 125);
/// Thin lines, outlines.
pub const RULE: Rgb = Rgb::from_u8(206, 212, 218);
/// Stage bands (alternating with [`BAND_ALT`]).
pub const BAND: Rgb = Rgb::from_u8(241, 243, 245);
/// The other stage band colour.
pub const BAND_ALT: Rgb = Rgb::from_u8(248, 249, 250);
/// Block bands inside a stage.
pub const BLOCK: Rgb = Rgb::from_u8(228, 231, 235);
/// The riverbed between source and target.
pub const RIVERBED: Rgb = Rgb::from_u8(222, 235, 247);
/// Diverging point marker.
pub const DIVERGING: Rgb = Rgb::from_u8(214, 39, 40);
/// Merging point marker.
pub const MERGING: Rgb = Rgb::from_u8(44, 160, 44);
/// Selection and hover highlight.
pub const HIGHLIGHT: Rgb = Rgb::from_u8(255, 193, 7);
/// Error text.
pub const ERROR: Rgb = Rgb::from_u8(176, 0, 32);

/// Colour of a role's curve, set outline and legend entry (the paper's
/// blue source, orange adversarial, purple target).
pub fn role(role: Role) -> Rgb {
    match role {
        Role::Source => Rgb::from_u8(31, 119, 180),
        Role::Adversarial => Rgb::from_u8(255, 127, 14),
        Role::Target => Rgb::from_u8(148, 103, 189),
    }
}

/// Short name of a role in labels.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Source => "source",
        Role::Adversarial => "adversarial",
        Role::Target => "target",
    }
}

/// One-letter set names of the treemap regions (source, adversarial, target).
pub const SET_NAMES: [&str; 3] = ["S", "A", "T"];
/// Joins set names in a region label (the bundled font has no `∩`).
pub const SET_JOIN: &str = "&";

/// Body text size.
pub const TEXT_SIZE: f32 = 14.0;
/// Small text size (axes, cell labels).
pub const SMALL: f32 = 11.0;
/// Title size.
pub const TITLE: f32 = 18.0;
/// Width of a river curve.
pub const CURVE_WIDTH: f32 = 3.0;
/// Spacing between widgets.
pub const SPACING: f32 = 8.0;
/// Padding of screens.
pub const PADDING: f32 = 12.0;

/// The colour as iced wants it.
pub fn color(c: Rgb) -> iced::Color {
    iced::Color::from_rgb(c.r, c.g, c.b)
}
