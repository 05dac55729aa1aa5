//! The iced application: owns the screens and the connection, turns screen
//! actions into network tasks (always async) and results back into state.

use std::path::PathBuf;

use aevis_shared::graph::LayerGraph;
use aevis_shared::protocol::{
    AdversarialSpec, CandidateList, ContributionResult, CreateSession, DaemonInfo, ImagePage, ImageRef, JobCreated,
    JobState, JobStatus, LayerDetail, NeuronDetail, SessionCreated, SessionResult, SessionSummary,
};
use iced::task::Handle;
use iced::widget::{button, column, container, progress_bar, row, text};
use iced::{Element, Length, Task};

use crate::api::{Api, ApiError};
use crate::config::{self, Config};
use crate::screen::{connect, home, session};
use crate::theme;
use crate::view::layer::Fill;

/// Which screen is shown.
#[derive(Debug)]
pub enum Screen {
    /// Address and token.
    Connect(connect::Connect),
    /// Models, data set, candidates, new session.
    Home(Box<home::Home>),
    /// One session's three levels.
    Session(Box<session::SessionView>),
}

/// What a running job will produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobPurpose {
    /// A session result.
    Session(String),
    /// A candidate list of a model.
    Candidates(String),
}

/// A job being watched.
#[derive(Debug)]
pub struct Job {
    /// Job id.
    pub id: String,
    /// What it computes.
    pub purpose: JobPurpose,
    /// Latest status.
    pub status: Option<JobStatus>,
    handle: Option<Handle>,
}

/// All messages of the app.
#[derive(Debug, Clone)]
pub enum Message {
    /// From the connect screen.
    Connect(connect::Message),
    /// From the home screen.
    Home(home::Message),
    /// From the session screen.
    Session(session::Message),
    /// Cancel the running job.
    CancelJob,
    /// Try the lost daemon again.
    Reconnect,
    /// Go back to the connect screen.
    Disconnect,
    /// Hide the notice line.
    Dismiss,
    /// `GET /info` answered.
    Connected(Api, Result<DaemonInfo, ApiError>),
    /// A model's graph arrived.
    Graph(String, Result<LayerGraph, ApiError>),
    /// A page of images arrived.
    Images(Result<ImagePage, ApiError>),
    /// The candidate list arrived.
    Candidates(Result<CandidateList, ApiError>),
    /// A candidate job was started.
    CandidatesStarted(String, Result<JobCreated, ApiError>),
    /// The session list arrived.
    Sessions(Result<Vec<SessionSummary>, ApiError>),
    /// A session was created.
    SessionCreated(Result<SessionCreated, ApiError>),
    /// Uploads could not be read.
    UploadFailed(String),
    /// A session request with its uploads read.
    StartPrepared(Box<CreateSession>),
    /// Progress of the watched job.
    JobUpdate(Result<JobStatus, ApiError>),
    /// A session result arrived, with its graph.
    SessionLoaded(Box<Result<(SessionResult, LayerGraph), ApiError>>),
    /// A layer's detail arrived.
    Layer(Box<Result<LayerDetail, ApiError>>),
    /// A feature map's detail arrived.
    Neuron(Box<Result<NeuronDetail, ApiError>>),
    /// A contribution arrived.
    Contribution(Box<Result<ContributionResult, ApiError>>),
    /// The export finished.
    Exported(Result<Vec<PathBuf>, String>),
}

/// The application state.
#[derive(Debug)]
pub struct App {
    /// Shown screen.
    pub screen: Screen,
    /// Connected daemon.
    pub api: Option<Api>,
    /// What it serves.
    pub info: Option<DaemonInfo>,
    /// Graph of the selected model.
    pub graph: Option<LayerGraph>,
    /// The watched job.
    pub job: Option<Job>,
    /// The daemon stopped answering: why.
    pub lost: Option<String>,
    /// Last notice or error.
    pub notice: Option<String>,
    /// Where the connection is remembered (`None`: not remembered).
    pub config_path: Option<PathBuf>,
    /// Folder exports go to.
    pub export_dir: PathBuf,
}

fn connect_task(api: Api) -> Task<Message> {
    let a = api.clone();
    Task::perform(async move { a.info().await }, move |r| Message::Connected(api.clone(), r))
}

