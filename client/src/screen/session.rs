//! The analysis screen of one session: river (network level), treemap
//! (layer level) and activation maps (neuron level), with contribution
//! analysis and export.

use std::fmt;

use aevis_shared::graph::LayerGraph;
use aevis_shared::layout::river::{Collapse, ColumnKind};
use aevis_shared::protocol::{
    ContributionRequest, ContributionResult, ContributionTarget, LayerDetail, NeuronDetail, Region, Role, SessionResult,
};
use iced::mouse;
use iced::widget::canvas::{self, Cache, Event, Frame, Geometry, Path};
use iced::widget::{button, canvas as canvas_widget, column, container, pick_list, row, scrollable, space, text};
use iced::{Element, Length, Point, Rectangle, Renderer, Theme};

use super::paint::{Fit, paint};
use crate::scene::Scene;
use crate::theme;
use crate::view::layer::{Fill, LayerFrame};
use crate::view::river::RiverFrame;
use crate::view::{self, class_name};

/// Widget id of the container around the river canvas (its bounds are the
/// canvas's, so a test or an accessibility tool can find where it is drawn).
pub const RIVER_CANVAS: &str = "aevis-river-canvas";
/// Widget id of the container around the treemap canvas.
pub const LAYER_CANVAS: &str = "aevis-layer-canvas";
/// Widget id of the container around the activation-map canvas.
pub const NEURON_CANVAS: &str = "aevis-neuron-canvas";

/// Which level is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    /// Network level.
    River,
    /// Layer level.
    Layer,
    /// Neuron level.
    Neuron,
}

/// A fill choice of the layer view's pick list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillChoice(pub Fill);

impl FillChoice {
    /// The choices: three activation differences and three contributions.
    pub const ALL: [FillChoice; 6] = [
        FillChoice(Fill::Activation { a: Role::Adversarial, b: Role::Source }),
        FillChoice(Fill::Activation { a: Role::Adversarial, b: Role::Target }),
        FillChoice(Fill::Activation { a: Role::Source, b: Role::Target }),
        FillChoice(Fill::Contribution { role: Role::Source }),
        FillChoice(Fill::Contribution { role: Role::Adversarial }),
        FillChoice(Fill::Contribution { role: Role::Target }),
    ];
}

impl fmt::Display for FillChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Fill::Activation { a, b } => write!(f, "activation {} − {}", theme::role_name(a), theme::role_name(b)),
            Fill::Contribution { role } => write!(f, "contribution ({})", theme::role_name(role)),
        }
    }
}

/// A layer entry of a pick list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerChoice(pub usize, pub String);

impl fmt::Display for LayerChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (#{})", self.1, self.0)
    }
}

/// State of the session screen.
#[derive(Debug)]
pub struct SessionView {
    /// The session.
    pub session: SessionResult,
    /// Its model's graph.
    pub graph: LayerGraph,
    /// Class names.
    pub classes: Vec<String>,
    /// Level shown.
    pub tab: Tab,
    /// Collapsed stages and blocks of the river.
    pub collapse: Collapse,
    river: (Scene, RiverFrame),
    river_cache: Cache,
    /// Hovered river column.
    pub hover: Option<usize>,
    /// Layer shown in the layer view.
    pub layer: Option<LayerDetail>,
    /// Fill of the treemap.
    pub fill: Fill,
    layer_scene: Option<(Scene, LayerFrame)>,
    layer_cache: Cache,
    /// Text about the hovered cell.
    pub cell_hover: Option<String>,
    /// Feature map shown in the neuron view.
    pub neuron: Option<NeuronDetail>,
    neuron_scene: Option<Scene>,
    neuron_cache: Cache,
    /// Selected neurons.
    pub region: Option<Region>,
    /// Earlier layer chosen for the contribution.
    pub earlier: Option<usize>,
    /// Latest contribution result.
    pub contribution: Option<ContributionResult>,
    /// Counter of contribution requests (newer supersedes older).
    pub request_id: u64,
    /// Something is loading (shown in the status line).
    pub loading: Option<String>,
    /// Last status or error line.
    pub status: Option<String>,
}

