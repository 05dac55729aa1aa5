//! The GUI against the real daemon: `aevis_daemon` on 127.0.0.1:0 in this
//! process (real engine, `cifar10-resnet20`, a temporary sled folder) and
//! real CIFAR-10 test images from `shared/data`. Run with
//! `ICED_TEST_BACKEND=tiny-skia`.
//!
//! How it is driven: an `iced_test` [`Simulator`] over [`App::view`] clicks
//! the widgets a user would — buttons found by their labels, the river,
//! treemap and activation-map canvases at points computed from the frames the
//! canvases hit-test with, located on screen through their widget ids — and
//! the messages it collects go to [`App::update`]. The [`Task`]s `update`
//! returns are run for real: turned into their streams with
//! `iced_runtime::task::into_stream` (what iced's own runtime does) and polled
//! on a tokio runtime, so every network call is the GUI's own `api` call
//! against the live daemon, and each output message is fed back into
//! `App::update`. Only the text fields (targets, steps) are set by sending the
//! message their `text_input` emits, since a simulator keeps its element
//! fixed while typing.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use aevis_cache::Cache;
use aevis_client::app::{App, Message, Screen};
use aevis_client::screen::paint::Fit;
use aevis_client::screen::{home, session};
use aevis_client::view;
use aevis_daemon::{AppState, DaemonConfig, Device, bind, open_engine};
use aevis_shared::layout::river::ColumnKind;
use aevis_shared::protocol::{ContributionTarget, ExtractMethod, ImageRef, Region, Role};
use iced::mouse;
use iced::{Point, Rectangle, Task};
use iced_test::Simulator;
use iced_test::core::widget::Id;
use iced_test::runtime::futures::futures::StreamExt;

const MODEL: &str = "cifar10-resnet20";
/// The whole flow must finish within this (two CPU cores, shared).
const BUDGET: Duration = Duration::from_secs(900);
/// Window size of every simulated frame.
const WINDOW: (f32, f32) = (1600.0, 1000.0);

/// `AEVIS_DATA`, else `../shared/data` beside the checkout (the daemon's own default).
fn data_dir() -> PathBuf {
    aevis_daemon::DaemonConfig::default().data_dir
}

/// The real daemon, serving on its own actix system thread.
struct Daemon {
    addr: SocketAddr,
    handle: ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    fn start(cache_dir: &Path) -> Daemon {
        let cfg = DaemonConfig {
            port: 0,
            data_dir: data_dir(),
            cache_dir: cache_dir.to_path_buf(),
            device: Device::Cpu,
            models: Some(vec![MODEL.to_string()]),
            ..DaemonConfig::default()
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let started = async {
                    let cache = Cache::open(&cfg.cache_dir)?;
                    let c = cfg.clone();
                    let engine = actix_web::web::block(move || open_engine(&c)).await??;
                    let state = actix_web::web::Data::new(AppState::new(engine, cache, &cfg)?);
                    let (server, addr) = bind(&cfg, state.clone())?;
                    anyhow::Ok((server, addr, state))
                };
                match started.await {
                    Ok((server, addr, state)) => {
                        tx.send(Ok((addr, server.handle()))).expect("the test waits for the daemon");
                        let _ = server.await;
                        let _ = actix_web::web::block(move || state.shutdown(Duration::from_secs(30))).await;
                    }
                    Err(e) => tx.send(Err(format!("{e:#}"))).expect("the test waits for the daemon"),
                }
            })
        });
        let (addr, handle) = rx
            .recv_timeout(Duration::from_secs(300))
            .expect("the daemon starts within 5 minutes")
            .unwrap_or_else(|e| panic!("the daemon did not start on shared/data: {e}"));
        Daemon { addr, handle, thread: Some(thread) }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        let _ = std::thread::spawn(move || block_on(handle.stop(true))).join();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(f)
}