impl App {
    /// Starts on the connect screen; connects at once when `url` is given.
    pub fn new(url: Option<String>, token: Option<String>, config_path: Option<PathBuf>) -> (Self, Task<Message>) {
        let remembered = config_path.as_deref().map(Config::load_from).unwrap_or_default();
        let connect_now = url.is_some();
        let url = url.unwrap_or(remembered.url);
        let token = token.or(remembered.token);
        let mut screen = connect::Connect::new(url.clone(), token.clone());
        let mut app = Self {
            screen: Screen::Connect(connect::Connect::default()),
            api: None,
            info: None,
            graph: None,
            job: None,
            lost: None,
            notice: None,
            config_path,
            export_dir: PathBuf::from("aevis-export"),
        };
        let task = if connect_now {
            match screen.update(connect::Message::Submit) {
                connect::Action::Connect { url, token } => app.connect(url, token, &mut screen),
                connect::Action::None => Task::none(),
            }
        } else {
            Task::none()
        };
        app.screen = Screen::Connect(screen);
        (app, task)
    }

    fn connect(&mut self, url: String, token: Option<String>, screen: &mut connect::Connect) -> Task<Message> {
        match Api::new(&url, token) {
            Ok(api) => connect_task(api),
            Err(e) => {
                screen.connecting = false;
                screen.error = Some(e.to_string());
                Task::none()
            }
        }
    }

    fn classes(&self) -> Vec<String> {
        let model = self.graph.as_ref().map(|g| g.model.as_str());
        self.info
            .as_ref()
            .and_then(|i| i.models.iter().find(|m| Some(m.id.as_str()) == model))
            .map(|m| m.classes.clone())
            .unwrap_or_default()
    }

    /// Reports an error once: a lost daemon switches to the reconnect
    /// state, anything else becomes the notice line.
    fn fail(&mut self, e: &ApiError) {
        if e.is_unreachable() {
            self.lost = Some(e.to_string());
        } else {
            self.notice = Some(e.to_string());
        }
        if let Screen::Session(s) = &mut self.screen {
            s.loading = None;
        }
    }

    fn with_api<F>(&self, f: F) -> Task<Message>
    where
        F: FnOnce(Api) -> Task<Message>,
    {
        match &self.api {
            Some(api) if self.lost.is_none() => f(api.clone()),
            _ => Task::none(),
        }
    }

    fn watch(&mut self, id: String, purpose: JobPurpose) -> Task<Message> {
        if let Some(h) = self.job.take().and_then(|j| j.handle) {
            h.abort();
        }
        let Some(api) = self.api.clone() else { return Task::none() };
        let (task, handle) = Task::run(api.job_progress(&id), Message::JobUpdate).abortable();
        self.job = Some(Job { id, purpose, status: None, handle: Some(handle) });
        task
    }

    fn load_session(&self, id: String) -> Task<Message> {
        self.with_api(|api| {
            Task::perform(
                async move {
                    let s = api.session(&id).await?;
                    let g = api.graph(&s.request.model).await?;
                    Ok((s, g))
                },
                |r| Message::SessionLoaded(Box::new(r)),
            )
        })
    }

    fn home_action(&mut self, action: home::Action) -> Task<Message> {
        match action {
            home::Action::None => Task::none(),
            home::Action::LoadModel(m) => {
                let split = match &self.screen {
                    Screen::Home(h) => h.split.clone(),
                    _ => "test".into(),
                };
                self.with_api(|api| {
                    let (a, b, c) = (api.clone(), api.clone(), api);
                    let (m1, m2, m3) = (m.clone(), m.clone(), m.clone());
                    Task::batch([
                        Task::perform(async move { a.graph(&m1).await }, move |r| Message::Graph(m.clone(), r)),
                        Task::perform(async move { b.images(&m2, &split, 0, home::PAGE, None).await }, Message::Images),
                        Task::perform(async move { c.candidates(&m3).await }, Message::Candidates),
                    ])
                })
            }
            home::Action::LoadImages { model, split, offset, class } => self.with_api(|api| {
                Task::perform(
                    async move { api.images(&model, &split, offset, home::PAGE, class).await },
                    Message::Images,
                )
            }),
            home::Action::FindCandidates(model, req) => self.with_api(|api| {
                let m = model.clone();
                Task::perform(async move { api.start_candidates(&m, &req).await }, move |r| {
                    Message::CandidatesStarted(model.clone(), r)
                })
            }),
            home::Action::RefreshCandidates(model) => {
                self.with_api(|api| Task::perform(async move { api.candidates(&model).await }, Message::Candidates))
            }
            home::Action::Start(req) => self.start_session(req),
            home::Action::StartUpload { request, source, adversarial } => Task::perform(
                async move {
                    let read = |p: PathBuf| {
                        std::fs::read(&p).map_err(|e| format!("cannot read the image file ({e}): {}", p.display()))
                    };
                    let (s, a) = (read(source)?, read(adversarial)?);
                    Ok::<CreateSession, String>(CreateSession {
                        source: ImageRef::Upload { bytes: s },
                        adversarial: AdversarialSpec::Image(ImageRef::Upload { bytes: a }),
                        ..request
                    })
                },
                |r| match r {
                    Ok(req) => Message::StartPrepared(Box::new(req)),
                    Err(e) => Message::UploadFailed(e),
                },
            ),
            home::Action::Open(id) => self.load_session(id),
        }
    }

