//! Connect screen: daemon address and token.

use iced::widget::{button, column, container, text, text_input};
use iced::{Element, Length};

use crate::theme;

/// State of the connect screen.
#[derive(Debug, Clone, Default)]
pub struct Connect {
    /// Address typed.
    pub url: String,
    /// Token typed (may be empty).
    pub token: String,
    /// A connection attempt is running.
    pub connecting: bool,
    /// Why the last attempt failed.
    pub error: Option<String>,
}

/// What the user did.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// The address changed.
    Url(String),
    /// The token changed.
    Token(String),
    /// Connect pressed (or Enter).
    Submit,
}

/// What the app must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing.
    None,
    /// Try to connect.
    Connect {
        /// Address.
        url: String,
        /// Token, `None` when empty.
        token: Option<String>,
    },
}

impl Connect {
    /// A screen prefilled with a remembered connection.
    pub fn new(url: String, token: Option<String>) -> Self {
        Self { url, token: token.unwrap_or_default(), connecting: false, error: None }
    }

    /// Handles a message.
    pub fn update(&mut self, message: Message) -> Action {
        match message {
            Message::Url(u) => {
                self.url = u;
                Action::None
            }
            Message::Token(t) => {
                self.token = t;
                Action::None
            }
            Message::Submit if self.connecting || self.url.trim().is_empty() => Action::None,
            Message::Submit => {
                self.connecting = true;
                self.error = None;
                let token = Some(self.token.trim().to_owned()).filter(|t| !t.is_empty());
                Action::Connect { url: self.url.trim().to_owned(), token }
            }
        }
    }

    /// Draws the screen.
    pub fn view(&self) -> Element<'_, Message> {
        let connect = button(text(if self.connecting { "Connecting…" } else { "Connect" }))
            .on_press_maybe((!self.connecting && !self.url.trim().is_empty()).then_some(Message::Submit));
        let mut col = column![
            text("aevis").size(theme::TITLE * 1.5),
            text("Connect to an aevis daemon").size(theme::TEXT_SIZE),
            text_input("http://127.0.0.1:7878", &self.url).on_input(Message::Url).on_submit(Message::Submit),
            text_input("token (optional)", &self.token)
                .secure(true)
                .on_input(Message::Token)
                .on_submit(Message::Submit),
            connect,
        ]
        .spacing(theme::SPACING)
        .max_width(480);
        if let Some(e) = &self.error {
            col = col.push(text(e.clone()).color(theme::color(theme::ERROR)));
        }
        container(col).center(Length::Fill).padding(theme::PADDING).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submit_trims_and_blocks_twice() {
        let mut c = Connect::default();
        assert_eq!(c.update(Message::Submit), Action::None, "no address, nothing to do");
        c.update(Message::Url(" localhost:1 ".into()));
        c.update(Message::Token("  ".into()));
        assert_eq!(c.update(Message::Submit), Action::Connect { url: "localhost:1".into(), token: None });
        assert!(c.connecting);
        assert_eq!(c.update(Message::Submit), Action::None);
    }
}
