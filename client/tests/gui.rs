//! Headless GUI tests with `iced_test` (run with `ICED_TEST_BACKEND=tiny-skia`):
//! screens and the whole app driven with hand-made protocol values, no daemon.

use aevis_client::api::{Api, ApiError};
use aevis_client::app::{App, JobPurpose, Message, Screen};
use aevis_client::sample;
use aevis_client::screen::{connect, home, session};
use aevis_shared::protocol::{JobState, JobStatus, Progress, SessionCreated};
use iced::Theme;
use iced_test::simulator;

fn api() -> Api {
    Api::new("127.0.0.1:9", None).unwrap()
}

/// A real transport error: connect to a port nothing listens on.
fn unreachable() -> ApiError {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let api = Api::new(&format!("127.0.0.1:{port}"), None).unwrap();
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(api.info()).unwrap_err()
}

fn job(state: JobState, fraction: f32) -> JobStatus {
    JobStatus {
        id: "j1".into(),
        kind: "session".into(),
        session: Some("s-toy".into()),
        state,
        progress: Progress { stage: "target 1/1".into(), step: 3, total: 10, fraction, ..Progress::default() },
        error: None,
    }
}

#[test]
fn connect_screen_submits() {
    let mut c = connect::Connect::new("localhost:7878".into(), None);
    let mut ui = simulator(c.view());
    assert!(ui.find("localhost:7878").is_ok(), "the remembered address is shown");
    ui.click("Connect").unwrap();
    let messages: Vec<_> = ui.into_messages().collect();
    assert_eq!(messages, vec![connect::Message::Submit]);
    assert_eq!(
        c.update(connect::Message::Submit),
        connect::Action::Connect { url: "localhost:7878".into(), token: None }
    );
    let mut ui = simulator(c.view());
    assert!(ui.find("Connecting…").is_ok());
}

#[test]
fn home_lists_images_and_candidates() {
    let mut h = home::Home::new(sample::info());
    h.page = Some(sample::images());
    h.candidates = Some(sample::candidates());
    let mut ui = simulator(h.view());
    assert!(ui.find("  #2 · true automobile · predicted truck (0.51) (wrong)").is_ok());
    ui.click("#1 · ship → airplane (0.70) · score 0.900").unwrap();
    ui.click("Start session").unwrap();
    let messages: Vec<_> = ui.into_messages().collect();
    assert_eq!(messages, vec![home::Message::Select(1), home::Message::Start]);
    for m in messages {
        let _ = h.update(m);
    }
    assert_eq!(h.selected, Some(1));
    let mut ui = simulator(h.view());
    assert!(ui.find("source #1").is_ok());
}

#[test]
fn session_screen_tabs_and_export() {
    let mut v = session::SessionView::new(sample::session(), sample::graph(), sample::classes());
    let mut ui = simulator(v.view());
    assert!(ui.find("cat → dog (target dog)").is_ok());
    ui.click("Export").unwrap();
    // The layer tab is disabled until a layer is open: clicking it sends nothing.
    ui.click("Layer").unwrap();
    assert_eq!(ui.into_messages().collect::<Vec<_>>(), vec![session::Message::Export]);

    v.set_layer(sample::layer_detail(4));
    let mut ui = simulator(v.view());
    assert!(ui.find("click a feature map to see its activation maps").is_ok());
    ui.click("Network").unwrap();
    assert_eq!(ui.into_messages().collect::<Vec<_>>(), vec![session::Message::Tab(session::Tab::River)]);

    v.set_neuron(sample::neuron_detail(4, 3));
    let mut ui = simulator(v.view());
    ui.click("Contribution to prediction").unwrap();
    assert_eq!(ui.into_messages().collect::<Vec<_>>(), vec![session::Message::ContributeToPrediction]);
}

#[test]
fn river_snapshot() {
    let v = session::SessionView::new(sample::session(), sample::graph(), sample::classes());
    let mut ui = iced_test::Simulator::with_size(Default::default(), (1100.0, 760.0), v.view());
    let snapshot = ui.snapshot(&Theme::Light).unwrap();
    assert!(
        snapshot.matches_image("tests/snapshots/river").unwrap(),
        "the river screen changed; delete the snapshot to accept"
    );
}

