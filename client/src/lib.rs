//! The aevis client: the river, treemap and neuron views of a session, drawn
//! in an iced GUI over the daemon's HTTP API, or exported headless to
//! SVG/PNG.
//!
//! * [`view`] builds each view as a [`scene::Scene`] from protocol values;
//! * [`export`] writes scenes as SVG and PNG ([`export::render_all`]);
//! * [`api`] talks to the daemon (bincode over HTTP, job events);
//! * [`app`] and [`screen`] are the iced GUI ([`run_gui`]).
//!
//! ```
//! use aevis_client::{sample, view};
//! let (scene, frame) = view::river::scene(&sample::session(), &sample::graph(), &Default::default(), &sample::classes());
//! assert_eq!(frame.layout.columns.len(), 9);
//! assert!(scene.to_svg().starts_with("<svg"));
//! ```

pub mod api;
pub mod app;
pub mod config;
pub mod export;
pub mod sample;
pub mod scene;
pub mod screen;
pub mod theme;
pub mod view;

/// Why the GUI could not start.
#[derive(Debug, thiserror::Error)]
pub enum GuiError {
    /// Neither `DISPLAY` nor `WAYLAND_DISPLAY` is set.
    #[error(
        "no display: neither DISPLAY nor WAYLAND_DISPLAY is set. Use `aevis export` to write the views as SVG/PNG without a display, or run under Xvfb"
    )]
    NoDisplay,
    /// iced failed.
    #[error("the GUI failed: {0}")]
    Iced(#[from] iced::Error),
}

/// There is a display to open a window on.
pub fn has_display() -> bool {
    display_check(std::env::var_os("DISPLAY").as_deref(), std::env::var_os("WAYLAND_DISPLAY").as_deref()).is_ok()
}

/// The display check of [`run_gui`] on given values of `DISPLAY` and
/// `WAYLAND_DISPLAY` (unset or empty means none).
pub fn display_check(display: Option<&std::ffi::OsStr>, wayland: Option<&std::ffi::OsStr>) -> Result<(), GuiError> {
    if [display, wayland].iter().any(|v| v.is_some_and(|s| !s.is_empty())) { Ok(()) } else { Err(GuiError::NoDisplay) }
}

/// Opens the GUI connected to the daemon at `url` (an empty `url` shows the
/// connect screen with the remembered address). Blocks until the window closes.
pub fn run_gui(url: String, token: Option<String>) -> anyhow::Result<()> {
    display_check(std::env::var_os("DISPLAY").as_deref(), std::env::var_os("WAYLAND_DISPLAY").as_deref())?;
    let url = Some(url).filter(|u| !u.trim().is_empty());
    let config = app::default_config_path();
    iced::application(
        move || app::App::new(url.clone(), token.clone(), config.clone()),
        app::App::update,
        app::App::view,
    )
    .title(app::App::title)
    .window_size((1280.0, 820.0))
    .run()
    .map_err(|e| GuiError::Iced(e).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn no_display_points_to_export() {
        let e = display_check(None, Some(OsStr::new(""))).unwrap_err().to_string();
        assert!(e.contains("DISPLAY") && e.contains("aevis export"), "{e}");
        assert!(display_check(Some(OsStr::new(":0")), None).is_ok());
        assert!(display_check(None, Some(OsStr::new("wayland-0"))).is_ok());
    }
}