/// What the user (or a canvas) did.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Switch level.
    Tab(Tab),
    /// Hover over a river column.
    Hover(Option<usize>),
    /// Click on a river column or the mini-map.
    OpenLayer(usize),
    /// Click on a column of a collapsed group, or a stage header.
    ToggleStage(String),
    /// Open or collapse a block.
    ToggleBlock(String),
    /// Collapse as much as needed to fit the window.
    AutoCollapse,
    /// Treemap fill.
    Fill(FillChoice),
    /// Hover over a treemap cell.
    HoverCell(Option<(f32, f32)>),
    /// Click on a treemap cell.
    OpenChannel(usize),
    /// A rectangle of neurons was dragged.
    Region(Option<Region>),
    /// Earlier layer for the contribution.
    Earlier(LayerChoice),
    /// Run the contribution to the selected neurons.
    Contribute,
    /// Run the contribution to the prediction.
    ContributeToPrediction,
    /// Export the views.
    Export,
    /// Back to the home screen.
    Back,
}

/// What the app must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing.
    None,
    /// Fetch a layer's detail.
    LoadLayer(usize),
    /// Fetch a feature map's detail.
    LoadNeuron {
        /// Layer.
        layer: usize,
        /// Channel.
        channel: usize,
    },
    /// Run a contribution analysis.
    Contribution(ContributionRequest),
    /// Export the current views.
    Export,
    /// Leave the session.
    Back,
}

impl SessionView {
    /// The screen of a loaded session, river shown, collapsed to fit 60 columns.
    pub fn new(session: SessionResult, graph: LayerGraph, classes: Vec<String>) -> Self {
        let keep: Vec<usize> = [session.analysis.diverging, session.analysis.merging].into_iter().flatten().collect();
        let collapse = Collapse::auto(&graph, 60, &keep);
        let river = view::river::scene(&session, &graph, &collapse, &classes);
        Self {
            session,
            graph,
            classes,
            tab: Tab::River,
            collapse,
            river,
            river_cache: Cache::new(),
            hover: None,
            layer: None,
            fill: Fill::default(),
            layer_scene: None,
            layer_cache: Cache::new(),
            cell_hover: None,
            neuron: None,
            neuron_scene: None,
            neuron_cache: Cache::new(),
            region: None,
            earlier: None,
            contribution: None,
            request_id: 0,
            loading: None,
            status: None,
        }
    }

    /// The river frame (layout and hit areas).
    pub fn river_frame(&self) -> &RiverFrame {
        &self.river.1
    }

    /// The layer frame, when a layer is loaded.
    pub fn layer_frame(&self) -> Option<&LayerFrame> {
        self.layer_scene.as_ref().map(|(_, f)| f)
    }

    fn rebuild_river(&mut self) {
        self.river = view::river::scene(&self.session, &self.graph, &self.collapse, &self.classes);
        self.river_cache.clear();
        self.hover = None;
    }

    fn rebuild_layer(&mut self) {
        self.layer_scene = self.layer.as_ref().map(|d| view::layer::scene(d, self.fill, self.contribution.as_ref()));
        self.layer_cache.clear();
    }

    fn rebuild_neuron(&mut self) {
        self.neuron_scene = self.neuron.as_ref().map(|d| {
            let name = self.graph.layers.get(d.layer).map_or_else(|| format!("layer {}", d.layer), |l| l.name.clone());
            view::neuron::scene(d, &name, Some(&self.session), &self.classes, self.region)
        });
        self.neuron_cache.clear();
    }

    /// A layer's detail arrived.
    pub fn set_layer(&mut self, detail: LayerDetail) {
        if self.earlier.is_none() {
            self.earlier = detail.layer.checked_sub(1);
        }
        self.layer = Some(detail);
        self.loading = None;
        self.tab = Tab::Layer;
        self.rebuild_layer();
    }

    /// A feature map's detail arrived.
    pub fn set_neuron(&mut self, detail: NeuronDetail) {
        if self.neuron.as_ref().is_none_or(|n| (n.layer, n.channel) != (detail.layer, detail.channel)) {
            self.region = None;
        }
        self.earlier = self.earlier.filter(|&e| e < detail.layer).or(detail.layer.checked_sub(1));
        self.neuron = Some(detail);
        self.loading = None;
        self.tab = Tab::Neuron;
        self.rebuild_neuron();
    }