#[test]
fn app_flow_from_connect_to_session() {
    let (mut app, _) = App::new(None, None, None);
    assert!(matches!(app.screen, Screen::Connect(_)));
    let _ = app.update(Message::Connected(api(), Ok(sample::info())));
    let Screen::Home(h) = &app.screen else { panic!("expected the home screen") };
    assert_eq!(h.model.as_deref(), Some("toy-resnet"));
    let _ = app.update(Message::Images(Ok(sample::images())));
    let _ = app.update(Message::Graph("toy-resnet".into(), Ok(sample::graph())));

    // A new session starts a job; its progress shows with a cancel button.
    let created = SessionCreated { session: "s-toy".into(), job: Some("j1".into()), cached: false };
    let _ = app.update(Message::SessionCreated(Ok(created)));
    assert_eq!(app.job.as_ref().map(|j| j.purpose.clone()), Some(JobPurpose::Session("s-toy".into())));
    let _ = app.update(Message::JobUpdate(Ok(job(JobState::Running, 0.4))));
    {
        let mut ui = simulator(app.view());
        assert!(ui.find("extracting datapaths").is_ok());
        ui.click("Cancel").unwrap();
        assert!(matches!(ui.into_messages().next(), Some(Message::CancelJob)));
    }
    let _ = app.update(Message::JobUpdate(Ok(job(JobState::Done, 1.0))));
    assert!(app.job.is_none());
    let _ = app.update(Message::SessionLoaded(Box::new(Ok((sample::session(), sample::graph())))));
    let Screen::Session(s) = &app.screen else { panic!("expected the session screen") };
    assert_eq!(s.classes, sample::classes());
    assert_eq!(app.title(), "aevis — s-toy");

    // A lost daemon shows the reconnect bar; the screen stays.
    let _ = app.update(Message::Layer(Box::new(Err(unreachable()))));
    assert!(app.lost.as_deref().unwrap().starts_with("cannot reach the daemon"));
    {
        let mut ui = simulator(app.view());
        ui.click("Reconnect").unwrap();
        assert!(matches!(ui.into_messages().next(), Some(Message::Reconnect)));
    }
    let _ = app.update(Message::Connected(api(), Ok(sample::info())));
    assert!(app.lost.is_none());
    assert!(matches!(app.screen, Screen::Session(_)), "reconnecting keeps the session open");
    assert_eq!(app.notice.as_deref(), Some("reconnected"));
}

#[test]
fn app_reports_failed_and_cancelled_jobs() {
    let (mut app, _) = App::new(None, None, None);
    let _ = app.update(Message::Connected(api(), Ok(sample::info())));
    let created = SessionCreated { session: "s-toy".into(), job: Some("j1".into()), cached: false };
    let _ = app.update(Message::SessionCreated(Ok(created.clone())));
    let mut failed = job(JobState::Failed, 0.2);
    failed.error = Some("out of memory".into());
    let _ = app.update(Message::JobUpdate(Ok(failed)));
    assert_eq!(app.notice.as_deref(), Some("the job failed: out of memory"));
    let _ = app.update(Message::SessionCreated(Ok(created)));
    // Updates of another job are ignored.
    let mut other = job(JobState::Done, 1.0);
    other.id = "j2".into();
    let _ = app.update(Message::JobUpdate(Ok(other)));
    assert!(app.job.is_some());
    let _ = app.update(Message::JobUpdate(Ok(job(JobState::Cancelled, 0.5))));
    assert!(app.job.is_none());
    assert_eq!(app.notice.as_deref(), Some("cancelled"));
}

#[test]
fn remembered_connection_is_loaded_and_saved() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aevis/client.toml");
    aevis_client::config::Config { url: "http://old:1".into(), token: Some("t".into()) }.save_to(&path).unwrap();
    let (mut app, _) = App::new(None, None, Some(path.clone()));
    let Screen::Connect(c) = &app.screen else { panic!("expected the connect screen") };
    assert_eq!((c.url.as_str(), c.token.as_str()), ("http://old:1", "t"));
    let _ = app.update(Message::Connected(Api::new("new:2", None).unwrap(), Ok(sample::info())));
    let saved = aevis_client::config::Config::load_from(&path);
    assert_eq!((saved.url.as_str(), saved.token), ("http://new:2", None));
}