/// Runs `task` and everything its messages lead to, as iced's runtime
/// would: each output message goes to [`App::update`], whose task joins the
/// queue. Returns the messages delivered, in order.
fn drive(rt: &tokio::runtime::Runtime, app: &mut App, task: Task<Message>, deadline: Instant) -> Vec<Message> {
    let mut delivered = Vec::new();
    let mut queue = VecDeque::from([task]);
    while let Some(task) = queue.pop_front() {
        let Some(mut stream) = iced_test::runtime::task::into_stream(task) else {
            continue;
        };
        rt.block_on(async {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let next = tokio::time::timeout(left, stream.next()).await.unwrap_or_else(|_| {
                    panic!("the GUI's tasks did not finish in time; messages so far: {}", names(&delivered))
                });
                let Some(action) = next else { break };
                if let iced_test::runtime::Action::Output(message) = action {
                    delivered.push(message.clone());
                    queue.push_back(app.update(message));
                }
            }
        });
    }
    delivered
}

/// Short names of messages, for failure output.
fn names(messages: &[Message]) -> String {
    messages
        .iter()
        .map(|m| {
            let s = format!("{m:?}");
            s.chars().take(60).collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Feeds messages collected from a simulator to the app and runs the tasks.
fn deliver(rt: &tokio::runtime::Runtime, app: &mut App, messages: Vec<Message>, deadline: Instant) -> Vec<Message> {
    let mut all = messages.clone();
    for m in messages {
        let task = app.update(m);
        all.extend(drive(rt, app, task, deadline));
    }
    all
}

fn ui(app: &App) -> Simulator<'_, Message> {
    Simulator::with_size(Default::default(), WINDOW, app.view())
}

/// Clicks a button by its label; returns the messages it produced.
fn click(app: &App, label: &str) -> Vec<Message> {
    let mut ui = ui(app);
    ui.click(label).unwrap_or_else(|e| panic!("no `{label}` to click: {e}"));
    ui.into_messages().collect()
}

/// Where a canvas (its container, found by widget id) is on screen.
fn canvas_bounds(app: &App, id: &'static str) -> Rectangle {
    let mut ui = ui(app);
    let target = ui.find(Id::new(id)).unwrap_or_else(|e| panic!("canvas `{id}` not on screen: {e}"));
    target.bounds()
}

/// A left click at a window point.
fn click_at(app: &App, at: Point) -> Vec<Message> {
    let mut ui = ui(app);
    ui.point_at(at);
    ui.simulate([iced::Event::Mouse(mouse::Event::CursorMoved { position: at })]);
    ui.simulate(iced_test::simulator::click());
    ui.into_messages().collect()
}

/// A left-button drag from `a` to `b` (press, move, release).
fn drag(app: &App, a: Point, b: Point) -> Vec<Message> {
    let mut ui = ui(app);
    ui.point_at(a);
    ui.simulate([iced::Event::Mouse(mouse::Event::CursorMoved { position: a })]);
    ui.simulate([iced::Event::Mouse(mouse::Event::ButtonPressed(mouse::Button::Left))]);
    ui.point_at(b);
    ui.simulate([iced::Event::Mouse(mouse::Event::CursorMoved { position: b })]);
    ui.simulate([iced::Event::Mouse(mouse::Event::ButtonReleased(mouse::Button::Left))]);
    ui.into_messages().collect()
}

/// The session-screen messages among `messages` (canvases also publish hover messages).
fn session_messages(messages: &[Message]) -> Vec<session::Message> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::Session(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn session_view(app: &App) -> &session::SessionView {
    match &app.screen {
        Screen::Session(s) => s,
        _ => panic!("expected the session screen (notice: {:?}, lost: {:?})", app.notice, app.lost),
    }
}

#[test]
fn gui_against_the_real_daemon_on_cifar10() {
    let deadline = Instant::now() + BUDGET;
    let cache = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(cache.path());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // Connect: the remembered address is on the connect screen; press Connect.
    let config_path = config.path().join("client.toml");
    aevis_client::config::Config { url: daemon.url(), token: None }.save_to(&config_path).unwrap();
    let (mut app, boot) = App::new(None, None, Some(config_path.clone()));
    drive(&rt, &mut app, boot, deadline);
    assert!(ui(&app).find(daemon.url().as_str()).is_ok(), "the remembered address is shown");
    let messages = click(&app, "Connect");
    assert!(matches!(messages.as_slice(), [Message::Connect(_)]), "{}", names(&messages));
    let delivered = deliver(&rt, &mut app, messages, deadline);
    let info = app.info.clone().unwrap_or_else(|| panic!("not connected: {}", names(&delivered)));
    assert_eq!(info.protocol, aevis_shared::protocol::PROTOCOL_VERSION);
    let model = info.models.iter().find(|m| m.id == MODEL).expect("the daemon serves cifar10-resnet20").clone();
    assert_eq!(model.classes.len(), 10);
    assert_eq!(model.classes[3], "cat");
    let graph = app.graph.clone().expect("the model's graph was loaded");
    assert_eq!(graph.model, MODEL);
    assert_eq!(graph.layers.len(), model.gated_layers);

    // Home: the first page of the real test split, with real predictions.
    let Screen::Home(h) = &app.screen else { panic!("expected the home screen: {:?}", app.notice) };
    let page = h.page.clone().expect("the first page of images");
    assert_eq!(page.total, 1000, "the first 1000 CIFAR-10 test images (test_first1000_exact.bin)");
    let first = &page.entries[0];
    assert_eq!((first.index, first.label), (0, 3), "CIFAR-10 test image 0 is a cat");
    assert_eq!(first.predicted, 3, "resnet20 classifies test image 0 as a cat");
    let wrong = if first.label != first.predicted { " (wrong)" } else { "" };
    let row = format!("  #0 · true cat · predicted cat ({:.2}){wrong}", first.confidence);
    let messages = click(&app, &row);
    assert_eq!(messages.len(), 1, "{}", names(&messages));
    deliver(&rt, &mut app, messages, deadline);
    assert!(ui(&app).find("source #0").is_ok());

    // One target and ten optimiser steps keep the extraction short on a CPU.
    deliver(
        &rt,
        &mut app,
        vec![Message::Home(home::Message::Targets("1".into())), Message::Home(home::Message::Steps("10".into()))],
        deadline,
    );
    let Screen::Home(h) = &app.screen else { panic!("expected the home screen") };
    let req = h.request().expect("a complete form");
    assert_eq!(req.source, ImageRef::Dataset { split: "test".into(), index: 0 });
    assert_eq!((req.n_targets, req.extract.method, req.extract.steps), (1, ExtractMethod::Constrained, 10));

    // Start: the job runs on the daemon, its events arrive, then the session loads.
    let messages = click(&app, "Start session");
    let delivered = deliver(&rt, &mut app, messages, deadline);
    let updates = delivered.iter().filter(|m| matches!(m, Message::JobUpdate(Ok(_)))).count();
    assert!(updates >= 1, "job progress arrived: {}", names(&delivered));
    assert!(app.job.is_none(), "the job finished");
    assert!(delivered.iter().any(|m| matches!(m, Message::SessionLoaded(_))), "{}", names(&delivered));

    // River view: title with class names, the river canvas, one column per layer.
    let s = session_view(&app);
    let result = s.session.clone();
    assert_eq!(result.request, req);
    assert_eq!(result.source.image.predicted, 3);
    assert_ne!(result.adversarial.image.predicted, 3, "MI-FGSM at 8/255 fools resnet20 on image 0");
    assert_eq!(result.targets.len(), 1);
    assert_eq!(result.analysis.adv_src.len(), graph.layers.len());
    assert_eq!(s.classes, model.classes);
    let adv = &model.classes[result.adversarial.image.predicted];
    let tgt = &model.classes[result.path(Role::Target).image.predicted];
    assert_eq!(tgt, adv, "the targets are normal images of the adversarial class");
    let title = format!("cat → {adv} (target {tgt})");
    assert!(ui(&app).find(title.as_str()).is_ok(), "title `{title}` shown");
    assert_eq!(app.title(), format!("aevis — {}", result.id));
    let river = canvas_bounds(&app, session::RIVER_CANVAS);
    let frame = s.river_frame();
    assert!(river.width >= 720.0 && river.height > 100.0, "{river:?}");
    let svg = view::river::scene(&result, &graph, &s.collapse, &s.classes).0.to_svg();
    assert!(svg.contains("cat ("), "the river legend names the source class");

    // Open a layer: the diverging point (else the merging point, else the middle).
    let wanted = result.analysis.diverging.or(result.analysis.merging).unwrap_or(graph.layers.len() / 2);
    let col = frame
        .layout
        .columns
        .iter()
        .position(|c| c.kind == ColumnKind::Layer && c.layers == [wanted])
        .expect("the diverging/merging layer is an open column");
    let c = &frame.layout.columns[col];
    let at = Point::new(river.x + c.x, river.y + frame.centre_y);
    assert!(at.x < WINDOW.0, "column {col} is on screen");
    let messages = click_at(&app, at);
    let opens: Vec<session::Message> =
        session_messages(&messages).into_iter().filter(|m| matches!(m, session::Message::OpenLayer(_))).collect();
    assert_eq!(opens, vec![session::Message::OpenLayer(wanted)], "a click on column {col}: {}", names(&messages));
    deliver(&rt, &mut app, vec![Message::Session(session::Message::OpenLayer(wanted))], deadline);
    let s = session_view(&app);
    assert_eq!(s.tab, session::Tab::Layer);
    let layer = s.layer.clone().expect("the layer detail arrived");
    // The `{layer}` path segment is the index into the graph's gated layers on both sides.
    assert_eq!(layer.layer, wanted);
    assert_eq!(layer.name, graph.layers[wanted].name);
    for r in 0..3 {
        assert_eq!(layer.gates[r].len(), graph.layers[wanted].channels);
        assert_eq!(layer.max_activation[r].len(), graph.layers[wanted].channels);
        assert_eq!(layer.gates[r], result.path(Role::ALL[r]).datapath.gates[wanted]);
    }
    assert!(ui(&app).find("click a feature map to see its activation maps").is_ok());

    // Open a feature map: the treemap cell of the adversarial's critical map
    // with the largest activation difference to the source (as `aevis export`).
    let lf = s.layer_frame().expect("the treemap").clone();
    assert!(!lf.treemap.cells.is_empty(), "the layer has critical feature maps");
    let diff = |ch: usize| layer.max_activation[1][ch] - layer.max_activation[0][ch];
    let cell = *lf.treemap.cells.iter().max_by(|a, b| diff(a.channel).total_cmp(&diff(b.channel))).expect("a cell");
    let bounds = canvas_bounds(&app, session::LAYER_CANVAS);
    let (scene, _) = view::layer::scene(&layer, s.fill, s.contribution.as_ref());
    let fit = Fit::new(scene.width, scene.height, bounds.size());
    let (cx, cy) = cell.rect.centre();
    let p = fit.to_canvas(cx, cy);
    let messages = click_at(&app, Point::new(bounds.x + p.x, bounds.y + p.y));
    let opens: Vec<session::Message> =
        session_messages(&messages).into_iter().filter(|m| matches!(m, session::Message::OpenChannel(_))).collect();
    assert_eq!(opens, vec![session::Message::OpenChannel(cell.channel)], "{}", names(&messages));
    deliver(&rt, &mut app, messages, deadline);
    let s = session_view(&app);
    assert_eq!(s.tab, session::Tab::Neuron);
    let neuron = s.neuron.clone().expect("the feature map arrived");
    assert_eq!((neuron.layer, neuron.channel), (wanted, cell.channel));
    assert_eq!((neuron.height, neuron.width), (graph.layers[wanted].height, graph.layers[wanted].width));
    let peak = neuron.maps[1].iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert!(
        (peak - layer.max_activation[1][cell.channel]).abs() <= 1e-4 * peak.abs().max(1.0),
        "the adversarial map's peak {peak} is the layer view's maximum {}",
        layer.max_activation[1][cell.channel]
    );

    // Select a region: drag over the adversarial's map, around its largest difference to the source.
    let dmap: Vec<f32> = neuron.maps[1].iter().zip(&neuron.maps[0]).map(|(a, b)| a - b).collect();
    let at = dmap.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap();
    let (y, x) = (at / neuron.width, at % neuron.width);
    let (y0, y1) = (y.saturating_sub(1), (y + 1).min(neuron.height - 1));
    let (x0, x1) = (x.saturating_sub(1), (x + 1).min(neuron.width - 1));
    let name = graph.layers[wanted].name.clone();
    let nscene = view::neuron::scene(&neuron, &name, Some(&result), &s.classes, s.region);
    let bounds = canvas_bounds(&app, session::NEURON_CANVAS);
    let fit = Fit::new(nscene.width, nscene.height, bounds.size());
    let (mx, my, mw, mh) = view::neuron::map_rects(&neuron)[1];
    let (kx, ky) = (mw / neuron.width as f32, mh / neuron.height as f32);
    let screen = |row: usize, col: usize| {
        let p = fit.to_canvas(mx + (col as f32 + 0.5) * kx, my + (row as f32 + 0.5) * ky);
        Point::new(bounds.x + p.x, bounds.y + p.y)
    };
    let messages = drag(&app, screen(y0, x0), screen(y1, x1));
    let region = Region { y0, y1: y1 + 1, x0, x1: x1 + 1 };
    assert_eq!(session_messages(&messages), vec![session::Message::Region(Some(region))], "{}", names(&messages));
    deliver(&rt, &mut app, messages, deadline);
    let s = session_view(&app);
    assert_eq!(s.region, Some(region));
    assert_eq!(s.earlier, Some(wanted - 1), "the earlier layer defaults to the one before");
    assert!(ui(&app).find("Clear selection").is_ok());

    // Contribution to the selection: computed by the daemon, then the treemap
    // of the earlier layer shows it with the top contributors.
    let messages = click(&app, "Contribution to selection");
    assert_eq!(session_messages(&messages), vec![session::Message::Contribute]);
    let delivered = deliver(&rt, &mut app, messages, deadline);
    assert!(delivered.iter().any(|m| matches!(m, Message::Contribution(r) if r.is_ok())), "{}", names(&delivered));
    let s = session_view(&app);
    let c = s.contribution.clone().unwrap_or_else(|| panic!("no contribution: {:?}", app.notice));
    assert_eq!(
        c.request.target,
        ContributionTarget::FeatureMap { layer: wanted, channel: cell.channel, region: Some(region) }
    );
    assert_eq!(c.request.earlier, wanted - 1);
    let earlier = &graph.layers[wanted - 1];
    for r in 0..3 {
        assert_eq!(c.contributions[r].len(), earlier.channels);
        assert!(c.contributions[r].iter().all(|z| z.is_finite()));
        let best = c.contributions[r].iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let top = &c.top[r];
        assert!(!top.is_empty());
        assert_eq!(top[0].1, best, "the first top contributor has the largest z");
        assert!(top.windows(2).all(|w| w[0].1 >= w[1].1), "top contributors are sorted");
        assert_eq!(top[0].1, c.contributions[r][top[0].0]);
    }
    assert!(c.receptive_field.is_some(), "a region has a receptive field in the earlier layer");
    assert_eq!(s.tab, session::Tab::Layer);
    let shown = s.layer.clone().expect("the earlier layer was loaded");
    assert_eq!((shown.layer, shown.name.as_str()), (wanted - 1, earlier.name.as_str()));
    assert!(view::layer::contribution_applies(&shown, Some(&c)));
    let status = format!("contribution computed in {:.0} ms", c.millis);
    assert!(ui(&app).find(status.as_str()).is_ok(), "status `{status}` shown");
    let svg = view::layer::scene(&shown, s.fill, Some(&c)).0.to_svg();
    assert!(svg.contains("top contributors (channel: z)"));
    let first = format!("{}: {:.3}", c.top[1][0].0, c.top[1][0].1);
    assert!(svg.contains(&first), "the adversarial's top contributor `{first}` is listed");

    eprintln!(
        "live GUI: {} → {adv}; opened layer {wanted} `{}`, channel {}, region {region:?}; contribution from `{}` in {:.0} ms, adversarial top {:?}",
        model.classes[result.source.image.predicted],
        graph.layers[wanted].name,
        cell.channel,
        earlier.name,
        c.millis,
        &c.top[1][..3.min(c.top[1].len())]
    );
    drop(rt);
    drop(daemon);
}