    fn start_session(&mut self, req: CreateSession) -> Task<Message> {
        self.with_api(|api| Task::perform(async move { api.create_session(&req).await }, Message::SessionCreated))
    }

    fn session_action(&mut self, action: session::Action) -> Task<Message> {
        let id = match &self.screen {
            Screen::Session(s) => s.session.id.clone(),
            _ => return Task::none(),
        };
        match action {
            session::Action::None => Task::none(),
            session::Action::LoadLayer(l) => self
                .with_api(|api| Task::perform(async move { api.layer(&id, l).await }, |r| Message::Layer(Box::new(r)))),
            session::Action::LoadNeuron { layer, channel } => self.with_api(|api| {
                Task::perform(async move { api.neuron(&id, layer, channel).await }, |r| Message::Neuron(Box::new(r)))
            }),
            session::Action::Contribution(req) => self.with_api(|api| {
                Task::perform(async move { api.contribution(&id, &req).await }, |r| Message::Contribution(Box::new(r)))
            }),
            session::Action::Export => {
                let Screen::Session(s) = &self.screen else { return Task::none() };
                let session = s.session.clone();
                let graph = s.graph.clone();
                let classes = s.classes.clone();
                let collapse = s.collapse.clone();
                let layer = s.layer.clone();
                let fill: Fill = s.fill;
                let neuron = s.neuron.clone();
                let region = s.region;
                let contribution = s.contribution.clone();
                let dir = self.export_dir.join(&session.id);
                // Rendering PNGs takes a while: keep it off the async workers.
                let work = move || {
                    let input = crate::export::ExportInput {
                        session: &session,
                        graph: &graph,
                        classes: &classes,
                        collapse,
                        layer: layer.as_ref(),
                        fill,
                        neuron: neuron.as_ref(),
                        region,
                        contribution: contribution.as_ref(),
                    };
                    crate::export::export(&input, &dir, 2.0).map_err(|e| e.to_string())
                };
                Task::perform(
                    async move {
                        tokio::task::spawn_blocking(work)
                            .await
                            .unwrap_or_else(|e| Err(format!("the export stopped: {e}")))
                    },
                    Message::Exported,
                )
            }
            session::Action::Back => {
                let Some(info) = self.info.clone() else { return Task::none() };
                let mut home = home::Home::new(info);
                if let Some(g) = &self.graph {
                    home.model = Some(g.model.clone());
                }
                let model = home.model.clone();
                self.screen = Screen::Home(Box::new(home));
                match model {
                    Some(m) => self.home_action(home::Action::LoadModel(m)),
                    None => Task::none(),
                }
            }
        }
    }