    /// A contribution arrived. Stale answers (an older request id) are
    /// dropped; returns the layer to load when the treemap shows another one.
    pub fn set_contribution(&mut self, result: ContributionResult) -> Option<usize> {
        if result.request.request_id != self.request_id {
            return None;
        }
        let earlier = result.request.earlier;
        self.status = Some(format!("contribution computed in {:.0} ms", result.millis));
        self.contribution = Some(result);
        self.loading = None;
        if let Fill::Activation { .. } = self.fill {
            self.fill = Fill::Contribution { role: Role::Adversarial };
        }
        if self.layer.as_ref().is_some_and(|l| l.layer == earlier) {
            self.tab = Tab::Layer;
            self.rebuild_layer();
            None
        } else {
            Some(earlier)
        }
    }

    fn contribution_request(&mut self, target: ContributionTarget) -> Option<ContributionRequest> {
        let earlier = self.earlier?;
        self.request_id += 1;
        let p = &self.session.request.extract;
        self.loading = Some("contribution".into());
        Some(ContributionRequest {
            target,
            earlier,
            fast: true,
            lambda: p.lambda,
            gamma: p.gamma,
            steps: p.steps,
            request_id: self.request_id,
        })
    }

    /// Handles a message.
    pub fn update(&mut self, message: Message) -> Action {
        match message {
            Message::Tab(t) => {
                self.tab = t;
                Action::None
            }
            Message::Hover(h) => {
                self.hover = h;
                Action::None
            }
            Message::OpenLayer(l) if l < self.graph.layers.len() => {
                self.loading = Some(format!("layer {}", self.graph.layers[l].name));
                Action::LoadLayer(l)
            }
            Message::OpenLayer(_) => Action::None,
            Message::ToggleStage(s) => {
                self.collapse.toggle_stage(&s);
                self.rebuild_river();
                Action::None
            }
            Message::ToggleBlock(b) => {
                self.collapse.toggle_block(&b);
                self.rebuild_river();
                Action::None
            }
            Message::AutoCollapse => {
                let keep: Vec<usize> =
                    [self.session.analysis.diverging, self.session.analysis.merging].into_iter().flatten().collect();
                self.collapse = Collapse::auto(&self.graph, 30, &keep);
                self.rebuild_river();
                Action::None
            }
            Message::Fill(FillChoice(f)) => {
                self.fill = f;
                self.rebuild_layer();
                Action::None
            }
            Message::HoverCell(p) => {
                self.cell_hover = match (p, self.layer_scene.as_ref(), self.layer.as_ref()) {
                    (Some((x, y)), Some((_, frame)), Some(d)) => frame.describe_at(x, y, d),
                    _ => None,
                };
                Action::None
            }
            Message::OpenChannel(ch) => match &self.layer {
                Some(l) => {
                    self.loading = Some(format!("channel {ch}"));
                    Action::LoadNeuron { layer: l.layer, channel: ch }
                }
                None => Action::None,
            },
            Message::Region(r) => {
                self.region = r;
                self.rebuild_neuron();
                Action::None
            }
            Message::Earlier(LayerChoice(l, _)) => {
                self.earlier = Some(l);
                Action::None
            }
            Message::Contribute => {
                let Some(n) = &self.neuron else { return Action::None };
                let target = ContributionTarget::FeatureMap { layer: n.layer, channel: n.channel, region: self.region };
                self.contribution_request(target).map_or(Action::None, Action::Contribution)
            }
            Message::ContributeToPrediction => {
                if self.earlier.is_none() {
                    self.earlier = self.graph.layers.len().checked_sub(1);
                }
                self.contribution_request(ContributionTarget::Prediction).map_or(Action::None, Action::Contribution)
            }
            Message::Export => Action::Export,
            Message::Back => Action::Back,
        }
    }

    fn earlier_choices(&self) -> Vec<LayerChoice> {
        let until = self.neuron.as_ref().map_or(self.graph.layers.len(), |n| n.layer);
        self.graph.layers.iter().take(until).enumerate().map(|(i, l)| LayerChoice(i, l.name.clone())).collect()
    }

