//! The screens of the GUI, each Elm style: `Message`, `update(&mut self,
//! Message) -> Action`, `view(&self)`; the app acts on the `Action`.

pub mod connect;
pub mod home;
pub mod paint;
pub mod session;
