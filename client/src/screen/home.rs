//! Home screen: model choice, data-set browser with predictions, the
//! candidate list (sortable, filterable) and the form that starts a session.

use std::fmt;
use std::path::PathBuf;

use aevis_shared::protocol::{
    AdversarialSpec, AttackParams, Candidate, CandidateList, CandidatesRequest, CreateSession, DaemonInfo,
    ExtractMethod, ExtractParams, ImagePage, ImageRef, ModelInfo, SessionSummary,
};
use iced::widget::{button, column, container, pick_list, radio, row, scrollable, space, text, text_input};
use iced::{Element, Length};

use crate::theme;
use crate::view::class_name;

/// Images per page of the browser.
pub const PAGE: usize = 20;

/// How the candidate list is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Highest adversarial score first.
    #[default]
    ScoreDesc,
    /// Lowest score first.
    ScoreAsc,
    /// By adversarial class, then score.
    Class,
}

impl Sort {
    /// All orders.
    pub const ALL: [Sort; 3] = [Sort::ScoreDesc, Sort::ScoreAsc, Sort::Class];
}

impl fmt::Display for Sort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sort::ScoreDesc => "score, high first",
            Sort::ScoreAsc => "score, low first",
            Sort::Class => "adversarial class",
        })
    }
}

/// A class filter entry of a pick list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassChoice(pub Option<usize>, pub String);

impl fmt::Display for ClassChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.1)
    }
}

/// Where the adversarial image comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The daemon runs MI-FGSM on a data-set source.
    #[default]
    Attack,
    /// The user brings a source and an adversarial image file.
    Upload,
}

/// State of the home screen.
#[derive(Debug, Clone)]
pub struct Home {
    /// What the daemon serves.
    pub info: DaemonInfo,
    /// Selected model id.
    pub model: Option<String>,
    /// Split browsed.
    pub split: String,
    /// Current page of the browser.
    pub page: Option<ImagePage>,
    /// Offset of the page.
    pub offset: usize,
    /// Class filter of the browser.
    pub class: Option<usize>,
    /// Latest candidate list.
    pub candidates: Option<CandidateList>,
    /// Candidate order.
    pub sort: Sort,
    /// Candidate filter: adversarial class.
    pub candidate_class: Option<usize>,
    /// Candidate filter: minimum score (text as typed).
    pub min_score: String,
    /// Chosen source image index.
    pub selected: Option<usize>,
    /// Adversarial source.
    pub mode: Mode,
    /// ε in grey levels (x/255), as typed.
    pub epsilon: String,
    /// Number of targets, as typed.
    pub targets: String,
    /// Optimiser steps of the extraction, as typed (0 = the fast mode).
    pub steps: String,
    /// Upload mode: source image file.
    pub source_file: String,
    /// Upload mode: adversarial image file.
    pub adversarial_file: String,
    /// Earlier sessions on the daemon.
    pub sessions: Vec<SessionSummary>,
    /// Last problem to show.
    pub error: Option<String>,
}

/// What the user did.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A model was picked.
    Model(String),
    /// Previous page.
    PrevPage,
    /// Next page.
    NextPage,
    /// Browser class filter.
    Class(ClassChoice),
    /// A source image was chosen.
    Select(usize),
    /// Candidate order.
    Sort(Sort),
    /// Candidate class filter.
    CandidateClass(ClassChoice),
    /// Candidate minimum score typed.
    MinScore(String),
    /// Run the attack over the current page to find candidates.
    FindCandidates,
    /// Refresh the candidate list.
    RefreshCandidates,
    /// Adversarial source.
    Mode(Mode),
    /// ε typed.
    Epsilon(String),
    /// Number of targets typed.
    Targets(String),
    /// Extraction steps typed.
    Steps(String),
    /// Source file typed.
    SourceFile(String),
    /// Adversarial file typed.
    AdversarialFile(String),
    /// Start the session.
    Start,
    /// Open an earlier session.
    Open(String),
}

/// What the app must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing.
    None,
    /// Load the graph of a model and its first page.
    LoadModel(String),
    /// Load a page of images.
    LoadImages {
        /// Model.
        model: String,
        /// Split.
        split: String,
        /// Offset.
        offset: usize,
        /// Class filter.
        class: Option<usize>,
    },
    /// Start a candidate job.
    FindCandidates(String, CandidatesRequest),
    /// Fetch the latest candidate list.
    RefreshCandidates(String),
    /// Create a session.
    Start(CreateSession),
    /// Create a session from two image files (read by the app, off the UI thread).
    StartUpload {
        /// The request, with empty uploads to fill.
        request: CreateSession,
        /// Source image file.
        source: PathBuf,
        /// Adversarial image file.
        adversarial: PathBuf,
    },
    /// Open an existing session.
    Open(String),
}