    /// Draws the screen.
    pub fn view(&self) -> Element<'_, Message> {
        let tab = |label: &'static str, t: Tab, enabled: bool| {
            let b = button(text(label)).on_press_maybe(enabled.then_some(Message::Tab(t)));
            if self.tab == t { b.style(button::primary) } else { b.style(button::secondary) }
        };
        let s = &self.session;
        let title = format!(
            "{} → {} (target {})",
            class_name(&self.classes, s.source.image.predicted),
            class_name(&self.classes, s.adversarial.image.predicted),
            class_name(&self.classes, s.path(Role::Target).image.predicted),
        );
        let bar = row![
            button(text("Home")).on_press(Message::Back),
            text(title).size(theme::TITLE),
            space().width(Length::Fill),
            tab("Network", Tab::River, true),
            tab("Layer", Tab::Layer, self.layer.is_some()),
            tab("Neuron", Tab::Neuron, self.neuron.is_some()),
            button(text("Export")).on_press(Message::Export),
        ]
        .spacing(theme::SPACING)
        .align_y(iced::Alignment::Center);

        let body: Element<'_, Message> = match self.tab {
            Tab::River => {
                let info = self.hover.and_then(|c| self.river.1.describe(c)).unwrap_or_else(|| {
                    "hover a layer for its distances · click a layer to open it · click a stage name or a collapsed column to fold or unfold".into()
                });
                column![
                    row![
                        text(info).size(theme::SMALL),
                        space().width(Length::Fill),
                        button(text("Fold to fit")).on_press(Message::AutoCollapse)
                    ]
                    .spacing(theme::SPACING),
                    scrollable(
                        container(
                            canvas_widget(RiverCanvas { view: self })
                                .width(Length::Fixed(self.river.0.width))
                                .height(Length::Fixed(self.river.0.height))
                        )
                        .id(RIVER_CANVAS)
                    )
                    .direction(scrollable::Direction::Horizontal(scrollable::Scrollbar::default())),
                ]
                .spacing(theme::SPACING)
                .into()
            }
            Tab::Layer => match &self.layer_scene {
                Some((scene, _)) => {
                    let choices: Vec<FillChoice> = FillChoice::ALL.to_vec();
                    column![
                        row![
                            text("fill"),
                            pick_list(choices, Some(FillChoice(self.fill)), Message::Fill),
                            text(
                                self.cell_hover
                                    .clone()
                                    .unwrap_or_else(|| "click a feature map to see its activation maps".into())
                            )
                            .size(theme::SMALL),
                        ]
                        .spacing(theme::SPACING)
                        .align_y(iced::Alignment::Center),
                        container(
                            canvas_widget(SceneCanvas {
                                scene,
                                cache: &self.layer_cache,
                                kind: CanvasKind::Layer(self)
                            })
                            .width(Length::Fill)
                            .height(Length::Fill)
                        )
                        .id(LAYER_CANVAS),
                    ]
                    .spacing(theme::SPACING)
                    .into()
                }
                None => text("open a layer from the network view").into(),
            },
            Tab::Neuron => match &self.neuron_scene {
                Some(scene) => {
                    let choices = self.earlier_choices();
                    let current = choices.iter().find(|c| Some(c.0) == self.earlier).cloned();
                    let mut controls = row![
                        text("drag over a map to select neurons · earlier layer"),
                        pick_list(choices, current, Message::Earlier),
                        button(text("Contribution to selection"))
                            .on_press_maybe(self.earlier.map(|_| Message::Contribute)),
                        button(text("Contribution to prediction")).on_press(Message::ContributeToPrediction),
                    ]
                    .spacing(theme::SPACING)
                    .align_y(iced::Alignment::Center);
                    if self.region.is_some() {
                        controls = controls.push(button(text("Clear selection")).on_press(Message::Region(None)));
                    }
                    column![
                        controls,
                        container(
                            canvas_widget(SceneCanvas {
                                scene,
                                cache: &self.neuron_cache,
                                kind: CanvasKind::Neuron(self)
                            })
                            .width(Length::Fill)
                            .height(Length::Fill)
                        )
                        .id(NEURON_CANVAS),
                    ]
                    .spacing(theme::SPACING)
                    .into()
                }
                None => text("open a feature map from the layer view").into(),
            },
        };
        let status = match (&self.loading, &self.status) {
            (Some(l), _) => format!("loading {l}…"),
            (None, Some(s)) => s.clone(),
            (None, None) => format!("session {} · {} targets · extracted in {:.1} s", s.id, s.targets.len(), s.seconds),
        };
        container(column![bar, body, text(status).size(theme::SMALL)].spacing(theme::SPACING))
            .padding(theme::PADDING)
            .into()
    }
}