    /// Handles a message.
    pub fn update(&mut self, message: Message) -> Task<Message> {
        match message {
            Message::Connect(m) => {
                let Screen::Connect(screen) = &mut self.screen else { return Task::none() };
                let mut screen = std::mem::take(screen);
                let task = match screen.update(m) {
                    connect::Action::None => Task::none(),
                    connect::Action::Connect { url, token } => self.connect(url, token, &mut screen),
                };
                self.screen = Screen::Connect(screen);
                task
            }
            Message::Connected(api, Ok(info)) => {
                if info.protocol != aevis_shared::protocol::PROTOCOL_VERSION {
                    let e = format!(
                        "the daemon speaks protocol {} and this client {}; update one of them",
                        info.protocol,
                        aevis_shared::protocol::PROTOCOL_VERSION
                    );
                    if let Screen::Connect(c) = &mut self.screen {
                        c.connecting = false;
                        c.error = Some(e);
                    }
                    return Task::none();
                }
                if let Some(p) = &self.config_path {
                    let cfg = Config { url: api.base().to_owned(), token: api.token().map(str::to_owned) };
                    if let Err(e) = cfg.save_to(p) {
                        self.notice = Some(format!("could not remember the connection ({e}): {}", p.display()));
                    }
                }
                let reconnecting = self.lost.take().is_some() && !matches!(self.screen, Screen::Connect(_));
                self.api = Some(api);
                self.info = Some(info.clone());
                if reconnecting {
                    self.notice = Some("reconnected".into());
                    return Task::none();
                }
                let home = home::Home::new(info);
                let model = home.model.clone();
                self.screen = Screen::Home(Box::new(home));
                let sessions =
                    self.with_api(|api| Task::perform(async move { api.sessions().await }, Message::Sessions));
                let load = model.map_or(Task::none(), |m| self.home_action(home::Action::LoadModel(m)));
                Task::batch([sessions, load])
            }
            Message::Connected(_, Err(e)) => {
                if let Screen::Connect(c) = &mut self.screen {
                    c.connecting = false;
                    c.error = Some(e.to_string());
                } else {
                    self.lost = Some(e.to_string());
                }
                Task::none()
            }
            Message::Reconnect => match self.api.clone() {
                Some(api) => connect_task(api),
                None => Task::none(),
            },
            Message::Disconnect => {
                if let Some(h) = self.job.take().and_then(|j| j.handle) {
                    h.abort();
                }
                let (url, token) = self
                    .api
                    .as_ref()
                    .map_or((String::new(), None), |a| (a.base().to_owned(), a.token().map(str::to_owned)));
                self.api = None;
                self.lost = None;
                self.screen = Screen::Connect(connect::Connect::new(url, token));
                Task::none()
            }
            Message::Dismiss => {
                self.notice = None;
                Task::none()
            }
            Message::Home(m) => {
                let Screen::Home(h) = &mut self.screen else { return Task::none() };
                let action = h.update(m);
                self.home_action(action)
            }
            Message::Session(m) => {
                let Screen::Session(s) = &mut self.screen else { return Task::none() };
                let action = s.update(m);
                self.session_action(action)
            }
            Message::Graph(model, r) => {
                match r {
                    Ok(g) if g.model == model || self.graph.is_none() => self.graph = Some(g),
                    Ok(_) => {}
                    Err(e) => self.fail(&e),
                }
                Task::none()
            }
            Message::Images(r) => {
                match r {
                    Ok(page) => {
                        if let Screen::Home(h) = &mut self.screen {
                            h.page = Some(page);
                        }
                    }
                    Err(e) => self.fail(&e),
                }
                Task::none()
            }
            Message::Candidates(r) => {
                match r {
                    Ok(list) => {
                        if let Screen::Home(h) = &mut self.screen {
                            h.candidates = Some(list);
                        }
                    }
                    // No list yet is normal for a fresh model.
                    Err(e) if e.kind() == Some(aevis_shared::protocol::ErrorKind::NotFound) => {}
                    Err(e) => self.fail(&e),
                }
                Task::none()
            }
            Message::CandidatesStarted(model, r) => match r {
                Ok(job) => self.watch(job.job, JobPurpose::Candidates(model)),
                Err(e) => {
                    self.fail(&e);
                    Task::none()
                }
            },
            Message::Sessions(r) => {
                match r {
                    Ok(list) => {
                        if let Screen::Home(h) = &mut self.screen {
                            h.sessions = list;
                        }
                    }
                    Err(e) => self.fail(&e),
                }
                Task::none()
            }
            Message::SessionCreated(r) => match r {
                Ok(created) => match created.job {
                    Some(job) if !created.cached => self.watch(job, JobPurpose::Session(created.session)),
                    _ => self.load_session(created.session),
                },
                Err(e) => {
                    self.fail(&e);
                    Task::none()
                }
            },
            Message::StartPrepared(req) => self.start_session(*req),
            Message::UploadFailed(e) => {
                self.notice = Some(e);
                Task::none()
            }
            Message::JobUpdate(r) => {
                let status = match r {
                    Ok(s) => s,
                    Err(e) => {
                        self.fail(&e);
                        return Task::none();
                    }
                };
                let Some(job) = &mut self.job else { return Task::none() };
                if status.id != job.id {
                    return Task::none();
                }
                let state = status.state;
                let error = status.error.clone();
                job.status = Some(status);
                if !state.is_final() {
                    return Task::none();
                }
                let purpose = job.purpose.clone();
                self.job = None;
                match (state, purpose) {
                    (JobState::Done, JobPurpose::Session(id)) => self.load_session(id),
                    (JobState::Done, JobPurpose::Candidates(model)) => {
                        self.home_action(home::Action::RefreshCandidates(model))
                    }
                    (JobState::Cancelled, _) => {
                        self.notice = Some("cancelled".into());
                        Task::none()
                    }
                    (_, _) => {
                        self.notice =
                            Some(format!("the job failed: {}", error.unwrap_or_else(|| "no reason given".into())));
                        Task::none()
                    }
                }
            }
            Message::CancelJob => match &self.job {
                Some(job) => {
                    let id = job.id.clone();
                    self.with_api(|api| Task::perform(async move { api.cancel_job(&id).await }, Message::JobUpdate))
                }
                None => Task::none(),
            },
            Message::SessionLoaded(r) => {
                match *r {
                    Ok((s, g)) => {
                        self.graph = Some(g.clone());
                        let classes = self.classes();
                        self.screen = Screen::Session(Box::new(session::SessionView::new(s, g, classes)));
                    }
                    Err(e) => self.fail(&e),
                }
                Task::none()
            }
            Message::Layer(r) => {
                match (*r, &mut self.screen) {
                    (Ok(d), Screen::Session(s)) => s.set_layer(d),
                    (Ok(_), _) => {}
                    (Err(e), _) => self.fail(&e),
                }
                Task::none()
            }
            Message::Neuron(r) => {
                match (*r, &mut self.screen) {
                    (Ok(d), Screen::Session(s)) => s.set_neuron(d),
                    (Ok(_), _) => {}
                    (Err(e), _) => self.fail(&e),
                }
                Task::none()
            }
            Message::Contribution(r) => match (*r, &mut self.screen) {
                (Ok(c), Screen::Session(s)) => match s.set_contribution(c) {
                    Some(layer) => self.session_action(session::Action::LoadLayer(layer)),
                    None => Task::none(),
                },
                (Ok(_), _) => Task::none(),
                (Err(e), _) => {
                    self.fail(&e);
                    Task::none()
                }
            },
            Message::Exported(r) => {
                self.notice = Some(match r {
                    Ok(files) => format!(
                        "exported {} files to {}",
                        files.len(),
                        files.first().and_then(|f| f.parent()).map_or_else(String::new, |d| d.display().to_string())
                    ),
                    Err(e) => format!("export failed: {e}"),
                });
                Task::none()
            }
        }
    }