impl Home {
    /// The home screen for what a daemon serves; the first model is selected.
    pub fn new(info: DaemonInfo) -> Self {
        let model = info.models.first().map(|m| m.id.clone());
        let split = info.models.first().and_then(|m| m.splits.first().cloned()).unwrap_or_else(|| "test".into());
        Self {
            info,
            model,
            split,
            page: None,
            offset: 0,
            class: None,
            candidates: None,
            sort: Sort::default(),
            candidate_class: None,
            min_score: String::new(),
            selected: None,
            mode: Mode::default(),
            epsilon: "8".into(),
            targets: "5".into(),
            steps: ExtractParams::default_for(0.0).steps.to_string(),
            source_file: String::new(),
            adversarial_file: String::new(),
            sessions: Vec::new(),
            error: None,
        }
    }

    /// The selected model's info.
    pub fn model_info(&self) -> Option<&ModelInfo> {
        self.info.models.iter().find(|m| Some(&m.id) == self.model.as_ref())
    }

    fn classes(&self) -> &[String] {
        self.model_info().map_or(&[], |m| m.classes.as_slice())
    }

    fn class_choices(&self) -> Vec<ClassChoice> {
        std::iter::once(ClassChoice(None, "all classes".into()))
            .chain(self.classes().iter().enumerate().map(|(i, c)| ClassChoice(Some(i), format!("{i}: {c}"))))
            .collect()
    }

    fn load_page(&self) -> Action {
        match &self.model {
            Some(model) => Action::LoadImages {
                model: model.clone(),
                split: self.split.clone(),
                offset: self.offset,
                class: self.class,
            },
            None => Action::None,
        }
    }

    /// The candidates after the filters, in the chosen order.
    pub fn visible_candidates(&self) -> Vec<&Candidate> {
        let Some(list) = &self.candidates else { return Vec::new() };
        let min: Option<f32> = self.min_score.trim().parse().ok();
        let mut v: Vec<&Candidate> = list
            .candidates
            .iter()
            .filter(|c| self.candidate_class.is_none_or(|k| c.adversarial_class == k))
            .filter(|c| min.is_none_or(|m| c.score >= m))
            .collect();
        match self.sort {
            Sort::ScoreDesc => v.sort_by(|a, b| b.score.total_cmp(&a.score)),
            Sort::ScoreAsc => v.sort_by(|a, b| a.score.total_cmp(&b.score)),
            Sort::Class => {
                v.sort_by(|a, b| a.adversarial_class.cmp(&b.adversarial_class).then(b.score.total_cmp(&a.score)))
            }
        }
        v
    }

    fn epsilon_value(&self) -> Result<f32, String> {
        match self.epsilon.trim().parse::<f32>() {
            Ok(e) if e > 0.0 && e <= 255.0 => Ok(e / 255.0),
            _ => Err(format!("ε must be a number of grey levels in (0, 255], got {:?}", self.epsilon)),
        }
    }