/// The river canvas: the scene at 1:1 (the scrollable pans), hover and clicks.
struct RiverCanvas<'a> {
    view: &'a SessionView,
}

/// Canvas-local memory of the river.
#[derive(Debug, Default)]
struct RiverState {
    hover: Option<usize>,
}

impl canvas::Program<Message> for RiverCanvas<'_> {
    type State = RiverState;

    fn update(
        &self,
        state: &mut RiverState,
        event: &Event,
        bounds: Rectangle,
        cursor: mouse::Cursor,
    ) -> Option<canvas::Action<Message>> {
        let frame = &self.view.river.1;
        let pos = cursor.position_in(bounds);
        match event {
            Event::Mouse(mouse::Event::CursorMoved { .. }) => {
                let col = pos.and_then(|p| frame.column_at(p.x, p.y));
                if col != state.hover {
                    state.hover = col;
                    return Some(canvas::Action::publish(Message::Hover(col)));
                }
                None
            }
            Event::Mouse(mouse::Event::ButtonPressed(mouse::Button::Left)) => {
                let p = pos?;
                river_click(self.view, p).map(|m| canvas::Action::publish(m).and_capture())
            }
            _ => None,
        }
    }

    fn draw(
        &self,
        state: &RiverState,
        renderer: &Renderer,
        _theme: &Theme,
        bounds: Rectangle,
        _cursor: mouse::Cursor,
    ) -> Vec<Geometry> {
        let scene = &self.view.river.0;
        let fit = Fit { scale: 1.0, offset: iced::Vector::new(0.0, 0.0) };
        let base = self.view.river_cache.draw(renderer, bounds.size(), |frame| paint(frame, scene, fit));
        let mut over = Frame::new(renderer, bounds.size());
        if let Some(c) = state.hover.and_then(|c| self.view.river.1.layout.columns.get(c)) {
            let (top, bottom) = self.view.river.1.plot;
            let line = Path::line(Point::new(c.x, top), Point::new(c.x, bottom));
            over.stroke(&line, canvas::Stroke::default().with_color(theme::color(theme::HIGHLIGHT)).with_width(2.0));
        }
        vec![base, over.into_geometry()]
    }

    fn mouse_interaction(&self, state: &RiverState, _bounds: Rectangle, _cursor: mouse::Cursor) -> mouse::Interaction {
        if state.hover.is_some() { mouse::Interaction::Pointer } else { mouse::Interaction::default() }
    }
}

/// What a click at a river scene point means.
pub fn river_click(view: &SessionView, p: Point) -> Option<Message> {
    let frame = &view.river.1;
    if let Some(stage) = frame.stage_header_at(p.x, p.y) {
        return Some(Message::ToggleStage(stage.to_owned()));
    }
    if let Some(l) = frame.minimap_layer_at(p.x, p.y) {
        return Some(Message::OpenLayer(l));
    }
    let c = &frame.layout.columns[frame.column_at(p.x, p.y)?];
    Some(match c.kind {
        ColumnKind::Layer => Message::OpenLayer(c.layers[0]),
        ColumnKind::Block => Message::ToggleBlock(c.block.clone()),
        ColumnKind::Stage => Message::ToggleStage(c.stage.clone()),
    })
}

enum CanvasKind<'a> {
    Layer(&'a SessionView),
    Neuron(&'a SessionView),
}

/// A scene fitted into the canvas, with the layer or neuron interactions.
struct SceneCanvas<'a> {
    scene: &'a Scene,
    cache: &'a Cache,
    kind: CanvasKind<'a>,
}