    /// Draws the app: the screen, with the job, reconnect and notice bars.
    pub fn view(&self) -> Element<'_, Message> {
        let screen: Element<'_, Message> = match &self.screen {
            Screen::Connect(c) => c.view().map(Message::Connect),
            Screen::Home(h) => h.view().map(Message::Home),
            Screen::Session(s) => s.view().map(Message::Session),
        };
        let mut col = column![].spacing(theme::SPACING);
        if let Some(why) = &self.lost {
            col = col.push(
                container(
                    row![
                        text(format!("daemon lost — {why}")).color(theme::color(theme::ERROR)),
                        button(text("Reconnect")).on_press(Message::Reconnect),
                        button(text("Change daemon")).on_press(Message::Disconnect),
                    ]
                    .spacing(theme::SPACING)
                    .align_y(iced::Alignment::Center),
                )
                .padding(theme::SPACING),
            );
        }
        if let Some(job) = &self.job {
            let (fraction, label) = match &job.status {
                Some(s) => (
                    s.progress.fraction.clamp(0.0, 1.0),
                    format!(
                        "{:?} · {} {}/{} · loss {:.4} · kept {:.0}% · {:.0}%",
                        s.state,
                        s.progress.stage,
                        s.progress.step,
                        s.progress.total,
                        s.progress.loss,
                        s.progress.sparsity * 100.0,
                        s.progress.fraction * 100.0
                    ),
                ),
                None => (0.0, "waiting for the daemon…".to_owned()),
            };
            let what = match &job.purpose {
                JobPurpose::Session(_) => "extracting datapaths",
                JobPurpose::Candidates(_) => "attacking images",
            };
            col = col.push(
                container(
                    row![
                        text(what),
                        progress_bar(0.0..=1.0, fraction).length(Length::Fixed(240.0)),
                        text(label).size(theme::SMALL),
                        button(text("Cancel")).on_press(Message::CancelJob),
                    ]
                    .spacing(theme::SPACING)
                    .align_y(iced::Alignment::Center),
                )
                .padding(theme::SPACING),
            );
        }
        if let Some(n) = &self.notice {
            col = col.push(
                row![text(n.clone()).size(theme::SMALL), button(text("OK")).on_press(Message::Dismiss)]
                    .spacing(theme::SPACING)
                    .align_y(iced::Alignment::Center),
            );
        }
        col.push(screen).into()
    }

    /// Window title.
    pub fn title(&self) -> String {
        match &self.screen {
            Screen::Session(s) => format!("aevis — {}", s.session.id),
            _ => "aevis".into(),
        }
    }
}

/// Where the connection is remembered by default.
pub fn default_config_path() -> Option<PathBuf> {
    config::path()
}