    /// The session request the form describes.
    pub fn request(&self) -> Result<CreateSession, String> {
        let model = self.model_info().ok_or("choose a model first")?;
        let n_targets = match self.targets.trim().parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => return Err(format!("the number of targets must be 1..=100, got {:?}", self.targets)),
        };
        let (source, adversarial) = match self.mode {
            Mode::Attack => {
                let index = self.selected.ok_or("choose a source image in the browser or the candidate list")?;
                (
                    ImageRef::Dataset { split: self.split.clone(), index },
                    AdversarialSpec::Attack(AttackParams::mi_fgsm(self.epsilon_value()?)),
                )
            }
            Mode::Upload => {
                if self.source_file.trim().is_empty() || self.adversarial_file.trim().is_empty() {
                    return Err("give both image files".into());
                }
                (ImageRef::Upload { bytes: Vec::new() }, AdversarialSpec::Image(ImageRef::Upload { bytes: Vec::new() }))
            }
        };
        let mut extract = ExtractParams::for_model(model);
        match self.steps.trim().parse::<usize>() {
            Ok(0) => extract.method = ExtractMethod::Fast,
            Ok(n) if n <= 10_000 => extract.steps = n,
            _ => return Err(format!("the extraction steps must be 0 (fast mode) to 10000, got {:?}", self.steps)),
        }
        Ok(CreateSession {
            model: model.id.clone(),
            source,
            adversarial,
            target_class: None,
            n_targets,
            target_split: self.split.clone(),
            extract,
        })
    }

    /// Handles a message.
    pub fn update(&mut self, message: Message) -> Action {
        self.error = None;
        match message {
            Message::Model(m) => {
                if self.model.as_ref() == Some(&m) {
                    return Action::None;
                }
                self.model = Some(m.clone());
                if let Some(split) = self.model_info().and_then(|i| i.splits.first().cloned()) {
                    self.split = split;
                }
                self.page = None;
                self.candidates = None;
                self.selected = None;
                self.offset = 0;
                self.class = None;
                Action::LoadModel(m)
            }
            Message::PrevPage => {
                if self.offset == 0 {
                    return Action::None;
                }
                self.offset = self.offset.saturating_sub(PAGE);
                self.load_page()
            }
            Message::NextPage => {
                let total = self.page.as_ref().map_or(0, |p| p.total);
                if self.offset + PAGE >= total {
                    return Action::None;
                }
                self.offset += PAGE;
                self.load_page()
            }
            Message::Class(ClassChoice(c, _)) => {
                self.class = c;
                self.offset = 0;
                self.load_page()
            }
            Message::Select(i) => {
                self.selected = Some(i);
                Action::None
            }
            Message::Sort(s) => {
                self.sort = s;
                Action::None
            }
            Message::CandidateClass(ClassChoice(c, _)) => {
                self.candidate_class = c;
                Action::None
            }
            Message::MinScore(s) => {
                self.min_score = s;
                Action::None
            }
            Message::FindCandidates => {
                let Some(model) = self.model.clone() else { return Action::None };
                match self.epsilon_value() {
                    Ok(eps) => Action::FindCandidates(
                        model,
                        CandidatesRequest {
                            split: self.split.clone(),
                            offset: self.offset,
                            limit: PAGE,
                            params: AttackParams::mi_fgsm(eps),
                        },
                    ),
                    Err(e) => {
                        self.error = Some(e);
                        Action::None
                    }
                }
            }
            Message::RefreshCandidates => self.model.clone().map_or(Action::None, Action::RefreshCandidates),
            Message::Mode(m) => {
                self.mode = m;
                Action::None
            }
            Message::Epsilon(e) => {
                self.epsilon = e;
                Action::None
            }
            Message::Targets(t) => {
                self.targets = t;
                Action::None
            }
            Message::Steps(t) => {
                self.steps = t;
                Action::None
            }
            Message::SourceFile(f) => {
                self.source_file = f;
                Action::None
            }
            Message::AdversarialFile(f) => {
                self.adversarial_file = f;
                Action::None
            }
            Message::Start => match self.request() {
                Ok(request) if self.mode == Mode::Upload => Action::StartUpload {
                    request,
                    source: PathBuf::from(self.source_file.trim()),
                    adversarial: PathBuf::from(self.adversarial_file.trim()),
                },
                Ok(request) => Action::Start(request),
                Err(e) => {
                    self.error = Some(e);
                    Action::None
                }
            },
            Message::Open(id) => Action::Open(id),
        }
    }

    /// Draws the screen.
    pub fn view(&self) -> Element<'_, Message> {
        let classes = self.classes();
        let model_ids: Vec<String> = self.info.models.iter().map(|m| m.id.clone()).collect();
        let header = row![
            text("model").size(theme::TEXT_SIZE),
            pick_list(model_ids, self.model.clone(), Message::Model),
            text(self.model_info().map_or(String::new(), |m| format!(
                "{} on {} · {} gated layers · {} gates · split {}",
                m.arch, m.dataset, m.gated_layers, m.gates, self.split
            )))
            .size(theme::SMALL),
            space().width(Length::Fill),
            text(format!("daemon {} · {} · {}", self.info.version, self.info.backend, self.info.device))
                .size(theme::SMALL),
        ]
        .spacing(theme::SPACING)
        .align_y(iced::Alignment::Center);

        // Data-set browser.
        let choices = self.class_choices();
        let current = choices.iter().find(|c| c.0 == self.class).cloned();
        let mut browser = column![
            row![
                text("data set").size(theme::TITLE),
                pick_list(choices.clone(), current, Message::Class),
                button(text("Previous")).on_press_maybe((self.offset > 0).then_some(Message::PrevPage)),
                text(match &self.page {
                    Some(p) => format!("{}–{} of {}", self.offset, self.offset + p.entries.len(), p.total),
                    None => "loading…".into(),
                })
                .size(theme::SMALL),
                button(text("Next")).on_press_maybe(
                    self.page.as_ref().is_some_and(|p| self.offset + PAGE < p.total).then_some(Message::NextPage)
                ),
            ]
            .spacing(theme::SPACING)
            .align_y(iced::Alignment::Center)
        ]
        .spacing(4);
        for e in self.page.iter().flat_map(|p| &p.entries) {
            let mark = if self.selected == Some(e.index) { "→" } else { " " };
            let wrong = if e.label != e.predicted { " (wrong)" } else { "" };
            browser = browser.push(
                button(text(format!(
                    "{mark} #{} · true {} · predicted {} ({:.2}){wrong}",
                    e.index,
                    class_name(classes, e.label),
                    class_name(classes, e.predicted),
                    e.confidence
                )))
                .style(button::text)
                .on_press(Message::Select(e.index)),
            );
        }

        // Candidates.
        let cand_current = choices.iter().find(|c| c.0 == self.candidate_class).cloned();
        let mut cands = column![
            row![
                text("candidates").size(theme::TITLE),
                button(text("Attack this page")).on_press(Message::FindCandidates),
                button(text("Refresh")).on_press(Message::RefreshCandidates),
            ]
            .spacing(theme::SPACING),
            row![
                pick_list(Sort::ALL, Some(self.sort), Message::Sort),
                pick_list(choices, cand_current, Message::CandidateClass),
                text_input("min score", &self.min_score).on_input(Message::MinScore).width(90),
            ]
            .spacing(theme::SPACING),
        ]
        .spacing(4);
        let visible = self.visible_candidates();
        if self.candidates.is_some() && visible.is_empty() {
            cands = cands.push(text("no candidate matches").size(theme::SMALL));
        }
        for c in visible {
            cands = cands.push(
                button(text(format!(
                    "#{} · {} → {} ({:.2}) · score {:.3}",
                    c.source,
                    class_name(classes, c.true_class),
                    class_name(classes, c.adversarial_class),
                    c.adversarial_prob,
                    c.score
                )))
                .style(button::text)
                .on_press(Message::Select(c.source)),
            );
        }

        // Start form.
        let mut form = column![
            text("new session").size(theme::TITLE),
            row![
                radio("MI-FGSM on the chosen image", Mode::Attack, Some(self.mode), Message::Mode),
                radio("my own image pair", Mode::Upload, Some(self.mode), Message::Mode),
            ]
            .spacing(theme::SPACING),
        ]
        .spacing(theme::SPACING);
        form = match self.mode {
            Mode::Attack => form.push(
                row![
                    text(match self.selected {
                        Some(i) => format!("source #{i}"),
                        None => "no source chosen".into(),
                    }),
                    text("ε (grey levels)"),
                    text_input("8", &self.epsilon).on_input(Message::Epsilon).width(60),
                ]
                .spacing(theme::SPACING)
                .align_y(iced::Alignment::Center),
            ),
            Mode::Upload => form
                .push(text_input("source image file (PNG/JPEG)", &self.source_file).on_input(Message::SourceFile))
                .push(text_input("adversarial image file", &self.adversarial_file).on_input(Message::AdversarialFile)),
        };
        form = form.push(
            row![
                text("extraction steps (0 = fast mode)"),
                text_input("100", &self.steps).on_input(Message::Steps).width(60)
            ]
            .spacing(theme::SPACING)
            .align_y(iced::Alignment::Center),
        );
        form = form.push(
            row![
                text("targets"),
                text_input("5", &self.targets).on_input(Message::Targets).width(60),
                button(text("Start session")).on_press(Message::Start),
            ]
            .spacing(theme::SPACING)
            .align_y(iced::Alignment::Center),
        );
        if let Some(e) = &self.error {
            form = form.push(text(e.clone()).color(theme::color(theme::ERROR)));
        }
        if !self.sessions.is_empty() {
            form = form.push(text("earlier sessions").size(theme::TITLE));
            for s in &self.sessions {
                let label = format!(
                    "{} · {} · {} → {}{}",
                    s.source,
                    s.model,
                    class_name(classes, s.classes.0),
                    class_name(classes, s.classes.1),
                    if s.ready { "" } else { " (computing)" }
                );
                form = form.push(button(text(label)).style(button::text).on_press(Message::Open(s.id.clone())));
            }
        }

        let body = row![
            scrollable(browser.padding(4)).width(Length::FillPortion(1)),
            scrollable(cands.padding(4)).width(Length::FillPortion(1)),
            scrollable(form.padding(4)).width(Length::FillPortion(1)),
        ]
        .spacing(theme::PADDING);
        container(column![header, body].spacing(theme::PADDING)).padding(theme::PADDING).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;

    fn home() -> Home {
        let mut h = Home::new(sample::info());
        h.page = Some(sample::images());
        h.candidates = Some(sample::candidates());
        h
    }

    #[test]
    fn candidates_sort_and_filter() {
        let mut h = home();
        let order = |h: &Home| h.visible_candidates().iter().map(|c| c.source).collect::<Vec<_>>();
        assert_eq!(order(&h), vec![1, 0, 4]);
        h.update(Message::Sort(Sort::ScoreAsc));
        assert_eq!(order(&h), vec![4, 0, 1]);
        h.update(Message::Sort(Sort::Class));
        assert_eq!(order(&h), vec![1, 4, 0]);
        h.update(Message::CandidateClass(ClassChoice(Some(5), "5: dog".into())));
        assert_eq!(order(&h), vec![0]);
        h.update(Message::CandidateClass(ClassChoice(None, "all".into())));
        h.update(Message::MinScore("0.3".into()));
        assert_eq!(order(&h), vec![1, 0]);
    }

    #[test]
    fn start_builds_the_request() {
        let mut h = home();
        assert_eq!(h.update(Message::Start), Action::None);
        assert!(h.error.as_deref().unwrap().contains("choose a source"));
        h.update(Message::Select(2));
        h.update(Message::Epsilon("16".into()));
        h.update(Message::Targets("3".into()));
        let Action::Start(req) = h.update(Message::Start) else { panic!("expected a start") };
        assert_eq!(req.model, "toy-resnet");
        assert_eq!(req.n_targets, 3);
        assert_eq!(req.source, ImageRef::Dataset { split: "test".into(), index: 2 });
        let AdversarialSpec::Attack(p) = req.adversarial else { panic!("expected an attack") };
        assert!((p.epsilon - 16.0 / 255.0).abs() < 1e-7);
        assert_eq!((req.extract.method, req.extract.steps), (ExtractMethod::Constrained, 100));
        h.update(Message::Steps("0".into()));
        let Action::Start(req) = h.update(Message::Start) else { panic!("expected a start") };
        assert_eq!(req.extract.method, ExtractMethod::Fast, "0 steps is the fast mode");
        h.update(Message::Steps("25".into()));
        let Action::Start(req) = h.update(Message::Start) else { panic!("expected a start") };
        assert_eq!((req.extract.method, req.extract.steps), (ExtractMethod::Constrained, 25));
        h.update(Message::Steps("many".into()));
        assert_eq!(h.update(Message::Start), Action::None);
        assert!(h.error.as_deref().unwrap().contains("extraction steps"));
        h.update(Message::Steps("100".into()));
        h.update(Message::Targets("0".into()));
        assert_eq!(h.update(Message::Start), Action::None);
        h.update(Message::Targets("2".into()));
        h.update(Message::Mode(Mode::Upload));
        assert_eq!(h.update(Message::Start), Action::None);
        h.update(Message::SourceFile("a.png".into()));
        h.update(Message::AdversarialFile("b.png".into()));
        assert!(matches!(h.update(Message::Start), Action::StartUpload { .. }));
    }

    #[test]
    fn paging() {
        let mut h = home();
        assert_eq!(h.update(Message::PrevPage), Action::None);
        assert_eq!(h.update(Message::NextPage), Action::None, "3 images fit one page");
        h.page.as_mut().unwrap().total = 50;
        assert_eq!(
            h.update(Message::NextPage),
            Action::LoadImages { model: "toy-resnet".into(), split: "test".into(), offset: 20, class: None }
        );
        assert!(matches!(
            h.update(Message::Class(ClassChoice(Some(3), "3".into()))),
            Action::LoadImages { offset: 0, class: Some(3), .. }
        ));
    }
}