/// Canvas-local memory of a drag.
#[derive(Debug, Default)]
struct DragState {
    start: Option<(usize, usize, usize)>,
    end: Option<(usize, usize, usize)>,
}

/// The region spanned by two neurons of the same map.
pub fn region_between(a: (usize, usize, usize), b: (usize, usize, usize)) -> Region {
    Region { y0: a.1.min(b.1), y1: a.1.max(b.1) + 1, x0: a.2.min(b.2), x1: a.2.max(b.2) + 1 }
}

impl canvas::Program<Message> for SceneCanvas<'_> {
    type State = DragState;

    fn update(
        &self,
        state: &mut DragState,
        event: &Event,
        bounds: Rectangle,
        cursor: mouse::Cursor,
    ) -> Option<canvas::Action<Message>> {
        let fit = Fit::new(self.scene.width, self.scene.height, bounds.size());
        let pos = cursor.position_in(bounds).map(|p| fit.to_scene(p));
        match (&self.kind, event) {
            (CanvasKind::Layer(_), Event::Mouse(mouse::Event::CursorMoved { .. })) => {
                Some(canvas::Action::publish(Message::HoverCell(pos)))
            }
            (CanvasKind::Layer(v), Event::Mouse(mouse::Event::ButtonPressed(mouse::Button::Left))) => {
                let (x, y) = pos?;
                let cell = v.layer_frame()?.treemap.cell_at(x, y)?;
                Some(canvas::Action::publish(Message::OpenChannel(cell.channel)).and_capture())
            }
            (CanvasKind::Neuron(v), Event::Mouse(mouse::Event::ButtonPressed(mouse::Button::Left))) => {
                let (x, y) = pos?;
                let n = view::neuron::neuron_at(v.neuron.as_ref()?, x, y)?;
                state.start = Some(n);
                state.end = Some(n);
                Some(canvas::Action::request_redraw().and_capture())
            }
            (CanvasKind::Neuron(v), Event::Mouse(mouse::Event::CursorMoved { .. })) if state.start.is_some() => {
                let (x, y) = pos?;
                let n = view::neuron::neuron_at(v.neuron.as_ref()?, x, y)?;
                let start = state.start?;
                if n.0 == start.0 && state.end != Some(n) {
                    state.end = Some(n);
                    return Some(canvas::Action::request_redraw());
                }
                None
            }
            (CanvasKind::Neuron(_), Event::Mouse(mouse::Event::ButtonReleased(mouse::Button::Left))) => {
                let (start, end) = (state.start.take()?, state.end.take()?);
                Some(canvas::Action::publish(Message::Region(Some(region_between(start, end)))))
            }
            _ => None,
        }
    }

    fn draw(
        &self,
        state: &DragState,
        renderer: &Renderer,
        _theme: &Theme,
        bounds: Rectangle,
        _cursor: mouse::Cursor,
    ) -> Vec<Geometry> {
        let fit = Fit::new(self.scene.width, self.scene.height, bounds.size());
        let base = self.cache.draw(renderer, bounds.size(), |frame| paint(frame, self.scene, fit));
        let mut geometries = vec![base];
        if let (CanvasKind::Neuron(v), Some(a), Some(b)) = (&self.kind, state.start, state.end)
            && let Some(n) = &v.neuron
        {
            {
                let r = region_between(a, b);
                let (mx, my, mw, mh) = view::neuron::map_rects(n)[a.0];
                let (kx, ky) = (mw / n.width.max(1) as f32, mh / n.height.max(1) as f32);
                let mut over = Frame::new(renderer, bounds.size());
                let p0 = fit.to_canvas(mx + r.x0 as f32 * kx, my + r.y0 as f32 * ky);
                let p1 = fit.to_canvas(mx + r.x1 as f32 * kx, my + r.y1 as f32 * ky);
                over.stroke(
                    &Path::rectangle(p0, iced::Size::new(p1.x - p0.x, p1.y - p0.y)),
                    canvas::Stroke::default().with_color(theme::color(theme::HIGHLIGHT)).with_width(2.0),
                );
                geometries.push(over.into_geometry());
            }
        }
        geometries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;

    fn view() -> SessionView {
        SessionView::new(sample::session(), sample::graph(), sample::classes())
    }

    #[test]
    fn river_clicks_open_layers_and_fold_stages() {
        let mut v = view();
        assert_eq!(v.river_frame().layout.columns.len(), 9);
        let cx = v.river_frame().layout.columns[3].x;
        let p = Point::new(cx, v.river_frame().centre_y);
        assert_eq!(river_click(&v, p), Some(Message::OpenLayer(3)));
        assert_eq!(v.update(Message::OpenLayer(3)), Action::LoadLayer(3));
        assert_eq!(v.update(Message::OpenLayer(99)), Action::None);
        let header = Point::new(cx, 70.0);
        assert_eq!(river_click(&v, header), Some(Message::ToggleStage("layer1".into())));
        v.update(Message::ToggleStage("layer1".into()));
        assert_eq!(v.river_frame().layout.columns.len(), 6);
        let folded = v.river_frame().layout.columns[1].clone();
        assert_eq!(folded.kind, ColumnKind::Stage);
        let p = Point::new(folded.x, v.river_frame().centre_y);
        assert_eq!(river_click(&v, p), Some(Message::ToggleStage("layer1".into())), "a folded column unfolds");
        v.update(Message::Hover(Some(1)));
        assert!(v.river_frame().describe(1).unwrap().contains("mean of 4 layers"));
    }

    #[test]
    fn layer_then_neuron_then_contribution() {
        let mut v = view();
        v.set_layer(sample::layer_detail(4));
        assert_eq!(v.tab, Tab::Layer);
        assert_eq!(v.earlier, Some(3));
        let cell = v.layer_frame().unwrap().treemap.cells[0];
        let (cx, cy) = cell.rect.centre();
        v.update(Message::HoverCell(Some((cx, cy))));
        assert!(v.cell_hover.as_deref().unwrap().starts_with(&format!("channel {}", cell.channel)));
        assert_eq!(
            v.update(Message::OpenChannel(cell.channel)),
            Action::LoadNeuron { layer: 4, channel: cell.channel }
        );
        v.set_neuron(sample::neuron_detail(4, cell.channel));
        assert_eq!(v.tab, Tab::Neuron);
        let r = region_between((1, 4, 5), (1, 2, 1));
        assert_eq!(r, Region { y0: 2, y1: 5, x0: 1, x1: 6 });
        v.update(Message::Region(Some(r)));
        v.update(Message::Earlier(LayerChoice(2, "layer1.0.out".into())));
        let Action::Contribution(req) = v.update(Message::Contribute) else { panic!("expected a contribution") };
        assert_eq!(req.earlier, 2);
        assert_eq!(req.request_id, 1);
        assert_eq!(req.target, ContributionTarget::FeatureMap { layer: 4, channel: cell.channel, region: Some(r) });
        // A stale answer is dropped; the current one asks for the earlier layer.
        let mut stale = sample::contribution(4, cell.channel, 2);
        stale.request.request_id = 0;
        assert_eq!(v.set_contribution(stale), None);
        assert!(v.contribution.is_none());
        let mut fresh = sample::contribution(4, cell.channel, 2);
        fresh.request.request_id = 1;
        assert_eq!(v.set_contribution(fresh), Some(2));
        assert_eq!(v.fill, Fill::Contribution { role: Role::Adversarial });
        v.set_layer(sample::layer_detail(2));
        assert_eq!(v.tab, Tab::Layer);
        assert!(view::layer::contribution_applies(v.layer.as_ref().unwrap(), v.contribution.as_ref()));
    }

    #[test]
    fn prediction_contribution_defaults_to_last_layer() {
        let mut v = view();
        let Action::Contribution(req) = v.update(Message::ContributeToPrediction) else {
            panic!("expected a contribution")
        };
        assert_eq!((req.earlier, req.target), (8, ContributionTarget::Prediction));
        assert_eq!(v.update(Message::Export), Action::Export);
        assert_eq!(v.update(Message::Back), Action::Back);
    }
}
